"""Inference options of the blocks: token chunks and torch.compile (with its eager fallback) compute
the same steps as the plain module call."""

from __future__ import annotations

import pytest
import torch

from infinitystar.models.config import get_preset
from infinitystar.models.transformer.block_runner import BlockRunner, InferenceOptions, attend_in_chunks
from infinitystar.models.transformer.layers import sdpa
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import build_schedule
from tests.helpers.steps import step_logits


@pytest.fixture
def model() -> InfinityTransformer:
    torch.manual_seed(0)
    return InfinityTransformer(get_preset("tiny").transformer).eval()


@pytest.fixture(scope="module")
def schedule():
    return build_schedule(1.0, "0.06M", 5, detail_scale_min_tokens=100)  # largest scale: 4 x 16 x 16 tokens


def test_token_chunks_compute_the_same_steps(model, schedule):
    text = torch.randn(9, model.cfg.text_channels, generator=torch.Generator().manual_seed(1))
    _, bits = step_logits(model, schedule, text, InferenceOptions(token_chunk=None))
    whole, _ = step_logits(model, schedule, text, InferenceOptions(token_chunk=None), forced=bits)
    chunked, _ = step_logits(model, schedule, text, InferenceOptions(token_chunk=37), forced=bits)  # uneven chunks
    assert max(s.num_tokens for s in schedule.scales) > 37
    assert len(whole) == len(chunked) == schedule.num_steps
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attend_in_chunks_matches_one_call():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 16, generator=g) for n in (50, 70, 70))
    k, v = k[:, :2], v[:, :2]  # GQA: 4 query heads on 2 key/value heads
    one = sdpa(q, k, v)
    chunked = attend_in_chunks(lambda qc: sdpa(qc, k, v), q, 16)
    torch.testing.assert_close(chunked, one, rtol=1e-6, atol=1e-6)


def test_chunks_are_not_used_with_gradients(model):
    """Training keeps the plain module (in-place chunk writes would break autograd)."""
    blk = model.blocks[0]
    runner, options = BlockRunner(), InferenceOptions(token_chunk=2)
    x = torch.randn(1, 5, model.cfg.embed_dim, requires_grad=True)
    cos, sin = torch.ones(5, model.cfg.head_dim // 2), torch.zeros(5, model.cfg.head_dim // 2)
    y = runner(options, blk, x, cos, sin, sdpa)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("chunk", [None, 37])
def test_compile_failure_falls_back_to_eager(model, schedule, monkeypatch, chunk):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found (simulated)")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    text = torch.randn(9, model.cfg.text_channels, generator=torch.Generator().manual_seed(2))
    _, bits = step_logits(model, schedule, text, InferenceOptions(token_chunk=None))
    eager, _ = step_logits(model, schedule, text, InferenceOptions(token_chunk=None), forced=bits)
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*simulated.*eagerly"):
        fallback, _ = step_logits(model, schedule, text, InferenceOptions(token_chunk=chunk, compile=True), forced=bits)
    for a, b in zip(eager, fallback):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_block_matches_eager(model):
    """A real torch.compile (inductor) of one block's pieces, on two token counts (dynamic shapes)."""
    blk = model.blocks[0]
    runner, options = BlockRunner(), InferenceOptions(token_chunk=None, compile=True)
    hd = model.cfg.head_dim
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for n in (6, 11):
            x = torch.randn(2, n, model.cfg.embed_dim, generator=g)
            cos, sin = torch.randn(n, hd // 2, generator=g).cos(), torch.randn(n, hd // 2, generator=g).sin()
            expected = blk(x, cos, sin, sdpa)
            got = runner(options, blk, x, cos, sin, sdpa)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not runner.compile_failed, "torch.compile failed on this machine (see the warning)"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"token_chunk": 0}, "token_chunk must be a positive integer or None"),
        ({"token_chunk": 2.5}, "token_chunk must be a positive integer or None"),
        ({"compile_mode": "fast"}, "unknown compile_mode 'fast'; accepted: default, reduce-overhead"),
    ],
)
def test_bad_options_say_what_is_accepted(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InferenceOptions(**kwargs)
