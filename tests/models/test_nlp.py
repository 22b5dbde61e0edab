"""Captions -> labels. Expected labels are written by hand from each caption's meaning (tests/models/data/README.md
gives the annotation rules); the quality tests score the whole hand-labelled files, the unit tests pin each class of
error the rules must avoid, with captions that are not in those files."""

import json
from pathlib import Path

import pytest

from models import nlp
from models.nlp import labels_from_caption, labels_from_captions, normalise_label, phrase_labels, singular

DATA = Path(__file__).parent / "data"
SPACY = nlp.spacy_pipeline() is not None
needs_spacy = pytest.mark.skipif(not SPACY, reason="spaCy with an English pipeline is not installed (reme[spacy])")


def read_gold(name):
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    assert rows and all(set(r) == {"caption", "labels"} and r["labels"] for r in rows)
    return rows


def head_f1(rows, backend):
    """Micro F1 over per-caption sets of head nouns (the last word of each label)."""
    tp = fp = fn = 0
    for row in rows:
        predicted = {label.split()[-1] for label in labels_from_caption(row["caption"], backend)}
        expected = {label.split()[-1] for label in row["labels"]}
        tp, fp, fn = tp + len(predicted & expected), fp + len(predicted - expected), fn + len(expected - predicted)
    return 2 * tp / (2 * tp + fp + fn)


def test_gold_files_are_big_enough_and_disjoint():
    dev, heldout = read_gold("captions_gold.jsonl"), read_gold("captions_heldout.jsonl")
    assert len(dev) >= 60 and len(heldout) >= 20
    assert not {r["caption"] for r in dev} & {r["caption"] for r in heldout}


def test_rule_path_head_noun_f1_on_the_gold_captions():
    assert head_f1(read_gold("captions_gold.jsonl"), "rules") >= 0.95


@needs_spacy
def test_spacy_path_head_noun_f1_on_the_gold_captions():
    assert head_f1(read_gold("captions_gold.jsonl"), "spacy") >= 0.95


@pytest.mark.parametrize("backend", ["rules", pytest.param("spacy", marks=needs_spacy)])
def test_head_noun_f1_on_the_heldout_captions(backend):
    # The held-out set was written and committed before the rules were tuned; this guards the same bar there.
    assert head_f1(read_gold("captions_heldout.jsonl"), backend) >= 0.95


# --- error classes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("caption, expected", [
    ("A blue and white bus parked by the curb.", ["bus", "curb"]),
    ("A red, white and blue flag on a pole.", ["flag", "pole"]),
    ("A man in a black and white striped shirt.", ["man", "shirt"]),
    ("Black and white cows in a green field.", ["cow", "field"]),
    ("The train is yellow and black.", ["train"]),
    # nouns joined by "and" stay nouns, even those that can be colours
    ("An orange and a banana on a table.", ["orange", "banana", "table"]),
    ("Oranges and lemons in a crate.", ["orange", "lemon", "crate"]),
])
def test_coordinated_colours_are_modifiers_not_labels(caption, expected):
    assert labels_from_caption(caption, "rules") == expected


@pytest.mark.parametrize("caption, expected", [
    ("A black and white photo of a horse and a cart.", ["horse", "cart"]),
    ("Close up of a donut with sprinkles.", ["donut", "sprinkle"]),
    ("A close-up view of a bird on a branch.", ["bird", "branch"]),
    ("An aerial view of a city.", ["city"]),
    ("A photo taken from a boat of a lighthouse.", ["boat", "lighthouse"]),
    ("An old picture showing two women on a porch.", ["woman", "porch"]),
    ("A girl taking a selfie with her phone.", ["girl", "phone"]),
    ("Two men pose for a photo with a trophy.", ["man", "trophy"]),
    # a picture that hangs somewhere is a thing in the scene
    ("A picture hanging on a wall above a sofa.", ["picture", "wall", "sofa"]),
])
def test_photo_meta_phrases_are_not_labels(caption, expected):
    assert labels_from_caption(caption, "rules") == expected


