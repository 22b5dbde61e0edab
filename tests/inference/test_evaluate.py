"""`reme evaluate --predictions` pairs label maps with ground truth by the names `reme label` gives."""

from pathlib import Path

import numpy as np
from PIL import Image

from inference import datasets as D
from inference import outputs
from inference.evaluate import find_prediction, score_predictions


def _png(path: Path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode=mode).save(path)


def test_city_folders_are_paired_through_the_mirrored_names(tmp_path):
    gt = [[7, 26, 26, 33]]  # labelIds -> trainIds 0, 13, 13, 18
    for city, stem in (("frankfurt", "f_000"), ("lindau", "l_000")):
        _png(tmp_path / "cs" / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png", np.zeros((1, 4, 3)))
        _png(tmp_path / "cs" / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", gt)
    dataset = D.load_dataset("cityscapes", tmp_path / "cs")
    images = [str(image) for _, image, _ in dataset]
    names = outputs.output_names(images, [str(dataset.root / dataset.layout.images)])
    assert names == ["frankfurt/f_000_leftImg8bit", "lindau/l_000_leftImg8bit"]
    predictions = tmp_path / "pred"
    for name in names:  # what `reme label leftImg8bit/val OUT` writes
        _png(predictions / f"{name}.png", [[0, 13, 13, 18]])
    result = score_predictions(dataset, predictions)
    assert result["missing_predictions"] == 0 and result["mIoU"] == 100.0


def test_colliding_stems_pair_each_image_with_its_own_map(tmp_path):
    root = tmp_path / "ds"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("a\nb\n")
    for name in ("x.jpg", "x.png", "y.jpg"):
        _png(root / "images" / name, np.zeros((1, 2, 3)))
    _png(root / "labels" / "x.png", [[0, 1]])
    _png(root / "labels" / "y.png", [[1, 1]])
    dataset = D.load_dataset("folder", root)
    images_root = dataset.root / dataset.layout.images
    predictions = tmp_path / "pred"
    # `reme label` names: x.jpg -> x.jpg.png, x.png -> x.png.png (colliding stems), y.jpg -> y.png.
    assert outputs.output_names([str(images_root / n) for n in ("x.jpg", "x.png", "y.jpg")], [str(images_root)]) \
        == ["x.jpg", "x.png", "y"]
    for name in ("x.jpg", "x.png", "y"):
        _png(predictions / f"{name}.png", [[0, 0]])
    found = {image.name: find_prediction(predictions, key, image, images_root) for key, image, _ in dataset}
    assert {k: v.name for k, v in found.items()} == {"x.jpg": "x.jpg.png", "x.png": "x.png.png", "y.jpg": "y.png"}
