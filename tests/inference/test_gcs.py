"""The reader, the labeller core and the report on a gs:// reference set (gcp-storage-emulator on 127.0.0.1)."""

import numpy as np
import pytest

from inference.labeller import Labeller, LabelRequest
from inference.report import build_report
from refset import storage
from refset.reader import ReferenceSet
from tests.inference.refsets import unit, write_reference_set
from tests.support.gcs import gcs_emulator, gcs_prefix  # noqa: F401  (pytest fixtures)


def test_reference_set_on_gcs(tmp_path, gcs_prefix):  # noqa: F811
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(2, 8)))
    visual = np.concatenate([centres[0] + 0.05 * rng.normal(size=(5, 8)), centres[1] + 0.05 * rng.normal(size=(5, 8))])
    local = write_reference_set(tmp_path / "ref", visual, [0] * 5 + [1] * 5, ["water", "sand"], np.eye(2, 4))
    remote = gcs_prefix.rstrip("/") + "/ref"
    fs = storage.filesystem(remote)
    fs.put(str(local), remote, recursive=True)

    ref = ReferenceSet.open(remote)
    assert ref.index.ntotal == 10 and ref.label_names == ["water", "sand"]
    # Classes named like the labels, in the other order: text table is the identity, permuted.
    labeller = Labeller(ref, np.eye(2, 4)[::-1].copy(), LabelRequest(("sand", "water"), k=3))
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2], masks[1, 2:] = True, True
    [result] = labeller.label_batch([masks], [np.stack([centres[0], centres[1]])])
    assert result.class_ids.tolist() == [1, 0]
    assert (result.label_map[:2] == 1).all() and (result.label_map[2:] == 0).all()
    page = build_report(remote)
    assert "water" in page and "sand" in page


@pytest.mark.slow
def test_label_job_reads_and_writes_gcs(tmp_path, gcs_prefix, tiny_models):  # noqa: F811
    """`reme label` with a gs:// reference set, gs:// input prefix and gs:// output (Beam GCS + gcsfs)."""
    import json

    from inference.outputs import CLASSES_JSON
    from models.visual import VisualEncoder
    from pipeline import cli
    from tests.inference.scenes import CLASSES, make_scenes, read_scene

    visual = VisualEncoder(tiny_models.visual)
    train = make_scenes(tmp_path / "train", 4, seed=5)
    test = make_scenes(tmp_path / "test", 2, seed=6)
    embeddings, labels = [], []
    for i in range(4):
        image, label = read_scene(train, f"img{i:03d}")
        embeddings.append(visual.embed_segments([image], [np.stack([label == c for c in range(3)])])[0])
        labels += [0, 1, 2]
    from models.text import build_text_encoder

    text = build_text_encoder(tiny_models.text)
    local = write_reference_set(tmp_path / "ref", np.concatenate(embeddings), labels, list(CLASSES),
                                text.encode(list(CLASSES)), visual_info=visual.info, text_info=text.info,
                                extra_manifest={"models": tiny_models.to_dict()})
    fs = storage.filesystem(gcs_prefix)
    base = gcs_prefix.rstrip("/")
    fs.put(str(local), base + "/ref", recursive=True)
    fs.put(str(test / "images"), base + "/in", recursive=True)
    out = base + "/out"
    code = cli.main(["label", "--index", base + "/ref", "--classes", ",".join(CLASSES), base + "/in/img",
                     out, "--no_progress"])
    assert code == 0
    names = sorted(p.rsplit("/", 1)[-1] for p in storage.listdir(out) if p.endswith(".png"))
    assert names == ["img000.png", "img001.png"]
    assert json.loads(storage.read_bytes(storage.join(out, CLASSES_JSON))) == {"0": "sky", "1": "grass", "2": "road"}
