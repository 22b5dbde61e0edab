"""Captions -> candidate labels: noun-phrase extraction and label normalisation, fully offline.

Normalisation (`normalise_label`): lower-case, leading determiners / quantifiers / numbers stripped ("a", "the",
"two", "some", ...), head noun singularised with lemminflect (`getLemma(word, upos="NOUN")`, a real lexicon +
rules, so "grass" stays "grass" and "children" becomes "child").

Noun phrases (`noun_phrases`): when spaCy and an English model (en_core_web_sm/md/lg) are importable, spaCy's
`noun_chunks` are used. Otherwise a small rule chunker: each word gets a POS guess from lemminflect's lexicon
(`getAllLemmas`) and closed-class word lists (determiners, numbers, pronouns, prepositions, conjunctions,
auxiliaries and common caption verbs); an "-ing"/"-ed" form that can be a verb is a verb unless a determiner or
adjective precedes it ("a man riding" vs "a tall building"); phrases are maximal ADJ* NOUN+ runs.

Labels (`labels_from_caption`): the noun phrases, normalised, minus descriptive adjectives in front (colours,
sizes, ages: "young man" -> "man", while "hot dog" and "potted plant" stay), minus relational/partitive nouns
followed by "of" ("top of", "group of"), and minus scene words ("background"). Unique, in caption order.
"""

from __future__ import annotations

import functools
import re

from lemminflect import getAllLemmas, getLemma

DETERMINERS = set("""
a an the this that these those some any each every either neither no another other such what which whose
all both half several many much more most few fewer little less least lots plenty various numerous enough its
his her their our my your one two three four five six seven eight nine ten eleven twelve thirteen fourteen
fifteen twenty thirty forty fifty hundred dozen dozens couple
""".split()) - {"couple"}
PRONOUNS = set("i me you he him she it we us they them himself herself itself themselves someone something "
               "somebody anyone anything everyone everything nobody nothing who whom".split())
PREPOSITIONS = set("""
of in on at by for with without from to into onto upon over under above below beneath behind beside besides
between among around along across through near next inside outside off up down out about against toward towards
during before after while like than as via atop underneath throughout past beyond within
""".split())
CONJUNCTIONS = set("and or but nor so yet if because although though while where when whether then".split())
AUXILIARIES = set("is are was were be been being am has have had having do does did can could will would shall "
                  "should may might must 's".split())
# Third-person / base forms that captions use as verbs and that the lexicon also lists as nouns.
CAPTION_VERBS = set("""
sits sit stands stand lies lie rides ride holds hold eats eat walks walk plays play looks look flies fly grazes
graze swims swim waits wait carries carry wears wear watches watch jumps jump runs run drives drive hangs hang
leans lean rests rest contains contain shows show sleeps sleep parks park crosses cross pulls pull pushes push
throws throw catches catch hits hit uses use takes take makes make talks talk poses pose smiles smile travels
travel heads head covers cover fills fill sets set lays lay skis surfs surf skates skate prepares prepare
""".split()) - {"skis"}
ADVERBS = set("very not there here together just also almost only too really quite away outside inside".split())
CLOSED = DETERMINERS | PRONOUNS | PREPOSITIONS | CONJUNCTIONS | AUXILIARIES | CAPTION_VERBS | ADVERBS

# Adjectives that describe an instance rather than name a category: stripped from the front of caption labels.
DESCRIPTIVE = set("""
red orange yellow green blue purple pink brown black white gray grey silver gold golden colorful colourful dark
bright light pale big small large little tiny huge giant tall short long wide narrow high low young old new
older younger elderly adult baby cute beautiful pretty nice lovely ugly happy sad empty full clean dirty wet dry
busy open closed various different same several other many few single lone couple
""".split())
RELATIONAL = set("""
top front side middle edge back bottom end corner center centre part group couple pair bunch lot lots piece slice
view picture photo image close closeup close-up kind type variety number set row line pile herd flock stack
""".split())
SCENE_WORDS = set("background foreground distance day night time way scene shot".split())

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def _words(text: str) -> list[str]:
    words = []
    for w in _WORD.findall(text.lower()):
        w = w[:-2] if w.endswith("'s") else w
        if w:
            words.append(w)
    return words


