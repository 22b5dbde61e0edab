"""The labeller: segments + their visual embeddings -> class per segment -> per-pixel label map. No Beam here.

One `Labeller` serves one request (a reference set + a class list): the class names are embedded once with the
index's text encoder, the labels x classes table T (or the class prototypes) is computed once, and every batch of
images then costs one FAISS search over all of its segments plus numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference import paint, retrieval, scoring
from models.segment_masks import segments_of
from models.text import build_text_encoder

BACKGROUND_NAMES = ("background",)


class ClassListError(ValueError):
    """An unusable class list; the message is one line."""


def _clean(name: str) -> str:
    return " ".join(name.split())


def parse_class_aliases(text: str | None = None, lines: list[str] | None = None) -> list[tuple[str, ...]]:
    """Classes with their aliases, from the command line (`text`) or from the lines of a class file (`lines`).

    A class file has one class per line, its names separated by commas, the first being the class's name in the
    outputs (classes.json, legends, COCO categories) and the others aliases: `person, man, woman, child` (the
    benchmark class files' convention; blank lines are skipped). On the command line, classes are separated by
    commas when the text has no `;` ("cat,dog,sky": one name each, as ever), and by `;` when it has one, each
    class then listing its names with commas ("person, man, woman; cat; sky"; "person, man;" is one class).
    A class scores the max over its names. Refused: an empty name or class, a name given to two classes.
    """
    if (text is None) == (lines is None):
        raise ClassListError("give the classes either as --classes \"a,b,c\" or as --classes-file FILE")
    if text is not None:
        if ";" in text:
            parts = text.split(";")
            if len(parts) > 1 and not parts[-1].strip():  # a trailing ";" (one class with aliases)
                parts = parts[:-1]
            raw = [part.split(",") for part in parts]
        else:
            raw = [[name] for name in text.split(",")]
    else:
        raw = [line.split(",") for line in lines if line.strip()]
    classes = [tuple(_clean(n) for n in names) for names in raw]
    if not classes or any(not names or any(not n for n in names) for names in classes):
        shown = ", ".join(repr(", ".join(names)) for names in classes) or "an empty list"
        raise ClassListError(f"empty class name in {shown}")
    seen: dict[str, str] = {}
    out = []
    for names in classes:
        own: dict[str, str] = {}  # a name repeated within its own class counts once
        for n in names:
            own.setdefault(n.lower(), n)
        for key, n in own.items():
            if key in seen:
                raise ClassListError(f"duplicate class name {n!r} (also given as {seen[key]!r})")
            seen[key] = n
        out.append(tuple(own.values()))
    return out


def parse_classes(text: str | None = None, lines: list[str] | None = None) -> list[str]:
    """The class names (each class's first name) of parse_class_aliases."""
    return [names[0] for names in parse_class_aliases(text, lines)]


def alias_lines(aliases: list[tuple[str, ...]] | tuple[tuple[str, ...], ...]) -> list[str]:
    """The class-file lines of classes with aliases (the inverse of parse_class_aliases(lines=...))."""
    return [", ".join(names) for names in aliases]


@dataclass(frozen=True)
class LabelRequest:
    """One labelling request. The defaults here are the only definition of the labelling defaults (the CLI and
    the jobs read them from this class); the rules behind `strategy` are in inference/scoring.py."""

    class_names: tuple[str, ...]  # each class's name in the outputs
    # Each class's names, scored (the class scores the max over them; parse_class_aliases); () = its name alone.
    aliases: tuple[tuple[str, ...], ...] = ()
    # "per_label" (default: per-label evidence, robust to reference-set imbalance) | "neighbours" (the first,
    # neighbour-weighted rule) | "prototype" (FreeDA-style class prototypes)
    strategy: str = "per_label"
    k: int = 16  # reference segments retrieved per query segment
    # per_label: a label's evidence is the mean similarity of its m nearest retrieved segments
    segments_per_label: int = scoring.SEGMENTS_PER_LABEL
    tau: float = 0.1  # neighbours: softmax temperature over neighbour similarities (per_label fits its own)
    threshold: float | None = None  # best score under it -> background class, or unlabelled
    ignore_value: int = 255
    fill_uncovered: bool = True  # uncovered pixels take the nearest segment's class (else ignore_value)
    labels_per_class: int = 1  # prototype strategy: reference labels averaged per class

    def __post_init__(self):
        if self.strategy not in scoring.STRATEGIES:
            raise ClassListError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(scoring.STRATEGIES)}")
        if self.k < 1:
            raise ClassListError(f"k must be >= 1, got {self.k}")
        if self.segments_per_label < 1:
            raise ClassListError(f"segments_per_label must be >= 1, got {self.segments_per_label}")
        if self.tau <= 0:
            raise ClassListError(f"tau must be > 0, got {self.tau}")
        if 0 <= self.ignore_value < len(self.class_names):
            raise ClassListError(f"the ignore value {self.ignore_value} collides with a class id")
        if self.aliases:
            if len(self.aliases) != len(self.class_names):
                raise ClassListError(f"{len(self.aliases)} alias lists for {len(self.class_names)} classes")
            if any(not names or not all(n.strip() for n in names) for names in self.aliases):
                raise ClassListError("every class needs at least one non-empty name")

    def names_of(self, class_id: int) -> tuple[str, ...]:
        """Every name class `class_id` answers to: its aliases, else its name alone."""
        return tuple(self.aliases[class_id]) if self.aliases else (self.class_names[class_id],)

    @property
    def background_id(self) -> int | None:
        """The background class: the first one named "background" (by its name or an alias). Segments whose best
        score is under the threshold take it; its other names (the benchmarks' stuff names) are scored."""
        for i in range(len(self.class_names)):
            if any(n.strip().lower() in BACKGROUND_NAMES for n in (self.class_names[i], *self.names_of(i))):
                return i
        return None

    @property
    def scored_names(self) -> list[tuple[int, str]]:
        """(class id, name) for every name that is embedded and scored, classes in order. The word "background"
        is never scored: it names what no class describes, so a background class called only that has no score
        column and is reached through the threshold alone."""
        out = []
        for i in range(len(self.class_names)):
            out += [(i, n) for n in self.names_of(i) if n.strip().lower() not in BACKGROUND_NAMES]
        return out

    @property
    def scored_columns(self) -> np.ndarray:
        """Class ids with a score column (at least one scored name), in order."""
        return np.array(sorted({i for i, _ in self.scored_names}), dtype=np.int64)


@dataclass
class ImageLabels:
    label_map: np.ndarray  # [H, W] class ids at the output size (ignore_value where unlabelled)
    class_ids: np.ndarray  # int64 [N] per segment
    scores: np.ndarray  # float32 [N] best class score per segment (painting confidence)
    areas: np.ndarray  # int64 [N], pixels at the working size (the masks' size)
    working_map: np.ndarray | None = None  # [h, w] class ids at the working size (overlays are drawn from it)


def paint_image(masks, decision: scoring.Decision, request: LabelRequest,
                size: tuple[int, int] | None = None) -> ImageLabels:
    """One image's label map from its segments at the working size (SegmentMasks, or dense bool [N,h,w]) and their
    decisions, painted at the working size and upsampled (nearest) to `size` = (height, width), the input's own
    size (default: the working size)."""
    masks = paint.as_segment_masks(masks)
    if len(masks) != len(decision.class_ids):
        raise ValueError(f"{len(masks)} masks but {len(decision.class_ids)} decisions for one image")
    dtype = np.uint8 if request.ignore_value < 256 else np.uint16
    working = paint.paint(masks, decision.class_ids, decision.confidence, request.ignore_value,
                          request.fill_uncovered, dtype)
    label_map = working if size is None else paint.upsample_nearest(working, *size)
    return ImageLabels(label_map, decision.class_ids, decision.confidence, masks.areas(), working)


def paint_segments(item: dict, decision: scoring.Decision, request: LabelRequest) -> ImageLabels:
    """The Paint step of `reme label` and of the Python API: one image's label map at the input's own size
    (`source_height` x `source_width`, default the working size) from its embedded segments (`to_embed` of its
    segment fields, models.maskers.segment_fields) and their decisions."""
    segments = item.get("to_embed", np.zeros(0, np.int64))
    size = (item.get("source_height", item["height"]), item.get("source_width", item["width"]))
    return paint_image(segments_of(item, segments), decision, request, size)


class Labeller:
    def __init__(self, reference, class_text: np.ndarray, request: LabelRequest):
        """reference: refset.reader.ReferenceSet; class_text: [A, Dt] text embeddings of the scored names
        (request.scored_names order: one row per class when no class has aliases), made with the index's text
        encoder."""
        self.reference = reference
        self.request = request
        label_text = reference.label_text_embeddings()
        class_text = np.asarray(class_text, dtype=np.float32)
        if class_text.size == 0:
            class_text = class_text.reshape(0, label_text.shape[1])
        if class_text.shape[1] != label_text.shape[1]:
            raise ClassListError(
                f"class text embeddings have dim {class_text.shape[1]} but the index's labels have "
                f"{label_text.shape[1]}: embed class names with the index's text encoder")
        owners = np.array([i for i, _ in request.scored_names], dtype=np.int64)
        if len(class_text) != len(owners):
            raise ValueError(f"{len(class_text)} class text embeddings for {len(owners)} scored names")
        # [L, C'] once per request: each reference label's cosine to a class is its best alias's.
        self.table = scoring.alias_table(scoring.text_table(label_text, class_text), owners, request.scored_columns)
        # Index rows -> rows of labels.parquet (= rows of T); -1 for a row whose label is unknown.
        self.position_rows = reference.position_label_rows()
        self.prototypes = None
        self.label_to_class = scoring.label_classes(self.table)  # per_label: each label's best class, once
        if request.strategy == "prototype":
            self.prototypes = scoring.class_prototypes(
                reference.label_visual_means(), reference.label_counts, self.table, request.labels_per_class)

    @classmethod
    def build(cls, reference, models, request: LabelRequest) -> Labeller:
        """The Label step's model in `reme label` (transforms.label) and the Python API (inference.api): the
        request's classes embedded with the index's text encoder (`models`: a resolved models.config.ModelsConfig)."""
        return cls.from_text_encoder(reference, build_text_encoder(models.text), request)

    @classmethod
    def from_text_encoder(cls, reference, text_encoder, request: LabelRequest) -> Labeller:
        """Every scored name of every class (aliases included) embedded in one call of the text encoder."""
        names = [name for _, name in request.scored_names]
        class_text = text_encoder.encode(names) if names else np.zeros((0, reference.label_text_embeddings().shape[1]))
        return cls(reference, np.asarray(class_text, dtype=np.float32), request)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """[S, C'] class scores for segment embeddings [S, D] (all segments of a batch of images at once)."""
        if self.request.strategy == "prototype":
            return scoring.prototype_scores(embeddings, self.prototypes)
        hits = retrieval.search(self.reference.index, embeddings, self.request.k, self.position_rows)
        return self.score_neighbours(hits.sims, hits.label_ids)

    def score_neighbours(self, sims: np.ndarray, label_rows: np.ndarray) -> np.ndarray:
        """[S, C'] class scores from retrieved neighbours (similarities [S, k], rows of T [S, k], -1 = none)."""
        if self.request.strategy == "neighbours":
            return scoring.neighbour_scores(sims, label_rows, self.table, self.request.tau)
        return scoring.per_label_scores(sims, label_rows, self.table, self.request.segments_per_label,
                                        self.label_to_class)

    def decide(self, scores: np.ndarray) -> scoring.Decision:
        r = self.request
        return scoring.decide(scores, r.scored_columns, r.threshold, r.background_id, r.ignore_value)

    def decide_batch(self, embeddings: list[np.ndarray]) -> list[scoring.Decision]:
        """Each image's segment decisions (class id, confidence) from its segment embeddings [N_i, D]: one
        retrieval for all segments of all the images."""
        dim = int(self.reference.index.d)
        arrays = [np.asarray(e, np.float32).reshape(-1, dim) for e in embeddings]
        counts = [len(a) for a in arrays]
        stacked = np.concatenate(arrays) if arrays else np.zeros((0, dim), np.float32)
        if len(stacked) == 0:
            empty = scoring.Decision(np.zeros(0, np.int64), np.zeros(0, np.float32))
            return [empty for _ in arrays]
        decision = self.decide(self.score(stacked))
        bounds = np.cumsum([0] + counts)
        return [scoring.Decision(decision.class_ids[lo:hi], decision.confidence[lo:hi])
                for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]

    def decide_images(self, embeddings: list[np.ndarray | None]) -> list[scoring.Decision]:
        """The Label step of `reme label` and of the Python API: decide_batch, where an image without embedded
        segments (None) gets no decisions."""
        dim = int(self.reference.index.d)
        return self.decide_batch([np.zeros((0, dim), np.float32) if e is None else e for e in embeddings])

    def paint(self, masks, decision: scoring.Decision, size: tuple[int, int] | None = None) -> ImageLabels:
        return paint_image(masks, decision, self.request, size)

    def label_batch(self, masks: list, embeddings: list[np.ndarray]) -> list[ImageLabels]:
        """Label several images: masks[i] SegmentMasks or bool [N_i,H_i,W_i], embeddings[i] float [N_i, D]."""
        if len(masks) != len(embeddings):
            raise ValueError(f"{len(masks)} mask arrays but {len(embeddings)} embedding arrays")
        for m, e in zip(masks, embeddings, strict=True):
            if len(m) != len(e):
                raise ValueError(f"{len(m)} masks but {len(e)} embeddings for one image")
        return [self.paint(m, d) for m, d in zip(masks, self.decide_batch(embeddings), strict=True)]
