"""LoRA at inference (no peft): adapters on a loaded transformer, scales, composition, fusing, adapter folders."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer import lora
from infinitystar.models.transformer.lora import BLOCK_TARGETS, LoraError, LoraLinear, LoraWeights
from infinitystar.models.transformer.lora_files import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    check_architecture,
    read_adapter,
    write_adapter,
)
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import schedule_from_scales

CFG = TransformerConfig(
    embed_dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, block_chunks=1, text_channels=24
)


def _model() -> InfinityTransformer:
    m = InfinityTransformer(CFG)
    m.reset_parameters(torch.Generator().manual_seed(0))
    return m.eval()


def _inputs():
    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2), (1, 3, 3)], 3, detail_scale_min_tokens=4)
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(1, sched.num_visual_tokens(), CFG.latent_channels, generator=g)
    text = torch.randn(5, CFG.text_channels, generator=g)
    return codes, text, sched


def _logits(model) -> torch.Tensor:
    codes, text, sched = _inputs()
    with torch.no_grad():
        out = model(codes, text, sched, attn_impl="dense")
    return torch.cat([out.detail.flatten(), out.semantic.flatten()])


def _adapter(model, rank=4, seed=0, targets=BLOCK_TARGETS, alpha=8.0) -> dict[str, LoraWeights]:
    """A random adapter on every targeted block linear (B non-zero, so that it changes the output)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.startswith("blocks.") and name.rsplit(".", 1)[-1] in targets:
            down = torch.randn(rank, module.in_features, generator=g) / math.sqrt(module.in_features)
            up = torch.randn(module.out_features, rank, generator=g) * 0.5
            out[name] = LoraWeights(down, up, alpha / rank)
    return out


def _merged(model, adapters: list[tuple[dict[str, LoraWeights], float]]) -> InfinityTransformer:
    """A copy of ``model`` whose weights hold W + sum scale * scaling * B A: the reference the runtime must match."""
    ref = _model()
    ref.load_state_dict(model.state_dict())
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for weights, scale in adapters:
            for name, w in weights.items():
                modules[name].weight += scale * w.scaling * (w.up @ w.down)
    return ref


def test_scale_zero_is_the_base_model_exactly_and_unload_restores_it():
    model = _model()
    base = _logits(model)
    keys = list(model.state_dict())
    lora.attach(model, "a", _adapter(model), scale=0.0)
    assert isinstance(model.blocks[0].attn.q_proj, LoraLinear)
    assert torch.equal(_logits(model), base)  # skipped, not added as zeros
    lora.set_scale(model, 1.0)
    assert not torch.allclose(_logits(model), base, atol=1e-3)
    lora.set_scale(model, 0.0, name="a")
    assert torch.equal(_logits(model), base)
    assert list(model.state_dict()) == keys  # adapters never enter the state dict
    assert lora.detach(model) == ["a"]
    assert type(model.blocks[0].attn.q_proj) is nn.Linear and not hasattr(model.blocks[0].attn.q_proj, "adapters")
    assert torch.equal(_logits(model), base) and lora.loaded_adapters(model) == {}


def test_an_adapter_computes_w_plus_scaled_ba_and_two_adapters_compose():
    model = _model()
    a, b = _adapter(model, seed=1), _adapter(model, rank=2, seed=2, targets=("q_proj", "down_proj"), alpha=3.0)
    lora.attach(model, "a", a, scale=0.7)
    assert torch.allclose(_logits(model), _logits(_merged(model, [(a, 0.7)])), atol=1e-5)
    lora.attach(model, "b", b, scale=-1.3)
    assert lora.loaded_adapters(model) == {"a": 0.7, "b": -1.3}
    both = _logits(model)
    assert torch.allclose(both, _logits(_merged(model, [(a, 0.7), (b, -1.3)])), atol=1e-5)
    lora.set_scale(model, 0.0, name="a")  # b alone
    assert torch.allclose(_logits(model), _logits(_merged(model, [(b, -1.3)])), atol=1e-5)
    lora.detach(model, "b")  # a stays, at scale 0
    assert lora.loaded_adapters(model) == {"a": 0.0}
    assert isinstance(model.blocks[0].mlp.up_proj, LoraLinear)  # a's layer, b never touched it alone


def test_fused_equals_unfused_and_unfuse_restores_the_weights():
    model = _model()
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    lora.attach(model, "a", _adapter(model, seed=3), scale=0.8)
    lora.attach(model, "b", _adapter(model, seed=4), scale=0.0)  # inactive: not fused
    unfused = _logits(model)
    assert lora.fuse(model) == ["a"] and lora.is_fused(model)
    assert not torch.equal(model.blocks[0].attn.q_proj.weight, w0["blocks.0.attn.q_proj.weight"])
    assert torch.allclose(_logits(model), unfused, atol=1e-5)
    with pytest.raises(LoraError, match="unfuse_lora"):
        lora.set_scale(model, 1.0)
    with pytest.raises(LoraError, match="unfuse_lora"):
        lora.attach(model, "c", _adapter(model))
    assert lora.unfuse(model) == ["a"] and not lora.is_fused(model)
    assert max((model.state_dict()[k] - v).abs().max().item() for k, v in w0.items()) < 1e-6
    assert torch.allclose(_logits(model), unfused, atol=1e-5)


def test_fuse_then_unload_bakes_the_adapter_in():
    model = _model()
    a = _adapter(model, seed=5)
    lora.attach(model, "a", a)
    lora.fuse(model)
    lora.detach(model)
    assert type(model.blocks[1].mlp.down_proj) is nn.Linear
    assert torch.allclose(_logits(model), _logits(_merged(_model(), [(a, 1.0)])), atol=1e-5)


