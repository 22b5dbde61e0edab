"""What `reme label` writes, and where (local or gs://, through refset.storage):

    OUTPUT/<name>.png                 label map at the input's own size (upright): palette PNG of class ids
                                      (16-bit greyscale when ids exceed 8 bits)
    OUTPUT/overlays/<name>.png        optional colour overlay with a legend of the classes present, drawn at the
                                      working size (a preview: bounded memory whatever the photo's size)
    OUTPUT/segments/<name>.parquet    one row per segment: image, segment index, class, score, area and RLE at the
                                      working size (height, width), and the input's own size (source_height,
                                      source_width); the folder reads as one table:
                                      pyarrow.parquet.read_table(OUTPUT/segments)
    OUTPUT/coco/<name>.json           with --format coco: the image's COCO entry and its annotations (one per class
                                      present: RLE at the input's own size, area, bbox, score), written before the
                                      label map; assembled into OUTPUT/coco.json at the end of the run
    OUTPUT/coco.json                  with --format coco: ONE COCO JSON for every labelled image (see assemble_coco)
    OUTPUT/classes.json               {"0": "cat", ...}: id -> class name
    OUTPUT/run.json                   the request (index, strategy, k, tau, threshold, ignore value)
    OUTPUT/failures.parquet           inputs that could not be labelled: uri, stage, error type, message

The label map is written last, so its presence means the image is done (a re-run skips it).

`<name>` mirrors the input's path relative to its input root: `<folder>/<stem>`, subfolders kept, the stem verbatim
(spaces, unicode). Where two inputs of one folder would share a stem (a.jpg, a.png) each keeps its extension
(a.jpg.png, a.png.png); see names_in_folder. '..' is resolved before the path is made relative (an input outside
every root is named by its file name), and an input whose path holds a control character, a backslash, the
temp-file prefix or a part too long for a file name is refused (UnsafeName), so no output can leave OUTPUT.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import posixpath
import re
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from models.errors import BadInput
from models.images import IMAGE_EXTENSIONS
from refset import storage

OVERLAYS_DIR = "overlays"
SEGMENTS_DIR = "segments"
COCO_DIR = "coco"
COCO_JSON = "coco.json"
CLASSES_JSON = "classes.json"
RUN_JSON = "run.json"
FAILURES = "failures.parquet"

RESERVED_DIRS = (OVERLAYS_DIR, SEGMENTS_DIR, COCO_DIR)
_RESERVED = re.compile(rf"(?:{'|'.join(RESERVED_DIRS)})_*")
MAX_DIR_BYTES = 255  # one path part of a file system or object name
MAX_NAME_BYTES = MAX_DIR_BYTES - len(".parquet")  # the longest output suffix
FORMATS = ("png", "coco")  # what `reme label --format` writes: the PNG label maps always, COCO on request


def segment_table_schema() -> pa.Schema:
    return pa.schema([
        pa.field("image", pa.string(), nullable=False),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("class_id", pa.int32(), nullable=False),
        pa.field("class_name", pa.string()),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),  # the RLE's size: the working size
        pa.field("width", pa.int32(), nullable=False),
        pa.field("mask_rle", pa.binary(), nullable=False),
        pa.field("source_height", pa.int32(), nullable=False),  # the input's own (upright) size: the label map's
        pa.field("source_width", pa.int32(), nullable=False),
    ])


class UnsafeName(BadInput):
    """An input whose path cannot name an output safely (control character, backslash, temp prefix, too long)."""


def input_root(pattern: str) -> str:
    """The directory part of an input directory or glob, against which output names are made relative."""
    text = pattern.rstrip("/")
    for i, ch in enumerate(text):
        if ch in "*?[":
            return posixpath.dirname(text[:i])
    return text


def relative_path(uri: str, roots: list[str] | tuple[str, ...] = ()) -> str:
    """The input's path relative to the longest root it lies under ('..' resolved first, so it cannot climb out),
    or its file name when it lies under none."""
    path = posixpath.normpath(uri.split("://", 1)[-1])
    bases = [posixpath.normpath(root.split("://", 1)[-1]).rstrip("/") for root in roots if root]
    under = [base for base in bases if base != "." and path.startswith(base + "/")]
    if under:
        return path[len(max(under, key=len)) + 1:]
    return posixpath.basename(path)


def _check_part(part: str, limit: int, uri: str) -> None:
    if not part or part in (".", ".."):
        raise UnsafeName(f"cannot name an output for {uri!r}: empty path part")
    bad = next((c for c in part if c == "\\" or unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        what = "path separator" if bad == "\\" else "control character"
        raise UnsafeName(f"cannot name an output for {uri!r}: {what} {bad!r} in {part!r}")
    if part.startswith(storage.TMP_PREFIX):
        raise UnsafeName(f"cannot name an output for {uri!r}: names starting with {storage.TMP_PREFIX!r} are "
                         "reserved for temporary files")
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise UnsafeName(f"cannot name an output for {uri!r}: {part!r} is not valid UTF-8") from exc
    if size > limit:
        raise UnsafeName(f"cannot name an output for {uri!r}: {part[:40]!r}... is {size} bytes, over the "
                         f"{limit}-byte limit of an output file name")


def split_input(uri: str, roots: list[str] | tuple[str, ...] = ()) -> tuple[str, str]:
    """(folder, file name) of an input relative to its root, checked (UnsafeName otherwise). A first folder named
    like an output folder (overlays, segments, coco, with any trailing '_') gets one more '_', so label maps never land
    among overlays or segment tables (and the mapping stays one-to-one)."""
    parts = relative_path(uri, roots).split("/")
    for part in parts[:-1]:
        _check_part(part, MAX_DIR_BYTES, uri)
    _check_part(parts[-1], MAX_NAME_BYTES, uri)
    if len(parts) > 1 and _RESERVED.fullmatch(parts[0]):
        parts[0] += "_"
    return "/".join(parts[:-1]), parts[-1]


def image_base(filename: str) -> str:
    """The file name without its image extensions (a.jpg.png -> a): inputs sharing it may compete for a name."""
    base = filename
    while True:
        root, ext = posixpath.splitext(base)
        if not ext or ext.lower() not in IMAGE_EXTENSIONS:
            return base
        base = root


def collision_key(uri: str, roots: list[str] | tuple[str, ...] = ()) -> str:
    """Inputs that may want the same output name share this key (same folder, same image_base); UnsafeName for an
    input that cannot be named."""
    folder, filename = split_input(uri, roots)
    return posixpath.join(folder, image_base(filename))


def names_in_folder(filenames: list[str]) -> list[str]:
    """Output stems of the image files of one folder (the rule; it is one-to-one):

    the stem, verbatim (a.jpg -> a), unless another file has the same stem or another file's full name is this
    stem (a.jpg and a.png, or a.jpg.png beside a.jpg): then the full file name (a.jpg -> a.jpg, giving a.jpg.png).
    Only files sharing an `image_base` can collide, so this runs per collision_key group.
    """
    stems = [posixpath.splitext(f)[0] for f in filenames]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    files = set(filenames)
    return [stem if counts[stem] == 1 and stem not in files else f for stem, f in zip(stems, filenames, strict=True)]


def name_group(uris: list[str], roots: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Output names ("folder/stem") of inputs sharing one collision_key."""
    split = [split_input(u, roots) for u in uris]
    names = names_in_folder([filename for _, filename in split])
    return [posixpath.join(folder, name) for (folder, _), name in zip(split, names, strict=True)]


