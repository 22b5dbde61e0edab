import json

import numpy as np
import pytest

from refset import schema
from refset.reader import ReferenceSet, ReferenceSetError, encoder_mismatch
from tests.inference.refsets import VISUAL_INFO, write_reference_set


def _make(tmp_path, **kw):
    rng = np.random.default_rng(1)
    visual = rng.normal(size=(12, 8))
    labels = [i % 3 for i in range(12)]
    return write_reference_set(tmp_path / "ref", visual, labels, ["cat", "dog", "sky"], rng.normal(size=(3, 4)), **kw)


def test_opens_and_maps_index_rows_to_labels(tmp_path):
    root = _make(tmp_path, permute_index=True)
    ref = ReferenceSet.open(str(root), visual=dict(VISUAL_INFO))
    assert ref.index.ntotal == 12 and ref.label_names == ["cat", "dog", "sky"]
    assert ref.label_text_embeddings().shape == (3, 4)
    # Each stored vector's own row in the index carries its own label, whatever the index order.
    import pyarrow.parquet as pq

    segs = pq.read_table(root / schema.SEGMENTS_DIR)
    emb = np.array(segs.column("visual_embedding").to_pylist(), dtype=np.float32)
    _, pos = ref.index.search(emb, 1)
    assert ref.position_labels[pos[:, 0]].tolist() == segs.column("label_id").to_pylist()
    means = ref.label_visual_means()
    assert means.shape == (3, 8) and np.allclose(np.linalg.norm(means, axis=1), 1)


def test_refuses_another_visual_encoder(tmp_path):
    root = _make(tmp_path)
    with pytest.raises(ReferenceSetError) as err:
        ReferenceSet.open(str(root), visual={"model_id": "facebook/dinov2-large", "kind": "dinov2", "dim": 8})
    assert "another visual encoder" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ReferenceSetError, match="dim"):
        ReferenceSet.open(str(root), visual=dict(VISUAL_INFO, dim=16))


def test_same_local_model_dir_elsewhere_is_the_same_encoder():
    a = {"model_id": "/tmp/a/tiny-random/dinov2-v1", "kind": "dinov2", "dim": 32}
    b = {"model_id": "/home/u/.cache/reme/tiny-random/dinov2-v1", "kind": "dinov2", "dim": 32}
    assert encoder_mismatch(a, b) is None
    assert encoder_mismatch(a, dict(b, kind="clip")) is not None


def test_refuses_missing_manifest_and_truncated_index(tmp_path):
    with pytest.raises(ReferenceSetError, match="manifest.json is missing"):
        ReferenceSet.open(str(tmp_path))
    root = _make(tmp_path)
    index_file = root / schema.INDEX_FILE
    data = index_file.read_bytes()
    index_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReferenceSetError) as err:
        ReferenceSet.open(str(root))
    assert "\n" not in str(err.value) and "index" in str(err.value).lower()


def test_refuses_manifest_that_is_not_json(tmp_path):
    root = _make(tmp_path)
    (root / schema.MANIFEST).write_text("{not json")
    with pytest.raises(ReferenceSetError, match="not valid JSON"):
        ReferenceSet.open(str(root))
    (root / schema.MANIFEST).write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ReferenceSetError, match="schema version"):
        ReferenceSet.open(str(root))


def test_refuses_truncated_labels_and_shards(tmp_path):
    root = _make(tmp_path)
    labels = root / schema.LABELS
    labels.write_bytes(labels.read_bytes()[: labels.stat().st_size // 2])
    with pytest.raises(ReferenceSetError, match="labels.parquet") as err:
        ReferenceSet.open(str(root))
    assert "\n" not in str(err.value)
