"""`python -m pipeline.faiss_index --reference DIR`: (re)build the FAISS index of a reference set on its own.

The index job runs the same step after its pipeline; this command is for rebuilding with another memory budget or
recall target, e.g. on a large-memory machine for a very large reference set. The step itself is refset.index.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipeline.progress import FAISS_UNITS, Stages
from refset.index import CorruptIndex, RecallTargetMissed, build_index


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message}\n")


def get_args_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m refset.index", description="Build the FAISS index of a reference set.")
    p.add_argument("--reference", required=True, help="reference-set directory (local or gs://)")
    p.add_argument("--memory_budget", default="2GB", help="memory the loaded index may use (2GB = 2e9 bytes)")
    p.add_argument("--recall_target", type=float, default=0.95, help="recall@k to reach against exact search")
    p.add_argument("--k", type=int, default=10, help="neighbours for recall@k")
    p.add_argument("--held_out_queries", type=int, default=1000, help="queries used to measure recall")
    p.add_argument("--index_key", default=None, help="override the chooser with a faiss.index_factory string")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    stages = Stages("faiss", FAISS_UNITS)
    try:
        info = build_index(
            args.reference,
            memory_budget=args.memory_budget,
            recall_target=args.recall_target,
            k=args.k,
            held_out_queries=args.held_out_queries,
            seed=args.seed,
            index_key=args.index_key,
            on_progress=stages,
        )
    except (ValueError, FileNotFoundError, CorruptIndex, RecallTargetMissed, RuntimeError) as e:
        # RecallTargetMissed: the best index was written with recall_target_met false; the run did not succeed
        stages.close()  # the bars end first: the error is the last line
        print(
            f"faiss_index: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            file=sys.stderr,
        )
        return 1
    finally:
        stages.close()
    summary = {
        key: info[key]
        for key in ("index_key", "n", "dim", "search_params", "k", "recall_at_k", "recall_target_met", "qps",
                    "build_seconds", "index_bytes")
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