def output_names(uris: list[str], roots: list[str] | tuple[str, ...] = ()) -> list[str | None]:
    """Output name of every input ("folder/stem", '/'-separated, relative to OUTPUT), None where it cannot be named;
    the whole-list form of what the labelling job computes per collision_key group in its graph."""
    groups: dict[str, list[int]] = {}
    names: list[str | None] = [None] * len(uris)
    for i, uri in enumerate(uris):
        try:
            groups.setdefault(collision_key(uri, roots), []).append(i)
        except UnsafeName:
            continue
    for members in groups.values():
        for i, name in zip(members, name_group([uris[i] for i in members], roots), strict=True):
            names[i] = name
    return names


def label_map_path(output: str, name: str) -> str:
    return storage.join(output, f"{name}.png")


def overlay_path(output: str, name: str) -> str:
    return storage.join(output, OVERLAYS_DIR, f"{name}.png")


def segments_path(output: str, name: str) -> str:
    return storage.join(output, SEGMENTS_DIR, f"{name}.parquet")


def coco_fragment_path(output: str, name: str) -> str:
    return storage.join(output, COCO_DIR, f"{name}.json")


@dataclass(frozen=True)
class OutputListing:
    """What one recursive listing of OUTPUT shows: label maps and overlays by name, and temp files left by writes
    that were interrupted."""

    label_maps: frozenset[str]
    overlays: frozenset[str]
    temp_files: tuple[str, ...]
    coco: frozenset[str] = frozenset()  # names with a COCO fragment

    def finished(self, overlay: bool, coco: bool = False) -> set[str]:
        """Images whose outputs are complete: the label map, and the overlay and COCO fragment when asked for."""
        done = set(self.label_maps & self.overlays if overlay else self.label_maps)
        return done & self.coco if coco else done


