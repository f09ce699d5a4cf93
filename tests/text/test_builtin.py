"""The built-in text encoder: interface, shapes, determinism, distinctness, unknown words, stability."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from infinitystar.models.config import get_preset
from infinitystar.text.builtin import EOS, VOCABULARY, BuiltinTextEncoder, tokenize
from infinitystar.text.encoders import TextEncoder, encode_negative_prompt
from infinitystar.text.prompts import decorate_prompt
from infinitystar.world.captions import prompts
from infinitystar.world.scenes import BACKGROUNDS, COLORS, MOTIONS, SHAPES

PROMPT = "a red circle moving right on a black background"
# BuiltinTextEncoder(channels=64) table, version 1, seed 0, 4096 buckets
TABLE_SHA256 = "a6925bd64cd8c9500058d7cc2e3e8bb6de32e18a94f0dd839e30385cd88bc79a"


@pytest.fixture(scope="module")
def encoder() -> BuiltinTextEncoder:
    return BuiltinTextEncoder(channels=64)


def test_is_a_text_encoder_with_valid_tokens_only(encoder):
    assert isinstance(encoder, TextEncoder)
    features = encoder.encode([PROMPT, "a cat"])
    assert [f.shape for f in features] == [(10, 64), (3, 64)]  # words + </s>, no padding
    assert all(f.dtype == torch.float32 and f.device.type == "cpu" for f in features)
    assert torch.isfinite(features[0]).all()
    assert encoder(["a cat"])[0].equal(features[1])  # __call__ and batching do not change features
    assert encoder.encode([]) == []


def test_tokenizer():
    assert tokenize("<<<t=5s>>>A Red circle, moving  RIGHT.") == [
        "<<<t=5s>>>",
        "a",
        "red",
        "circle",
        ",",
        "moving",
        "right",
        ".",
    ]
    assert tokenize("don't stop-now") == ["don't", "stop", "-", "now"]
    assert tokenize("   ") == []


def test_world_words_are_in_the_vocabulary(encoder):
    words = {
        w for phrase in (*COLORS, *SHAPES, *MOTIONS, *BACKGROUNDS, "background", "on", "a") for w in phrase.split()
    }
    assert words <= set(VOCABULARY)
    assert len(set(VOCABULARY)) == len(VOCABULARY) and VOCABULARY[0] == EOS
    ids = encoder.token_ids(decorate_prompt(PROMPT, 1))
    assert all(i < len(VOCABULARY) for i in ids)  # no world word falls in a hash bucket
    assert ids[0] == VOCABULARY.index("<<<t=1s>>>") and ids[-1] == VOCABULARY.index(EOS)


def test_deterministic_across_instances_and_processes(encoder):
    again = BuiltinTextEncoder(channels=64)
    assert torch.equal(encoder.table, again.table)
    assert torch.equal(encoder.encode([PROMPT])[0], again.encode([PROMPT])[0])
    code = (
        "import hashlib; from infinitystar.text.builtin import BuiltinTextEncoder as E;"
        "f = E(channels=64).encode(['a red circle moving right on a black background'])[0];"
        "print(hashlib.sha256(f.numpy().tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == hashlib.sha256(encoder.encode([PROMPT])[0].numpy().tobytes()).hexdigest()
    other_seed = BuiltinTextEncoder(channels=64, seed=1)
    assert not torch.equal(encoder.table, other_seed.table)


def test_table_is_pinned():
    """The shipped default model is trained on these exact vectors: they must never change silently.

    The table is built from integer hashing only, so it is bit-identical everywhere and its digest is pinned; a change
    to the hashing or the vocabulary fails here instead of silently breaking trained models. Features add the
    sinusoidal position code, checked against an independent formula.
    """
    enc = BuiltinTextEncoder(channels=64, max_length=16)
    assert hashlib.sha256(enc.table.numpy().tobytes()).hexdigest() == TABLE_SHA256
    features = enc.encode([PROMPT])[0]  # [10, 64]
    pos = torch.arange(features.shape[0], dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, 64, 2, dtype=torch.float64) / 64)
    code = torch.stack([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1).reshape(-1, 64)  # interleaved sin, cos
    code = code / code.norm(dim=1, keepdim=True)
    expected = enc.table[enc.token_ids(PROMPT)] + 0.5 * code.float()
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)


def test_rows_are_unit_sign_vectors_and_nearly_orthogonal(encoder):
    table = encoder.table
    assert torch.allclose(table.norm(dim=1), torch.ones(len(table)), atol=1e-6)
    assert torch.unique(table.abs()).tolist() == [1 / 8]  # entries are exactly +-1/sqrt(64)
    words = table[: len(VOCABULARY)]
    cos = words @ words.T - torch.eye(len(words))
    assert cos.abs().max() < 0.7 and cos.abs().mean() < 0.15


def test_distinct_prompts_have_distinct_features(encoder):
    texts = prompts("train", 102, seed=0) + prompts("heldout", 18, seed=0) + prompts("train", 24, seed=0, image=True)
    features = encoder.encode(texts)
    keys = {tuple(f.flatten().tolist()) for f in features}
    assert len(set(texts)) == len(keys)
    # same words in another order: only the position code tells them apart
    a, b = encoder.encode(["a red circle on a gray background", "a gray circle on a red background"])
    assert torch.allclose(a.sum(0), b.sum(0), atol=1e-5) and not torch.allclose(a, b, atol=0.1)


def test_unknown_words_use_hash_buckets(encoder):
    ids = encoder.token_ids("a zebra plays the xylophone")
    vocab = len(VOCABULARY)
    assert ids[0] < vocab and ids[1] >= vocab and ids[-1] == VOCABULARY.index(EOS)
    assert all(i < encoder.vocab_size for i in ids)
    assert encoder.token_ids("zebra") == encoder.token_ids("ZEBRA")  # case-insensitive, stable hashing
    features = encoder.encode(["a zebra", "a quokka", "<<<t=99s>>>a red circle"])
    assert features[0].shape == (3, 64) and not torch.equal(features[0], features[1])
    assert features[2].shape == (5, 64)  # the unknown duration tag is one (hashed) token


def test_case_and_whitespace_do_not_matter(encoder):
    a, b = encoder.encode([PROMPT, "  A RED circle   moving right on a black background "])
    assert torch.equal(a, b)


def test_truncation_warns_and_keeps_eos():
    enc = BuiltinTextEncoder(channels=16, max_length=6)
    with pytest.warns(UserWarning, match="truncated to 6 tokens"):
        (features,) = enc.encode([PROMPT])
    assert features.shape == (6, 16)
    assert enc.token_ids(PROMPT)[-1] == VOCABULARY.index(EOS)


def test_bad_prompts_and_settings_are_rejected(encoder):
    with pytest.raises(ValueError, match="empty"):
        encoder.encode(["  "])
    with pytest.raises(TypeError, match="list of str"):
        encoder.encode(PROMPT)
    with pytest.raises(ValueError, match="channels"):
        BuiltinTextEncoder(channels=4)
    with pytest.raises(ValueError, match="max_length"):
        BuiltinTextEncoder(max_length=1)
    with pytest.raises(ValueError, match="position_scale"):
        BuiltinTextEncoder(position_scale=float("nan"))


def test_config_round_trip_and_preset_match():
    cfg = get_preset("tiny").transformer
    enc = BuiltinTextEncoder.for_config(cfg, seed=3)
    assert enc.channels == cfg.text_channels and enc.max_length == cfg.text_maxlen
    clone = BuiltinTextEncoder.from_config(enc.config())
    assert clone.config() == enc.config() and torch.equal(clone.table, enc.table)
    with pytest.raises(ValueError, match="unknown built-in text encoder settings"):
        BuiltinTextEncoder.from_config({**enc.config(), "vocab": 3})
    with pytest.raises(ValueError, match="version"):
        BuiltinTextEncoder.from_config({**enc.config(), "version": 99})


def test_device_moves_and_negative_prompt(encoder):
    enc = BuiltinTextEncoder(channels=32)
    assert enc.to("cpu") is enc and enc.offload() is enc and enc.device.type == "cpu"
    assert encode_negative_prompt(enc, "") is None
    assert encode_negative_prompt(enc, "blurry").shape == (2, 32)


def test_features_condition_a_transformer():
    """End to end: builtin features as the text prefix of a training forward; different prompts, different logits,
    and feature rows on the same scale as the learned null text."""
    from infinitystar.models.config import TransformerConfig
    from infinitystar.models.transformer.model import InfinityTransformer
    from infinitystar.schedule import schedule_from_scales

    cfg = TransformerConfig(
        embed_dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, block_chunks=1, text_channels=32
    )
    model = InfinityTransformer(cfg).eval()
    model.reset_parameters(generator=torch.Generator().manual_seed(0))
    enc = BuiltinTextEncoder.for_config(cfg)
    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2)], 1)
    codes = torch.randn(1, sched.num_visual_tokens(), cfg.latent_channels, generator=torch.Generator().manual_seed(1))
    a, b = enc.encode([decorate_prompt(PROMPT, 1), decorate_prompt(PROMPT.replace("red", "blue"), 1)])
    with torch.no_grad():
        out_a, out_b = model(codes, a, sched), model(codes, b, sched)
    assert torch.isfinite(out_a.semantic).all() and not torch.allclose(out_a.semantic, out_b.semantic)
    assert 0.5 < a.norm(dim=1).mean() / model.cfg_uncond.norm(dim=1).mean() < 2.0


def test_save_and_load_through_the_pipeline_loader(tmp_path):
    from infinitystar.text.encoders import TEXT_ENCODER_INDEX
    from infinitystar.text.loading import load_text_encoder

    enc = BuiltinTextEncoder(64, seed=3)
    enc.save_pretrained(tmp_path / "te")
    assert (tmp_path / "te" / TEXT_ENCODER_INDEX).is_file()
    again = load_text_encoder(tmp_path / "te")
    assert isinstance(again, BuiltinTextEncoder) and again.config() == enc.config()
    torch.testing.assert_close(again.encode(["a red circle"])[0], enc.encode(["a red circle"])[0], rtol=0, atol=0)
    (tmp_path / "te" / TEXT_ENCODER_INDEX).write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_text_encoder(tmp_path / "te")


def test_folders_saved_with_a_class_path_still_load(tmp_path):
    """Folders written before the ``"type"`` field (the shipped model of 0.1.0 among them) name a class path."""
    import json

    from infinitystar.text.encoders import TEXT_ENCODER_INDEX
    from infinitystar.text.loading import load_text_encoder

    enc = BuiltinTextEncoder(64, seed=3)
    folder = tmp_path / "old"
    folder.mkdir()
    legacy = {"class": "infinitystar.builtin_text.BuiltinTextEncoder", "config": enc.config()}
    (folder / TEXT_ENCODER_INDEX).write_text(json.dumps(legacy))
    again = load_text_encoder(folder)
    assert isinstance(again, BuiltinTextEncoder) and again.config() == enc.config()

    (folder / TEXT_ENCODER_INDEX).write_text(json.dumps({"class": "somepackage.Encoder", "config": {}}))
    with pytest.raises(ValueError, match="'somepackage.Encoder' is not one this package knows; known types: builtin"):
        load_text_encoder(folder)
    (folder / TEXT_ENCODER_INDEX).write_text(json.dumps({"type": "clip", "config": {}}))
    with pytest.raises(ValueError, match="unknown text encoder type 'clip'; known: builtin"):
        load_text_encoder(folder)
