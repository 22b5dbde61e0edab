"""The segments of one image, held compactly: never an N x H x W array unless a caller asks for one.

`SegmentMasks` is backed by one of
* an *id map*: int32 [H,W], the segment index of every pixel (-1 where no segment is); maskers that partition the
  image (Felzenszwalb, annotations) make one, and it costs 4 bytes a pixel whatever the number of segments;
* COCO RLEs at H x W (pycocotools), for overlapping masks (SAM); areas and boxes come from the RLEs themselves;
* dense bool masks [N,H,W], as a masker or a test hands them over.

Every consumer works one segment at a time through `crops()` (a segment's box and its boolean crop), so the memory
of pooling (models.pooling) and painting (inference.paint) is bounded by the image size, not by N x image size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

from models.rle import decode_rle, encode_masks

RLE_CHUNK = 16  # masks materialised at once when encoding an id map to RLE (bounded memory)


def _rle_objects(rles: list[bytes], height: int, width: int) -> list[dict]:
    return [{"size": [int(height), int(width)], "counts": c.encode("ascii") if isinstance(c, str) else c} for c in rles]


class SegmentMasks:
    """N segment masks of one H x W image; build with `from_id_map`, `from_rles` or `from_dense`."""

    def __init__(self, height: int, width: int, count: int, *, id_map: np.ndarray | None = None,
                 rles: list[bytes] | None = None, dense: np.ndarray | None = None):
        self.height, self.width, self.count = int(height), int(width), int(count)
        self.id_map, self._rles, self._dense = id_map, rles, dense

    # --- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_id_map(cls, id_map: np.ndarray, count: int | None = None) -> SegmentMasks:
        """id_map int [H,W]: segment index per pixel, -1 = none; `count` segments (default: max id + 1)."""
        id_map = np.asarray(id_map)
        if id_map.ndim != 2:
            raise ValueError(f"an id map must be [H,W], got shape {id_map.shape}")
        id_map = id_map.astype(np.int32, copy=False)
        n = int(id_map.max(initial=-1)) + 1 if count is None else int(count)
        if id_map.size and int(id_map.max(initial=-1)) >= n:
            raise ValueError(f"id map holds segment {int(id_map.max())} but only {n} segments were declared")
        return cls(id_map.shape[0], id_map.shape[1], n, id_map=id_map)

    @classmethod
    def from_rles(cls, rles: list[bytes], height: int, width: int) -> SegmentMasks:
        return cls(height, width, len(rles), rles=list(rles))

    @classmethod
    def from_dense(cls, masks: np.ndarray) -> SegmentMasks:
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"masks must be [N,H,W], got shape {masks.shape}")
        return cls(masks.shape[1], masks.shape[2], masks.shape[0], dense=masks)

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.count, self.height, self.width)

    @property
    def is_partition(self) -> bool:
        """True when no two segments overlap (an id map): painting needs no priority order."""
        return self.id_map is not None

    # --- per-segment facts ----------------------------------------------------------------------------------
    def _boxes(self) -> list[tuple[slice, slice] | None]:
        """(rows, cols) slices of each segment's bounding box; None for an empty segment."""
        if self.id_map is not None:
            found = ndimage.find_objects(self.id_map + 1, max_label=self.count)
            return list(found)
        out: list[tuple[slice, slice] | None] = []
        for x, y, w, h in self.bboxes():
            out.append(None if w == 0 else (slice(int(y), int(y + h)), slice(int(x), int(x + w))))
        return out

    def areas(self) -> np.ndarray:
        """int64 [N] pixels per segment."""
        if self.id_map is not None:
            return np.bincount(self.id_map[self.id_map >= 0].ravel(), minlength=self.count)[: self.count].astype(np.int64)
        if self._rles is not None:
            if not self._rles:
                return np.zeros(0, np.int64)
            return np.asarray(mask_utils.area(_rle_objects(self._rles, self.height, self.width)), dtype=np.int64)
        return self._dense.reshape(self.count, self.height * self.width).sum(axis=1).astype(np.int64)

    def bboxes(self) -> np.ndarray:
        """float32 [N,4] as (x, y, w, h), COCO style; zeros for an empty segment."""
        out = np.zeros((self.count, 4), dtype=np.float32)
        if self._rles is not None:
            if self._rles:
                out[:] = mask_utils.toBbox(_rle_objects(self._rles, self.height, self.width))
            return out
        if self.id_map is not None:
            for i, box in enumerate(self._boxes()):
                if box is not None:
                    rows, cols = box
                    out[i] = (cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            return out
        for i, m in enumerate(self._dense):
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if len(rows):
                out[i] = (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
        return out

    def crops(self) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(index, y0, x0, bool crop of the segment inside its box), one segment at a time; empty ones skipped."""
        if self._dense is not None:
            for i, m in enumerate(self._dense):
                rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
                if len(rows):
                    yield i, int(rows[0]), int(cols[0]), m[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
            return
        for i, box in enumerate(self._boxes()):
            if box is None:
                continue
            rows, cols = box
            if self.id_map is not None:
                crop = self.id_map[rows, cols] == i
            else:
                crop = decode_rle(self._rles[i], self.height, self.width)[rows, cols]
            yield i, rows.start, cols.start, crop

    def rles(self) -> list[bytes]:
        """COCO RLE counts per segment, encoded RLE_CHUNK masks at a time."""
        if self._rles is not None:
            return list(self._rles)
        if self._dense is not None:
            return encode_masks(self._dense)
        out: list[bytes] = []
        for start in range(0, self.count, RLE_CHUNK):
            ids = np.arange(start, min(start + RLE_CHUNK, self.count), dtype=np.int32)
            out += encode_masks(self.id_map[None, :, :] == ids[:, None, None])
        return out

    def dense(self) -> np.ndarray:
        """bool [N,H,W]: the full array, for tests and small images only."""
        if self._dense is not None:
            return self._dense
        if self.id_map is not None:
            return self.id_map[None, :, :] == np.arange(self.count, dtype=np.int32)[:, None, None]
        return np.stack([decode_rle(c, self.height, self.width) for c in self._rles]) if self._rles else \
            np.zeros((0, self.height, self.width), dtype=bool)

    # --- selection --------------------------------------------------------------------------------------------
    def subset(self, indices) -> SegmentMasks:
        """The segments `indices` (in that order), renumbered 0..len(indices)-1."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.id_map is not None:
            lookup = np.full(self.count + 1, -1, dtype=np.int32)  # last slot: id -1 stays -1
            lookup[indices] = np.arange(len(indices), dtype=np.int32)
            return SegmentMasks.from_id_map(lookup[self.id_map], len(indices))
        if self._rles is not None:
            return SegmentMasks.from_rles([self._rles[i] for i in indices], self.height, self.width)
        return SegmentMasks.from_dense(self._dense[indices])


def segments_of(fields: dict, indices) -> SegmentMasks:
    """Some segments of an image, compact, from its segment fields (models.maskers.segment_fields: `rles`,
    `height`, `width`, and `segment_map` where the masker partitions the image); pooling and painting then take
    them one at a time, never as N x H x W."""
    if fields.get("segment_map") is not None:
        every = SegmentMasks.from_id_map(fields["segment_map"], len(fields["rles"]))
    else:
        every = SegmentMasks.from_rles(fields["rles"], fields["height"], fields["width"])
    return every.subset(indices)