def scan_output(output: str) -> OutputListing:
    """ONE recursive listing of OUTPUT (fsspec find)."""
    fs = storage.filesystem(output)
    if not fs.exists(output):
        return OutputListing(frozenset(), frozenset(), ())
    base = fs._strip_protocol(output).rstrip("/")
    maps, overlays, coco, temp = set(), set(), set(), []
    for path in fs.find(output):
        rel = path[len(base) + 1:] if path.startswith(base + "/") else None
        if not rel:
            continue
        if posixpath.basename(rel).startswith(storage.TMP_PREFIX):
            temp.append(storage.join(output, rel))
            continue
        top, _, rest = rel.partition("/")
        if top == COCO_DIR and rest.endswith(".json"):
            coco.add(rest[:-5])
        if not rel.endswith(".png"):
            continue
        if top == OVERLAYS_DIR and rest:
            overlays.add(rest[:-4])
        elif top not in (SEGMENTS_DIR, COCO_DIR) or not rest:
            maps.add(rel[:-4])
    return OutputListing(frozenset(maps), frozenset(overlays), tuple(sorted(temp)), frozenset(coco))


def finished_names(output: str, overlay: bool, coco: bool = False) -> set[str]:
    """Names of the images whose outputs are complete (label map, and overlay and COCO fragment when asked for),
    from one listing of OUTPUT: what a re-run skips."""
    return scan_output(output).finished(overlay, coco)


