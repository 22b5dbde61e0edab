"""The GPU benchmark (issue 6 item 4): one command, under 8 minutes on one H100, JSON lines out.

    python -m bench.gpu [--out DIR] [--sam-checkpoint sam_vit_h.pth]        # on the GPU machine
    python -m bench.gpu --quick --device cpu                                 # dry run here (tiny models, ~30 s)

Three sections, each run in its own child process with its own time limit, so a crash, a CUDA error or a hang in
one costs that section only (its error becomes a JSON line) and the others still run:

  sam        SAM vit_h automatic masks on 8 skimage photos (resized so the long side is --image-side), ours
             (models.sam_fast.FastSamMaskGenerator) against segment-anything's SamAutomaticMaskGenerator, same
             model, same parameters, side by side per image in one run: reference fp32, ours fp32 (the reference's
             decoder batches), ours fp32 with the reference's exact decoder calls (share_image_projections=False),
             ours fp32 with 256-prompt decoder batches, ours bf16 autocast with 256-prompt batches (these three GPU
             only: the class ignores autocast on CPU), and ours' generate_batch over all images. fp32 outputs are checked
             for identity (bench.sam_masker.identical); bf16 for agreement (mean best-match mask IoU). Without
             --sam-checkpoint the weights are random (fixed seed: the machine has no internet), and the thresholds
             that keep masks are used (pred_iou_thresh=0, stability_score_thresh=0, as bench/sam_masker.py's
             "keep-all"): the JSON says so. With a checkpoint, SAM's default thresholds (0.88 / 0.95).
  embed      bench.embed_throughput: real-size random DINOv2-base (mask-pooled) and CLIP ViT-B/16 (crops),
             batch sizes 1..64, fp32 vs bf16.
  retrieval  per-image cost of labelling's retrieval, scoring and painting: a synthetic clustered reference set
             (bench.faiss_scale.Mixture, 200k unit vectors, d=768) indexed by the build step itself
             (refset.index.build_index: chosen index, recall-tuned), 2,000 random labels, 20 classes;
             50 images of 480x640 with 100 segments each, in batches of 8 as the labeller does
             (inference.retrieval.search, inference.scoring.neighbour_scores/decide, inference.paint.paint).
             Also exact top-k by a torch matrix product on the device, for comparison.

Lines are printed as they come and appended to <out>/gpu.jsonl (gpu_quick.jsonl with --quick). The first line
describes the machine; the last one says how long it took and how many sections failed. No CUDA device: a clear
message, CPU-sized figures (vit_b SAM on one 256-px photo, small batches, 100k references), exit 0.

The GPU image lacks segment-anything and faiss-cpu; carry them as wheels (see the device README), e.g. here:
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl segment-anything==1.0 faiss-cpu==1.15.1
(after `echo /.whl/ >> .git/info/exclude`), then one device call with carry [".whl"] and timeout_s 540:
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \\
        && export PYTHONPATH=/tmp/site; PYTHONUNBUFFERED=1 python3 -m bench.gpu --out $OUT
The env line lists which needed modules are missing and the package versions, so a gap shows before any figure;
without faiss the retrieval section still times exact retrieval on the device.
"""

from __future__ import annotations

import os

# faiss and torch share the cores: OpenMP threads that spin while idle slow both down (see bench/faiss_scale.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from bench.child import run_json_child  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECTIONS = ("sam", "embed", "retrieval")
# Share of the total budget each section may use (the SAM comparison is the one that matters most).
SHARES = {"sam": 0.47, "embed": 0.33, "retrieval": 0.20}
NEEDED_MODULES = ("torch", "torchvision", "segment_anything", "faiss", "transformers", "pyarrow", "fsspec", "scipy",
                  "skimage", "tokenizers")


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Settings


