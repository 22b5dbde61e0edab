"""Models layer: weights loading and pure torch/numpy wrappers (no Beam).

    config      typed dataclass configs, one per model
    weights     from_pretrained / SAM checkpoint loading with one-line errors
    presets     the offline `tiny-random` preset (real config classes, random weights)
    device      device resolution and autocast
    rle         COCO RLE via pycocotools
    maskers     class-agnostic maskers (felzenszwalb, sam) -> Segments
    sam_fast    a faster SAM automatic mask generator with the reference's output
    pooling     mask pooling of dense patch tokens
    visual      dense visual encoders (DINOv2, CLIP vision)
    clip        CLIP segment-crop embeddings for pairing
    text        text encoders (CLIP with prompt ensembling, sentence embeddings)
    captioner   image-to-text (BLIP, LLaVA-1.5)
    nlp         captions -> noun phrases -> normalised labels
"""
