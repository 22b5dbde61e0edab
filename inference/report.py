"""`reme report`: one static, self-contained HTML page describing a reference set's quality.

Sections: summary (manifest counts), largest labels, histograms of pair_score and quality (inline SVG), drops per
reason (dropped/) and failures per stage (failures/), and per-label galleries of segment thumbnails (most and least
typical by quality), each an inline base64 PNG cut from the source image with the segment's RLE mask. Images that
cannot be read are skipped with a placeholder. Labels come from captions, so every string is html-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import posixpath
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from models.rle import decode_rle
from refset import schema, storage

REPORT_COLUMNS = ["segment_id", "image_uri", "width", "height", "bbox", "area", "mask_rle", "label_id", "label",
                  "pair_score", "quality"]

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
th{background:#f3f3f3}.num{text-align:right}.gallery{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 12px}
figure{margin:0;font-size:11px;text-align:center}figure img{display:block;border:1px solid #999}
.missing{width:96px;height:96px;border:1px dashed #bbb;display:flex;align-items:center;justify-content:center;color:#999}
h3{margin-bottom:2px}.row{display:flex;gap:2em;flex-wrap:wrap}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _read_dir(root: str, sub: str, columns: list[str] | None = None) -> pa.Table | None:
    tables = []
    for path in storage.listdir(storage.join(root, sub)):
        name = posixpath.basename(path)
        if name.startswith("part-") and name.endswith(".parquet"):
            table = storage.read_parquet(path)
            if columns is not None:
                table = table.select([c for c in columns if c in table.column_names])
            tables.append(table)
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def histogram_svg(values: np.ndarray, title: str, bins: int = 30, width: int = 360, height: int = 140) -> str:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return f"<p>{_e(title)}: no values</p>"
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    top = max(int(counts.max()), 1)
    bar_w = width / bins
    bars = []
    for i, c in enumerate(counts):
        h = (height - 20) * c / top
        bars.append(f'<rect x="{i * bar_w:.1f}" y="{height - 15 - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                    f'fill="#4a7fb0"><title>{edges[i]:.3f}..{edges[i + 1]:.3f}: {int(c)}</title></rect>')
    return (f'<figure><figcaption>{_e(title)} (n={values.size})</figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
            + "".join(bars)
            + f'<text x="0" y="{height - 2}" font-size="10">{lo:.3f}</text>'
            f'<text x="{width - 40}" y="{height - 2}" font-size="10">{hi:.3f}</text></svg></figure>')


class _ImageCache:
    """Source images opened once each (resized to the size the masks were made at); None when unreadable."""

    def __init__(self, limit: int = 64):
        self.limit = limit
        self.images: dict[tuple, np.ndarray | None] = {}

    def get(self, uri: str, width: int, height: int) -> np.ndarray | None:
        key = (uri, width, height)
        if key not in self.images:
            if len(self.images) >= self.limit:
                self.images.pop(next(iter(self.images)))
            try:
                with Image.open(io.BytesIO(storage.read_bytes(uri))) as im:
                    im = ImageOps.exif_transpose(im).convert("RGB")
                    if im.size != (width, height):
                        im = im.resize((width, height), Image.Resampling.BILINEAR)
                    self.images[key] = np.asarray(im)
            except Exception:  # noqa: BLE001 - any unreadable source is skipped, the report still renders
                self.images[key] = None
        return self.images[key]


def thumbnail(image: np.ndarray, mask: np.ndarray, bbox, size: int = 96, pad: float = 0.15) -> str:
    """base64 PNG of the segment's bbox (padded), pixels outside the mask dimmed."""
    x, y, w, h = (float(v) for v in bbox)
    px, py = w * pad + 2, h * pad + 2
    x0, y0 = max(0, int(x - px)), max(0, int(y - py))
    x1, y1 = min(image.shape[1], int(np.ceil(x + w + px))), min(image.shape[0], int(np.ceil(y + h + py)))
    crop = image[y0:y1, x0:x1].astype(np.float32)
    m = mask[y0:y1, x0:x1, None]
    crop = np.where(m, crop, crop * 0.3 + 255 * 0.1).astype(np.uint8)
    im = Image.fromarray(crop)
    im.thumbnail((size, size))
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(row: dict, cache: _ImageCache) -> str:
    caption = f"q={row['quality']:.3f} p={row['pair_score']:.3f}"
    image = cache.get(row["image_uri"], int(row["width"]), int(row["height"]))
    if image is None:
        return (f'<figure><div class="missing" title="{_e(row["image_uri"])}">no image</div>'
                f"<figcaption>{_e(caption)}</figcaption></figure>")
    try:
        mask = decode_rle(row["mask_rle"], int(row["height"]), int(row["width"]))
        data = thumbnail(image, mask, row["bbox"])
    except Exception:  # noqa: BLE001 - a broken mask costs one thumbnail, not the report
        return f'<figure><div class="missing">bad mask</div><figcaption>{_e(caption)}</figcaption></figure>'
    return (f'<figure><img alt="{_e(row["segment_id"])}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _counts_table(counter: Counter, key_name: str) -> str:
    if not counter:
        return "<p>none</p>"
    rows = "".join(f"<tr><td>{_e(k)}</td><td class=num>{v}</td></tr>" for k, v in counter.most_common())
    return f"<table><tr><th>{_e(key_name)}</th><th>count</th></tr>{rows}</table>"


def _flat_items(obj, prefix: str = "") -> list[tuple[str, object]]:
    items = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            items += _flat_items(v, f"{prefix}.{k}" if prefix else str(k))
    elif not isinstance(obj, list):
        items.append((prefix, obj))
    return items


def build_report(root: str, per_label: int = 4, max_galleries: int = 100) -> str:
    """The HTML text of the report for the reference set at `root`."""
    root = str(root).rstrip("/")
    manifest_path = storage.join(root, schema.MANIFEST)
    if not storage.exists(manifest_path):
        raise FileNotFoundError(f"not a reference set: {manifest_path} is missing")
    manifest = storage.read_json(manifest_path)
    segments = _read_dir(root, schema.SEGMENTS_DIR, REPORT_COLUMNS)
    dropped = _read_dir(root, schema.DROPPED_DIR, ["reason", "pair_score", "quality", "label"])
    failures = _read_dir(root, schema.FAILURES_DIR, ["stage", "error_type"])
    labels_path = storage.join(root, schema.LABELS)
    labels = storage.read_parquet(labels_path, columns=["label_id", "label", "count"]) if storage.exists(labels_path) else None

    rows = segments.to_pylist() if segments is not None else []
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    label_counts = Counter({k: len(v) for k, v in by_label.items()})
    if labels is not None:  # labels.parquet is authoritative for counts and names labels with no kept segment
        for name, count in zip(labels.column("label").to_pylist(), labels.column("count").to_pylist(), strict=False):
            label_counts[name] = int(count)

    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>reme reference set report: {_e(root)}</title><style>{CSS}</style></head><body>",
        f"<h1>Reference set report</h1><p><code>{_e(root)}</code> &middot; generated "
        f"{_e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))}</p>",
        "<h2>Summary</h2><table><tr><th>field</th><th>value</th></tr>",
        f"<tr><td>segments kept</td><td class=num>{len(rows)}</td></tr>",
        f"<tr><td>labels</td><td class=num>{len(label_counts)}</td></tr>",
        f"<tr><td>segments dropped</td><td class=num>{0 if dropped is None else dropped.num_rows}</td></tr>",
        f"<tr><td>failed inputs</td><td class=num>{0 if failures is None else failures.num_rows}</td></tr>",
    ]
    for key, value in _flat_items({k: v for k, v in manifest.items() if k not in ("models",)}):
        if isinstance(value, (int, float, str, bool)) or value is None:
            parts.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    parts.append("</table>")

    models = manifest.get("models") or {}
    if isinstance(models, dict) and models:
        parts.append("<h2>Models</h2><table><tr><th>role</th><th>description</th></tr>")
        for role, info in models.items():
            parts.append(f"<tr><td>{_e(role)}</td><td><code>{_e(json.dumps(info, sort_keys=True, default=str))}</code></td></tr>")
        parts.append("</table>")

    parts.append("<h2>Scores</h2><div class=row>")
    if rows:
        parts.append(histogram_svg(np.array([r["pair_score"] for r in rows], dtype=float), "pair_score (kept)"))
        parts.append(histogram_svg(np.array([r["quality"] for r in rows], dtype=float), "quality (kept)"))
    if dropped is not None and dropped.num_rows:
        q = dropped.column("quality").to_numpy(zero_copy_only=False).astype(float) if "quality" in dropped.column_names else []
        parts.append(histogram_svg(np.asarray(q, dtype=float), "quality (dropped)"))
    parts.append("</div>")

    parts.append("<h2>Dropped segments by reason</h2>")
    parts.append(_counts_table(Counter(dropped.column("reason").to_pylist()) if dropped is not None else Counter(), "reason"))
    parts.append("<h2>Failed inputs by stage</h2>")
    failures_counter = Counter()
    if failures is not None:
        failures_counter = Counter(f"{s} ({t})" for s, t in zip(failures.column("stage").to_pylist(),
                                                               failures.column("error_type").to_pylist(), strict=False))
    parts.append(_counts_table(failures_counter, "stage (error type)"))

    parts.append("<h2>Labels (largest first)</h2><table><tr><th>#</th><th>label</th><th>segments</th>"
                 "<th>mean quality</th><th>mean pair score</th></tr>")
    for i, (name, count) in enumerate(label_counts.most_common(), 1):
        members = by_label.get(name, [])
        mq = f"{np.mean([m['quality'] for m in members]):.3f}" if members else "-"
        mp = f"{np.mean([m['pair_score'] for m in members]):.3f}" if members else "-"
        parts.append(f'<tr><td class=num>{i}</td><td><a href="#label-{i}">{_e(name)}</a></td>'
                     f"<td class=num>{count}</td><td class=num>{mq}</td><td class=num>{mp}</td></tr>")
    parts.append("</table>")

    parts.append(f"<h2>Galleries (the {min(max_galleries, len(label_counts))} largest labels)</h2>")
    cache = _ImageCache()
    for i, (name, _count) in enumerate(label_counts.most_common(max_galleries), 1):
        members = sorted(by_label.get(name, []), key=lambda r: (-r["quality"], r["segment_id"]))
        parts.append(f'<h3 id="label-{i}">{_e(name)}</h3>')
        if not members:
            parts.append("<p>no kept segments</p>")
            continue
        best = members[:per_label]
        worst = [m for m in members[::-1][:per_label] if m not in best]
        parts.append("<div>most typical</div><div class=gallery>" + "".join(_figure(m, cache) for m in best) + "</div>")
        if worst:
            parts.append("<div>least typical</div><div class=gallery>"
                         + "".join(_figure(m, cache) for m in worst) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(root: str, out: str, **kwargs) -> str:
    text = build_report(root, **kwargs)
    storage.write_bytes(out, text.encode("utf-8"))
    return out