def sizes(args) -> dict:
    """Problem sizes for this run: full (GPU), CPU fallback, or --quick (dry run); flags override each."""
    if args.quick:
        base = dict(sam_model="tiny", sam_images=2, image_side=64, points_per_side=2, refs=5000, label_images=4,
                    segments=10, image_hw=(48, 64), embed_batches="1,2", embed_image_size=56, embed_segments=4)
    elif args.device == "cuda":
        base = dict(sam_model="vit_h", sam_images=8, image_side=640, points_per_side=32, refs=200_000,
                    label_images=50, segments=100, image_hw=(480, 640), embed_batches="1,2,4,8,16,32,64",
                    embed_image_size=448, embed_segments=16)
    else:  # CPU figures where no GPU is present: same kinds of numbers, sizes a few cores finish
        base = dict(sam_model="vit_b", sam_images=1, image_side=256, points_per_side=8, refs=100_000,
                    label_images=16, segments=100, image_hw=(480, 640), embed_batches="1,4",
                    embed_image_size=224, embed_segments=8)
    for key in ("sam_model", "sam_images", "image_side", "points_per_side", "refs", "label_images", "segments"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if args.embed_batch_sizes:
        base["embed_batches"] = args.embed_batch_sizes
    return base


def resolve_device(requested: str) -> tuple[str, str | None]:
    """(device to use, note) — falls back to CPU with a note when CUDA is asked for but absent."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cpu":
        return "cpu", None
    if has_cuda:
        return "cuda", None
    note = "no CUDA device found: running CPU-sized figures instead (rerun on a GPU machine for the GPU figures)"
    return "cpu", note


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("torch", "torchvision", "transformers", "segment-anything", "faiss-cpu", "numpy", "scikit-image"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def env_row(args, device: str, note: str | None) -> dict:
    import torch

    row = {"bench": "gpu", "section": "env", "device": device, "quick": bool(args.quick),
           "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "cpu_count": os.cpu_count(), "budget_s": args.budget_s,
           "missing_modules": [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None],
           "versions": _versions()}
    if device == "cuda":
        row["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    if note:
        row["note"] = note
    return row


# ---------------------------------------------------------------------------------------------------------------
# Section: SAM, ours vs reference


# Photos scikit-image ships inside its package (no download): the GPU machine has no internet.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "coins")


def _resized_photos(n: int, side: int) -> list:
    """n skimage sample photos, RGB uint8, resized so the longer side is `side` (one that fails to load is skipped,
    and the list repeats if fewer than n load)."""
    import numpy as np
    import skimage.data
    from skimage.transform import resize

    loaded = []
    for name in PHOTOS:
        try:
            img = np.asarray(getattr(skimage.data, name)())
        except Exception as e:  # a missing or download-only sample must not cost the section
            print(f"bench.gpu: skipping skimage.data.{name}: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        scale = side / max(img.shape[:2])
        hw = (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale)))
        img = resize(img, hw, anti_aliasing=scale < 1, preserve_range=True)
        loaded.append((name, np.ascontiguousarray((img + 0.5).clip(0, 255).astype(np.uint8))))
        if len(loaded) == n:
            break
    if not loaded:
        raise RuntimeError("no skimage sample photo could be loaded")
    return [loaded[i % len(loaded)] for i in range(n)]


def mask_agreement(ours: list[dict], ref: list[dict], device: str) -> dict:
    """How close two mask sets are: for each reference mask, the best IoU among ours (mean, and share >= 0.9)."""
    import numpy as np
    import torch

    if not ref or not ours:
        return {"masks_ours": len(ours), "masks_reference": len(ref), "mean_best_iou": float(len(ref) == len(ours))}
    dtype = torch.float16 if device == "cuda" else torch.float32  # 0/1 products; fp16 rounds counts by < 0.1%
    a = torch.as_tensor(np.stack([r["segmentation"] for r in ref]).reshape(len(ref), -1), device=device).to(dtype)
    area_a = torch.tensor([r["area"] for r in ref], device=device, dtype=torch.float32)[:, None]
    best = []
    for start in range(0, len(ours), 256):
        chunk = ours[start:start + 256]
        b = torch.as_tensor(np.stack([o["segmentation"] for o in chunk]).reshape(-1, a.shape[1]), device=device)
        inter = (a @ b.to(dtype).T).float()
        area_b = torch.tensor([o["area"] for o in chunk], device=device, dtype=torch.float32)[None]
        union = area_a + area_b - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), 1.0)  # two empty masks agree
        best.append(iou.max(1).values)
    best = torch.stack(best).max(0).values
    return {"masks_ours": len(ours), "masks_reference": len(ref), "mean_best_iou": round(float(best.mean()), 4),
            "share_iou_ge_0.9": round(float((best >= 0.9).float().mean()), 4)}


def section_sam(args, s: dict, deadline: float) -> None:
    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from bench.sam_masker import build_model, identical, timed
    from models.sam_fast import FastSamMaskGenerator

    device = args.device
    t0 = time.perf_counter()
    model = build_model(s["sam_model"], args.sam_checkpoint, device)
    build_s = time.perf_counter() - t0
    photos = _resized_photos(s["sam_images"], s["image_side"])
    random_weights = args.sam_checkpoint is None
    thresholds = (dict(pred_iou_thresh=0.0, stability_score_thresh=0.0) if random_weights
                  else dict(pred_iou_thresh=0.88, stability_score_thresh=0.95))
    params = dict(points_per_side=s["points_per_side"], points_per_batch=64, **thresholds)
    label = f"{s['sam_model']}{'-random' if random_weights else ''}"
    common = {"bench": "gpu.sam", "model": label, "device": device, "points_per_side": s["points_per_side"],
              "points_per_batch": 64, **thresholds,
              "thresholds": "keep-all (random weights: SAM's defaults would drop every mask)" if random_weights
              else "default"}

    variants = {"reference": SamAutomaticMaskGenerator(model, **params),
                "ours_fp32": FastSamMaskGenerator(model, **params)}
    if device == "cuda" or args.all_variants:
        # the reference's exact decoder calls (no shared projections, its batches): identity that does not rest on
        # GPU kernels giving the same last bit for differently shaped products
        variants["ours_fp32_exact"] = FastSamMaskGenerator(model, **params, share_image_projections=False)
        variants["ours_fp32_dbs256"] = FastSamMaskGenerator(model, **params, decoder_batch_size=256)
        variants["ours_bf16_dbs256"] = FastSamMaskGenerator(model, **params, decoder_batch_size=256,
                                                            autocast_dtype="bfloat16")
    emit({**common, "kind": "setup", "model_build_s": round(build_s, 2), "variants": list(variants),
          "images": [f"{n} {im.shape[0]}x{im.shape[1]}" for n, im in photos],
          "decoder_batch_sizes": {k: getattr(v, "decoder_batch_size", params["points_per_batch"])
                                  for k, v in variants.items()},
          "note": None if device == "cuda" else "CPU: FastSamMaskGenerator ignores bf16 autocast (fp32 numerics)"
          if args.all_variants else "CPU: the 256-prompt and bf16 variants are GPU-only (--all-variants runs them)"})

    import numpy as np

    with torch.no_grad():  # first-call allocations, kernel selection and CUDA init out of the timings
        warm = np.zeros((64, 64, 3), np.uint8)
        for gen in variants.values():
            type(gen)(model, points_per_side=2, **({"autocast_dtype": "bfloat16"} if getattr(
                gen, "autocast_dtype", None) is not None else {})).generate(warm)

    totals = {k: 0.0 for k in variants}
    same = {k: 0 for k in variants if k != "reference"}
    ious = {k: [] for k in variants if k != "reference"}
    done, per_image_s = [], 0.0
    for name, img in photos:
        remaining = deadline - time.perf_counter()
        if done and remaining < 1.5 * per_image_s + 15:
            emit({**common, "kind": "truncated", "images_done": len(done), "reason":
                  f"section time limit: {remaining:.0f} s left, one image takes ~{per_image_s:.0f} s"})
            break
        t_img = time.perf_counter()
        row = {**common, "kind": "image", "image": f"{name} {img.shape[0]}x{img.shape[1]}"}
        ref, t_ref = timed(lambda im=img: variants["reference"].generate(im), device)
        totals["reference"] += t_ref
        row["masks"] = len(ref)
        row["reference_s"] = round(t_ref, 3)
        for key, gen in variants.items():
            if key == "reference":
                continue
            out, t = timed(lambda g=gen, im=img: g.generate(im), device)
            totals[key] += t
            row[f"{key}_s"] = round(t, 3)
            row[f"{key}_speedup"] = round(t_ref / t, 2)
            # progress line: if the section is killed mid-image, what finished is still on record
            emit({"bench": "gpu.sam", "kind": "variant", "image": row["image"], "variant": key,
                  "reference_s": round(t_ref, 3), "seconds": round(t, 3), "masks_reference": len(ref),
                  "masks": len(out)})
            if "bf16" in key:
                agree = mask_agreement(out, ref, device)
                ious[key].append(agree["mean_best_iou"])
                row[f"{key}_agreement"] = agree
            else:
                ok = identical(out, ref)
                same[key] += ok
                row[f"{key}_identical"] = ok
                if not ok:  # how far off (e.g. a GPU kernel's last bit flipping a pixel whose logit is ~0)
                    row[f"{key}_agreement"] = mask_agreement(out, ref, device)
            del out
        del ref
        emit(row)
        done.append(img)
        per_image_s = max(per_image_s, time.perf_counter() - t_img)
        if device == "cuda":
            torch.cuda.empty_cache()

    if not done:
        raise RuntimeError("no image finished within the section's time limit")
    summary = {**common, "kind": "summary", "images": len(done), "reference_s": round(totals["reference"], 3)}
    for key in same:
        summary[f"{key}_s"] = round(totals[key], 3)
        summary[f"{key}_speedup"] = round(totals["reference"] / totals[key], 2)
        if "bf16" in key:
            summary[f"{key}_mean_best_iou"] = round(sum(ious[key]) / len(ious[key]), 4)
        else:
            summary[f"{key}_identical_images"] = f"{same[key]}/{len(done)}"
    if device == "cuda":
        summary["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    emit(summary)

    # Image embeddings batched across images: generate_batch over every finished image, fastest fp32 variant.
    key = "ours_fp32_dbs256" if "ours_fp32_dbs256" in variants else "ours_fp32"
    if len(done) > 1 and deadline - time.perf_counter() > totals[key] * 1.5 + 10:
        gen = variants[key]
        gen.encoder_batch_size = min(8, len(done))
        _, t_batch = timed(lambda: gen.generate_batch(done), device)
        emit({**common, "kind": "generate_batch", "variant": key, "images": len(done),
              "encoder_batch_size": gen.encoder_batch_size, "seconds": round(t_batch, 3),
              "per_image_generate_s": round(totals[key], 3), "speedup_vs_reference": round(totals["reference"] / t_batch, 2),
              "speedup_vs_per_image": round(totals[key] / t_batch, 2)})


# ---------------------------------------------------------------------------------------------------------------
# Section: encoder throughput


def section_embed(args, s: dict, deadline: float) -> None:
    from bench import embed_throughput

    argv = ["--device", args.device, "--batch-sizes", s["embed_batches"], "--image-size", str(s["embed_image_size"]),
            "--segments", str(s["embed_segments"]),
            "--precisions", "fp32,bf16" if args.device == "cuda" else "fp32"]
    if args.quick:
        from models.config import ModelsConfig
        from models.presets import resolve_models

        tiny = resolve_models(ModelsConfig(preset="tiny-random"))
        argv += ["--visual-model", tiny.visual.model_id, "--clip-model", tiny.clip.model_id, "--repeats", "1"]
    if args.device == "cpu":
        argv += ["--threads", str(args.threads or 1)]
    emit({"bench": "gpu.embed", "kind": "setup", "device": args.device, "argv": argv,
          "models": "tiny-random preset" if args.quick else "real-size random DINOv2-base and CLIP ViT-B/16"})
    embed_throughput.main(argv)  # prints its own JSON lines


# ---------------------------------------------------------------------------------------------------------------
# Section: retrieval, scoring, painting per image


def _reference_set(n_refs: int, dim: int, k: int) -> tuple:
    """(faiss index or None, stored vectors or None, query sampler, setup facts).

    With faiss: bench.faiss_scale's clustered mixture written as shards and indexed by the build step itself.
    Without faiss (the GPU image lacks it unless carried): a numpy mixture and no index; the section then times
    exact retrieval on the device only, and says so.
    """
    import numpy as np

    try:
        import faiss  # noqa: F401
    except ImportError as e:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((max(10, n_refs // 70), dim)).astype(np.float32)

        def sample(n, seed):
            r = np.random.default_rng(seed)
            x = centres[r.integers(0, len(centres), n)] + 0.5 * r.standard_normal((n, dim), dtype=np.float32)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        return None, sample(n_refs, 1), sample, {"index_key": None, "faiss_error": f"{type(e).__name__}: {e}"}

    from bench.faiss_scale import Mixture, read_all, write_data
    from refset.index import build_index, load_index

    mixture = Mixture(dim=dim, clusters=max(10, min(3000, n_refs // 70)), intrinsic_dim=24, spread=0.6, noise=0.25,
                      seed=0)
    with tempfile.TemporaryDirectory(prefix="reme-bench-gpu-") as tmp:
        ref = Path(tmp) / "reference"
        t0 = time.perf_counter()
        write_data(ref, mixture, n_refs, shard_rows=100_000, dtype="float32", seed=0)
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        info = build_index(str(ref), memory_budget="2GB", recall_target=0.95, k=k,
                           held_out_queries=max(10, min(1000, n_refs // 10)), seed=0)
        build_s = time.perf_counter() - t0
        index, _ = load_index(str(ref))
        stored = read_all(ref, dim, n_refs)
    facts = {"index_key": info.get("index_key"), "search_params": info.get("search_params"),
             "build_recall_at_k": info.get("recall_at_k"), "write_s": round(write_s, 2),
             "index_build_s": round(build_s, 2), "faiss_threads": faiss.omp_get_max_threads()}
    return index, stored, mixture.sample, facts


def section_retrieval(args, s: dict, deadline: float) -> None:
    import numpy as np
    import torch

    from bench.paint import random_masks
    from inference import paint, retrieval, scoring

    dim, n_labels, n_classes, k, tau, batch = 768, 2000, 20, 16, 0.1, 8
    n_refs, n_images, n_segments = s["refs"], s["label_images"], s["segments"]
    h, w = s["image_hw"]
    index, stored, sample, facts = _reference_set(n_refs, dim, k)

    rng = np.random.default_rng(1)
    position_labels = rng.integers(0, n_labels, n_refs)
    table = scoring.text_table(rng.standard_normal((n_labels, 512)), rng.standard_normal((n_classes, 512)))
    queries = sample(n_images * n_segments, 10_000)
    masks = [random_masks(rng, n_segments, h, w)[0] for _ in range(min(n_images, 8))]  # reused across images
    emit({"bench": "gpu.retrieval", "kind": "setup", "device": args.device, "refs": n_refs, "dim": dim, **facts,
          "labels": n_labels, "classes": n_classes, "k": k, "tau": tau, "images": n_images,
          "segments_per_image": n_segments, "image": f"{h}x{w}", "batch_images": batch})

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    exact_refs = torch.as_tensor(stored, device=dev)
    pos_labels_t = torch.as_tensor(position_labels, device=dev)

    def exact_search(q: np.ndarray) -> retrieval.Neighbours:
        """Top-k by one matrix product on the device (what retrieval.search returns, exact)."""
        sims, pos = torch.topk(torch.as_tensor(q, device=dev) @ exact_refs.T, k, dim=1)
        labels = pos_labels_t[pos]
        return retrieval.Neighbours(sims.float().cpu().numpy(), pos.cpu().numpy(), labels.cpu().numpy())

    backends = []
    if index is not None:
        backends.append(("faiss", lambda q: retrieval.search(index, q, k, position_labels)))
    if index is None or dev.type == "cuda" or n_refs * n_images * n_segments <= 10**9:  # too slow on a CPU beyond
        backends.append((f"torch_exact_{dev.type}", exact_search))

    per = lambda x: round(1000 * x / n_images, 3)  # noqa: E731
    for name, search in backends:
        search(queries[:n_segments])  # warm-up (CUDA kernels, faiss thread pool)
        sync()
        t_search = t_score = t_decide = t_paint = 0.0
        for start in range(0, n_images, batch):
            stop = min(start + batch, n_images)
            q = queries[start * n_segments:stop * n_segments]
            t = time.perf_counter()
            hits = search(q)
            sync()
            t_search += time.perf_counter() - t
            t = time.perf_counter()
            scores = scoring.neighbour_scores(hits.sims, hits.label_ids, table, tau)
            t_score += time.perf_counter() - t
            t = time.perf_counter()
            decision = scoring.decide(scores)
            t_decide += time.perf_counter() - t
            t = time.perf_counter()
            for i in range(stop - start):
                sl = slice(i * n_segments, (i + 1) * n_segments)
                paint.paint(masks[(start + i) % len(masks)], decision.class_ids[sl], decision.confidence[sl])
            t_paint += time.perf_counter() - t
        emit({"bench": "gpu.retrieval", "kind": "per_image", "device": args.device, "retrieval": name,
              "index_key": facts["index_key"] if name == "faiss" else "exact", "images": n_images,
              "retrieval_ms": per(t_search), "scoring_ms": per(t_score), "decide_ms": per(t_decide),
              "painting_ms": per(t_paint), "total_ms": per(t_search + t_score + t_decide + t_paint),
              "note": "scoring and painting are numpy on the CPU; faiss is faiss-cpu"})


# ---------------------------------------------------------------------------------------------------------------
# Orchestration


def run_child(args, section: str, timeout: float, sink) -> dict:
    """Run one section in a child process; forward its JSON lines; return a status row."""
    cmd = [sys.executable, "-m", "bench.gpu", "--section", section, "--section-budget", f"{timeout:.0f}"]
    cmd += child_argv(args)
    child = run_json_child(cmd, timeout, sink, tag={"section": section})
    status = {"bench": "gpu", "section": section, "kind": "status", "seconds": round(child.seconds, 1),
              "lines": child.lines, "rc": child.rc}
    if child.rc != 0:
        status["error"] = (f"killed at the section's {timeout:.0f} s limit" if child.timed_out
                           else f"exited with status {child.rc}")
        status["stderr_tail"] = child.stderr_tail
    return status


def child_main(args) -> int:
    """One section, in this process; errors become a JSON line and a non-zero exit."""
    deadline = time.perf_counter() + args.section_budget - 5
    if args.threads or args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads or 1)
    fn = {"sam": section_sam, "embed": section_embed, "retrieval": section_retrieval}[args.section]
    try:
        fn(args, sizes(args), deadline)
    except Exception as e:  # the JSON line is the report; the traceback goes to stderr for the status row
        traceback.print_exc()
        emit({"bench": f"gpu.{args.section}", "kind": "error", "error": f"{type(e).__name__}: {e}"[:1000]})
        return 1
    return 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(RESULTS), help="directory for gpu.jsonl (default bench/results)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="dry run: tiny models, tiny sizes (~30 s on a CPU)")
    ap.add_argument("--sam-checkpoint", default=None, help="SAM state dict for --sam-model (random weights if absent)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="total time limit in seconds (default 450 on GPU: the 8-minute target with margin)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: 1 on CPU, torch default on GPU)")
    ap.add_argument("--all-variants", action="store_true",
                    help="run the GPU-only SAM variants on a CPU too (exercises their code; bf16 is fp32 there)")
    ap.add_argument("--sam-model", default=None, choices=["tiny", "vit_b", "vit_l", "vit_h"])
    ap.add_argument("--sam-images", type=int, default=None)
    ap.add_argument("--image-side", type=int, default=None, help="SAM photos: longer side in pixels")
    ap.add_argument("--points-per-side", type=int, default=None)
    ap.add_argument("--embed-batch-sizes", default=None)
    ap.add_argument("--refs", type=int, default=None, help="reference vectors in the retrieval section")
    ap.add_argument("--label-images", type=int, default=None, help="images in the retrieval section")
    ap.add_argument("--segments", type=int, default=None, help="segments per image in the retrieval section")
    ap.add_argument("--section", default=None, choices=SECTIONS, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--section-budget", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sam_checkpoint and "://" not in args.sam_checkpoint:
        args.sam_checkpoint = str(Path(args.sam_checkpoint).expanduser().resolve())  # children run in the repo root
    return args


def child_argv(args) -> list[str]:
    """The options a section's child process gets (the device already resolved)."""
    argv = ["--device", args.device]
    for flag in ("quick", "all_variants"):
        if getattr(args, flag):
            argv.append("--" + flag.replace("_", "-"))
    for dest in ("sam_checkpoint", "threads", "sam_model", "sam_images", "image_side", "points_per_side",
                 "embed_batch_sizes", "refs", "label_images", "segments"):
        value = getattr(args, dest)
        if value is not None:
            argv += ["--" + dest.replace("_", "-"), str(value)]
    return argv


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.section:
        return child_main(args)

    start = time.perf_counter()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / ("gpu_quick.jsonl" if args.quick else "gpu.jsonl")
    sink_file = open(out_path, "w", buffering=1)  # line-buffered: a killed run keeps what it printed

    def sink(row: dict) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        sink_file.write(line + "\n")

    errors = 0
    try:
        try:
            device, note = resolve_device(args.device)
        except Exception as e:  # torch missing or broken: say so and stop cleanly
            sink({"bench": "gpu", "section": "env", "error": f"{type(e).__name__}: {e}"})
            return 0
        if note:
            print(f"bench.gpu: {note}", file=sys.stderr, flush=True)
        if args.budget_s is None:
            args.budget_s = 450.0 if device == "cuda" and not args.quick else 600.0
        args.device = device
        sink(env_row(args, device, note))
        chosen = [x.strip() for x in args.sections.split(",") if x.strip()]
        unknown = sorted(set(chosen) - set(SECTIONS))
        if unknown:
            sink({"bench": "gpu", "section": "env", "error": f"unknown sections {unknown}; choose from {SECTIONS}"})
            chosen = [c for c in chosen if c in SECTIONS]
        shares = sum(SHARES[c] for c in chosen) or 1.0
        for i, section in enumerate(chosen):
            remaining = args.budget_s - (time.perf_counter() - start)
            later = sum(SHARES[c] for c in chosen[i + 1:]) / shares
            # this section's share, plus whatever earlier sections left unused, minus what later ones are owed
            limit = max(10.0, remaining - later * args.budget_s)
            try:
                status = run_child(args, section, limit, sink)
            except Exception as e:
                status = {"bench": "gpu", "section": section, "kind": "status", "error": f"{type(e).__name__}: {e}"}
            errors += "error" in status
            sink(status)
        sink({"bench": "gpu", "section": "done", "device": device, "seconds": round(time.perf_counter() - start, 1),
              "sections": chosen, "failed_sections": errors, "out": str(out_path)})
    finally:
        sink_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
