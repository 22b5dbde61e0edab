"""Pipeline overhead: the Beam job (DirectRunner) against a plain Python loop doing the same stages on the same
images with the same models, measured side by side in one run; and multi_processing with 2 workers against 1.

    python bench/pipeline_overhead.py [--images 24] [--max_side 256]

Prints JSON lines. Models: the tiny-random preset (offline), Felzenszwalb masker, captions source, so model
compute is small and the ratio is an upper bound on what Beam adds (with real models the same absolute overhead
is a smaller fraction).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_images(directory: Path, count: int) -> Path:
    """`count` distinct images cut from the scikit-image samples, plus a captions.jsonl."""
    import numpy as np
    from PIL import Image

    from pipeline.samples import SAMPLES, write_samples

    samples = write_samples(directory / "src")
    captions = {json.loads(line)["image"]: json.loads(line)["caption"]
                for line in (directory / "src" / "captions.jsonl").read_text().splitlines()}
    (directory / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        source = samples[i % len(samples)]
        image = np.asarray(Image.open(source).convert("RGB"))
        h, w = image.shape[:2]
        k = i // len(samples)
        crop = image[(k * 17) % (h // 4): h - (k * 11) % (h // 4), (k * 13) % (w // 4): w - (k * 7) % (w // 4)]
        name = f"{i:04d}.png"
        Image.fromarray(np.ascontiguousarray(crop[:, ::-1] if k % 2 else crop)).save(directory / "images" / name)
        lines.append(json.dumps({"image": name, "caption": captions[source.name]}))
    assert set(SAMPLES)  # the captions come from pipeline.samples
    (directory / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def job_argv(data: Path, output: Path, cache: str, max_side: int) -> list[str]:
    return ["--input", str(data / "images"), "--captions", str(data / "captions.jsonl"), "--output", str(output),
            "--preset", "tiny-random", "--cache_dir", cache, "--max_side", str(max_side), "--min_label_count", "2",
            "--skip_index", "--overwrite", "--torch_threads", "1"]


def plain_loop(data: Path, output: Path, cache: str, max_side: int) -> dict:
    """The same steps as the job, in one process, no Beam: Read, Mask, Label, Pair, Embed, Dedup, Filter, Write."""

    from models.images import decode_image
    from models.nlp import labels_from_captions
    from models.presets import resolve_models
    from pipeline.options import parse
    from refset import schema, staging, storage
    from transforms.captions import caption_key, read_captions, union_labels
    from transforms.embed import VisualModelHandler
    from transforms.group_filter import dedup_rows, filter_pairs
    from transforms.images import list_inputs
    from transforms.masks import MaskerModelHandler
    from transforms.pairing import PairingModelHandler
    from transforms.records import staging_rows

    config, _ = parse(job_argv(data, output, cache, max_side))
    models = config.models
    timings: dict[str, float] = {}

    def timed(stage, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
        return out

    resolve_models(models)
    masker_h, visual_h, pairing_h = (MaskerModelHandler(models), VisualModelHandler(models, max_batch_size=8),
                                     PairingModelHandler(models, max_batch_size=8))
    masker = timed("load_models", masker_h.load_model)
    visual = timed("load_models", visual_h.load_model)
    pairing = timed("load_models", pairing_h.load_model)

    captions = read_captions(config.captions)
    uris = list_inputs(list(config.inputs))
    items = []
    for uri in uris:
        image = timed("decode", lambda u: decode_image(storage.read_bytes(u), config.read.max_side), uri)
        item = {"uri": uri, "shard": 0, "failure": None, "image": image, "height": image.shape[0],
                "width": image.shape[1]}
        (item,) = timed("mask", masker_h.run_inference, [item], masker)
        item["labels"] = union_labels(labels_from_captions(captions.get(caption_key(uri), [])))
        items.append(item)
    embedded = []
    for start in range(0, len(items), 8):
        batch = timed("clip_pairing", pairing_h.run_inference, items[start:start + 8], pairing)
        embedded += timed("visual", visual_h.run_inference, batch, visual)
    results = [timed("stage_rows", staging_rows, item, False) for item in embedded]
    pairs = [row for r in results for row in r["pairs"]]
    t0 = time.perf_counter()
    pairs, _ = dedup_rows(pairs)
    group_filter = config.group_filter_for(len(uris))
    decided = filter_pairs(pairs, group_filter)
    kept = [{**r, "quality": float(decided[(r["segment_id"], r["label"])][0]), "label_id": 0} for r in pairs
            if not decided[(r["segment_id"], r["label"])][1]]
    timings["group_filter"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if kept:
        staging.write_rows(storage.join(str(output), schema.SEGMENTS_DIR, schema.shard_name(0)), kept,
                           schema.segments_schema(len(kept[0]["visual_embedding"]), "float16"))
    timings["write"] = time.perf_counter() - t0
    return {"images": len(uris), "pairs": len(pairs), "kept": len(kept),
            "stage_seconds": {k: round(v, 3) for k, v in timings.items()}}


def run_job_subprocess(argv: list[str], extra: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.build_index", *argv, *extra], cwd=REPO, env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--skip_multiprocessing", action="store_true")
    parser.add_argument("--max_side", type=int, default=256)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_images(tmp / "data", args.images)
        cache = str(tmp / "cache")
        from models.config import ModelsConfig
        from models.presets import resolve_models

        resolve_models(ModelsConfig(preset="tiny-random", cache_dir=cache))  # materialise once, outside timings
        # Import everything both sides use before timing either (transformers/beam imports take seconds).
        import apache_beam.runners.direct.direct_runner  # noqa: F401

        import models.clip  # noqa: E401,F401
        from pipeline import build_index

        t0 = time.perf_counter()
        loop = plain_loop(data, tmp / "loop", cache, args.max_side)
        loop_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        manifest = build_index.run(job_argv(data, tmp / "job", cache, args.max_side), save_main_session=False)
        job_s = time.perf_counter() - t0
        print(json.dumps({
            "bench": "pipeline_overhead", "runner": "DirectRunner in_memory (same process)", "images": loop["images"],
            "max_side": args.max_side, "models": "tiny-random, felzenszwalb, captions",
            "plain_loop_s": round(loop_s, 2), "beam_job_s": round(job_s, 2),
            "beam_over_loop": round(job_s / loop_s, 2), "loop_stage_seconds": loop["stage_seconds"],
            "pairs_loop": loop["pairs"], "pairs_job": manifest["run_metrics"].get("pairs"),
            "note": "job includes staging + phase B outputs (dropped/failures/labels) + manifest; index skipped",
        }), flush=True)

        if args.skip_multiprocessing:
            return
        argv = job_argv(data, tmp / "mp", cache, args.max_side)
        times = {}
        for workers in (1, 2):
            times[workers] = run_job_subprocess(
                argv, ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
        print(json.dumps({
            "bench": "pipeline_multi_processing", "images": loop["images"], "cpu_cores": os.cpu_count(),
            "workers_1_s": round(times[1], 2), "workers_2_s": round(times[2], 2),
            "speedup_2_over_1": round(times[1] / times[2], 2),
            "note": "wall time of `python -m pipeline.build_index` incl. process start and model loading per worker",
        }), flush=True)


if __name__ == "__main__":
    main()
