"""The analytic memory estimate behind `infinitystar info`."""

from __future__ import annotations

from infinitystar.generation.memory import GIB, block_matmul_params, estimate_generation_memory, transformer_params
from infinitystar.models.config import get_preset
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import build_schedule
from infinitystar.sizes import latent_frames


def test_parameter_count_matches_the_module_and_the_release():
    tiny = get_preset("tiny").transformer
    model = InfinityTransformer(tiny)
    assert transformer_params(tiny) == sum(p.numel() for p in model.parameters())
    assert abs(transformer_params(get_preset("8b").transformer) - 8.768e9) < 1e6  # 35.07 GB of fp32 weights


def test_estimate_grows_with_resolution_and_length_and_shrinks_with_offload_and_chunking():
    cfg = get_preset("8b").transformer

    def est(res, seconds, **kw):
        return estimate_generation_memory(cfg, build_schedule(9 / 16, res, latent_frames(16 * seconds + 1)), **kw)

    e480, e720, e480_10 = est("480p", 5), est("720p", 5), est("480p", 10)
    assert e720.total > e480.total and e480_10.kv_cache > e480.kv_cache
    assert abs(e480.weights / GIB - 16.33) < 0.05  # bf16
    off = est("480p", 5, offload_text_encoder=True)
    assert off.text_encoder == 0 and off.total < e480.total
    chunked = est("720p", 5, mlp_chunk_tokens=4096)
    assert chunked.activations < e720.activations / 2
    # 10 s at 480p: while clip 1's largest scale (20x30x53 tokens) runs, the cache holds it (clip 2 needs it) and
    # the image's largest scale (1x30x53, which it attends to): 2 rows x 36 layers x K,V x 1024 wide x bf16
    expected = (512 + 20 * 30 * 53 + 30 * 53) * 2 * 1024 * 2 * 36 * 2
    assert abs(e480_10.kv_cache - expected) / expected < 1e-9


def test_per_process_estimate_of_one_video_on_several_processes():
    cfg = get_preset("8b").transformer
    sched = build_schedule(9 / 16, "720p", latent_frames(81))
    one = estimate_generation_memory(cfg, sched, mlp_chunk_tokens=8192)
    sp2 = estimate_generation_memory(cfg, sched, mlp_chunk_tokens=8192, sp_size=2)
    assert sp2.kv_cache == one.kv_cache / 2  # sharded by key/value head
    assert sp2.weights == one.weights and sp2.activations < one.activations
    cfg2 = estimate_generation_memory(cfg, sched, mlp_chunk_tokens=8192, cfg_parallel=True)
    assert cfg2.kv_cache == one.kv_cache / 2  # one guidance row
    fsdp = estimate_generation_memory(cfg, sched, mlp_chunk_tokens=8192, sp_size=2, fsdp=True)
    block = (block_matmul_params(cfg) + 2 * 4096 + 2 * 128) * 2  # one block in bf16, its four norms included
    assert abs(fsdp.weights - (one.weights - 36 * block / 2 + 2 * block)) < 1  # half the blocks + two gathered
    # the target: two 24 GB cards hold one 8B copy and make a 720p 5 s video (estimate, not measured)
    assert fsdp.total / GIB < 20 < one.total / GIB
