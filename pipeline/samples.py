"""Sample photos for `make index`: scikit-image's bundled pictures (no download) plus a caption for each.

    python -m pipeline.samples DIR    ->  DIR/images/*.png  and  DIR/captions.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# name in skimage.data -> caption (hand-written descriptions of the pictures)
SAMPLES = {
    "astronaut": "A woman astronaut in a white suit in front of a flag and a rocket model.",
    "coffee": "A cup of coffee on a saucer with a spoon on a table.",
    "chelsea": "A ginger cat with green eyes sitting in front of a wall.",
    "rocket": "A rocket on the launch pad under a blue sky with trees.",
    "camera": "A man with a camera on a tripod standing on a grass field.",
    "immunohistochemistry": "A microscope picture of cells stained brown and blue.",
    "hubble_deep_field": "Many galaxies and stars in the dark sky.",
}


def write_samples(directory: str | Path) -> list[Path]:
    import numpy as np
    from PIL import Image
    from skimage import data

    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    written, lines = [], []
    for name, caption in SAMPLES.items():
        loader = getattr(data, name, None)
        if loader is None:  # older/newer scikit-image without this picture
            continue
        try:
            image = np.asarray(loader())
        except Exception:  # some pictures are fetched on first use (pooch); skip them offline
            continue
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        path = root / "images" / f"{name}.png"
        Image.fromarray(image[..., :3].astype(np.uint8)).save(path)
        written.append(path)
        lines.append(json.dumps({"image": path.name, "caption": caption}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    args = parser.parse_args(argv)
    written = write_samples(args.directory)
    print(f"wrote {len(written)} sample images and captions.jsonl to {args.directory}")


if __name__ == "__main__":
    main()
