"""Reading a reference set (SPEC §3) for labelling: manifest, labels, FAISS index, label of every index row.

Local directories and gs:// URIs alike (refset.storage / fsspec). Everything is parsed as data: JSON for the
manifest, Parquet for tables, FAISS's own serialisation for the index; nothing is unpickled.

The reader refuses, with one line each: a missing manifest, a manifest of another schema version, a corrupt or
truncated index, an index whose row count disagrees with the segment shards, and an index built with a visual
encoder other than the one requested (a retrieval key from another embedding space is meaningless).
"""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models import config as mc
from refset import index as faiss_index
from refset import schema, storage


class ReferenceSetError(ValueError):
    """A reference set that cannot be used; the message is one line."""


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _info_of(obj: Any) -> dict:
    """A model description as a dict: a `.info` dict, a config dataclass, or a dict already."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    info = getattr(obj, "info", None)
    if isinstance(info, dict):
        return info
    if is_dataclass(obj):
        return asdict(obj)
    raise TypeError(f"cannot describe a model from {type(obj).__name__}")


def _model_key(model_id: str | None) -> str | None:
    """Compare local model directories by their last two path parts (a cache moved to another disk is the same
    model); hub ids compare as given."""
    if not model_id:
        return model_id
    text = str(model_id).rstrip("/")
    if text.startswith(("/", ".", "~")) or "://" in text or text.count("/") > 1:
        return "/".join(text.split("/")[-2:])
    return text


def encoder_mismatch(recorded: dict, requested: dict) -> str | None:
    """Why two encoder descriptions are different models, or None when they agree on kind, model and dim."""
    differences = []
    for key in ("kind", "model_id", "revision", "dim"):
        a, b = recorded.get(key), requested.get(key)
        if a is None or b is None:
            continue  # a field one side does not record cannot be compared
        if key == "model_id":
            a, b = _model_key(a), _model_key(b)
        if a != b:
            differences.append(f"{key} {recorded.get(key)!r} (index) vs {requested.get(key)!r} (requested)")
    return "; ".join(differences) or None


@dataclass
class ReferenceSet:
    root: str
    manifest: dict
    labels: pa.Table  # label_id, label, count, text_embedding
    index: Any  # faiss.Index
    position_labels: np.ndarray  # int64 [ntotal]: label id of every index row, in index order
    _visual_means: np.ndarray | None = field(default=None, repr=False)
    ids: pa.Table | None = field(default=None, repr=False)  # index/ids.parquet: position -> (shard, row)
    _shard_positions: dict | None = field(default=None, repr=False)

    # ---- opening -----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str, visual: Any = None) -> ReferenceSet:
        """Open the reference set at `root`; `visual` (an encoder, its config or its info dict) is checked against
        the manifest's visual encoder when given."""
        root = str(root).rstrip("/")
        manifest_path = storage.join(root, schema.MANIFEST)
        if not storage.exists(manifest_path):
            raise ReferenceSetError(f"not a reference set: {manifest_path} is missing (build one with pipeline.build_index)")
        try:
            manifest = storage.read_json(manifest_path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReferenceSetError(f"{manifest_path} is not valid JSON: {_one_line(exc)}") from exc
        if not isinstance(manifest, dict):
            raise ReferenceSetError(f"{manifest_path} must hold a JSON object")
        version = manifest.get("schema_version", schema.SCHEMA_VERSION)
        if version != schema.SCHEMA_VERSION:
            raise ReferenceSetError(
                f"{root} has schema version {version}; this reme reads version {schema.SCHEMA_VERSION}")
        if visual is not None:
            check_visual_encoder(manifest, _info_of(visual), root)

        labels_path = storage.join(root, schema.LABELS)
        if not storage.exists(labels_path):
            raise ReferenceSetError(f"{labels_path} is missing; the reference set is incomplete")
        labels = _read_table(labels_path).sort_by("label_id")
        index, ids = load_index(root)
        position_labels = _position_labels(root, ids, index.ntotal)
        return cls(root, manifest, labels, index, position_labels, ids=ids)

    # ---- what the labeller needs -------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return self.labels.column("label").to_pylist()

    @property
    def label_ids(self) -> np.ndarray:
        return self.labels.column("label_id").to_numpy().astype(np.int64)

    @property
    def label_counts(self) -> np.ndarray:
        return self.labels.column("count").to_numpy().astype(np.int64)

    def label_text_embeddings(self) -> np.ndarray:
        """float32 [L, Dt] in labels.parquet order (sorted by label_id)."""
        col = self.labels.column("text_embedding").combine_chunks()
        dim = col.type.list_size
        return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)

    def position_label_rows(self) -> np.ndarray:
        """Row of labels.parquet for every index row (-1 for a label id that labels.parquet lacks)."""
        ids = self.label_ids  # sorted: labels are sorted by label_id on open
        if len(ids) == 0:
            return np.full(len(self.position_labels), -1, dtype=np.int64)
        rows = np.clip(np.searchsorted(ids, self.position_labels), 0, len(ids) - 1)
        return np.where(ids[rows] == self.position_labels, rows, -1).astype(np.int64)

    def models_info(self) -> dict:
        """Model descriptions (`.info` dicts) by role: manifest "model_info", else "models" when it holds infos."""
        return model_infos(self.manifest)

    @property
    def visual_info(self) -> dict:
        return _info_of(self.models_info().get("visual"))

    @property
    def text_info(self) -> dict:
        return _info_of(self.models_info().get("text"))

    def models_config(self):
        """The ModelsConfig the index was built with (manifest "models"), or None for hand-made sets."""
        return models_config_from_dict(self.manifest.get("models"))

    def label_visual_means(self) -> np.ndarray:
        """float32 [L, D]: mean visual embedding of each label's reference segments (prototype strategy).

        Streams the segment shards reading two columns; computed once and cached.
        """
        if self._visual_means is not None:
            return self._visual_means
        dim = int(self.index.d)
        sums = np.zeros((len(self.labels), dim), dtype=np.float64)
        for shard in segment_shards(self.root):
            table = storage.read_parquet(shard, columns=["label_id", "visual_embedding"])
            if table.num_rows == 0:
                continue
            emb = table.column("visual_embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            emb = emb.astype(np.float32).reshape(-1, dim)
            label_ids = table.column("label_id").to_numpy().astype(np.int64)
            rows = np.clip(np.searchsorted(self.label_ids, label_ids), 0, len(self.label_ids) - 1)
            keep = self.label_ids[rows] == label_ids
            np.add.at(sums, rows[keep], emb[keep])
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        self._visual_means = (sums / np.maximum(norms, 1e-12)).astype(np.float32)
        return self._visual_means

    # ---- browsing: counts, labels and segments as Arrow tables (the Python API, inference.api) ---------------
    # Each table converts with `.to_pandas()` where pandas is installed (pip install 'reme[pandas]').
    @property
    def counts(self) -> dict:
        """What the set holds: the manifest's reconciled counts (images in / processed / failed, masks, segments
        kept, dropped by reason), the labels and the rows of the FAISS index."""
        return {**self.manifest.get("counts", {}), "labels": self.labels.num_rows, "indexed": int(self.index.ntotal)}

    def labels_table(self, embeddings: bool = False) -> pa.Table:
        """label_id, label, count (segments carrying it) [, text_embedding]; by label id."""
        return self.labels if embeddings else self.labels.drop_columns(["text_embedding"])

    def segments_table(self, columns: list[str] | None = None, label_ids=None) -> pa.Table:
        """Every kept segment in the global order, with its FAISS `position` (what search results name): by
        default all columns but the visual embedding (ask for "visual_embedding" by name); `label_ids` keeps
        the segments of those labels only. Reads the shards one at a time, only the columns asked for."""
        columns = list(columns or SEGMENT_COLUMNS)
        wanted = None if label_ids is None else pa.array(np.asarray(label_ids, dtype=np.int32).reshape(-1))
        parts = []
        positions = self.shard_positions()
        for shard in segment_shards(self.root):
            read = columns if wanted is None or "label_id" in columns else columns + ["label_id"]
            table = _read_table(shard, read)
            table = table.append_column("position", pa.array(positions[posixpath.basename(shard)]))
            if wanted is not None:
                table = table.filter(pc.is_in(table.column("label_id"), value_set=wanted)).select(columns + ["position"])
            parts.append(table)
        if not parts:
            return pa.table({name: pa.array([], type=_segment_type(name, self.index.d)) for name in columns}
                            | {"position": pa.array([], pa.int64())})
        return pa.concat_tables(parts)

    def segments_at(self, positions, columns: list[str] | None = None) -> pa.Table:
        """The segments at these FAISS positions (search results), in the order given, with a `position` column;
        each shard holding one of them is read once, only the columns asked for."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        columns = list(columns or SEGMENT_COLUMNS)
        if len(positions) and (positions.min() < 0 or positions.max() >= self.index.ntotal):
            raise IndexError(f"positions must lie in 0..{self.index.ntotal - 1}")
        shards, rows = self._locate(positions)
        pieces, order = [], []
        for name in sorted(set(shards.tolist())):
            at = np.flatnonzero(shards == name)
            table = _read_table(storage.join(self.root, schema.SEGMENTS_DIR, name), columns)
            pieces.append(table.take(pa.array(rows[at])))
            order.append(at)
        if not pieces:
            return self.segments_table(columns).slice(0, 0)
        table = pa.concat_tables(pieces)
        table = table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
        return table.append_column("position", pa.array(positions))

    def dropped_table(self) -> pa.Table:
        """Segments the index job dropped, with the reason (too_small, unpaired, outlier, rare_label, ...)."""
        return _concat_parts(storage.join(self.root, schema.DROPPED_DIR), schema.dropped_schema())

    def failures_table(self) -> pa.Table:
        """Inputs the index job could not use: uri, stage, error type, message."""
        return _concat_parts(storage.join(self.root, schema.FAILURES_DIR), schema.failures_schema())

    def shard_positions(self) -> dict[str, np.ndarray]:
        """FAISS position of every row of every segment shard, by shard file name (computed once)."""
        if self._shard_positions is None:
            shards = [posixpath.basename(s) for s in segment_shards(self.root)]
            if self.ids is not None and self.ids.num_rows:
                names = np.asarray(self.ids.column("shard").to_pylist())
                names = np.array([posixpath.basename(n) for n in names]) if len(names) else names
                rows = self.ids.column("row").to_numpy().astype(np.int64)
                position = self.ids.column("position").to_numpy().astype(np.int64)
                found = {}
                for name in shards:
                    at = names == name
                    out = np.full(int(rows[at].max(initial=-1)) + 1, -1, dtype=np.int64)
                    out[rows[at]] = position[at]
                    found[name] = out
            else:
                found, start = {}, 0
                for name, shard in zip(shards, segment_shards(self.root), strict=True):
                    n = _num_rows(shard)
                    found[name] = np.arange(start, start + n, dtype=np.int64)
                    start += n
            self._shard_positions = found
        return self._shard_positions

    def _locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard file name, row) of each FAISS position."""
        names, rows = [], []
        for name, pos in self.shard_positions().items():
            names.append(np.full(len(pos), name, dtype=object))
            rows.append(np.arange(len(pos), dtype=np.int64))
        every = np.concatenate([p for p in self.shard_positions().values()]) if names else np.zeros(0, np.int64)
        by_position = np.argsort(every, kind="stable")
        flat_names = np.concatenate(names) if names else np.zeros(0, dtype=object)
        flat_rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        pick = by_position[positions]
        return flat_names[pick], flat_rows[pick]


SEGMENT_COLUMNS = [f.name for f in schema.segments_schema(1) if f.name != "visual_embedding"]


def _segment_type(name: str, dim: int) -> pa.DataType:
    return schema.segments_schema(int(dim)).field(name).type


def _num_rows(path: str) -> int:
    with storage.filesystem(path).open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def _concat_parts(directory: str, table_schema: pa.Schema) -> pa.Table:
    parts = [_read_table(p) for p in storage.listdir(directory)
             if posixpath.basename(p).startswith("part-") and p.endswith(".parquet")]
    return pa.concat_tables(parts, promote_options="permissive") if parts else table_schema.empty_table()


def model_infos(manifest: dict) -> dict:
    infos = manifest.get("model_info")
    if isinstance(infos, dict) and infos:
        return infos
    models = manifest.get("models")
    if isinstance(models, dict) and isinstance(models.get("visual"), dict) and "dim" in models["visual"]:
        return models
    return {}


def models_config_from_dict(data: dict | None):
    """Rebuild a models.config.ModelsConfig from its asdict() form (unknown keys ignored, lists -> tuples)."""
    if not isinstance(data, dict) or not isinstance(data.get("visual"), dict) or "dim" in data.get("visual", {}):
        return None
    def build(cls, values):
        values = values if isinstance(values, dict) else {}
        kwargs = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            v = values[f.name]
            sub = {"masker": mc.MaskerConfig, "felzenszwalb": mc.FelzenszwalbConfig, "sam": mc.SamConfig,
                   "visual": mc.VisualEncoderConfig, "clip": mc.ClipConfig, "text": mc.TextEncoderConfig,
                   "captioner": mc.CaptionerConfig}.get(f.name)
            kwargs[f.name] = build(sub, v) if sub is not None and isinstance(v, dict) else (
                tuple(v) if isinstance(v, list) else v)
        return cls(**kwargs)

    return build(mc.ModelsConfig, data)


def check_visual_encoder(manifest: dict, requested: dict, root: str = "") -> None:
    recorded = _info_of(model_infos(manifest).get("visual"))
    if not recorded:
        return  # nothing recorded to compare against (hand-made sets); the dim check at search time still holds
    why = encoder_mismatch(recorded, requested)
    if why:
        raise ReferenceSetError(
            f"the index at {root or 'this reference set'} was built with another visual encoder ({why}); "
            "label with the encoder the index was built with, or rebuild the index")


def _read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file of the reference set; a damaged one is a one-line ReferenceSetError."""
    try:
        return storage.read_parquet(path, columns=columns)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ReferenceSetError(f"cannot read {path} (corrupt or truncated parquet?): {_one_line(exc)}") from exc


def segment_shards(root: str) -> list[str]:
    """Segment shards in the global order (sorted by name); commit markers and temp files are not shards."""
    directory = storage.join(root, schema.SEGMENTS_DIR)
    return [p for p in storage.listdir(directory)
            if posixpath.basename(p).startswith("part-") and p.endswith(".parquet")]


def load_index(root: str):
    """(faiss.Index with its tuned search parameters, ids table); a damaged or missing index is one line."""
    try:
        return faiss_index.load_index(root)
    except faiss_index.CorruptIndex as exc:  # missing, truncated or mismatched files
        raise ReferenceSetError(f"unusable FAISS index in {root}: {_one_line(exc)}") from exc
    except (FileNotFoundError, OSError) as exc:
        raise ReferenceSetError(f"cannot read the FAISS index of {root}: {_one_line(exc)}") from exc
    except RuntimeError as exc:  # faiss raises RuntimeError on a corrupt or truncated file
        raise ReferenceSetError(f"the FAISS index of {root} is corrupt or truncated: {_one_line(exc)}") from exc


def _position_labels(root: str, ids: pa.Table | None, ntotal: int) -> np.ndarray:
    """Label id of every index row, reading only the label_id column of each shard."""
    shards = segment_shards(root)
    per_shard = {posixpath.basename(s): _read_table(s, ["label_id"]).column("label_id")
                 .to_numpy().astype(np.int64) for s in shards}
    if ids is not None and ids.num_rows:
        ids = ids.sort_by("position")
        shard_col = ids.column("shard").to_pylist()
        rows = ids.column("row").to_numpy().astype(np.int64)
        labels = np.full(ids.num_rows, -1, dtype=np.int64)
        names = np.array([posixpath.basename(s) for s in shard_col])
        for name in np.unique(names):
            sel = names == name
            if name not in per_shard:
                raise ReferenceSetError(f"the index of {root} points into shard {name}, which is missing")
            arr = per_shard[name]
            if rows[sel].max(initial=-1) >= len(arr):
                raise ReferenceSetError(f"the index of {root} points past the end of shard {name}")
            labels[sel] = arr[rows[sel]]
        positions = ids.column("position").to_numpy()
        if not np.array_equal(positions, np.arange(len(positions))):
            raise ReferenceSetError(f"the id map of {root} is not a permutation of 0..{len(positions) - 1}")
    else:
        labels = np.concatenate([per_shard[k] for k in sorted(per_shard)]) if per_shard else np.zeros(0, np.int64)
    if len(labels) != ntotal:
        raise ReferenceSetError(
            f"the FAISS index of {root} has {ntotal} rows but the segment shards have {len(labels)}; rebuild the index")
    return labels