def test_bf16_weights_keep_their_dtype_and_the_adapter_follows_to():
    model = _model().to(torch.bfloat16)
    lora.attach(model, "a", _adapter(model))
    layer = model.blocks[0].attn.q_proj
    assert layer.adapters["a"].down.dtype == torch.bfloat16
    lora.fuse(model)
    assert layer.weight.dtype == torch.bfloat16
    model.to(torch.float32)
    assert layer.adapters["a"].up.dtype == torch.float32


def test_attach_refuses_what_does_not_fit_and_changes_nothing():
    model = _model()
    other = InfinityTransformer(
        TransformerConfig(
            embed_dim=32, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=64, block_chunks=1, text_channels=24
        )
    )
    with pytest.raises(LoraError, match=r"blocks\.0\.attn\.q_proj: A \(4, 32\)"):
        lora.attach(model, "x", _adapter(other))
    with pytest.raises(LoraError, match="no such layer"):
        lora.attach(model, "x", {"blocks.9.attn.q_proj": next(iter(_adapter(model).values()))})
    assert lora.loaded_adapters(model) == {} and type(model.blocks[0].attn.q_proj) is nn.Linear
    lora.attach(model, "x", _adapter(model))
    with pytest.raises(LoraError, match="loaded already"):
        lora.attach(model, "x", _adapter(model))
    for bad_name in ("", "a.b", "-x", "x" * 65):
        with pytest.raises(LoraError, match="adapter name"):
            lora.attach(model, bad_name, _adapter(model))
    for bad_scale in (float("nan"), float("inf"), "1", True):
        with pytest.raises(LoraError, match="scale"):
            lora.set_scale(model, bad_scale)
    with pytest.raises(LoraError, match="no adapter named 'y' is loaded; loaded: x"):
        lora.set_scale(model, 1.0, name="y")


# --------------------------------------------------------------------------------------
# Adapter folders


def _peft_config(rank=4, alpha=8.0, **extra):
    return {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(BLOCK_TARGETS), **extra}


def _tensors(weights: dict[str, LoraWeights]) -> dict[str, torch.Tensor]:
    out = {}
    for name, w in weights.items():
        out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = w.down.clone(), w.up.clone()
    return out


def test_adapter_folder_round_trip_in_peft_format(tmp_path):
    model = _model()
    weights = _adapter(model, seed=6)
    write_adapter(tmp_path / "ad", _tensors(weights), _peft_config(), {"name": "pink", "transformer": CFG.to_dict()})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ad" / ADAPTER_WEIGHTS), "pt") as f:
        assert all(k.startswith("base_model.model.blocks.") for k in f.keys())  # noqa: SIM118 (a safe_open is not iterable); peft's names
    ad = read_adapter(tmp_path / "ad")
    assert ad.name == "pink" and ad.rank == 4 and ad.transformer == CFG.to_dict()
    assert ad.weights.keys() == weights.keys()
    assert all(torch.equal(ad.weights[k].up, w.up) and ad.weights[k].scaling == 2.0 for k, w in weights.items())
    check_architecture(ad, CFG, "'pink'")
    wide = TransformerConfig(**{**CFG.to_dict(), "embed_dim": 128, "mlp_hidden": 256})
    with pytest.raises(LoraError, match=r"needs embed_dim=64, mlp_hidden=128, this model has embed_dim=128"):
        check_architecture(ad, wide, "'pink'")
    rs = tmp_path / "rs"
    write_adapter(rs, _tensors(weights), _peft_config(use_rslora=True), {})
    assert read_adapter(rs).weights["blocks.0.attn.q_proj"].scaling == pytest.approx(8.0 / 2.0)  # alpha / sqrt(r)
    assert read_adapter(rs).transformer is None  # adapters of other tools: checked by shapes when attached


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / ADAPTER_CONFIG).unlink(), "adapter_config.json missing"),
        (lambda d: (d / ADAPTER_WEIGHTS).write_bytes(b"\x00" * 20), "truncated or corrupt"),
        (lambda d: (d / ADAPTER_CONFIG).write_text("{"), "not valid JSON"),
        (lambda d: (d / ADAPTER_CONFIG).write_text(json.dumps(_peft_config(use_dora=True))), "use_dora"),
        (lambda d: (d / ADAPTER_CONFIG).write_text(json.dumps(_peft_config(rank=8))), "rank 8 needs"),
        (lambda d: (d / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LOHA"})), "not a LoRA adapter config"),
    ],
)
def test_a_broken_adapter_folder_is_one_clear_error(tmp_path, damage, message):
    model = _model()
    write_adapter(tmp_path, _tensors(_adapter(model)), _peft_config(), {})
    damage(tmp_path)
    with pytest.raises(LoraError, match=message):
        read_adapter(tmp_path)


def test_nan_weights_and_unpaired_keys_are_refused(tmp_path):
    model = _model()
    weights = _adapter(model)
    tensors = _tensors(weights)
    tensors["blocks.0.attn.q_proj.lora_B.weight"][0, 0] = float("nan")
    write_adapter(tmp_path / "nan", tensors, _peft_config(), {})
    with pytest.raises(LoraError, match="NaN or infinite"):
        read_adapter(tmp_path / "nan")
    tensors = _tensors(weights)
    del tensors["blocks.1.mlp.up_proj.lora_A.weight"]
    write_adapter(tmp_path / "half", tensors, _peft_config(), {})
    with pytest.raises(LoraError, match=r"blocks\.1\.mlp\.up_proj has lora_A\.weight missing"):
        read_adapter(tmp_path / "half")
