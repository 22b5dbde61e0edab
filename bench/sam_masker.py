"""SAM automatic mask generation: ours (models.sam_fast.FastSamMaskGenerator) vs segment_anything's reference.

Same model, same images, same parameters, measured side by side in one run (reference then ours, per image).
Each output is checked for identity (same number of masks, bit-identical masks in the same order, equal boxes).
Models: a tiny SAM (segment-anything's own builder, embed dim 32, depth 2) or a real-sized vit_b/vit_l/vit_h,
with random weights (fixed seed) unless --checkpoint is given. The mask decoder is the same size for every
model, so at the same points_per_side the decoder cost is the same; the encoder grows with the model.

Prints one JSON line per image and one summary line per threshold setting:
{"bench": "sam_masker", "model": ..., "device": ..., "thresholds": "keep-all"|"default", "points_per_side": ...,
 "images": N, "reference_s": ..., "ours_s": ..., "speedup": reference_s / ours_s, "identical": true, ...}

"keep-all" (pred_iou_thresh=0, stability_score_thresh=0) makes every candidate go through upscaling and
stability scoring: the least favourable case for ours. "default" (0.88 / 0.95) is what users run; with random
weights the predicted IoUs are ~0.3 so every candidate fails the IoU filter, which ours applies before upscaling
— that figure overstates what real weights gain and is labelled as such.

    python bench/sam_masker.py --model tiny --points-per-side 16 --images 2
    python bench/sam_masker.py --model vit_b --points-per-side 16 --images 1
    python bench/sam_masker.py --model vit_h --checkpoint sam_vit_h.pth --device cuda --images 8 \\
        --points-per-side 32 --decoder-batch-size 256 [--autocast bfloat16]

`--batching` measures batching instead, side by side in one run (each measurement repeated, alternating order):
SAM images/s through our generator one image per call (`generate`) vs the batched path the Mask step uses
(`generate_batch`: images in batched image-encoder passes), with identical outputs checked; and CLIP text labels/s
(label x 8 prompt templates) embedded the old way (one label and one template per forward pass), one label per
call (its 8 templates in one pass: what the Pair step does, so each label's vector is bit-stable) and all labels x
templates in batched calls (labels.parquet, class names). On CPU the tiny SAM encoder makes the encoder a small share
of the work, so the SAM ratio there says little about a GPU with vit_h; the text tower is CLIP B/16's real size.

    python -m bench.sam_masker --batching --model tiny --images 8 --points-per-side 8 --max-side 256 \\
        | tee -a bench/results/batching.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import skimage.data
import torch

# Photos that ship inside scikit-image (no download); "cat" would repeat "chelsea".
IMAGES = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "camera", "retina"]


def build_model(name: str, checkpoint: str | None, device: str):
    from segment_anything import sam_model_registry
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(0)
    if name == "tiny":
        model = _build_sam(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                           encoder_global_attn_indexes=[1], checkpoint=None)
        if checkpoint:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    else:
        model = sam_model_registry[name](checkpoint=None)
        if checkpoint:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def load_images(n: int, max_side: int | None) -> list[np.ndarray]:
    out = []
    for name in IMAGES[:n]:
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = np.ascontiguousarray(img[..., :3])
        if max_side and max(img.shape[:2]) > max_side:
            step = int(np.ceil(max(img.shape[:2]) / max_side))
            img = np.ascontiguousarray(img[::step, ::step])
        out.append(img)
    return out


def identical(ours: list[dict], ref: list[dict]) -> bool:
    if len(ours) != len(ref):
        return False
    return all(
        np.array_equal(a["segmentation"], b["segmentation"]) and a["bbox"] == b["bbox"] and a["area"] == b["area"]
        and abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-4
        and abs(a["stability_score"] - b["stability_score"]) < 1e-4
        for a, b in zip(ours, ref, strict=True)
    )


def timed(fn, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def decoder_only(model, image: np.ndarray, args, label: str, device_name: str) -> dict:
    """The mask decoder alone, reference batches (SamPredictor.predict_torch's decoder call) vs ours.

    Same image embedding and prompts; the upscaling and RLE work are left out, so this part of the speed-up
    does not depend on what the (random) masks look like. Logits must be bit-identical.
    """
    from segment_anything import SamPredictor
    from segment_anything.utils.amg import build_point_grid

    from models.sam_fast import FastSamMaskGenerator

    predictor = SamPredictor(model)
    predictor.set_image(image)
    points = build_point_grid(args.points_per_side) * np.array(image.shape[:2])[None, ::-1]
    image_pe = model.prompt_encoder.get_dense_pe()
    ours_gen = FastSamMaskGenerator(model, points_per_side=args.points_per_side,
                                    points_per_batch=args.points_per_batch,
                                    decoder_batch_size=args.decoder_batch_size)

    def reference(points=points):
        out = []
        for start in range(0, len(points), args.points_per_batch):
            coords = predictor.transform.apply_coords(points[start : start + args.points_per_batch], image.shape[:2])
            in_points = torch.as_tensor(coords, device=predictor.device)[:, None, :]
            labels = torch.ones(in_points.shape[0], 1, dtype=torch.int, device=predictor.device)
            sparse, dense = model.prompt_encoder(points=(in_points, labels), boxes=None, masks=None)
            out.append(model.mask_decoder(image_embeddings=predictor.features, image_pe=image_pe,
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=True)[0])
        return torch.cat(out)

    def ours(points=points):
        out, shared = [], None
        for _, pieces in ours_gen._decoder_plan(len(points)):
            for a, b in pieces:
                low_res, _, shared = ours_gen._decode(predictor.features, image_pe, points[a:b], image.shape[:2],
                                                      shared)
                out.append(low_res)
        return torch.cat(out)

    with torch.no_grad():
        reference(points[:4]), ours(points[:4])  # warm-up: first-call allocations out of the timings
        ref_logits, t_ref = timed(reference, args.device)
        our_logits, t_ours = timed(ours, args.device)
    return {
        "bench": "sam_masker", "kind": "decoder", "model": label, "device": device_name, "prompts": len(points),
        "points_per_batch": args.points_per_batch, "decoder_batch_size": ours_gen.decoder_batch_size,
        "threads": args.threads, "reference_s": round(t_ref, 3), "ours_s": round(t_ours, 3),
        "speedup": round(t_ref / t_ours, 2), "logits_bit_identical": bool(torch.equal(ref_logits, our_logits)),
        "max_abs_diff": float((ref_logits - our_logits).abs().max()),
    }


def sam_batching(model, images: list[np.ndarray], args, label: str, device_name: str) -> dict:
    """images/s of FastSamMaskGenerator.generate (one image per call) vs generate_batch (the Mask step's call)."""
    from models.sam_fast import FastSamMaskGenerator

    gen = FastSamMaskGenerator(model, points_per_side=args.points_per_side, points_per_batch=args.points_per_batch,
                               pred_iou_thresh=0.0, stability_score_thresh=0.0,
                               decoder_batch_size=args.decoder_batch_size, encoder_batch_size=len(images))
    unbatched_s, batched_s, same = [], [], True
    with torch.no_grad():
        gen.generate_batch(images[:1])  # warm-up
        for r in range(args.repeats):
            runs = [("one", lambda: [gen.generate(im) for im in images]), ("batch", lambda: gen.generate_batch(images))]
            if r % 2:
                runs.reverse()
            outputs = {}
            for name, fn in runs:
                out, seconds = timed(fn, args.device)
                outputs[name] = out
                (unbatched_s if name == "one" else batched_s).append(seconds)
            same &= all(identical(b, o) for b, o in zip(outputs["batch"], outputs["one"], strict=True))
    t_one, t_batch = min(unbatched_s), min(batched_s)
    return {
        "bench": "sam_masker", "kind": "batching", "model": label, "device": device_name, "threads": args.threads,
        "images": len(images), "image_size": f"{images[0].shape[0]}x{images[0].shape[1]}",
        "points_per_side": args.points_per_side, "encoder_batch_size": len(images), "repeats": args.repeats,
        "unbatched_images_per_s": round(len(images) / t_one, 3), "batched_images_per_s": round(len(images) / t_batch, 3),
        "speedup": round(t_one / t_batch, 2), "identical": bool(same),
        "note": "tiny SAM encoder on CPU: the decoder dominates" if label.startswith("tiny") else "",
    }


def text_batching(args) -> dict:
    """labels/s of CLIP text embedding (x 8 templates): old per-template calls, one label per call, all batched."""
    import tempfile
    from pathlib import Path

    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from models.config import TextEncoderConfig
    from models.presets import WORDS, build_tokenizer
    from models.text import ClipTextEncoder

    words = sorted({w for w in WORDS if w.isalpha()})
    labels = [f"{a} {b}" if i % 3 else a for i, (a, b) in enumerate(zip(words, words[7:] + words[:7], strict=True))]
    labels = labels[: args.labels]
    with tempfile.TemporaryDirectory(prefix="reme-bench-text-") as tmp:
        torch.manual_seed(0)
        tokenizer = build_tokenizer()
        config = CLIPTextConfig(vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                projection_dim=512)  # defaults otherwise: CLIP B/16's text tower (512-d, 12 layers)
        CLIPTextModelWithProjection(config).eval().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        encoder = ClipTextEncoder(TextEncoderConfig(model_id=str(Path(tmp)), device=args.device))

    def per_template(texts):  # the Pair step before: one label per call, one forward pass per template
        out = []
        for text in texts:
            total = sum(encoder._embed([template.format(text)]) for template in encoder.templates)
            out.append(torch.nn.functional.normalize(total, dim=-1))
        return torch.cat(out).numpy()

    def batched(size):
        def run(texts):
            encoder.config = dataclasses.replace(encoder.config, batch_size=size)
            return encoder.encode(texts)
        return run

    modes = {"one_label_one_template": per_template, "one_label_per_call": encoder.encode_each,
             **{f"batched_{size}": batched(size) for size in args.text_batch_sizes}}
    seconds = {name: [] for name in modes}
    vectors = {}
    encoder.encode(labels[:4])  # warm-up
    for r in range(args.repeats):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        for name in order:
            vectors[name], t = timed(lambda fn=modes[name]: fn(labels), args.device)
            seconds[name].append(t)
    best = {name: min(ts) for name, ts in seconds.items()}
    ref = vectors["one_label_one_template"]
    return {
        "bench": "text_embedding", "kind": "batching", "model": "clip-b16-text-random", "device": args.device,
        "threads": args.threads, "labels": len(labels), "templates": len(encoder.templates),
        "prompts_per_pass": list(args.text_batch_sizes), "repeats": args.repeats,
        **{f"{name}_labels_per_s": round(len(labels) / t, 1) for name, t in best.items()},
        **{f"speedup_{name}_vs_one_template": round(best["one_label_one_template"] / t, 2)
           for name, t in best.items() if name != "one_label_one_template"},
        "max_abs_diff_vs_one_template": max(float(np.abs(v - ref).max()) for v in vectors.values()),
    }


def main(argv=None) -> None:
    from segment_anything import SamAutomaticMaskGenerator

    from models.sam_fast import FastSamMaskGenerator

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    ap.add_argument("--checkpoint", default=None, help="SAM state dict (random weights when absent)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=None, help="subsample images so the longest side is at most this")
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--points-per-batch", type=int, default=64, help="the reference's batch (both generators)")
    ap.add_argument("--decoder-batch-size", type=int, default=None, help="ours only (default: 4 on CPU)")
    ap.add_argument("--thresholds", default="both", choices=["keep-all", "default", "both"])
    ap.add_argument("--autocast", default=None, choices=["bfloat16", "float16"], help="ours only, CUDA only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--decoder-only", action="store_true",
                    help="time only the mask decoder on one image's embedding (reference batches vs ours)")
    ap.add_argument("--batching", action="store_true",
                    help="SAM images/s one image per call vs batched, and CLIP text labels/s one by one vs batched")
    ap.add_argument("--labels", type=int, default=128, help="--batching: label texts embedded")
    ap.add_argument("--text-batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=[32, 256],
                    help="--batching: prompts per forward pass of the batched text modes")
    ap.add_argument("--repeats", type=int, default=2, help="--batching: measurements per mode (best is kept)")
    ap.add_argument("--sections", default="sam,text", help="--batching: sam, text or both (comma-separated)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    model = build_model(args.model, args.checkpoint, args.device)
    images = load_images(args.images, args.max_side)
    settings = {"keep-all": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
                "default": dict(pred_iou_thresh=0.88, stability_score_thresh=0.95)}
    chosen = list(settings) if args.thresholds == "both" else [args.thresholds]
    label = f"{args.model}{'' if args.checkpoint else '-random'}"
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"

    if args.decoder_only:
        print(json.dumps(decoder_only(model, images[0], args, label, device_name)), flush=True)
        return
    if args.batching:
        sections = args.sections.split(",")
        if "sam" in sections:
            print(json.dumps(sam_batching(model, images, args, label, device_name)), flush=True)
        if "text" in sections:
            print(json.dumps(text_batching(args)), flush=True)
        return

    with torch.no_grad():
        warm = np.zeros((64, 64, 3), np.uint8)  # first-call allocations (and CUDA init) out of the timings
        SamAutomaticMaskGenerator(model, points_per_side=2).generate(warm)
        FastSamMaskGenerator(model, points_per_side=2).generate(warm)

    for setting in chosen:
        params = dict(points_per_side=args.points_per_side, points_per_batch=args.points_per_batch, **settings[setting])
        ref_gen = SamAutomaticMaskGenerator(model, **params)
        ours_gen = FastSamMaskGenerator(model, **params, decoder_batch_size=args.decoder_batch_size,
                                        autocast_dtype=args.autocast)
        total_ref = total_ours = 0.0
        all_same = True
        ours_outputs = []
        for name, img in zip(IMAGES, images, strict=False):
            ref, t_ref = timed(lambda g=ref_gen, im=img: g.generate(im), args.device)
            ours, t_ours = timed(lambda g=ours_gen, im=img: g.generate(im), args.device)
            same = identical(ours, ref)
            all_same &= same
            total_ref += t_ref
            total_ours += t_ours
            ours_outputs.append(ours)
            print(json.dumps({
                "bench": "sam_masker", "kind": "image", "model": label, "device": device_name, "thresholds": setting,
                "image": f"{name} {img.shape[0]}x{img.shape[1]}", "points_per_side": args.points_per_side,
                "masks": len(ref), "reference_s": round(t_ref, 3), "ours_s": round(t_ours, 3),
                "speedup": round(t_ref / t_ours, 2), "identical": same,
            }), flush=True)
        summary = {
            "bench": "sam_masker", "kind": "summary", "model": label, "device": device_name, "thresholds": setting,
            "points_per_side": args.points_per_side, "points_per_batch": args.points_per_batch,
            "decoder_batch_size": ours_gen.decoder_batch_size, "autocast": args.autocast, "threads": args.threads,
            "images": len(images), "reference_s": round(total_ref, 3), "ours_s": round(total_ours, 3),
            "speedup": round(total_ref / total_ours, 2), "identical": all_same,
        }
        if len(images) > 1:
            batched, t_batch = timed(lambda g=ours_gen: g.generate_batch(images), args.device)
            summary["ours_generate_batch_s"] = round(t_batch, 3)
            summary["speedup_generate_batch"] = round(total_ref / t_batch, 2)
            summary["generate_batch_identical"] = all(identical(b, o) for b, o in zip(batched, ours_outputs, strict=True))
        if setting == "default" and not args.checkpoint:
            summary["note"] = "random weights: every candidate fails pred_iou_thresh; overstates real-weight gains"
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