def _is_number(word: str) -> bool:
    return word.isdigit() or bool(re.fullmatch(r"\d+(st|nd|rd|th)?", word))


def singular(word: str) -> str:
    """Singular of a noun via lemminflect (lexicon first, rules for unknown words)."""
    if not word.isalpha():
        return word
    lemmas = getLemma(word, upos="NOUN")
    return lemmas[0] if lemmas else word


def normalise_label(text: str) -> str:
    """"The Two Dogs" -> "dog": lower-case, leading determiners/quantifiers/numbers stripped, head singular."""
    words = _words(text)
    while words and (words[0] in DETERMINERS or _is_number(words[0])):
        words.pop(0)
    if not words:
        return ""
    words[-1] = singular(words[-1])
    return " ".join(words)


def _pos(word: str, prev: str | None) -> str:
    """Coarse POS guess: DET, NOUN, ADJ or X (anything that ends a noun phrase)."""
    if word in DETERMINERS or _is_number(word):
        return "DET"
    if word in CLOSED:
        return "X"
    readings = getAllLemmas(word)
    if not readings:
        return "NOUN"  # unknown words in captions are overwhelmingly nouns (surfboard, frisbee)
    verbal = "VERB" in readings and (word.endswith("ing") or word.endswith("ed"))
    if verbal and prev not in ("DET", "ADJ"):
        return "X"
    if "NOUN" in readings:
        return "NOUN"
    if "ADJ" in readings or verbal:
        return "ADJ"
    return "X"


def _rule_chunks(words: list[str]) -> list[tuple[list[str], str | None]]:
    """Maximal ADJ* NOUN+ runs, each with the word that follows it (to spot "top of")."""
    tags: list[str] = []
    for w in words:
        tags.append(_pos(w, tags[-1] if tags else None))
    chunks, current, has_noun = [], [], False

    def close(i):
        nonlocal current, has_noun
        while current and tags[current[-1]] != "NOUN":  # trailing adjectives are not a noun phrase
            current.pop()
        if current:
            nxt = words[current[-1] + 1] if current[-1] + 1 < len(words) else None
            chunks.append(([words[j] for j in current], nxt))
        current, has_noun = [], False

    for i, tag in enumerate(tags):
        if tag == "NOUN":
            current.append(i)
            has_noun = True
        elif tag == "ADJ":
            if has_noun:
                close(i)
            current.append(i)
        else:
            close(i)
    close(len(words))
    return chunks


@functools.lru_cache(maxsize=1)
def _spacy():
    """An English spaCy pipeline when one is installed, else None."""
    try:
        import spacy
    except ImportError:
        return None
    for name in ("en_core_web_sm", "en_core_web_md", "en_core_web_lg"):
        try:
            return spacy.load(name, disable=["ner", "lemmatizer"])
        except (OSError, ImportError):
            continue
    return None


def noun_phrases(caption: str) -> list[tuple[list[str], str | None]]:
    """Noun phrases as (lower-case words, the word after the phrase or None)."""
    nlp = _spacy()
    if nlp is None:
        return _rule_chunks(_words(caption))
    doc = nlp(caption)
    out = []
    for chunk in doc.noun_chunks:
        nxt = doc[chunk.end].text.lower() if chunk.end < len(doc) else None
        out.append((_words(chunk.text), nxt))
    return out


def labels_from_caption(caption: str) -> list[str]:
    """"Two dogs playing in the grass" -> ["dog", "grass"]: unique normalised labels in caption order."""
    labels: list[str] = []
    for words, following in noun_phrases(caption):
        words = [w for w in words if w not in PRONOUNS]
        while words and (words[0] in DETERMINERS or _is_number(words[0])):
            words.pop(0)
        while len(words) > 1 and words[0] in DESCRIPTIVE:
            words.pop(0)
        if not words or (following == "of" and words[-1] in RELATIONAL) or words[-1] in SCENE_WORDS:
            continue
        label = normalise_label(" ".join(words))
        if label and label not in labels:
            labels.append(label)
    return labels
