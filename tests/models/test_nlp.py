import pytest

from models.nlp import labels_from_caption, normalise_label


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A man riding a wave on top of a surfboard.", ["man", "wave", "surfboard"]),
        ("Two dogs playing in the grass", ["dog", "grass"]),
        ("A herd of giraffes standing in a field with trees in the background.", ["giraffe", "field", "tree"]),
        ("Some people walking on a sidewalk with umbrellas", ["people", "sidewalk", "umbrella"]),
        ("A young boy holding a hot dog next to a potted plant.", ["boy", "hot dog", "potted plant"]),
        ("A cat sits on a laptop keyboard.", ["cat", "laptop keyboard"]),
        ("Children playing with a frisbee", ["child", "frisbee"]),
        ("A red double decker bus driving down a city street.", ["double decker bus", "city street"]),
    ],
)
def test_labels_from_real_captions(caption, expected):
    assert labels_from_caption(caption) == expected


def test_labels_are_unique_in_order():
    assert labels_from_caption("A dog chasing another dog near two dogs and a ball") == ["dog", "ball"]


def test_grass_and_bus_are_not_mangled_by_singularisation():
    assert normalise_label("grass") == "grass"
    assert normalise_label("Buses") == "bus"
    assert normalise_label("glasses") == "glass"


@pytest.mark.parametrize(
    "text, expected",
    [("The Two Dogs", "dog"), ("a Traffic Lights", "traffic light"), ("some women", "woman"), ("3 sheep", "sheep"),
     ("the", ""), ("", "")],
)
def test_normalise_label(text, expected):
    assert normalise_label(text) == expected
