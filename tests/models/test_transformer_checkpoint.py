"""The original-format checkpoint adapter and loader, on checkpoints the tests write."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import infinitystar.models.transformer.checkpoint as tc
from infinitystar.checkpoints import CheckpointError
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.checkpoint import (
    INDEX_NAME,
    expected_original_shapes,
    load_original_transformer,
    original_to_ours,
    ours_to_original,
    save_original_transformer,
    to_original_state_dict,
)
from infinitystar.models.transformer.model import InfinityTransformer

CFG = TransformerConfig(
    embed_dim=32,
    depth=4,
    num_heads=2,
    num_kv_heads=1,
    mlp_hidden=64,
    block_chunks=2,
    text_channels=16,
    text_maxlen=8,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = InfinityTransformer(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))  # every tensor distinct, norms not all ones
    return m


def _assert_same_weights(a: InfinityTransformer, b: InfinityTransformer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k].to(sa[k].dtype)), k


def test_key_adapter_both_ways():
    assert original_to_ours("block_chunks.1.module.0.attn.q_proj.weight", CFG) == "blocks.2.attn.q_proj.weight"
    assert original_to_ours("block_chunks.0.module.1.input_layernorm.weight", CFG) == "blocks.1.attn_norm.weight"
    assert original_to_ours("norm_hidden_sates.weight", CFG) == "norm.weight"
    assert original_to_ours("semantic_head2.bias", CFG) == "semantic_head.bias"
    assert original_to_ours("head.weight", CFG) == "detail_head.weight"
    assert original_to_ours("block_chunks.2.module.0.attn.q_proj.weight", CFG) is None  # only 2 chunks
    assert original_to_ours("block_chunks.0.module.0.attn.q_proj.bias", CFG) is None
    ours = InfinityTransformer(CFG).state_dict()
    originals = [ours_to_original(k, CFG) for k in ours]
    assert sorted(originals) == sorted(expected_original_shapes(CFG))
    assert all(original_to_ours(o, CFG) == k for o, k in zip(originals, ours))
    assert "block_chunks.1.module.1.post_attention_layernorm.weight" in originals


def test_expected_shapes_follow_the_config():
    shapes = expected_original_shapes(CFG)
    assert len(shapes) == 11 + 11 * CFG.depth
    assert shapes["cfg_uncond"] == (8, 16)
    assert shapes["sos_token"] == (1, 1, 32)
    assert shapes["block_chunks.0.module.0.attn.k_proj.weight"] == (16, 32)  # 1 kv head of 16
    assert shapes["block_chunks.0.module.0.attn.q_norm.weight"] == (16,)
    assert shapes["block_chunks.1.module.1.mlp.down_proj.weight"] == (32, 64)
    assert shapes["head.weight"] == (128, 32) and shapes["semantic_head2.weight"] == (32, 32)


def test_single_file_roundtrip(model, tmp_path):
    path = tmp_path / "transformer.safetensors"
    save_file({k: v.contiguous() for k, v in to_original_state_dict(model).items()}, str(path))
    loaded = load_original_transformer(path, CFG)
    _assert_same_weights(model, loaded)
    assert not loaded.training


def test_sharded_roundtrip_and_index(model, tmp_path):
    index = save_original_transformer(model, tmp_path / "ckpt", max_shard_bytes=40_000)
    data = json.loads(index.read_text())
    files = sorted(set(data["weight_map"].values()))
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert set(data["weight_map"]) == set(expected_original_shapes(CFG))
    assert data["metadata"]["total_size"] == sum(p.numel() * 4 for p in model.parameters())
    for name in files:
        assert (tmp_path / "ckpt" / name).stat().st_size <= 40_000 + 4096  # header slack
    _assert_same_weights(model, load_original_transformer(tmp_path / "ckpt", CFG))


def test_folder_with_a_single_model_file(model, tmp_path):
    save_file(
        {k: v.contiguous() for k, v in to_original_state_dict(model).items()}, str(tmp_path / "model.safetensors")
    )
    _assert_same_weights(model, load_original_transformer(tmp_path, CFG))
    with pytest.raises(CheckpointError, match="checkpoint not found.*does_not_exist"):
        load_original_transformer(tmp_path / "does_not_exist", CFG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither"):
        load_original_transformer(tmp_path / "empty", CFG)


def test_load_in_bf16(model, tmp_path):
    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    loaded = load_original_transformer(tmp_path, CFG, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    torch.testing.assert_close(loaded.blocks[3].mlp.up_proj.weight, model.blocks[3].mlp.up_proj.weight.bfloat16())


def test_load_bf16_blocks_with_fp32_outer_parameters(model, tmp_path):
    from infinitystar.schedule import schedule_from_scales

    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    loaded = load_original_transformer(tmp_path, CFG, dtype=torch.bfloat16, outer_dtype=torch.float32)
    dtypes = {n: p.dtype for n, p in loaded.named_parameters()}
    assert {d for n, d in dtypes.items() if n.startswith("blocks.")} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if not n.startswith("blocks.")} == {torch.float32}
    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2)], 2, detail_scale_min_tokens=4)
    cache = loaded.new_cache(sched, 2)
    text = torch.randn(3, CFG.text_channels)
    with torch.no_grad():
        loaded.prefill_text(cache, loaded.text_rows(text, guidance=True))
        logits = loaded.step(cache, torch.zeros(2, 1, 64), sched, sched.steps[0])
        ref_cache = model.new_cache(sched, 2)
        model.prefill_text(ref_cache, model.text_rows(text, guidance=True))
        ref = model.step(ref_cache, torch.zeros(2, 1, 64), sched, sched.steps[0])
    assert logits.dtype == torch.float32 and cache.text_k[0].dtype == torch.bfloat16
    torch.testing.assert_close(logits, ref, rtol=0.05, atol=0.5)


def _write_single(state, path):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _never_read_tensors(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("tensors were read before the key set was validated")

    monkeypatch.setattr(tc, "_iter_tensors", fail)


def _drop_up_proj(state):
    del state["block_chunks.1.module.0.mlp.up_proj.weight"]


def _add_bias(state):
    state["block_chunks.0.module.0.attn.q_proj.bias"] = torch.zeros(32)


def _reshape_word_embed(state):
    state["word_embed.weight"] = torch.zeros(32, 16)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (_drop_up_proj, r"missing keys \(1\): block_chunks\.1\.module\.0\.mlp\.up_proj\.weight"),
        (_reshape_word_embed, r"word_embed\.weight \(32, 16\) \(model expects \(32, 64\)\)"),
    ],
)
def test_key_problems_are_named_before_reading_tensors(model, tmp_path, monkeypatch, corrupt, message):
    state = to_original_state_dict(model)
    corrupt(state)
    path = _write_single(state, tmp_path / "m.safetensors")
    _never_read_tensors(monkeypatch)
    with pytest.raises(CheckpointError, match=message):
        load_original_transformer(path, CFG)


def test_unknown_extra_keys_warn_and_the_model_loads(model, tmp_path):
    """The original loads with strict=False, so a released file may carry entries nobody here has seen: they are
    skipped with one warning that names them; every needed weight still loads."""
    from infinitystar.checkpoints import UnusedWeightsWarning

    state = to_original_state_dict(model)
    _add_bias(state)
    state["ema.step"] = torch.zeros(())
    path = _write_single(state, tmp_path / "m.safetensors")
    with pytest.warns(
        UnusedWeightsWarning, match=r"skipped 2 entries .*block_chunks\.0\.module\.0\.attn\.q_proj\.bias, ema\.step"
    ):
        loaded = load_original_transformer(path, CFG)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_missing_key_in_a_later_shard_fails_before_loading(model, tmp_path, monkeypatch):
    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    data = json.loads((tmp_path / INDEX_NAME).read_text())
    last = sorted(set(data["weight_map"].values()))[-1]
    shard = load_file(str(tmp_path / last))
    dropped = sorted(shard)[0]
    del shard[dropped]
    save_file(shard, str(tmp_path / last))
    del data["weight_map"][dropped]
    (tmp_path / INDEX_NAME).write_text(json.dumps(data))
    _never_read_tensors(monkeypatch)
    with pytest.raises(CheckpointError, match=dropped.replace(".", r"\.")):
        load_original_transformer(tmp_path, CFG)


def test_index_pointing_to_an_absent_key(model, tmp_path):
    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    data = json.loads((tmp_path / INDEX_NAME).read_text())
    first = sorted(set(data["weight_map"].values()))[0]
    data["weight_map"]["extra.weight"] = first
    (tmp_path / INDEX_NAME).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"{first}.*extra\.weight"):
        load_original_transformer(tmp_path, CFG)


def test_truncated_shard_is_named(model, tmp_path):
    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    data = json.loads((tmp_path / INDEX_NAME).read_text())
    victim = tmp_path / sorted(set(data["weight_map"].values()))[1]
    raw = victim.read_bytes()
    victim.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CheckpointError, match=victim.name):
        load_original_transformer(tmp_path, CFG)
    victim.write_bytes(raw[:20])  # header cut too
    with pytest.raises(CheckpointError, match=victim.name):
        load_original_transformer(tmp_path, CFG)


def test_missing_shard_file_is_named(model, tmp_path):
    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    data = json.loads((tmp_path / INDEX_NAME).read_text())
    victim = tmp_path / sorted(set(data["weight_map"].values()))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"shard not found.*{victim.name}"):
        load_original_transformer(tmp_path, CFG)


def test_corrupt_index_and_duplicate_keys(model, tmp_path):
    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    index = tmp_path / INDEX_NAME
    data = json.loads(index.read_text())
    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read checkpoint index"):
        load_original_transformer(tmp_path, CFG)
    files = sorted(set(data["weight_map"].values()))
    first = load_file(str(tmp_path / files[0]))
    second = load_file(str(tmp_path / files[1]))
    key = sorted(first)[0]
    second[key] = first[key]
    save_file(second, str(tmp_path / files[1]))
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="stored twice"):
        load_original_transformer(tmp_path, CFG)


def test_loaded_model_computes_like_the_original_instance(model, tmp_path):
    from infinitystar.schedule import schedule_from_scales

    save_original_transformer(model, tmp_path, max_shard_bytes=30_000)
    loaded = load_original_transformer(tmp_path, CFG)
    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2)], 2, detail_scale_min_tokens=4)
    codes = torch.randn(1, sched.num_visual_tokens(), 64)
    text = torch.randn(3, CFG.text_channels)
    with torch.no_grad():
        torch.testing.assert_close(loaded(codes, text, sched).detail, model(codes, text, sched).detail, rtol=0, atol=0)