@pytest.mark.parametrize("plural, expected", [
    # mass nouns and foods the lexicon does not know as plurals stay as they are
    ("pepperoni", "pepperoni"), ("calamari", "calamari"), ("broccoli", "broccoli"), ("spaghetti", "spaghetti"),
    ("salami", "salami"), ("graffiti", "graffiti"), ("hummus", "hummus"), ("asparagus", "asparagus"),
    ("grass", "grass"), ("glass", "glass"), ("bus", "bus"), ("dress", "dress"), ("octopus", "octopus"),
    # nouns the lexicon also lists as their own word, and plural-only nouns
    ("clothes", "clothes"), ("scissors", "scissors"), ("jeans", "jeans"), ("shorts", "shorts"), ("people", "people"),
    ("glasses", "glasses"),
    # irregular and regular plurals
    ("teeth", "tooth"), ("mice", "mouse"), ("knives", "knife"), ("leaves", "leaf"), ("geese", "goose"),
    ("children", "child"), ("women", "woman"), ("cacti", "cactus"), ("sheep", "sheep"), ("buses", "bus"),
    ("bases", "base"), ("tomatoes", "tomato"), ("benches", "bench"), ("cherries", "cherry"),
    # words the lexicon does not know get the regular English rules only
    ("frisbees", "frisbee"), ("skateboarders", "skateboarder"), ("t-shirts", "t-shirt"),
])
def test_singular_only_where_the_lexicon_knows_a_plural(plural, expected):
    assert singular(plural) == expected


@pytest.mark.parametrize("caption, expected", [
    ("A kite flying over a park on a windy day.", ["kite", "park"]),
    ("Two dogs play in a park at night.", ["dog", "park"]),
    ("A beach on a sunny day with umbrellas in the distance.", ["beach", "umbrella"]),
    ("A cat sits on a park bench.", ["cat", "park bench"]),
    ("Kids riding skateboards at a skate park.", ["kid", "skateboard", "skate park"]),
    ("A bird flying through the air over a lake.", ["bird", "lake"]),
])
def test_setting_words_drop_alone_and_keep_the_place(caption, expected):
    assert labels_from_caption(caption, "rules") == expected


@pytest.mark.parametrize("caption, expected", [
    ("A man building a sandcastle on the beach.", ["man", "sandcastle", "beach"]),
    ("A clock on a tall brick building.", ["clock", "brick building"]),
    ("A painting of flowers on a wall.", ["painting", "flower", "wall"]),
    ("A woman cooking eggs in a frying pan.", ["woman", "egg", "frying pan"]),
    ("A train crossing a bridge.", ["train", "bridge"]),
    ("A dog standing in the snow.", ["dog", "snow"]),
    ("A woman in a green dress holding an umbrella.", ["woman", "dress", "umbrella"]),
    ("A horse bending down to eat grass.", ["horse", "grass"]),
    ("A horse drawn cart on a dirt road.", ["horse", "cart", "dirt road"]),
    ("A pizza cut into slices on a tray.", ["pizza", "slice", "tray"]),
])
def test_ing_and_ed_forms_verbs_versus_nouns(caption, expected):
    assert labels_from_caption(caption, "rules") == expected


@pytest.mark.parametrize("caption, expected", [
    ("A dog's bowl next to a chair.", ["dog", "bowl", "chair"]),
    ("A lighthouse under a partly cloudy sky.", ["lighthouse", "sky"]),
    ("A bus that seems to be stuck in the mud.", ["bus", "mud"]),
    ("A herd of cows and a flock of sheep.", ["cow", "sheep"]),
    ("A slice of pizza on the top of a box.", ["pizza", "box"]),
    ("A shelf full of jars.", ["shelf", "jar"]),
    ("Different kinds of bread on a counter.", ["bread", "counter"]),
    ("A van parked on the side with its door open.", ["van", "door"]),
    ("Three teddy bears and 2 fire hydrants.", ["teddy bear", "fire hydrant"]),
    ("A young boy holding a hot dog next to a potted plant.", ["boy", "hot dog", "potted plant"]),
])
def test_possessives_partitives_numbers_and_compounds(caption, expected):
    assert labels_from_caption(caption, "rules") == expected


