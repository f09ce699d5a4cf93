"""Block offload with the CPU as the "device": the same bookkeeping as on a GPU (which block is resident, the
prefetch order, nothing left behind), CPU-to-CPU copies, and outputs identical to no offload."""

from __future__ import annotations

import pytest
import torch

from infinitystar.generation.loop import generate_latent
from infinitystar.models.config import get_preset
from infinitystar.models.transformer.block_runner import BlockRunner, InferenceOptions
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.transformer.offload import enable_block_offload, offload_of
from infinitystar.models.transformer.quantize import quantize_transformer
from infinitystar.models.transformer.tensors import tensor_bytes
from infinitystar.schedule import build_schedule


def tiny() -> InfinityTransformer:
    torch.manual_seed(0)
    return InfinityTransformer(get_preset("tiny").transformer).eval()


@pytest.fixture(scope="module")
def schedule():
    return build_schedule(1.0, "0.06M", 5, detail_scale_min_tokens=100)


@pytest.fixture(scope="module")
def text():
    return torch.randn(9, get_preset("tiny").transformer.text_channels, generator=torch.Generator().manual_seed(1))


def generate(model, schedule, text, chunk: int | None = 37):
    model.inference = InferenceOptions(token_chunk=chunk)
    seen = []
    out = generate_latent(
        model, schedule, text, generator=torch.Generator().manual_seed(3), on_step=lambda r: seen.append(r.logits)
    )
    return seen, out.bits


def host_params(model) -> list[list[torch.nn.Parameter]]:
    return [list(blk.parameters()) for blk in model.blocks]


def test_offloaded_generation_is_identical_and_leaves_nothing_on_the_device(schedule, text, monkeypatch):
    model = tiny()
    ref_logits, ref_bits = generate(model, schedule, text)
    offload = enable_block_offload(model, "cpu")
    assert offload_of(model) is offload and offload.resident == []
    host = host_params(model)
    seen = []  # (block index, resident blocks, the block's weights are device copies) at every block run
    call = BlockRunner.__call__

    def spy(self, options, blk, x, cos, sin, attend):
        i = next(j for j, b in enumerate(model.blocks) if b is blk)
        copies = all(p is not h for p, h in zip(blk.parameters(), host[i]))
        seen.append((i, offload.resident, copies))
        return call(self, options, blk, x, cos, sin, attend)

    monkeypatch.setattr(BlockRunner, "__call__", spy)
    logits, bits = generate(model, schedule, text)
    depth = len(model.blocks)
    assert all(torch.equal(a, b) for a, b in zip(logits, ref_logits))  # identical, not close
    assert all(torch.equal(a, b) for a, b in zip(bits, ref_bits))
    passes = 1 + schedule.num_steps  # the text prefill, then every step
    assert [i for i, _, _ in seen] == list(range(depth)) * passes
    for i, resident, copies in seen:  # block i runs on its device copy; block i + 1 is already being fetched
        assert copies and resident == ([i, i + 1] if i + 1 < depth else [i])
    assert list(offload.loads)[: 2 * depth] == list(range(depth)) * 2  # prefetch order, pass after pass
    assert offload.resident == []  # nothing left on the device after the generation
    assert host_params(model) == host  # every block holds its own host tensors again
    assert all(p.device.type == "cpu" for p in model.blocks.parameters())


def test_a_failing_block_leaves_no_copy_behind(schedule, text):
    model = tiny()
    offload = enable_block_offload(model, "cpu")
    host = host_params(model)
    cache = model.new_cache(schedule, 1)

    def broken(i):
        def attend(q, k, v):
            raise RuntimeError(f"out of memory in block {i} (simulated)")

        return attend

    x = torch.randn(1, 4, model.cfg.embed_dim)
    cos, sin = torch.ones(4, model.cfg.head_dim // 2), torch.zeros(4, model.cfg.head_dim // 2)
    with pytest.raises(RuntimeError, match="block 0"):
        model._runner.run_blocks(model.inference, model.blocks, x, cos, sin, broken, offload)
    assert offload.resident == [] and host_params(model) == host
    model.prefill_text(cache, text[None])  # and the model still runs
    assert cache.has_text


def test_offload_composes_with_int8(schedule, text):
    model = quantize_transformer(tiny(), "int8")
    ref, _ = generate(model, schedule, text)
    offload = enable_block_offload(model, "cpu")
    got, _ = generate(model, schedule, text)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    weights = [p for p in model.blocks.parameters() if p.ndim == 2]
    assert all(type(p).__name__ == "Int8Tensor" for p in weights)
    full = sum(p.numel() * 4 for p in tiny().blocks.parameters())
    assert offload.host_bytes() == sum(tensor_bytes(p) for p in model.blocks.parameters()) < 0.3 * full


def test_training_forward_refuses_offloaded_blocks(schedule):
    model = tiny()
    enable_block_offload(model, "cpu")
    codes = torch.zeros(1, schedule.num_visual_tokens(), model.cfg.latent_channels)
    with pytest.raises(ValueError, match="block offload is for inference"):
        model(codes, torch.zeros(3, model.cfg.text_channels), schedule)
