"""`reme`: label images, evaluate on benchmarks, report on a reference set.

    reme label --index DIR (--classes "cat,dog,sky" | --classes-file F) INPUT OUTPUT [--overlay] [--runner ...]
    reme evaluate --index DIR --dataset voc21 ROOT [--predictions DIR] [--json OUT]
    reme report --index DIR OUT.html

Flags this program does not know go to Beam (e.g. --runner DataflowRunner --project P --region R
--temp_location gs://b/tmp --setup_file ./setup.py, or --direct_num_workers 2 --direct_running_mode
multi_processing). Errors that stop a run before any work are one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from inference.datasets import DATASETS, DatasetError, ignore_value_for
from inference.labeller import ClassListError, LabelRequest, parse_classes
from inference.metrics import format_table
from inference.report import write_report
from models.weights import WeightsUnavailable
from pipeline.label_job import LabelJobError, evaluate_dataset, prepare_job, run_job
from pipeline.options import OneLineArgumentParser, run_command
from refset import storage
from refset.reader import ReferenceSetError


def _fail(prog: str, message: str) -> None:
    sys.stderr.write(f"reme {prog}: error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)


def _add_labelling_flags(p: argparse.ArgumentParser, index_required: bool = True) -> None:
    p.add_argument("--index", required=index_required, help="reference set directory (local or gs://)")
    p.add_argument("--strategy", choices=("neighbours", "prototype"), default="neighbours",
                   help="neighbour-weighted text scores (default) or FreeDA-style class prototypes")
    p.add_argument("--k", type=int, default=16, help="reference segments retrieved per query segment")
    p.add_argument("--tau", type=float, default=0.1, help="softmax temperature over neighbour similarities")
    p.add_argument("--threshold", type=float, default=None,
                   help="segments whose best score is below this become background (if a class is named "
                        "'background') or unlabelled")
    p.add_argument("--no_fill", action="store_true",
                   help="leave pixels no segment covers unlabelled instead of giving them the nearest segment's class")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays with a legend")
    p.add_argument("--preset", default=None, help="models preset override (default: the index's own)")
    p.add_argument("--cache_dir", default=None, help="where presets materialise weights")
    p.add_argument("--masker", choices=("felzenszwalb", "sam"), default=None, help="masker override")
    p.add_argument("--min_area", type=int, default=None, help="segments smaller than this many pixels are dropped")
    p.add_argument("--visual_kind", choices=("dinov2", "clip"), default=None)
    p.add_argument("--visual_model", default=None, help="must be the index's visual encoder (checked)")
    p.add_argument("--text_kind", choices=("clip", "sentence"), default=None)
    p.add_argument("--text_model", default=None, help="must be the index's text encoder (checked)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--mask_batch_size", type=int, default=4)
    p.add_argument("--visual_batch_size", type=int, default=8)
    p.add_argument("--label_batch_size", type=int, default=16, help="images per retrieval batch")
    p.add_argument("--torch_threads", type=int, default=0)
    p.add_argument("--max_pixels", type=int, default=100_000_000, help="refuse larger images (decompression bombs)")
    p.add_argument("--no_progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="reme", description="Training-free open-vocabulary segmentation by retrieval (ReME).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineArgumentParser)

    lab = sub.add_parser("label", help="label a folder, glob or gs:// prefix of images with any class names")
    _add_labelling_flags(lab)
    group = lab.add_mutually_exclusive_group(required=True)
    group.add_argument("--classes", help='comma-separated class names, e.g. "cat,dog,sky"')
    group.add_argument("--classes-file", "--classes_file", dest="classes_file", help="one class name per line")
    lab.add_argument("input", help="directory, glob or gs:// prefix of images")
    lab.add_argument("output", help="output directory (local or gs://)")

    ev = sub.add_parser("evaluate", help="mIoU of the labeller (or of existing label maps) on a benchmark")
    _add_labelling_flags(ev, index_required=False)
    ev.add_argument("--dataset", required=True, choices=DATASETS)
    ev.add_argument("root", help="dataset root directory")
    ev.add_argument("--predictions", default=None, help="score the label maps in this directory (no model run)")
    ev.add_argument("--output", default=None, help="where the labeller writes its maps (default: ROOT/../reme-<dataset>)")
    ev.add_argument("--ignore_index", type=int, default=None, help="folder datasets: label value that is no class")
    ev.add_argument("--json", dest="json_out", default=None, help="also write the results as JSON here")

    rep = sub.add_parser("report", help="static HTML report on a reference set's quality")
    rep.add_argument("--index", required=True, help="reference set directory (local or gs://)")
    rep.add_argument("out", help="output .html file")
    rep.add_argument("--per_label", type=int, default=4, help="thumbnails per gallery row (most and least typical)")
    rep.add_argument("--max_galleries", type=int, default=100, help="galleries for the largest N labels")
    return parser


def _request(args, class_names: list[str]):

    return LabelRequest(class_names=tuple(class_names), strategy=args.strategy, k=args.k, tau=args.tau,
                        threshold=args.threshold, ignore_value=ignore_value_for(len(class_names)),
                        fill_uncovered=not args.no_fill)


def _overrides(args) -> dict:
    return {k: getattr(args, k) for k in ("preset", "cache_dir", "masker", "min_area", "visual_kind", "visual_model",
                                          "text_kind", "text_model", "device", "visual_batch_size")}


def _settings(args) -> dict:
    return {"max_pixels": args.max_pixels, "mask_batch_size": args.mask_batch_size,
            "visual_batch_size": args.visual_batch_size, "label_batch_size": args.label_batch_size,
            "torch_threads": args.torch_threads}


def _validate_numbers(args, prog: str) -> None:
    if args.k < 1:
        _fail(prog, "--k must be >= 1")
    if args.tau <= 0:
        _fail(prog, "--tau must be > 0")
    for name in ("mask_batch_size", "visual_batch_size", "label_batch_size"):
        if getattr(args, name) < 1:
            _fail(prog, f"--{name} must be >= 1")


def cmd_label(args, beam_args: list[str]) -> int:

    _validate_numbers(args, "label")
    if args.classes is not None:
        names = parse_classes(text=args.classes)
    else:
        from pathlib import Path


        try:
            text = storage.read_bytes(args.classes_file).decode("utf-8") if "://" in args.classes_file else \
                Path(args.classes_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            _fail("label", f"cannot read --classes-file {args.classes_file}: {exc}")
        names = parse_classes(lines=text.splitlines())
    job = prepare_job(args.index, [args.input], args.output, _request(args, names), _overrides(args),
                      overlay=args.overlay, **_settings(args))
    summary = run_job(job, beam_args, progress=not args.no_progress)
    _print_label_summary(summary)
    return 0


def _print_label_summary(summary: dict) -> None:
    print(f"labelled {summary['labelled']} images, skipped {summary['skipped_done']} already done, "
          f"failed {summary['failed']} -> {summary['output']} ({summary['seconds']} s)")
    for row in summary["failures"][:20]:
        print(f"  failed: {row['uri']} [{row['stage']}] {row['error_type']}: {row['message']}")
    if summary["failed"] > 20:
        print(f"  ... {summary['failed'] - 20} more in {summary['output']}/failures.parquet")


def cmd_evaluate(args, beam_args: list[str]) -> int:

    _validate_numbers(args, "evaluate")
    if args.index is None and args.predictions is None:
        _fail("evaluate", "give --index DIR (run the labeller) or --predictions DIR (score existing label maps)")
    if args.predictions is None and args.threshold is None and args.dataset in ("voc21", "context60", "coco-object"):
        sys.stderr.write(f"reme evaluate: note: {args.dataset} has a background class, which only --threshold "
                         "assigns; without it no pixel is predicted as background\n")
    result = evaluate_dataset(
        args.dataset, args.root, index=args.index, predictions=args.predictions, output=args.output,
        ignore_index=args.ignore_index, request_factory=lambda names: _request(args, names),
        overrides=_overrides(args), settings=_settings(args), beam_args=beam_args, progress=not args.no_progress,
        overlay=args.overlay)
    print(format_table(result, title=f"{args.dataset}: {result['images']} images"))
    if args.json_out:

        storage.write_json(args.json_out, result)
    return 0


def cmd_report(args, beam_args: list[str]) -> int:

    if beam_args:
        _fail("report", f"unrecognized arguments: {' '.join(beam_args)}")
    out = write_report(args.index, args.out, per_label=args.per_label, max_galleries=args.max_galleries)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    handlers = {"label": cmd_label, "evaluate": cmd_evaluate, "report": cmd_report}
    try:
        code = handlers[args.command](args, rest)
    except (ClassListError, ReferenceSetError, LabelJobError, DatasetError, WeightsUnavailable,
            FileNotFoundError) as exc:
        _fail(args.command, str(exc))
    except Exception as exc:  # a worker's model error surfaces wrapped by Beam: show its one line
        text = str(exc)
        if "WeightsUnavailable" in text:
            line = next((ln for ln in text.splitlines() if "WeightsUnavailable" in ln), text)
            _fail(args.command, line.split("WeightsUnavailable:", 1)[-1])
        raise
    return code


def console_main() -> None:
    """The `reme` console script: run, then leave without native-thread teardown (see run_command)."""

    run_command(main)


if __name__ == "__main__":
    console_main()
