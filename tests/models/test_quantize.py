"""Weight-only quantization of the transformer blocks (torchao): which layers, how close, what is refused."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn

from infinitystar.models.config import get_preset
from infinitystar.models.transformer import quantize as quant
from infinitystar.models.transformer.block_runner import BlockRunner, InferenceOptions
from infinitystar.models.transformer.checkpoint import save_original_transformer
from infinitystar.models.transformer.layers import RMSNorm, sdpa
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.transformer.offload import enable_block_offload
from infinitystar.models.transformer.quantize import (
    QuantizeError,
    block_weight_bytes,
    check_quantize,
    quantize_transformer,
    quantized_layers,
)
from infinitystar.schedule import build_schedule
from tests.helpers.steps import step_logits


def tiny(seed: int = 0) -> InfinityTransformer:
    torch.manual_seed(seed)
    return InfinityTransformer(get_preset("tiny").transformer).eval()


@pytest.fixture(scope="module")
def schedule():
    return build_schedule(1.0, "0.06M", 5, detail_scale_min_tokens=100)  # largest scale: 4 x 16 x 16 tokens


def relative_error(got: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    return max(float((a - b).norm() / b.norm()) for a, b in zip(got, ref))


def _weight_type(linear: nn.Linear) -> type:
    return type(linear.weight)


@pytest.mark.parametrize("mode, expected", [("int8", "Int8Tensor"), ("fp8", "Float8Tensor")])
def test_only_the_blocks_linear_layers_are_quantized(mode, expected, monkeypatch):
    monkeypatch.setattr(quant, "_check_fp8_device", lambda device: None)  # the fp8 type, built on the CPU
    model = tiny()
    outer = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("blocks.")}
    norms = {n: p.detach().clone() for n, p in model.named_parameters() if "norm" in n}
    quantize_transformer(model, mode)
    layers = quantized_layers(model)
    assert len(layers) == 7 * len(model.blocks)  # q, k, v, o, gate, up, down per block
    assert {_weight_type(m).__name__ for m in layers.values()} == {expected}
    for name in ("text_proj", "word_embed", "detail_head", "semantic_head"):
        assert type(getattr(model, name).weight) is nn.Parameter, name
    for name, before in {**outer, **norms}.items():
        after = model.get_parameter(name)
        assert type(after) is nn.Parameter and after.dtype == before.dtype and torch.equal(after, before), name
    assert all(
        isinstance(m, RMSNorm) and type(m.weight) is nn.Parameter for m in model.modules() if "Norm" in type(m).__name__
    )
    assert model.quantization == mode


def test_int8_logits_are_close_to_full_precision_and_blocks_shrink(schedule):
    model = tiny()
    text = torch.randn(9, model.cfg.text_channels, generator=torch.Generator().manual_seed(1))
    ref, bits = step_logits(model, schedule, text)
    ref, _ = step_logits(model, schedule, text, forced=bits)
    full_bytes = block_weight_bytes(model)
    quantize_transformer(model, "int8")
    got, _ = step_logits(model, schedule, text, forced=bits)
    err = relative_error(got, ref)
    assert 0 < err < 0.05, err  # measured 0.021: 8-bit weights with per-row scales
    # fp32 -> 1 byte per weight + a scale and a zero point per row; the norms stay fp32
    assert block_weight_bytes(model) < 0.3 * full_bytes
    chunked, _ = step_logits(
        model, schedule, text, InferenceOptions(token_chunk=37), forced=bits
    )  # token chunks run the same kernels
    assert max(s.num_tokens for s in schedule.scales) > 37
    for a, b in zip(chunked, got):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_quantized_block_compiles(monkeypatch):
    """torch.compile (inductor) of a quantized block's pieces gives the eager result."""
    model = quantize_transformer(tiny(), "int8")
    blk, hd = model.blocks[0], model.cfg.head_dim
    runner, options = BlockRunner(), InferenceOptions(token_chunk=None, compile=True)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        x = torch.randn(2, 6, model.cfg.embed_dim, generator=g)
        cos, sin = torch.randn(6, hd // 2, generator=g).cos(), torch.randn(6, hd // 2, generator=g).sin()
        torch.testing.assert_close(
            runner(options, blk, x, cos, sin, sdpa), blk(x, cos, sin, sdpa), rtol=1e-5, atol=1e-5
        )
    assert not runner.compile_failed, "torch.compile failed on a quantized block (see the warning)"


@pytest.mark.parametrize(
    "mode, device, message",
    [
        ("int4", "cpu", "unknown quantize 'int4'; accepted: int8, fp8"),
        (8, "cpu", "quantize must be a string"),
        ("fp8", "cpu", "quantize 'fp8' needs a CUDA GPU with fp8 support .* use quantize 'int8'"),
        ("int8", "meta", "runs on cpu and cuda devices, not meta"),
    ],
)
def test_bad_modes_are_refused_with_what_is_accepted(mode, device, message):
    with pytest.raises(QuantizeError, match=message):
        check_quantize(mode, device)


def test_none_means_full_precision():
    assert check_quantize(None, "cpu") is None and check_quantize("none", "cpu") is None
    model = tiny()
    assert quantize_transformer(model, None) is model and model.quantization is None


def test_missing_torchao_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails as if not installed
    with pytest.raises(QuantizeError, match=r"needs torchao .*pip install 'infinitystar\[quant\]'"):
        check_quantize("int8", "cpu")


def test_refused_combinations(tmp_path):
    model = quantize_transformer(tiny(), "int8")
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_transformer(model, "int8")
    with pytest.raises(QuantizeError, match=r"quantized \(int8\); saving writes full-precision .*quantize='int8'"):
        save_original_transformer(model, tmp_path / "t")
    assert not (tmp_path / "t").exists()
    offloaded = tiny()
    enable_block_offload(offloaded, "cpu")
    with pytest.raises(QuantizeError, match="before enabling block offload"):
        quantize_transformer(offloaded, "int8")


def test_quantized_blocks_can_be_stored_elsewhere_through_their_inner_tensors():
    """``store`` (block offload: quantize on the GPU, keep on the host) moves each quantized weight through its inner
    tensors; the block computes the same."""
    kept, stored = quantize_transformer(tiny(), "int8"), quantize_transformer(tiny(), "int8", "cpu", store="cpu")
    x = torch.randn(2, 5, kept.cfg.embed_dim, generator=torch.Generator().manual_seed(0))
    cos, sin = torch.ones(5, kept.cfg.head_dim // 2), torch.zeros(5, kept.cfg.head_dim // 2)
    for a, b in zip(kept.blocks, stored.blocks):
        assert all(type(p) is type(q) and not q.requires_grad for p, q in zip(a.parameters(), b.parameters()))
        assert torch.equal(a(x, cos, sin, sdpa), b(x, cos, sin, sdpa))
