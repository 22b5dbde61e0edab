"""`reme report`: one self-contained HTML page on a reference set's quality, built to be opened and acted on.

What the page shows, top to bottom:
- First screen: images in / failed, segments kept, dropped (a bar per reason, dropped/) and failed inputs (a bar per
  stage, failures/), and "labels that need a look": lowest mean quality, fewest members, most segments dropped as
  outliers, and labels whose head word is not a noun (lemminflect's lexicon plus the closed word classes of
  models.nlp).
- A label browser: every label in a searchable, sortable list (50 rows a page, rendered by a little vanilla JS from
  a JSON block, so 50k labels cost one array each, not 50k DOM rows). Opening a label shows its most and least
  typical segments by quality, and its segments dropped as outliers, each outlined on a thumbnail of its own image
  (inference.report_images), with quality and pair score.
- Histograms of pair score and quality (kept and dropped, stacked) with axes, ticks and counts (inline SVG).
- Models as a table (role, model id, kind, dim, image size, ...); failure examples; the raw manifest folded away.

Bounds, so the page stays fast at 50k labels: thumbnails are made for at most `max_galleries` labels by count plus
the needs-a-look labels, `per_label` of each kind per label, and stop at `thumbnail_budget` bytes (a label's
gallery goes in whole or not at all; photos are 192-px WebP, about 3-4 kB each). Everything else grows by about
50 bytes per label (the label list) plus the failure examples (20 at most). So a page is at most
thumbnail_budget + ~50 B x labels + ~100 kB: at 50k labels and the defaults at most 8 MiB + 2.5 MB + 0.1 MB, and
4.5 MB measured (bench/report.py). Source images are read once each through refset.storage (local or gs://); one
that cannot be read shows the mask alone with the reason, and never stops the report.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from lemminflect import getAllLemmas

from inference.report_html import (
    CSS,
    DROPPED_COLOUR,
    FAILED_COLOUR,
    JS,
    KEPT_COLOUR,
    PRIMARY_COLOUR,
    REASON_COLOURS,
    bar_chart_svg,
    esc,
    fmt_int,
    fmt_pct,
    histogram_svg,
    json_for_script,
    table,
)
from inference.report_images import ImageReader, render_thumbnail
from models.nlp import (
    ADVERBS,
    AUXILIARIES,
    CONJUNCTIONS,
    DESCRIPTIVE,
    DETERMINERS,
    NUMBER_WORDS,
    PREPOSITIONS,
    PRONOUNS,
)
from refset import schema, storage

DEFAULT_PER_LABEL = 4
DEFAULT_MAX_GALLERIES = 100
DEFAULT_THUMBNAIL_BUDGET = 8 * 2**20  # bytes of inline thumbnails in one page
LOOK_N = 8  # labels per needs-a-look list
FAILURE_EXAMPLES = 20
LABELS_PER_CHUNK = 16  # galleries made this many labels at a time: one parallel image read each
RENDER_THREADS = 4

STAT_COLUMNS = ["label_id", "label", "quality", "pair_score"]
DROPPED_STAT_COLUMNS = ["label", "quality", "pair_score", "reason"]
THUMB_COLUMNS = ["image_uri", "width", "height", "mask_rle"]


# --- reading ----------------------------------------------------------------------------------------------------

@dataclass
class Shards:
    """The part-*.parquet files of one directory, some columns of all rows read, the others fetched by row."""

    paths: list[str]
    offsets: np.ndarray  # offsets[i] = first global row of shard i; offsets[-1] = total rows
    table: pa.Table  # the columns read for every row

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    def column(self, name: str) -> np.ndarray:
        if name not in self.table.column_names:
            return np.full(self.num_rows, np.nan)
        return self.table.column(name).to_numpy(zero_copy_only=False)

    def take(self, rows: np.ndarray, columns: list[str]) -> dict[int, dict]:
        """{global row: {column: value}} for `rows`, reading each shard that holds some of them once."""
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        out: dict[int, dict] = {}
        shard_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for shard in np.unique(shard_of):
            mine = rows[shard_of == shard]
            part = storage.read_parquet(self.paths[shard], columns=columns)
            picked = part.take(pa.array(mine - self.offsets[shard])).to_pylist()
            out.update(zip(mine.tolist(), picked, strict=True))
        return out


def read_shards(root: str, sub: str, columns: list[str]) -> Shards | None:
    paths = [p for p in storage.listdir(storage.join(root, sub))
             if posixpath.basename(p).startswith("part-") and p.endswith(".parquet")]
    if not paths:
        return None
    tables = []
    for path in paths:
        with storage.filesystem(path).open(path, "rb") as f:
            shard = pq.ParquetFile(f)
            present = [c for c in columns if c in shard.schema_arrow.names]  # older shards may lack a column
            tables.append(shard.read(columns=present))
    offsets = np.concatenate([[0], np.cumsum([t.num_rows for t in tables])]).astype(np.int64)
    return Shards(paths, offsets, pa.concat_tables(tables, promote_options="default"))


# --- labels -----------------------------------------------------------------------------------------------------

_CLOSED_CLASSES = (("number", NUMBER_WORDS), ("determiner", DETERMINERS), ("pronoun", PRONOUNS), ("preposition", PREPOSITIONS),
                   ("conjunction", CONJUNCTIONS), ("verb", AUXILIARIES), ("adverb", ADVERBS))
_POS_NAMES = {"VERB": "verb", "ADJ": "adjective", "ADV": "adverb", "AUX": "verb", "PROPN": "proper noun"}
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")


def head_word_issue(label: str) -> str:
    """"" when the label's head (last) word can be a noun, else what it is ("adjective", "verb", "number", ...).

    Closed-class words (models.nlp's determiners, prepositions, ...) and descriptive adjectives ("red", "big")
    are not nouns even where the lexicon lists a noun reading; otherwise lemminflect's readings decide. Words the
    lexicon does not know are taken as nouns, as the caption chunker does (surfboard, frisbee).
    """
    words = _WORD.findall(label.lower())
    return _word_issue(words[-1]) if words else "no word"


@functools.lru_cache(maxsize=1 << 17)
def _word_issue(head: str) -> str:
    if any(ch.isdigit() for ch in head):
        return "number"
    for name, words_of_class in _CLOSED_CLASSES:
        if head in words_of_class:
            return name
    readings = getAllLemmas(head)
    if head in DESCRIPTIVE and "ADJ" in readings:
        return "adjective"
    if not readings or "NOUN" in readings:
        return ""
    for tag in ("VERB", "ADJ", "ADV", "AUX", "PROPN"):
        if tag in readings:
            return _POS_NAMES[tag]
    return "not a noun"


@dataclass
class LabelStats:
    names: list[str]
    count: np.ndarray  # members kept (labels.parquet count)
    quality: np.ndarray  # mean quality of kept members, nan when none
    pair: np.ndarray  # mean pair score of kept members, nan when none
    outliers: np.ndarray  # members dropped as outliers
    issue: list[str]  # head_word_issue per label
    segment_label: np.ndarray = field(repr=False)  # label index of each kept segment


def label_stats(labels: pa.Table | None, segments: Shards | None, dropped: Shards | None) -> LabelStats:
    if labels is not None:
        names = labels.column("label").to_pylist()
        count = labels.column("count").to_numpy().astype(np.int64)
    else:
        names, count = [], np.zeros(0, np.int64)
    index_of = {name: i for i, name in enumerate(names)}
    segment_label = np.zeros(0, np.int64)
    if segments is not None:
        if labels is not None and "label_id" in segments.table.column_names:
            positions = pc.index_in(segments.table.column("label_id"), value_set=labels.column("label_id"))
            segment_label = positions.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            for name in segments.table.column("label").unique().to_pylist():
                index_of.setdefault(name, len(index_of))
            segment_label = np.array([index_of[n] for n in segments.table.column("label").to_pylist()], np.int64)
    outlier_names: Counter = Counter()
    if dropped is not None:
        is_outlier = pc.equal(dropped.table.column("reason"), "outlier")
        outlier_names = Counter(n for n in pc.filter(dropped.table.column("label"), is_outlier).to_pylist()
                                if n is not None)
        for name in outlier_names:  # a label whose every member was an outlier is still worth a look
            index_of.setdefault(name, len(index_of))
    names = list(index_of)
    n = len(names)
    known = segment_label >= 0
    kept = np.bincount(segment_label[known], minlength=n)[:n]
    if labels is None:
        count = kept
    count = np.concatenate([count, np.zeros(n - len(count), np.int64)])
    with np.errstate(invalid="ignore", divide="ignore"):
        q_sum = np.bincount(segment_label[known], weights=_finite(segments, "quality")[known], minlength=n)[:n]
        p_sum = np.bincount(segment_label[known], weights=_finite(segments, "pair_score")[known], minlength=n)[:n]
        quality = np.where(kept > 0, q_sum / np.maximum(kept, 1), np.nan)
        pair = np.where(kept > 0, p_sum / np.maximum(kept, 1), np.nan)
    outliers = np.array([outlier_names.get(name, 0) for name in names], np.int64)
    return LabelStats(names, count, quality, pair, outliers, [head_word_issue(name) for name in names], segment_label)


def _finite(shards: Shards | None, column: str) -> np.ndarray:
    if shards is None:
        return np.zeros(0)
    values = shards.column(column).astype(np.float64)
    return np.where(np.isfinite(values), values, 0.0)


@dataclass
class LookList:
    title: str
    why: str
    items: list[tuple[int, str]]  # (label index, metric text)


def needs_a_look(stats: LabelStats, n: int = LOOK_N) -> list[LookList]:
    """The four lists of labels to review first, most suspicious first: fewest members ties go to the lower mean
    quality, most outliers ties to the larger share of the label dropped; then labels.parquet order."""
    idx = np.arange(len(stats.names))
    members = idx[stats.count > 0]
    judged = members[stats.count[members] >= 2]
    pool = judged if judged.size else members
    pool = pool[np.isfinite(stats.quality[pool])]
    lowest_q = pool[np.lexsort((pool, stats.quality[pool]))][:n]
    quality_or_high = np.where(np.isfinite(stats.quality), stats.quality, np.inf)
    fewest = members[np.lexsort((members, quality_or_high[members], stats.count[members]))][:n]  # ties: worst first
    min_count = int(stats.count[members].min()) if members.size else 0
    at_min = int((stats.count[members] == min_count).sum()) if members.size else 0
    with_outliers = idx[stats.outliers > 0]
    out_share = stats.outliers / np.maximum(stats.outliers + stats.count, 1)
    most_out = with_outliers[np.lexsort((with_outliers, -out_share[with_outliers], -stats.outliers[with_outliers]))][:n]
    flagged = np.array([i for i in idx if stats.issue[i]], np.int64)
    not_nouns = flagged[np.lexsort((flagged, -stats.count[flagged]))][:n] if flagged.size else flagged
    total_out = int(stats.outliers.sum())

    def share(i):
        return fmt_pct(stats.outliers[i], stats.outliers[i] + stats.count[i])

    return [
        LookList("Lowest mean quality",
                 "visual agreement with the rest of the label's group" + (", labels of 2+ segments" if judged.size else ""),
                 [(int(i), f"q {stats.quality[i]:.3f}") for i in lowest_q]),
        LookList("Fewest members",
                 f"{fmt_int(at_min)} label{'s' if at_min != 1 else ''} with {fmt_int(min_count)} "
                 f"segment{'s' if min_count != 1 else ''}" if members.size else "no labels",
                 [(int(i), f"{fmt_int(stats.count[i])} seg. · q {stats.quality[i]:.2f}"
                   if np.isfinite(stats.quality[i]) else f"{fmt_int(stats.count[i])} seg.") for i in fewest]),
        LookList("Most outliers",
                 f"{fmt_int(total_out)} segments dropped as outliers in {fmt_int(with_outliers.size)} labels"
                 if total_out else "no segment was dropped as an outlier",
                 [(int(i), f"{fmt_int(stats.outliers[i])} · {share(i)}") for i in most_out]),
        LookList("Not nouns",
                 f"{fmt_int(flagged.size)} label{'s' if flagged.size != 1 else ''} whose head word is not a noun"
                 if flagged.size else "every label's head word can be a noun",
                 [(int(i), stats.issue[i]) for i in not_nouns]),
    ]


# --- galleries --------------------------------------------------------------------------------------------------

def gallery_labels(stats: LabelStats, looks: list[LookList], max_galleries: int) -> list[int]:
    """Needs-a-look labels first (in list order), then the largest labels; at most max_galleries + the looks."""
    chosen = dict.fromkeys(i for look in looks for i, _ in look.items)
    largest = np.lexsort((np.arange(len(stats.names)), -stats.count))
    for i in largest[:max(0, max_galleries)]:
        chosen.setdefault(int(i), None)
    return list(chosen)


def typical_rows(group_label: np.ndarray, quality: np.ndarray, labels: list[int],
                 per_label: int) -> dict[int, tuple[list[int], list[int]]]:
    """{label: (most typical rows, least typical rows)}: highest and lowest quality, disjoint, best/worst first."""
    wanted = np.isin(group_label, np.asarray(labels, np.int64))
    rows = np.nonzero(wanted)[0]
    q = np.where(np.isfinite(quality[rows]), quality[rows], -np.inf)
    rows = rows[np.lexsort((rows, -q, group_label[rows]))]
    out: dict[int, tuple[list[int], list[int]]] = {}
    if rows.size == 0:
        return out
    starts = np.flatnonzero(np.r_[True, group_label[rows][1:] != group_label[rows][:-1]])
    for start, end in zip(starts, np.r_[starts[1:], rows.size], strict=True):
        group = rows[start:end].tolist()
        top = group[:per_label]
        low = group[max(per_label, len(group) - per_label):][::-1]
        out[int(group_label[rows[start]])] = (top, low)
    return out


@dataclass
class Galleries:
    by_label: dict[str, dict[str, list]]  # str(label index) -> {"top"|"low"|"out": [thumbnail entries]}
    nbytes: int
    skipped_for_budget: int


def build_galleries(stats: LabelStats, segments: Shards | None, dropped: Shards | None, labels: list[int],
                    per_label: int, budget: int) -> Galleries:
    """Thumbnail entries [src, quality, pair score, image uri, note, detail] per label, within `budget` bytes."""
    if per_label <= 0 or not labels:
        return Galleries({}, 0, 0)
    kept_rows = typical_rows(stats.segment_label, segments.column("quality").astype(np.float64),
                             labels, per_label) if segments is not None else {}
    outlier_rows: dict[int, tuple[list[int], list[int]]] = {}
    if dropped is not None:
        positions = pc.index_in(dropped.table.column("label"), value_set=pa.array(stats.names, pa.string()))
        is_outlier = pc.equal(dropped.table.column("reason"), "outlier").to_numpy(zero_copy_only=False)
        dropped_label = np.where(is_outlier, positions.fill_null(-1).to_numpy(zero_copy_only=False), -1)
        # lowest quality first: the outliers furthest from their label's group
        outlier_rows = typical_rows(dropped_label, -dropped.column("quality").astype(np.float64), labels, per_label)
    # Every row a gallery shows, fetched in one pass (each shard read once, masks of those rows only kept).
    seg_need = [r for i in labels for part in kept_rows.get(i, ([], [])) for r in part]
    out_need = [r for i in labels for r in outlier_rows.get(i, ([], []))[0]]
    seg_info = segments.take(np.array(seg_need), THUMB_COLUMNS + ["quality", "pair_score"]) if seg_need else {}
    out_info = dropped.take(np.array(out_need), THUMB_COLUMNS + ["quality", "pair_score"]) if out_need else {}
    reader = ImageReader()
    galleries: dict[str, dict[str, list]] = {}
    used, skipped = 0, 0
    with ThreadPoolExecutor(max_workers=RENDER_THREADS) as pool:
        for start in range(0, len(labels), LABELS_PER_CHUNK):
            chunk = labels[start:start + LABELS_PER_CHUNK]
            jobs = [(i, "top", seg_info[r]) for i in chunk for r in kept_rows.get(i, ([], []))[0]]
            jobs += [(i, "low", seg_info[r]) for i in chunk for r in kept_rows.get(i, ([], []))[1]]
            jobs += [(i, "out", out_info[r]) for i in chunk for r in outlier_rows.get(i, ([], []))[0]]
            reader.images.clear()  # keep memory to one chunk's images
            reader.prefetch([(row["image_uri"], int(row["width"]), int(row["height"])) for _, _, row in jobs])
            entries: dict[int, dict[str, list]] = {i: {"top": [], "low": [], "out": []} for i in chunk}
            # Encoding releases the GIL: thumbnails of a chunk render in parallel, kept in their order.
            for (i, part, _), thumb in zip(jobs, pool.map(lambda job: _thumb(job[2], reader), jobs), strict=True):
                entries[i][part].append(thumb)
            for i in chunk:
                size = sum(len(t[0]) for part in entries[i].values() for t in part)
                if not size:
                    continue
                if used + size > budget:
                    skipped += 1
                    continue
                galleries[str(i)] = entries[i]
                used += size
    return Galleries(galleries, used, skipped)


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None


def _thumb(row: dict, reader: ImageReader) -> list:
    width, height = int(row["width"]), int(row["height"])
    image, reasons = reader.get(row["image_uri"], width, height)
    thumb = render_thumbnail(image, reasons, row["mask_rle"], width, height)
    return [thumb.src, _num(row["quality"]), _num(row["pair_score"]), row["image_uri"], thumb.note, thumb.detail]


# --- page -------------------------------------------------------------------------------------------------------

def _get(obj, *keys, default=None):
    for key in keys:
        if not isinstance(obj, dict) or key not in obj:
            return default
        obj = obj[key]
    return obj


def _when(iso) -> str:
    """'2025-06-01T12:00:00+00:00' -> '2025-06-01 12:00 UTC' (anything else as given)."""
    try:
        return datetime.fromisoformat(str(iso)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(iso or "unknown")


SIZE_BUCKETS = ((1, 1), (2, 4), (5, 9), (10, 49), (50, 99), (100, 999), (1000, None))


def label_sizes(count: np.ndarray) -> list[tuple[str, int, str]]:
    """Bars of how many labels have 1, 2-4, 5-9, ... members (empty buckets past the largest left out)."""
    rows = []
    for lo, hi in SIZE_BUCKETS:
        n = int(((count >= lo) & (count <= (hi if hi is not None else np.inf))).sum())
        if lo > max(1, int(count.max()) if count.size else 0):
            break
        name = f"{fmt_int(lo)}" if lo == hi else f"{fmt_int(lo)}+" if hi is None else f"{fmt_int(lo)}–{fmt_int(hi)}"
        rows.append((f"{name} segment{'s' if hi != 1 else ''}", n, PRIMARY_COLOUR))
    return rows


def _card(kind: str, title: str, value: str, sub: str) -> str:
    return (f'<div class="card {kind}"><div class="k">{esc(title)}</div><div class="v">{esc(value)}</div>'
            f'<div class="s">{esc(sub)}</div></div>')


def _label_link(name: str) -> str:
    return f'<a href="#label={esc(quote(name, safe=""))}" title="{esc(name)}">{esc(name)}</a>'


def models_table(manifest: dict) -> str:
    """One row per model role: what was used (model_info) completed by how it was configured (models)."""
    used = manifest.get("model_info") or {}
    config = manifest.get("models") or {}
    # The roles the run used (model_info); the configuration alone also lists models a run never loaded (a
    # captioner when captions were given), so it names the roles only for manifests without model_info.
    roles = list(used) if used else [k for k, v in config.items() if isinstance(v, dict)]
    rows = []
    shown = ("model_id", "kind", "dim", "image_size", "revision", "templates")
    for role in roles:
        info = dict(config.get(role) or {}) if isinstance(config.get(role), dict) else {}
        info.update(used.get(role) or {})
        if role == "masker" and isinstance(info.get(info.get("kind")), dict):  # the active masker's settings only
            info.update(info[info["kind"]])
        details = [f"{k}={v}" for k, v in sorted(info.items())
                   if k not in shown and not isinstance(v, (dict, list)) and v is not None]
        if isinstance(info.get("templates"), list):
            details.insert(0, f"{len(info['templates'])} prompt templates")
        model_id = info.get("model_id")
        rows.append([f"<b>{esc(role)}</b>", f"<code>{esc(model_id)}</code>" if model_id else "–",
                     esc(info.get("kind") or "–"), esc(info.get("dim") if info.get("dim") is not None else "–"),
                     esc(info.get("image_size") if info.get("image_size") is not None else "–"),
                     esc(info.get("revision") or "–"), esc(", ".join(details))])
    if not rows:
        return '<p class="empty">The manifest lists no models.</p>'
    preset = config.get("preset")
    note = f'<p class="meta">Preset <b>{esc(preset)}</b></p>' if preset else ""
    return note + table(["role", "model", "kind", "dim", "image size", "revision", "settings"], rows, numeric=(3, 4),
                        cls="models")


def _look_html(looks: list[LookList], names: list[str]) -> str:
    boxes = []
    for look in looks:
        items = "".join(f'<li>{_label_link(names[i])}<span class="m">{esc(metric)}</span></li>'
                        for i, metric in look.items)
        boxes.append(f'<div class="box look-list"><h3>{esc(look.title)}</h3><p class="why">{esc(look.why)}</p>'
                     f'<ol>{items or "<li class=empty>none</li>"}</ol></div>')
    return '<div class="look">' + "".join(boxes) + "</div>"


def build_report(root: str, per_label: int = DEFAULT_PER_LABEL, max_galleries: int = DEFAULT_MAX_GALLERIES,
                 thumbnail_budget: int = DEFAULT_THUMBNAIL_BUDGET, generated_at: datetime | None = None) -> str:
    """The HTML text of the report for the reference set at `root` (local or gs://)."""
    root = str(root).rstrip("/")
    manifest_path = storage.join(root, schema.MANIFEST)
    if not storage.exists(manifest_path):
        raise FileNotFoundError(f"not a reference set: {manifest_path} is missing")
    manifest = storage.read_json(manifest_path)
    segments = read_shards(root, schema.SEGMENTS_DIR, STAT_COLUMNS)
    dropped = read_shards(root, schema.DROPPED_DIR, DROPPED_STAT_COLUMNS)
    failures = read_shards(root, schema.FAILURES_DIR, ["uri", "stage", "error_type", "message"])
    labels_path = storage.join(root, schema.LABELS)
    labels = storage.read_parquet(labels_path, columns=["label_id", "label", "count"]) \
        if storage.exists(labels_path) else None

    stats = label_stats(labels, segments, dropped)
    looks = needs_a_look(stats)
    chosen = gallery_labels(stats, looks, max_galleries)
    galleries = build_galleries(stats, segments, dropped, chosen, per_label, thumbnail_budget)

    kept = segments.num_rows if segments is not None else 0
    n_dropped = dropped.num_rows if dropped is not None else 0
    reasons = Counter(dropped.table.column("reason").to_pylist()) if dropped is not None else Counter()
    stages = Counter(failures.table.column("stage").to_pylist()) if failures is not None else Counter()
    n_failed = failures.num_rows if failures is not None else 0
    counts = manifest.get("counts") or {}
    images_in = counts.get("images_in")
    index = manifest.get("index") or {}
    flagged = sum(1 for issue in stats.issue if issue)

    created = _when(manifest.get("created_at"))
    meta = [f"created <b>{esc(created)}</b>", f"schema v<b>{esc(manifest.get('schema_version', '?'))}</b>"]
    if _get(manifest, "models", "preset"):
        meta.append(f"preset <b>{esc(_get(manifest, 'models', 'preset'))}</b>")
    if _get(manifest, "params", "label_source"):
        meta.append(f"labels from <b>{esc(_get(manifest, 'params', 'label_source'))}</b>")
    if _get(manifest, "model_info", "masker", "kind"):
        meta.append(f"masks by <b>{esc(_get(manifest, 'model_info', 'masker', 'kind'))}</b>")
    meta.append(f"report made {esc(_when((generated_at or datetime.now(timezone.utc)).isoformat()))}")

    all_segments = kept + n_dropped
    cards = [
        _card("images", "Images in", fmt_int(images_in) if images_in is not None else "–",
              f"{fmt_int(counts.get('images_processed', 0))} processed" if images_in is not None else "not recorded"),
        _card("kept", "Segments kept", fmt_int(kept), f"{fmt_pct(kept, all_segments)} of {fmt_int(all_segments)}"),
        _card("dropped", "Dropped", fmt_int(n_dropped), f"{len(reasons)} reason{'s' if len(reasons) != 1 else ''}"),
        _card("failed", "Failed inputs", fmt_int(n_failed),
              f"{fmt_pct(n_failed, images_in)} of images" if images_in else f"{len(stages)} stages"),
        _card("labels", "Labels", fmt_int(len(stats.names)), f"{fmt_int(flagged)} not nouns"),
    ]
    if index.get("index_key"):
        recall = index.get("recall_at_k")
        cards.append(_card("index", "Index", str(index["index_key"]),
                           f"recall@{index.get('k', '?')} {recall:.3f}" if isinstance(recall, (int, float))
                           else "recall not measured"))

    flow = [("kept", kept, KEPT_COLOUR)] + [(reason, c, REASON_COLOURS[i % len(REASON_COLOURS)])
                                           for i, (reason, c) in enumerate(reasons.most_common())]
    flow_html = bar_chart_svg(flow, all_segments, aria="segments kept and dropped by reason") if all_segments else \
        '<p class="empty">No segments.</p>'
    if stages:
        fail_html = bar_chart_svg([(s, c, FAILED_COLOUR) for s, c in stages.most_common()], images_in or n_failed,
                                  aria="failed inputs by stage")
    else:
        fail_html = '<p class="ok">No input failed.</p>'

    members = stats.count[stats.count > 0]
    sizes_html = bar_chart_svg(label_sizes(members), members.size, aria="labels by number of segments") \
        if members.size else '<p class="empty">No labels.</p>'

    hist_pair = histogram_svg([("kept", segments.column("pair_score") if segments is not None else np.zeros(0), KEPT_COLOUR),
                               ("dropped", dropped.column("pair_score") if dropped is not None else np.zeros(0), DROPPED_COLOUR)],
                              "pair score (cosine of segment and label)")
    hist_quality = histogram_svg([("kept", segments.column("quality") if segments is not None else np.zeros(0), KEPT_COLOUR),
                                  ("dropped", dropped.column("quality") if dropped is not None else np.zeros(0), DROPPED_COLOUR)],
                                 "quality (agreement with the label's group)")

    failure_rows = []
    if failures is not None:
        for r in failures.table.slice(0, FAILURE_EXAMPLES).to_pylist():
            failure_rows.append([f"<code>{esc(r['uri'])}</code>", esc(r["stage"]), esc(r.get("kind") or ""),
                                 esc(r["error_type"]), esc(r["message"])])

    gallery_note = (f"{fmt_int(min(max_galleries, len(stats.names)))} largest labels and the labels that need a look"
                    + (f" ({galleries.skipped_for_budget} left out to keep the page under "
                       f"{thumbnail_budget / 2**20:.0f} MB)" if galleries.skipped_for_budget else ""))
    data = {
        "labels": {
            "name": stats.names,
            "count": stats.count.tolist(),
            "q": [_num(v) for v in stats.quality],
            "p": [_num(v) for v in stats.pair],
            "out": stats.outliers.tolist(),
            "flag": [f"not a noun: {issue}" if issue else "" for issue in stats.issue],
        },
        "galleries": galleries.by_label,
        "gallery_note": gallery_note,
    }

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>reme report: {esc(root)}</title><style>{CSS}</style></head><body>",
        '<header class="top"><h1>reme · reference set report</h1>'
        f'<span class="path">{esc(root)}</span><nav><a href="#overview">Overview</a><a href="#labels">Labels</a>'
        '<a href="#scores">Scores</a><a href="#models">Models</a><a href="#manifest">Manifest</a></nav></header>',
        '<main><section id="overview">',
        f'<p class="meta">{" · ".join(meta)}</p>',
        f'<div class="cards">{"".join(cards)}</div>',
        '<div class="overview"><div class="panel" id="segments-panel">'
        f'<h2>Where the segments went<span class="sub">{fmt_int(all_segments)} segments</span></h2>{flow_html}'
        f'<h2 style="margin-top:12px">Failed inputs by stage<span class="sub">{fmt_int(n_failed)} failed</span></h2>'
        f"{fail_html}"
        f'<h2 style="margin-top:12px">Label sizes<span class="sub">labels by kept segments</span></h2>{sizes_html}'
        "</div>",
        f'<div class="panel" id="look"><h2>Labels that need a look<span class="sub">click one to open it below'
        f"</span></h2>{_look_html(looks, stats.names)}</div></div></section>",
        '<section class="block" id="labels"><h2>Labels</h2><div class="browser"><div class="list-pane">'
        '<div class="list-tools"><input id="label-search" type="search" autocomplete="off" '
        f'placeholder="Search {fmt_int(len(stats.names))} labels" aria-label="search labels">'
        '<select id="label-sort" aria-label="sort labels"><option value="count">most segments</option>'
        '<option value="quality_low">lowest quality</option><option value="quality_high">highest quality</option>'
        '<option value="outliers">most outliers</option><option value="name">name</option></select></div>'
        '<p id="label-summary"></p><ol id="label-list"></ol><div class="pager">'
        '<button type="button" id="page-prev">‹ Prev</button><span id="page-info"></span>'
        '<button type="button" id="page-next">Next ›</button></div></div>'
        '<div id="label-detail"><noscript>The label browser needs JavaScript.</noscript></div></div></section>',
        f'<section class="block" id="scores"><h2>Scores</h2><div class="hists">{hist_pair}{hist_quality}</div>'
        "</section>",
        f'<section class="block" id="models"><h2>Models</h2>{models_table(manifest)}</section>',
    ]
    if failure_rows:
        parts.append(f'<section class="block" id="failures"><h2>Failed inputs<span class="sub"> first '
                     f"{len(failure_rows)} of {fmt_int(n_failed)}</span></h2>"
                     + table(["input", "stage", "kind", "error", "message"], failure_rows) + "</section>")
    parts += [
        '<section class="block" id="manifest"><details class="raw"><summary>Raw manifest.json</summary><pre>'
        f"{esc(json.dumps(manifest, indent=2, sort_keys=True, default=str))}</pre></details></section>",
        f"<footer>Thumbnails: {fmt_int(len(galleries.by_label))} labels, "
        f"{galleries.nbytes / 2**20:.1f} MB. Generated by reme.</footer></main>",
        f'<script type="application/json" id="reme-data">{json_for_script(data)}</script>',
        f"<script>{JS}</script></body></html>",
    ]
    return "\n".join(parts)


def write_report(root: str, out: str, **kwargs) -> str:
    text = build_report(root, **kwargs)
    storage.write_bytes(out, text.encode("utf-8"))
    return out