def test_labels_are_unique_in_order():
    assert labels_from_caption("A dog chasing another dog near two dogs and a ball", "rules") == ["dog", "ball"]


@pytest.mark.parametrize(
    "text, expected",
    [("The Two Dogs", "dog"), ("a Traffic Lights", "traffic light"), ("some women", "woman"), ("3 sheep", "sheep"),
     ("Pepperoni", "pepperoni"), ("the", ""), ("", "")],
)
def test_normalise_label(text, expected):
    assert normalise_label(text) == expected


# --- one set of label rules for both chunkers ------------------------------------------------------------------

@pytest.mark.parametrize("phrase, following, expected", [
    # phrases shaped as spaCy's noun_chunks gives them (coarse tags from token.pos_)
    ([("a", "DET"), ("blue", "ADJ"), ("and", "CC"), ("white", "ADJ"), ("bus", "NOUN")], None, ["bus"]),
    ([("a", "DET"), ("black", "ADJ"), ("and", "CC"), ("white", "ADJ"), ("photo", "NOUN")], "of", []),
    ([("a", "DET"), ("closeup", "ADJ"), ("view", "NOUN")], "of", []),
    ([("a", "DET"), ("cat", "NOUN"), ("'s", "POSS"), ("face", "NOUN")], None, ["cat", "face"]),
    ([("a", "DET"), ("sandwich", "NOUN"), ("and", "CC"), ("french", "ADJ"), ("fries", "NOUN")], None,
     ["sandwich", "french fry"]),
    ([("a", "DET"), ("windy", "ADJ"), ("day", "NOUN")], None, []),
    ([("a", "DET"), ("horse", "NOUN"), ("drawn", "ADJ"), ("carriage", "NOUN")], None, ["horse", "carriage"]),
    ([("its", "PRON"), ("mother", "NOUN")], None, ["mother"]),
    ([("the", "DET"), ("pepperoni", "NOUN")], None, ["pepperoni"]),
])
def test_phrase_rules(phrase, following, expected):
    assert phrase_labels(phrase, following) == expected


@needs_spacy
@pytest.mark.parametrize("caption, expected", [
    ("A blue and white bus parked by the curb.", ["bus", "curb"]),
    ("A black and white photo of a horse and a cart.", ["horse", "cart"]),
    ("Close up of a donut with sprinkles.", ["donut", "sprinkle"]),
    ("A kite flying over a park on a windy day.", ["kite", "park"]),
    ("A slice of pepperoni pizza.", ["pepperoni pizza"]),
    ("A dog's bowl next to a chair.", ["dog", "bowl", "chair"]),
])
def test_spacy_path_goes_through_the_same_label_rules(caption, expected):
    assert labels_from_caption(caption, "spacy") == expected


@pytest.mark.parametrize("backend", ["rules", pytest.param("spacy", marks=needs_spacy)])
def test_batch_equals_one_by_one(backend):
    captions = [r["caption"] for r in read_gold("captions_gold.jsonl")[:20]]
    assert labels_from_captions(captions, backend) == [labels_from_caption(c, backend) for c in captions]


def test_auto_takes_spacy_when_it_loads_and_rules_otherwise(monkeypatch):
    caption = "A fire hydrant next to a red car"
    assert labels_from_caption(caption) == labels_from_caption(caption, "spacy" if SPACY else "rules")
    monkeypatch.setattr(nlp, "spacy_pipeline", lambda: None)
    assert labels_from_caption(caption) == labels_from_caption(caption, "rules")
    with pytest.raises(RuntimeError, match="reme\\[spacy\\]"):
        labels_from_caption(caption, "spacy")
    with pytest.raises(ValueError, match="not one of auto, rules, spacy"):
        labels_from_caption(caption, "nltk")