def palette(num_colours: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved), uint8 [num_colours, 3]; the usual palette for label PNGs."""
    ids = np.arange(num_colours)
    colours = np.zeros((num_colours, 3), dtype=np.int64)
    c = ids.copy()
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((c >> channel) & 1) << shift
        c = c >> 3
    return colours.astype(np.uint8)


def encode_label_png(label_map: np.ndarray) -> bytes:
    """Palette PNG (8-bit ids) or 16-bit greyscale PNG (ids above 255)."""
    buffer = io.BytesIO()
    if label_map.dtype == np.uint8:
        image = Image.fromarray(label_map, mode="P")
        image.putpalette(palette().reshape(-1).tolist())
    else:
        image = Image.fromarray(np.asarray(label_map, dtype=np.uint16))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_overlay(image: np.ndarray, label_map: np.ndarray, class_names: list[str], ignore_value: int,
                   alpha: float = 0.5) -> np.ndarray:
    """RGB overlay of the label colours on the image, with a legend column of the classes present."""
    # Shifted by one: the palette's colour 0 is black (VOC "background"), which hides class 0 in an overlay.
    colours = palette(max(256, int(label_map.max(initial=0)) + 2))[1:]
    colour = colours[label_map.astype(np.int64)]
    labelled = (label_map != ignore_value)[..., None]
    blended = np.where(labelled, (1 - alpha) * image + alpha * colour, image).astype(np.uint8)
    present = [int(c) for c in np.unique(label_map) if c != ignore_value and c < len(class_names)]
    row, pad = 16, 4
    legend_w = 10 + max([len(class_names[c]) for c in present] + [8]) * 7 + pad * 2
    height = max(image.shape[0], row * len(present) + pad * 2)
    canvas = Image.new("RGB", (image.shape[1] + legend_w, height), (255, 255, 255))
    canvas.paste(Image.fromarray(blended), (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0 = image.shape[1] + pad
    for i, c in enumerate(present):
        y = pad + i * row
        draw.rectangle([x0, y + 2, x0 + 10, y + 12], fill=tuple(int(v) for v in colours[c]), outline=(0, 0, 0))
        draw.text((x0 + 14, y + 1), class_names[c], fill=(0, 0, 0))
    return np.asarray(canvas)


def encode_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def segments_table(image: str, class_ids: np.ndarray, scores: np.ndarray, areas: np.ndarray, rles: list[bytes],
                   height: int, width: int, class_names: list[str], source_height: int | None = None,
                   source_width: int | None = None) -> pa.Table:
    """One row per segment; `height` x `width` is the size the RLEs and areas are at (the working size)."""
    n = len(class_ids)
    names = [class_names[int(c)] if 0 <= int(c) < len(class_names) else None for c in class_ids]
    return pa.table({
        "image": pa.array([image] * n, pa.string()),
        "segment": pa.array(np.arange(n, dtype=np.int32)),
        "class_id": pa.array(np.asarray(class_ids, dtype=np.int32)),
        "class_name": pa.array(names, pa.string()),
        "score": pa.array(np.asarray(scores, dtype=np.float32)),
        "area": pa.array(np.asarray(areas, dtype=np.int64)),
        "height": pa.array(np.full(n, height, dtype=np.int32)),
        "width": pa.array(np.full(n, width, dtype=np.int32)),
        "mask_rle": pa.array(list(rles), pa.binary()),
        "source_height": pa.array(np.full(n, height if source_height is None else source_height, dtype=np.int32)),
        "source_width": pa.array(np.full(n, width if source_width is None else source_width, dtype=np.int32)),
    }, schema=segment_table_schema())


def write_image_outputs(output: str, name: str, uri: str, image: np.ndarray | None, labels, rles: list[bytes],
                        class_names: list[str], ignore_value: int, overlay: bool,
                        coco_file_name: str | None = None) -> None:
    """Segments table, overlay, COCO fragment (when `coco_file_name`, the input's path relative to its input root,
    is given), then the label map last (its presence marks the image done).

    `image` and `rles` are at the working size; `labels` (inference.labeller.ImageLabels) holds the label map at the
    input's own size and the working-size map the overlay is drawn from.
    """
    source_height, source_width = labels.label_map.shape
    working = labels.working_map if labels.working_map is not None else labels.label_map
    height, width = working.shape
    storage.write_parquet(segments_path(output, name), segments_table(
        uri, labels.class_ids, labels.scores, labels.areas, rles, height, width, class_names, source_height,
        source_width))
    if overlay and image is not None:
        storage.write_bytes(overlay_path(output, name),
                            encode_png(render_overlay(image, working, class_names, ignore_value)))
    if coco_file_name is not None:
        storage.write_bytes(coco_fragment_path(output, name),
                            coco_fragment(name, coco_file_name, labels, ignore_value))
    storage.write_bytes(label_map_path(output, name), encode_label_png(labels.label_map))


def classes_mapping(class_names: list[str]) -> dict[str, str]:
    return {str(i): n for i, n in enumerate(class_names)}


# ---------------------------------------------------------------------------------------------------------
# COCO (`reme label --format coco`): per-image fragments, assembled into one file at the end of the run
# ---------------------------------------------------------------------------------------------------------
def class_mask_rle(label_map: np.ndarray, class_id: int) -> dict:
    """pycocotools compressed RLE of the pixels of one class, at the label map's size. The mask is made directly in
    column-major order (what pycocotools encodes), one byte per pixel, one class at a time."""
    height, width = label_map.shape
    column_major = np.equal(label_map.T, class_id, order="C").T  # [H, W], Fortran-contiguous, no extra copy
    rle = mask_utils.encode(column_major.view(np.uint8).reshape(height, width, 1, order="F"))[0]
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


HISTOGRAM_ROWS_PIXELS = 1 << 20  # pixels per block when counting classes (bincount works in 8-byte ints)


def class_pixels(label_map: np.ndarray) -> np.ndarray:
    """Pixels per class id of a label map, counted a block of rows at a time: np.bincount widens its input to
    8-byte ints, which on a whole 24 MP map would be 192 MB for a 24 MB map."""
    height, width = label_map.shape
    rows = max(1, HISTOGRAM_ROWS_PIXELS // max(width, 1))
    size = int(label_map.max(initial=0)) + 1
    pixels = np.zeros(size, np.int64)
    for top in range(0, height, rows):
        pixels += np.bincount(label_map[top: top + rows].ravel(), minlength=size)
    return pixels


def class_regions(labels, ignore_value: int) -> list[dict]:
    """One region per class present in an image's label map (ImageLabels), in class order: class_id, the RLE at the
    label map's size, area (pixels), bbox (x, y, w, h) and score.

    score: the area-weighted mean confidence of the segments the labeller gave that class (areas at the working
    size), i.e. how sure the labeller was of the region, in the units of the segments table's `score`.
    """
    label_map = np.asarray(labels.label_map)
    pixels = class_pixels(label_map)
    class_ids = np.asarray(labels.class_ids, dtype=np.int64)
    weights = np.asarray(labels.areas, dtype=np.float64)
    confidence = np.asarray(labels.scores, dtype=np.float64)
    regions = []
    for c in np.flatnonzero(pixels):
        if c == ignore_value:
            continue
        rle = class_mask_rle(label_map, int(c))
        mine = class_ids == c
        total = weights[mine].sum()
        score = float((weights[mine] * confidence[mine]).sum() / total) if total > 0 else 0.0
        regions.append({"class_id": int(c), "rle": rle, "area": int(pixels[c]),
                        "bbox": [float(v) for v in mask_utils.toBbox(dict(rle, counts=rle["counts"].encode()))],
                        "score": score})
    return regions


def category_id(class_id: int) -> int:
    """COCO category id of a class: its index in the class list + 1 (COCO ids start at 1; 0 is no category)."""
    return int(class_id) + 1


def coco_categories(class_names: list[str]) -> list[dict]:
    """COCO categories, ids stable from the class list (category_id); `label_value` is the class's value in the
    label maps."""
    return [{"id": category_id(i), "name": n, "supercategory": "", "label_value": i} for i, n in enumerate(class_names)]


def coco_annotation(region: dict, image_id: int, annotation_id: int | None = None) -> dict:
    """A class_regions region as a COCO annotation (iscrowd 0: a semantic region, RLE as in COCO-Stuff)."""
    annotation = {"image_id": int(image_id), "category_id": category_id(region["class_id"]),
                  "segmentation": region["rle"], "area": region["area"], "bbox": region["bbox"],
                  "score": round(region["score"], 6), "iscrowd": 0}
    if annotation_id is not None:
        annotation = {"id": int(annotation_id), **annotation}
    return annotation


def coco_fragment(name: str, file_name: str, labels, ignore_value: int) -> bytes:
    """One image's part of the COCO file: its entry (file name relative to the input root, size of the input, the
    label map it came from) and its regions. Ids are given when the file is assembled (assemble_coco)."""
    height, width = labels.label_map.shape
    fragment = {"image": {"file_name": file_name, "width": int(width), "height": int(height),
                          "label_map": f"{name}.png"},
                "regions": [{k: r[k] for k in ("class_id", "rle", "area", "bbox", "score")}
                            for r in class_regions(labels, ignore_value)]}
    return json.dumps(fragment, separators=(",", ":")).encode("utf-8")


FRAGMENTS_PER_READ = 256  # fragments fetched together (gcsfs fetches a list of objects concurrently)


def _read_fragments(output: str, names: list[str]):
    """(name, fragment) in the order given, fetched FRAGMENTS_PER_READ at a time."""
    fs = storage.filesystem(output)
    for start in range(0, len(names), FRAGMENTS_PER_READ):
        chunk = names[start: start + FRAGMENTS_PER_READ]
        paths = [fs._strip_protocol(coco_fragment_path(output, n)) for n in chunk]
        found = fs.cat(paths)  # {path: bytes}
        for name, path in zip(chunk, paths, strict=True):
            yield name, json.loads(found[path])


def assemble_coco(output: str, class_names: list[str], names: list[str] | None = None) -> dict:
    """Write OUTPUT/coco.json from the fragments of the finished images (label map and fragment both present; or
    `names`), streamed in sorted name order: image ids 1..N in that order, annotation ids 1..M. Image entries are
    written as the fragments are read, annotations spooled to a local temporary file and appended after them, so
    memory stays flat whatever the number of images; a re-run re-assembles from every fragment on disk.
    Returns {"path", "images", "annotations"}.

    Layout: {"info", "licenses", "categories", "images", "annotations"}; every annotation has id, image_id,
    category_id, segmentation (compressed RLE at the input's size), area, bbox, score and iscrowd 0, so the file
    loads as a dataset (pycocotools COCO, FiftyOne, CVAT/Datumaro) and its annotations as results (COCO.loadRes).
    """
    if names is None:
        names = sorted(scan_output(output).finished(False, True))
    path = storage.join(output, COCO_JSON)
    head = {"info": {"description": "reme label", "version": "1.0",
                     "date_created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")},
            "licenses": [], "categories": coco_categories(class_names)}
    annotations = 0
    with tempfile.TemporaryFile("w+", encoding="utf-8", prefix=storage.TMP_PREFIX) as spool, \
            storage.atomic_open(path, "w") as out:
        out.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"images":[')
        for image_id, (_, fragment) in enumerate(_read_fragments(output, sorted(names)), start=1):
            out.write(("," if image_id > 1 else "") + json.dumps({"id": image_id, **fragment["image"]},
                                                                  separators=(",", ":")))
            for region in fragment["regions"]:
                annotations += 1
                spool.write(("," if annotations > 1 else "")
                            + json.dumps(coco_annotation(region, image_id, annotations), separators=(",", ":")))
        out.write('],"annotations":[')
        spool.seek(0)
        shutil.copyfileobj(spool, out)
        out.write("]}\n")
    return {"path": path, "images": len(names), "annotations": annotations}
