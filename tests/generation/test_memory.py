"""The analytic memory estimate behind `infinitystar info`."""

from __future__ import annotations

from infinitystar.generation.memory import GIB, estimate_generation_memory, transformer_params
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
