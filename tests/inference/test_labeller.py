import numpy as np
import pytest

from inference.labeller import ClassListError, Labeller, LabelRequest, parse_classes
from tests.inference.refsets import pets_reference_set, unit


@pytest.fixture
def ref(tmp_path):
    return pets_reference_set(tmp_path / "ref")


def _masks():
    masks = np.zeros((3, 6, 6), bool)
    masks[0, :, :3] = True  # left half
    masks[1, :, 3:] = True  # right half
    masks[2, 2:4, 2:4] = True  # small centre square, overlapping both
    return masks


@pytest.mark.parametrize("strategy", ["per_label", "neighbours", "prototype"])
def test_segments_take_the_class_of_their_neighbours(ref, strategy):
    reference, centres = ref
    # Classes "cat", "dog" (reverse order of the labels), class text = the label axes.
    class_text = np.eye(2, 4)[[1, 0]]
    labeller = Labeller(reference, class_text, LabelRequest(("cat", "dog"), strategy=strategy, k=4))
    # dog (a less typical one: lower prototype score than the square), cat, cat.
    emb = np.stack([unit(centres[0] + 0.2 * centres[1]), centres[1], centres[1]])
    [out] = labeller.label_batch([_masks()], [emb])
    assert out.class_ids.tolist() == [1, 0, 0]
    expected = np.zeros((6, 6), int)
    expected[:, :3] = 1
    expected[2:4, 2:4] = 0  # the small square wins its pixels (a tie with the left half's score under the
    # neighbour rule -> the smaller segment wins; under the prototype rule the square is simply more confident)
    if strategy != "prototype":
        assert np.allclose(out.scores, 1.0, atol=1e-5)  # every neighbour's label is exactly the class
    assert (out.label_map == expected).all()


def test_background_threshold_and_unlabelled(ref):
    reference, centres = ref
    # Class text: "dog" = axis 0, "sky" = axis 2 (no reference label resembles it).
    text = np.eye(4)[[0, 2]]
    off = unit(np.ones(8))  # a segment far from both clusters still has neighbours; its score comes from T
    emb = np.stack([centres[0], off, centres[1]])
    with_bg = Labeller(reference, text, LabelRequest(("background", "dog", "sky"), threshold=0.5, k=3))
    [out] = with_bg.label_batch([_masks()], [emb])
    # Segment 2 (a cat) scores 0 for both dog and sky -> background; segment 0 is a dog.
    assert out.class_ids[0] == 1 and out.class_ids[2] == 0
    no_bg = Labeller(reference, text, LabelRequest(("dog", "sky"), threshold=0.5, k=3, ignore_value=255))
    [out] = no_bg.label_batch([_masks()], [emb])
    assert out.class_ids[0] == 0 and out.class_ids[2] == 255


def test_batch_of_images_and_an_image_without_segments(ref):
    reference, centres = ref
    labeller = Labeller(reference, np.eye(2, 4), LabelRequest(("dog", "cat"), k=2))
    empty = np.zeros((0, 5, 7), bool)
    results = labeller.label_batch([_masks(), empty], [np.stack([centres[1]] * 3), np.zeros((0, 8))])
    assert results[0].class_ids.tolist() == [1, 1, 1]
    assert results[1].label_map.shape == (5, 7) and (results[1].label_map == 255).all()


def test_class_lists():
    assert parse_classes(text=" cat , dog house ,sky") == ["cat", "dog house", "sky"]
    assert parse_classes(lines=["cat", "", "dog"]) == ["cat", "dog"]
    for bad in ("cat,,dog", "", "cat,CAT"):
        with pytest.raises(ClassListError):
            parse_classes(text=bad)
    with pytest.raises(ClassListError, match="collides"):
        LabelRequest(tuple(f"c{i}" for i in range(300)), ignore_value=255)


def test_label_and_write_steps_isolate_a_broken_item(ref, tmp_path):
    """One item whose embeddings do not fit breaks the batched retrieval; only that item becomes a failure, and
    the writer paints and writes the others."""
    from models.config import ModelsConfig
    from models.rle import encode_masks
    from transforms.label import LabelModelHandler, WriteImageOutputs

    reference, centres = ref
    request = LabelRequest(("dog", "cat"), k=2)
    uris = [f"/in/img{i}.png" for i in range(3)]
    handler = LabelModelHandler("unused", request, ModelsConfig(), max_batch_size=4)
    masks = _masks()
    items = []
    for i, uri in enumerate(uris):
        emb = np.stack([centres[0]] * 3) if i != 1 else np.ones((3, 5))  # wrong dim for item 1
        items.append({"uri": uri, "name": f"img{i}", "image": np.zeros((6, 6, 3), np.uint8), "height": 6, "width": 6,
                      "rles": encode_masks(masks), "keep": np.ones(3, bool), "to_embed": np.arange(3),
                      "visual": emb, "failure": None})
    items.append({"uri": "/in/bad.png", "failure": {"uri": "/in/bad.png", "stage": "decode",
                                                      "error_type": "ImageDecodeError", "message": "x"}})
    labelled = list(handler.run_inference(items, Labeller(reference, np.eye(2, 4), request)))
    writer = WriteImageOutputs(str(tmp_path / "out"), request, False)
    written = [out for item in labelled for out in writer.process(item)]
    failed = [(item["uri"], item["failure"]["stage"]) for item in written if item["failure"] is not None]
    assert failed == [(uris[1], "label"), ("/in/bad.png", "decode")]
    assert list(labelled[0]["decision"].class_ids) == [0, 0, 0]  # all three segments near the "dog" centre
    assert (tmp_path / "out" / "img0.png").is_file() and not (tmp_path / "out" / "img1.png").exists()
    assert (tmp_path / "out" / "segments" / "img2.parquet").is_file()

