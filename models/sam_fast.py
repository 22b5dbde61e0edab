"""A faster SAM automatic mask generator that returns what segment_anything's returns.

`FastSamMaskGenerator` takes the same constructor arguments as
`segment_anything.SamAutomaticMaskGenerator` and, in fp32, returns the same masks in the same order with the
same scores. It computes the same quantities with the reference's own utilities (amg.py, torchvision's
batched_nms, the model's own modules), but does less work around them:

* **No uncompressed-RLE round trip.** The reference encodes every candidate mask to an uncompressed RLE (a
  Python loop per mask), deep-copies those lists on every concatenation, and decodes survivors back with a
  Python loop. Here candidates are kept as bit-packed boolean masks (1 bit per pixel) until NMS has chosen the
  survivors; only survivors are unpacked (and RLE-encoded when output_mode asks for RLE).
* **Filter before upscaling.** `predicted_iou` does not depend on the mask, so candidates failing
  `pred_iou_thresh` are dropped before their 256x256 logits are upscaled to the image size (the reference
  upscales every candidate first). Stability, thresholds and boxes are then computed exactly as the reference
  does, on the upscaled logits of the survivors only.
* **Prompt-invariant decoder work done once.** In the mask decoder's first two-way block the image tokens are
  the same for every prompt: their key/value projections for token-to-image attention and their query
  projection for image-to-token attention are computed once per image instead of once per prompt
  (`share_image_projections=True`). The prompt-dependent parts run the model's own layers unchanged.
* **Decoder batch size.** The decoder runs `decoder_batch_size` prompts at a time. On CPU the default is 4:
  the per-prompt activations (4096 image tokens x 256 channels each) then stay in cache, about twice as fast
  as the reference's 64. On CUDA the default is `points_per_batch` (the reference's batches); larger values
  (e.g. 256) cut launch overhead. See `_decoder_plan` for how batches are kept numerically identical.
* **Batched encoder.** `generate_batch(images)` encodes all images (and, with crop layers, all crops) in
  batched image-encoder passes of `encoder_batch_size`.
* **Autocast** (`autocast_dtype="bfloat16"`/`"float16"`, CUDA only) changes the numerics: identity with the
  reference is claimed only for fp32 (the default).

Identity was checked bitwise on CPU (tests/models/test_sam_fast.py, bench/sam_masker.py): decoder logits do not
depend on the batch size for batches of 4 or more prompts (below 4 they differ by ~3e-7, in the reference too),
and the shared first-block projections give bit-identical logits. On other hardware (GPU kernels) either may
differ in the last bit, which can flip a pixel whose logit is ~0; `share_image_projections=False` with
`decoder_batch_size=points_per_batch` runs the reference's exact decoder calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from segment_anything.automatic_mask_generator import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    coco_encode_rle,
    generate_crop_boxes,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from segment_anything.utils.transforms import ResizeLongestSide
from torchvision.ops.boxes import batched_nms, box_area

_AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def _pack(masks: torch.Tensor) -> np.ndarray:
    """bool [N,H,W] -> uint8 [N, ceil(H*W/8)], 1 bit per pixel (8x smaller than bool)."""
    flat = masks.reshape(masks.shape[0], -1).cpu().numpy()
    return np.packbits(flat, axis=1)


def _unpack(packed: np.ndarray, h: int, w: int) -> torch.Tensor:
    flat = np.unpackbits(packed, axis=1, count=h * w).view(bool)
    return torch.from_numpy(flat.reshape(-1, h, w))


class _Candidates:
    """Candidate masks of one crop: metadata tensors plus bit-packed masks, in the reference's order."""

    def __init__(self) -> None:
        self.iou_preds: list[torch.Tensor] = []
        self.points: list[torch.Tensor] = []
        self.stability: list[torch.Tensor] = []
        self.boxes: list[torch.Tensor] = []
        self.packed: list[np.ndarray] = []

    def add(self, iou, points, stability, boxes, packed) -> None:
        self.iou_preds.append(iou)
        self.points.append(points)
        self.stability.append(stability)
        self.boxes.append(boxes)
        self.packed.append(packed)


