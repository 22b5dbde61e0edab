"""Class aliases and the benchmark background (SPEC §1, labelling items 3-4).

Unit checks of the class-list syntax and of the max over aliases, then held-out scenes: the hard world at seed 21
(none of the dev seeds), its reference set built by the real index job with the tiny-random preset, labelled
(a) with the reference set's names, (b) with other names only, (c) with the other names plus the reference set's
names as aliases; and its test split laid out as a VOC21 folder (stuff = background, objects = their VOC ids)
for `reme evaluate --dataset voc21`, where the background is predicted by default.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from inference import datasets, scoring
from inference.labeller import ClassListError, Labeller, LabelRequest, parse_class_aliases, parse_classes
from refset.reader import ReferenceSet
from tests.inference.refsets import pets_reference_set, unit
from tests.worlds import hard


# ---------------------------------------------------------------------------------------------------------------
# The syntax
# ---------------------------------------------------------------------------------------------------------------
def test_class_file_lines_list_aliases_after_commas():
    lines = ["person, man,  woman , child", "", "cat", "tv monitor, television"]
    assert parse_class_aliases(lines=lines) == [("person", "man", "woman", "child"), ("cat",),
                                                ("tv monitor", "television")]
    assert parse_classes(lines=lines) == ["person", "cat", "tv monitor"]  # the first name names the class
    # a name repeated in its own class counts once; one given to two classes is refused
    assert parse_class_aliases(lines=["cat, Cat, kitten"]) == [("cat", "kitten")]
    with pytest.raises(ClassListError, match="duplicate class name 'man'"):
        parse_class_aliases(lines=["person, man", "man"])
    with pytest.raises(ClassListError, match="empty class name"):
        parse_class_aliases(lines=["person, , man"])


def test_command_line_classes_split_on_semicolons_only_when_there_is_one():
    assert parse_class_aliases(text="cat,dog , sky") == [("cat",), ("dog",), ("sky",)]  # today's form
    assert parse_class_aliases(text="person, man, woman; cat ;sky") == [("person", "man", "woman"), ("cat",),
                                                                        ("sky",)]
    assert parse_class_aliases(text="person, man;") == [("person", "man")]  # one class with an alias
    for bad in ("cat;;dog", "person,;cat", ";", "cat,,dog"):
        with pytest.raises(ClassListError):
            parse_class_aliases(text=bad)


def test_request_scores_every_alias_and_the_background_through_its_other_names():
    request = LabelRequest(("background", "person", "cat"),
                           aliases=(("background", "sky", "wall"), ("person", "man"), ("cat",)))
    assert request.background_id == 0
    assert request.scored_names == [(0, "sky"), (0, "wall"), (1, "person"), (1, "man"), (2, "cat")]
    assert request.scored_columns.tolist() == [0, 1, 2]
    plain = LabelRequest(("background", "cat"))  # the plain word: no column, the threshold alone
    assert plain.background_id == 0 and plain.scored_columns.tolist() == [1]
    # a background line without the word (the field's files) is found by the benchmark, not by its names
    assert LabelRequest(("sky", "cat"), aliases=(("sky", "wall"), ("cat",))).background_id is None
    with pytest.raises(ClassListError, match="alias lists"):
        LabelRequest(("a", "b"), aliases=(("a",),))


def test_alias_table_is_the_max_over_each_class_names():
    table = np.array([[0.1, 0.9, 0.3, 0.2], [0.8, 0.2, 0.1, 0.7]], np.float32)  # 2 labels x 4 names
    owners = np.array([1, 1, 2, 2])  # names 0,1 -> class 1; names 2,3 -> class 2 (class 0 has no column)
    got = scoring.alias_table(table, owners, np.array([1, 2]))
    assert np.allclose(got, [[0.9, 0.3], [0.8, 0.7]])


# ---------------------------------------------------------------------------------------------------------------
# The labeller, on a reference set written directly
# ---------------------------------------------------------------------------------------------------------------
class RecordingEncoder:
    """Text axes by name; records every call (the aliases must be embedded in one batch)."""

    def __init__(self, axes: dict[str, int], dim: int = 4):
        self.axes, self.dim, self.calls = axes, dim, []

    def encode(self, names: list[str]) -> np.ndarray:
        self.calls.append(list(names))
        out = np.zeros((len(names), self.dim), np.float32)
        for i, n in enumerate(names):
            out[i, self.axes[n]] = 1.0
        return out


@pytest.fixture
def pets(tmp_path):
    return pets_reference_set(tmp_path / "ref")


@pytest.mark.parametrize("strategy", ["per_label", "neighbours", "prototype"])
def test_a_class_named_by_an_alias_the_reference_set_knows_beats_the_plain_name(pets, strategy):
    reference, centres = pets
    encoder = RecordingEncoder({"dog": 0, "cat": 1, "kitty": 2, "hound": 3})
    segments = np.stack([centres[0], centres[1], centres[1]])

    def decide(request):
        labeller = Labeller.from_text_encoder(reference, encoder, request)
        return labeller.decide_batch([segments])[0]

    # Plain names the reference set does not know: "hound" and "kitty" resemble neither label; the cats are
    # scored by text that matches nothing, so they get no confident score.
    plain = decide(LabelRequest(("hound", "kitty"), strategy=strategy, k=4))
    aliased = decide(LabelRequest(("hound", "kitty"), aliases=(("hound", "dog"), ("kitty", "cat")),
                                  strategy=strategy, k=4))
    assert aliased.class_ids.tolist() == [0, 1, 1]
    if strategy != "prototype":
        assert np.allclose(aliased.confidence, 1.0, atol=1e-5)  # through the alias, every neighbour is the class
        assert (plain.confidence < 0.5).all()
    assert encoder.calls[-1] == ["hound", "dog", "kitty", "cat"]  # every alias in one call, classes in order


def test_background_line_takes_the_stuff_its_names_match_and_the_threshold_the_rest(pets):
    reference, centres = pets
    encoder = RecordingEncoder({"dog": 0, "cat": 1, "bird": 2})
    off = unit(np.ones(8))
    segments = np.stack([centres[0], centres[1], off])
    # "cat" is one of the background's names: cat segments are background through its column.
    request = LabelRequest(("background", "dog", "bird"), aliases=(("background", "cat"), ("dog",), ("bird",)),
                           k=4, threshold=0.5)
    labeller = Labeller.from_text_encoder(reference, encoder, request)
    assert encoder.calls[-1] == ["cat", "dog", "bird"]  # the word "background" is not embedded
    decision = labeller.decide_batch([segments])[0]
    assert decision.class_ids[:2].tolist() == [1, 0]
    # Threshold above every score: everything is background.
    everything = Labeller.from_text_encoder(reference, encoder, LabelRequest(
        request.class_names, aliases=request.aliases, k=4, threshold=2.0)).decide_batch([segments])[0]
    assert everything.class_ids.tolist() == [0, 0, 0]


def test_benchmark_class_files_carry_the_fields_background_line():
    voc = datasets.class_file("voc21").splitlines()
    assert len(voc) == 21 and voc[0].split(", ")[1:] == list(datasets.BACKGROUND_STUFF)
    assert len(datasets.BACKGROUND_STUFF) == 26
    assert voc[voc.index(next(line for line in voc if line.startswith("person")))].startswith("person, person in")
    coco = datasets.class_file("coco-object").splitlines()
    assert len(coco) == 81 and "bed" not in coco[0].split(", ") and "bed" in coco  # bed is a COCO object
    assert datasets.class_file("context60").splitlines()[0] == "background"
    assert datasets.class_file("ade150").splitlines()[0] == "wall"
    for name in ("voc21", "voc20", "context60", "context59", "coco-object", "coco-stuff", "ade150", "cityscapes"):
        parse_class_aliases(lines=datasets.class_file(name).splitlines())  # each file parses: no name in two classes


# ---------------------------------------------------------------------------------------------------------------
# Held-out scenes: the hard world, seed 21, the real index job
# ---------------------------------------------------------------------------------------------------------------
SEED, N_TRAIN, N_TEST = 21, 24, 8
VOC_IDS = {"car": 7, "person": 15, "boat": 4, "bird": 3}  # the hard world's objects that VOC has; ball: ignored


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, tiny_models):
    from tests.worlds.measure import build_reference, segment_and_embed

    root = tmp_path_factory.mktemp("aliases")
    world = hard.make_world(root / "world", SEED, N_TRAIN, N_TEST)
    ref_dir = build_reference(world.train, root / "ref", tiny_models.cache_dir)
    feats = segment_and_embed(world.test, ref_dir)
    return root, world, ref_dir, feats


@pytest.mark.slow
def test_aliases_on_held_out_scenes(held_out):
    from tests.worlds.measure import evaluate

    _, _, ref_dir, feats = held_out
    ref = ReferenceSet.open(str(ref_dir))
    others = tuple(hard.SYNONYMS[c] for c in hard.CLASSES)  # names the reference set never saw

    def miou(request):
        return float(evaluate(ref, feats, request)["mIoU"])

    exact = miou(LabelRequest(hard.CLASSES))
    plain = miou(LabelRequest(others))
    aliased = miou(LabelRequest(others, aliases=tuple(zip(others, hard.CLASSES, strict=True))))
    print(f"mIoU: exact names {exact:.2f}, other names {plain:.2f}, other names + aliases {aliased:.2f}")
    assert aliased == pytest.approx(exact, abs=0.01)  # each label finds its class through the alias
    assert aliased > plain + 5.0


def _voc_layout(world, out):
    """The test split as a plain VOC21 folder: stuff -> 0 (background), objects -> their VOC ids, ball ignored."""
    lut = np.full(256, 255, np.uint8)
    for i, name in enumerate(hard.CLASSES):
        lut[i] = 0 if name in hard.STUFF else VOC_IDS.get(name, 255)
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for image in sorted((world.test / "images").glob("*.png")):
        (out / "images" / image.name).write_bytes(image.read_bytes())
        label = np.asarray(Image.open(world.test / "labels" / image.name))
        Image.fromarray(lut[label]).save(out / "labels" / image.name)
    return out


@pytest.mark.slow
def test_voc21_background_is_predicted_by_default_and_threshold_overrides(held_out, tmp_path, capsys):
    from pipeline import cli

    _, world, ref_dir, _ = held_out
    voc = _voc_layout(world, tmp_path / "voc")

    def run(*extra):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        result_json = out.with_suffix(".json")
        assert cli.main(["evaluate", "--index", str(ref_dir), "--dataset", "voc21", str(voc), "--output", str(out),
                         "--json", str(result_json), "--no_progress", *extra]) == 0
        maps = [np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))]
        return json.loads(result_json.read_text()), maps

    default, maps = run()
    print("voc21 default:", default["mIoU"], default["per_class_iou"], default["background"])
    assert default["background"]["threshold_from"] == "the benchmark's default"
    assert default["background"]["threshold"] == datasets.BACKGROUND_THRESHOLDS["voc21"]
    assert default["background"]["names"] == list(datasets.BACKGROUND_STUFF)
    # The world's sky, grass, road and building are background names: most background pixels are found.
    assert default["per_class_iou"]["background"] >= 60.0
    assert all((m == 0).mean() > 0.2 for m in maps)

    # Without the background line and threshold (the labeller before this change) no pixel is background.
    lines = tmp_path / "plain.txt"
    lines.write_text("\n".join(datasets.VOC_CLASSES) + "\n")
    plain, plain_maps = run("--classes-file", str(lines), "--threshold", "0")
    assert plain["background"]["threshold_from"] == "--threshold" and plain["background"]["names"] == []
    assert plain["per_class_iou"]["background"] == 0.0 and not any((m == 0).any() for m in plain_maps)
    assert default["mIoU"] > plain["mIoU"]

    # --threshold overrides: above every score, every pixel is background.
    everything, all_maps = run("--threshold", "2")
    assert everything["background"]["threshold"] == 2.0
    assert all((m == 0).all() for m in all_maps)
    assert "background 'background' predicted" in capsys.readouterr().err


def _one_image_voc(root):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "labels" / "a.png")
    return root


def test_benchmark_request_uses_the_class_file_and_the_default_threshold_unless_told(tmp_path):
    from pipeline.command import UsageError
    from pipeline.label_job import benchmark_request

    voc = datasets.load_dataset("voc21", _one_image_voc(tmp_path / "voc"))
    request = benchmark_request(voc, LabelRequest(("_",)))
    assert request.class_names == datasets.VOC_CLASSES and request.background_id == 0
    assert request.aliases[0] == ("background", *datasets.BACKGROUND_STUFF)
    assert request.aliases[datasets.VOC_CLASSES.index("boat")] == ("boat", "ship")
    assert request.threshold == datasets.BACKGROUND_THRESHOLDS["voc21"]
    assert benchmark_request(voc, LabelRequest(("_",), threshold=0.0)).threshold == 0.0  # --threshold overrides
    # --classes-file lines replace the standard ones (the field's own file: no "background" word on line 0)
    field = [tuple(line.split(", ")) for line in datasets.class_file("voc21").splitlines()]
    field[0] = field[0][1:]
    mine = benchmark_request(voc, LabelRequest(("_",)), field)
    assert mine.background_id == 0 and mine.scored_names[0] == (0, "sky")  # the benchmark says which is background
    with pytest.raises(UsageError, match="21 classes but --classes/--classes-file gives 2"):
        benchmark_request(voc, LabelRequest(("_",)), [("cat",), ("dog",)])
    # a benchmark without background keeps no threshold
    ade = datasets.load_dataset("ade150", _one_image_voc(tmp_path / "ade"))
    assert benchmark_request(ade, LabelRequest(("_",))).threshold is None


def test_cli_flags_carry_aliases_into_the_label_request(tmp_path):
    from pipeline import cli

    parser = cli.get_args_parser()
    args, _ = parser.parse_known_args(["label", "--index", "ref", "--classes", "person, man, woman; cat", "in", "out"])
    config = cli.label_config(args, cli.read_class_aliases(args), ("in",), "out")
    assert config.request.class_names == ("person", "cat")
    assert config.request.aliases == (("person", "man", "woman"), ("cat",))
    lines = tmp_path / "classes.txt"
    lines.write_text("background, sky, wall\nperson, man\n")
    args, _ = parser.parse_known_args(["label", "--index", "ref", "--classes-file", str(lines), "in", "out"])
    request = cli.label_config(args, cli.read_class_aliases(args)).request
    assert request.background_id == 0 and request.scored_names == [(0, "sky"), (0, "wall"), (1, "person"), (1, "man")]
    args, _ = parser.parse_known_args(["evaluate", "--dataset", "voc21", "root", "--classes-file", str(lines)])
    assert cli.read_class_aliases(args) == [("background", "sky", "wall"), ("person", "man")]
    args, _ = parser.parse_known_args(["evaluate", "--dataset", "voc21", "root"])
    assert cli.read_class_aliases(args) is None  # the benchmark's own class file


@pytest.mark.slow
def test_an_output_labelled_with_other_aliases_is_refused(held_out, tmp_path, capsys):
    from pipeline import cli

    _, world, ref_dir, _ = held_out
    image = str(sorted((world.test / "images").glob("*.png"))[0])
    out = str(tmp_path / "out")

    def label(classes):
        return cli.main(["label", "--index", str(ref_dir), "--classes", classes, "--no_progress", image, out])

    assert label("sky, heavens; grass") == 0
    assert label("sky, heavens; grass") == 0  # the same request resumes
    capsys.readouterr()
    assert label("sky; grass") == 2  # same class names, other aliases: other label maps
    assert "other classes" in capsys.readouterr().err


@pytest.mark.slow
def test_python_api_takes_aliases_and_labels_like_the_exact_names(held_out, tiny_models):
    from inference.api import Labeller as ApiLabeller
    from inference.api import ReferenceSet as ApiReferenceSet

    _, world, ref_dir, _ = held_out
    ref = ApiReferenceSet.open(str(ref_dir), cache_dir=tiny_models.cache_dir)
    image = sorted((world.test / "images").glob("*.png"))[0]
    exact = ApiLabeller(ref, list(hard.CLASSES)).label(image)
    aliased = ApiLabeller(ref, [(hard.SYNONYMS[c], c) for c in hard.CLASSES])
    assert aliased.class_names == tuple(hard.SYNONYMS[c] for c in hard.CLASSES)
    assert aliased.request.aliases[0] == (hard.SYNONYMS["sky"], "sky")
    assert (aliased.label(image).label_map == exact.label_map).all()
