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


def test_vae_decode_is_counted_in_its_own_precision_and_after_the_cache_is_freed():
    from infinitystar.models.config import VAEConfig

    cfg, vae = get_preset("8b").transformer, VAEConfig()
    sched = build_schedule(9 / 16, "720p", latent_frames(81))
    fp32 = estimate_generation_memory(cfg, sched, vae=vae, vae_bytes_per_value=4)
    bf16 = estimate_generation_memory(cfg, sched, vae=vae, vae_bytes_per_value=2)
    none = estimate_generation_memory(cfg, sched)
    assert fp32.vae_weights == 2 * bf16.vae_weights == 184_659_383 * 4
    assert fp32.vae_decode == 2 * bf16.vae_decode > 0 and none.vae_decode == 0
    for e in (fp32, bf16):  # the larger of the two phases, not their sum
        phase = max(e.kv_cache + e.activations, e.vae_decode)
        assert e.total == e.weights + e.text_encoder + e.vae_weights + phase


def test_decode_estimate_counts_the_tensors_the_decoder_really_makes():
    """The estimate's unit, the last stage's full-resolution tensor of one chunk, is the tensor the decoder feeds its
    final norm (checked on a small VAE with a hook)."""
    import torch

    from infinitystar.generation.memory import _DECODE_LIVE_TENSORS, vae_decode_bytes
    from infinitystar.models.config import VAEConfig
    from infinitystar.models.vae.model import VideoVAE
    from infinitystar.schedule import schedule_from_scales

    vcfg = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)
    vae = VideoVAE(vcfg).eval()
    sched = schedule_from_scales([(1, 1, 1), (1, 4, 4), (4, 1, 1), (4, 4, 4)], 2, detail_scale_min_tokens=4)
    sizes = []
    vae.decoder.norm_out.register_forward_hook(lambda m, args, out: sizes.append(args[0].numel()))
    with torch.inference_mode():
        video = vae.decode(torch.randn(1, 64, 5, 4, 4))
    activations, video_bytes = vae_decode_bytes(vcfg, sched, bytes_per_value=4)
    assert max(sizes) * 4 * _DECODE_LIVE_TENSORS == activations
    assert video.numel() * 4 == video_bytes