class FastSamMaskGenerator:
    """Drop-in for `SamAutomaticMaskGenerator` (same arguments, same `generate` output), faster.

    Extra keyword-only arguments: `decoder_batch_size` (prompts per mask-decoder call), `encoder_batch_size`
    (images/crops per image-encoder call in `generate_batch` and for crop layers), `autocast_dtype`
    (None, "bfloat16" or "float16"; CUDA only, changes numerics), `share_image_projections` (see module doc).
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        decoder_batch_size: int | None = None,
        encoder_batch_size: int = 4,
        autocast_dtype: str | None = None,
        share_image_projections: bool = True,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("Exactly one of points_per_side or point_grids must be provided.")
        if points_per_side is not None:
            self.point_grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = point_grids
        if output_mode not in ("binary_mask", "uncompressed_rle", "coco_rle"):
            raise ValueError(f"Unknown output_mode {output_mode!r}.")
        if output_mode == "coco_rle":
            from pycocotools import mask as _  # noqa: F401  (fail at construction, as the reference does)
        if min_mask_region_area > 0:
            import cv2  # noqa: F401
        if autocast_dtype is not None and autocast_dtype not in _AUTOCAST_DTYPES:
            raise ValueError(f"autocast_dtype must be None or one of {sorted(_AUTOCAST_DTYPES)}, got {autocast_dtype!r}.")
        if points_per_batch < 1 or encoder_batch_size < 1:
            raise ValueError("points_per_batch and encoder_batch_size must be >= 1.")

        self.model = model
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.encoder_batch_size = encoder_batch_size
        self.share_image_projections = share_image_projections
        on_cuda = self.device.type == "cuda"
        if decoder_batch_size is None:
            # CPU: small batches keep the decoder's per-prompt activations in cache (measured ~2x faster than 64).
            # CUDA: the reference's own batches, so identity does not rest on cuBLAS being batch-size invariant;
            # pass a larger decoder_batch_size (e.g. 256) for throughput.
            decoder_batch_size = points_per_batch if on_cuda else 4
        if decoder_batch_size < 1:
            raise ValueError("decoder_batch_size must be >= 1.")
        self.decoder_batch_size = decoder_batch_size
        # Autocast only where it pays; on CPU the result would silently differ from the reference.
        self.autocast_dtype = _AUTOCAST_DTYPES[autocast_dtype] if (autocast_dtype and on_cuda) else None

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ public API

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for one HWC uint8 image; the records `SamAutomaticMaskGenerator.generate` returns."""
        return self.generate_batch([image])[0]

    @torch.no_grad()
    def generate_batch(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """`generate` for several images; image embeddings for all images and crops in batched encoder passes."""
        jobs = []  # (image index, crop box, layer index)
        crops = []
        for i, image in enumerate(images):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"image {i}: expected HxWx3 uint8, got shape {image.shape} dtype {image.dtype}")
            boxes, layers = generate_crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            for box, layer in zip(boxes, layers, strict=True):
                x0, y0, x1, y1 = box
                jobs.append((i, box, layer))
                crops.append(image[y0:y1, x0:x1, :])

        per_image: list[list[tuple[list[int], dict[str, Any]]]] = [[] for _ in images]
        for start in range(0, len(crops), self.encoder_batch_size):
            batch = crops[start : start + self.encoder_batch_size]
            features, input_sizes = self._embed(batch)
            for k, crop in enumerate(batch):
                i, box, layer = jobs[start + k]
                data = self._process_crop(
                    features[k : k + 1], input_sizes[k], crop.shape[:2], box, layer, images[i].shape[:2]
                )
                per_image[i].append((box, data))
            del features
        return [self._finish(crop_results, image.shape[:2]) for crop_results, image in zip(per_image, images, strict=True)]

    # ------------------------------------------------------------------ stages

    def _autocast(self):
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _embed(self, crops: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Image-encoder features for several images at once, prepared exactly as SamPredictor.set_image."""
        inputs, input_sizes = [], []
        for crop in crops:
            if self.model.image_format != "RGB":
                crop = crop[..., ::-1]
            resized = torch.as_tensor(self.transform.apply_image(crop), device=self.device)
            resized = resized.permute(2, 0, 1).contiguous()[None, :, :, :]
            input_sizes.append(tuple(resized.shape[-2:]))
            inputs.append(self.model.preprocess(resized))  # normalised and padded to a square
        with self._autocast():
            features = self.model.image_encoder(torch.cat(inputs))
        return features.float(), input_sizes

    def _process_crop(self, features, input_size, crop_size, crop_box, layer_idx, orig_size) -> MaskData:
        """Candidates of one crop, NMS within the crop, then back to the image frame (as the reference)."""
        points_for_image = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        image_pe = self.model.prompt_encoder.get_dense_pe()
        shared = None
        cand = _Candidates()
        for chunk_starts, pieces in self._decoder_plan(len(points_for_image)):
            low_res, iou_preds = [], []
            for a, b in pieces:
                lo, iou, shared = self._decode(features, image_pe, points_for_image[a:b], crop_size, shared)
                low_res.append(lo)
                iou_preds.append(iou)
            low_res, iou_preds = torch.cat(low_res), torch.cat(iou_preds)
            offset = chunk_starts[0][0]
            # Post-process in the reference's batches so peak memory stays where the reference's is.
            for a, b in chunk_starts:
                self._postprocess(
                    low_res[a - offset : b - offset], iou_preds[a - offset : b - offset], points_for_image[a:b],
                    input_size, crop_size, crop_box, orig_size, cand,
                )
            del low_res

        if not cand.boxes:
            return MaskData()
        data = MaskData(
            iou_preds=torch.cat(cand.iou_preds),
            points=torch.cat(cand.points),
            stability_score=torch.cat(cand.stability),
            boxes=torch.cat(cand.boxes),
        )
        packed = np.concatenate(cand.packed)
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros(len(data["boxes"])),
            iou_threshold=self.box_nms_thresh,
        )
        data.filter(keep)
        data["packed"] = packed[keep.numpy()]
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["boxes"]))])
        return data

    def _decoder_plan(self, n_points: int):
        """Decoder calls for n prompts: [(reference batches as (start, end), decoder pieces as (start, end))].

        The reference decodes `points_per_batch` prompts at a time. Decoder outputs are bit-identical across batch
        sizes of 4 or more (measured on CPU; below 4 the small-GEMM path rounds differently), so larger decoder
        batches group whole reference batches, and smaller ones split a reference batch into pieces of at least
        min(4, its size) prompts.
        """
        ppb, dbs = self.points_per_batch, self.decoder_batch_size
        chunks = [(a, min(a + ppb, n_points)) for a in range(0, n_points, ppb)]
        plan = []
        if dbs >= ppb:
            per_call = dbs // ppb
            for i in range(0, len(chunks), per_call):
                group = chunks[i : i + per_call]
                plan.append((group, [(group[0][0], group[-1][1])]))
            return plan
        for a, b in chunks:
            n = b - a
            n_pieces = min(math.ceil(n / dbs), max(1, n // 4))
            bounds = np.linspace(a, b, n_pieces + 1).round().astype(int)
            plan.append(([(a, b)], [(int(x), int(y)) for x, y in zip(bounds[:-1], bounds[1:], strict=True)]))
        return plan

    def _decode(self, features, image_pe, points, crop_size, shared):
        """Low-res logits [B,3,256,256] and predicted IoUs [B,3] for a batch of single-point prompts."""
        coords = self.transform.apply_coords(points, crop_size)
        in_points = torch.as_tensor(coords, device=self.device)[:, None, :]
        in_labels = torch.ones(in_points.shape[0], 1, dtype=torch.int, device=self.device)
        with self._autocast():
            sparse, dense = self.model.prompt_encoder(points=(in_points, in_labels), boxes=None, masks=None)
            if self.share_image_projections:
                low_res, iou_preds, shared = self._decode_shared(features, image_pe, sparse, dense, shared)
            else:
                low_res, iou_preds = self.model.mask_decoder(
                    image_embeddings=features,
                    image_pe=image_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=True,
                )
        return low_res.float(), iou_preds.float(), shared

    def _decode_shared(self, features, image_pe, sparse, dense, shared):
        """MaskDecoder.predict_masks with the first block's image-token projections computed once per image.

        Every prompt sees the same image tokens until the first block's image-to-token attention updates them,
        so k/v of token-to-image attention and q of image-to-token attention are prompt-invariant. The rest runs
        the decoder's own layers on per-prompt tensors, exactly as MaskDecoder.predict_masks does.
        """
        decoder = self.model.mask_decoder
        transformer = decoder.transformer
        first = transformer.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        b = sparse.shape[0]

        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        if shared is None:
            # dense is the no-mask embedding broadcast over the batch: one copy is the same for all prompts.
            src = features + dense[:1]
            _, c, h, w = src.shape
            keys0 = src.flatten(2).permute(0, 2, 1)
            key_pe = image_pe.flatten(2).permute(0, 2, 1)
            k_in = keys0 + key_pe
            shared = {
                "keys0": keys0,
                "key_pe": key_pe,
                "chw": (c, h, w),
                "t2i_k": t2i._separate_heads(t2i.k_proj(k_in), t2i.num_heads),
                "t2i_v": t2i._separate_heads(t2i.v_proj(keys0), t2i.num_heads),
                "i2t_q": i2t._separate_heads(i2t.q_proj(k_in), i2t.num_heads),
            }
        keys0, key_pe = shared["keys0"], shared["key_pe"]

        # First block, as TwoWayAttentionBlock.forward with the invariant projections reused.
        queries, query_pe = tokens, tokens
        if first.skip_first_layer_pe:
            queries = first.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + first.self_attn(q=q, k=q, v=queries)
        queries = first.norm1(queries)

        q = t2i._separate_heads(t2i.q_proj(queries + query_pe), t2i.num_heads)
        queries = queries + t2i.out_proj(_attend(q, shared["t2i_k"], shared["t2i_v"], t2i))
        queries = first.norm2(queries)
        queries = first.norm3(queries + first.mlp(queries))

        q = queries + query_pe
        k = i2t._separate_heads(i2t.k_proj(q), i2t.num_heads)
        v = i2t._separate_heads(i2t.v_proj(queries), i2t.num_heads)
        keys = first.norm4(keys0 + i2t.out_proj(_attend(shared["i2t_q"], k, v, i2t)))

        # Remaining blocks and the final attention: the model's own code on per-prompt tensors.
        for layer in transformer.layers[1:]:
            queries, keys = layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe)
        attn_out = transformer.final_attn_token_to_image(q=queries + query_pe, k=keys + key_pe, v=keys)
        hs = transformer.norm_final_attn(queries + attn_out)

        c, h, w = shared["chw"]
        upscaled = decoder.output_upscaling(keys.transpose(1, 2).view(b, c, h, w))
        mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
        )
        _, uc, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, uc, uh * uw)).view(b, -1, uh, uw)
        iou_pred = decoder.iou_prediction_head(hs[:, 0, :])
        return masks[:, 1:], iou_pred[:, 1:], shared  # multimask output, as the generator asks

    def _postprocess(self, low_res, iou_preds, points, input_size, crop_size, crop_box, orig_size, cand) -> None:
        """The reference's _process_batch filters, with the IoU filter moved before the upscaling."""
        orig_h, orig_w = orig_size
        n_per_point = low_res.shape[1]
        iou_preds = iou_preds.flatten(0, 1)
        point_rows = torch.as_tensor(points.repeat(n_per_point, axis=0))
        low_res = low_res.flatten(0, 1)
        if self.pred_iou_thresh > 0.0:
            keep = iou_preds > self.pred_iou_thresh
            iou_preds, point_rows, low_res = iou_preds[keep], point_rows[keep.cpu()], low_res[keep]
        if len(iou_preds) == 0:
            return
        # Upscale with the model's own postprocess_masks, one mask per channel-plane.
        masks = self.model.postprocess_masks(low_res[:, None], input_size, crop_size)[:, 0]
        del low_res
        stability = calculate_stability_score(masks, self.model.mask_threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
            masks, iou_preds, point_rows, stability = masks[keep], iou_preds[keep], point_rows[keep.cpu()], stability[keep]
        masks = masks > self.model.mask_threshold
        boxes = batched_mask_to_box(masks)
        keep = ~is_box_near_crop_edge(boxes, crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            masks, iou_preds, point_rows, stability, boxes = (
                masks[keep], iou_preds[keep], point_rows[keep.cpu()], stability[keep], boxes[keep]
            )
        if len(iou_preds) == 0:
            return
        cand.add(iou_preds.cpu(), point_rows, stability.cpu(), boxes.cpu(), _pack(masks))

    def _finish(self, crop_results, orig_size) -> list[dict[str, Any]]:
        """Cross-crop NMS, unpack survivors, optional small-region clean-up, output records."""
        orig_h, orig_w = orig_size
        parts = [(box, d) for box, d in crop_results if "boxes" in dict(d.items())]
        if not parts:
            return []
        data = MaskData()
        masks_by_crop = []
        for box, d in parts:
            masks_by_crop.append((box, d["packed"]))
            del d["packed"]
            data.cat(d)
        crop_index = np.concatenate([np.full(len(p), k) for k, (_, p) in enumerate(masks_by_crop)])
        row_in_crop = np.concatenate([np.arange(len(p)) for _, p in masks_by_crop])

        if len(crop_results) > 1:
            keep = batched_nms(
                data["boxes"].float(),
                (1 / box_area(data["crop_boxes"])).to(data["boxes"].device),
                torch.zeros(len(data["boxes"])),
                iou_threshold=self.crop_nms_thresh,
            )
            data.filter(keep)
            crop_index, row_in_crop = crop_index[keep.numpy()], row_in_crop[keep.numpy()]

        masks = []
        for k, r in zip(crop_index, row_in_crop, strict=True):
            box, packed = masks_by_crop[k]
            x0, y0, x1, y1 = box
            crop_mask = _unpack(packed[r : r + 1], y1 - y0, x1 - x0)
            masks.append(uncrop_masks(crop_mask, box, orig_h, orig_w)[0])
        data.to_numpy()

        if self.min_mask_region_area > 0:
            masks, data = self._remove_small_regions(masks, data)

        records = []
        for idx, mask in enumerate(masks):
            mask_np = mask.numpy()
            if self.output_mode == "binary_mask":
                segmentation: Any = mask_np
            else:
                rle = mask_to_rle_pytorch(mask[None])[0]
                segmentation = coco_encode_rle(rle) if self.output_mode == "coco_rle" else rle
            records.append(
                {
                    "segmentation": segmentation,
                    "area": int(mask_np.sum()),
                    "bbox": box_xyxy_to_xywh(data["boxes"][idx]).tolist(),
                    "predicted_iou": data["iou_preds"][idx].item(),
                    "point_coords": [data["points"][idx].tolist()],
                    "stability_score": data["stability_score"][idx].item(),
                    "crop_box": box_xyxy_to_xywh(data["crop_boxes"][idx]).tolist(),
                }
            )
        return records

    def _remove_small_regions(self, masks: list[torch.Tensor], data: MaskData):
        """The reference's postprocess_small_regions, run on boolean masks through its own RLE interface.

        Survivors are few (after NMS), so encoding them as uncompressed RLE here costs little and lets the
        reference's own static method do the work unchanged.
        """
        if not masks:
            return masks, data
        data["rles"] = mask_to_rle_pytorch(torch.stack(masks))
        data = SamAutomaticMaskGenerator.postprocess_small_regions(
            data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
        )
        from segment_anything.utils.amg import rle_to_mask

        new_masks = [torch.from_numpy(np.ascontiguousarray(rle_to_mask(rle))) for rle in data["rles"]]
        del data["rles"]
        return new_masks, data


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention) -> torch.Tensor:
    """Attention.forward from projected, head-separated q/k/v (broadcasting a shared batch of 1)."""
    attn = q @ k.permute(0, 1, 3, 2)
    attn = attn / math.sqrt(q.shape[-1])
    attn = torch.softmax(attn, dim=-1)
    return attention._recombine_heads(attn @ v)
