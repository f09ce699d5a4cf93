"""The analytic memory estimate behind `infinitystar info`."""

from __future__ import annotations

from infinitystar.generation.memory import (
    GIB,
    block_matmul_params,
    block_weight_bytes_estimate,
    estimate_generation_memory,
    fastest_fitting,
    fits,
    plan_settings,
    transformer_params,
)
from infinitystar.models.config import VAEConfig, get_preset
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
    cfg, vae = get_preset("8b").transformer, VAEConfig()
    sched = build_schedule(9 / 16, "720p", latent_frames(81))
    fp32 = estimate_generation_memory(cfg, sched, vae=vae, vae_bytes_per_value=4)
    bf16 = estimate_generation_memory(cfg, sched, vae=vae, vae_bytes_per_value=2)
    none = estimate_generation_memory(cfg, sched)
    assert fp32.vae == 2 * bf16.vae == 184_659_383 * 4
    assert fp32.decode > bf16.decode > 0 and none.decode == 0
    for e in (fp32, bf16):  # the larger of the two phases, not their sum
        phase = max(e.kv_cache + e.activations, e.decode)
        assert e.total == e.weights + e.text_encoder + e.vae + phase


def test_decode_estimate_counts_the_tensors_the_decoder_really_makes():
    """The estimate's unit, the last stage's full-resolution tensor of the first chunk, is the tensor the decoder
    feeds its final norm (checked on a small VAE with a hook); the decoded video is counted in the VAE's dtype and
    as fp32."""
    import torch

    from infinitystar.generation.memory import VAE_LIVE_TENSORS, decode_bytes
    from infinitystar.models.vae.model import VideoVAE
    from infinitystar.schedule import schedule_from_scales

    vcfg = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)
    vae = VideoVAE(vcfg).eval()
    sched = schedule_from_scales([(1, 1, 1), (1, 4, 4), (4, 1, 1), (4, 4, 4)], 2, detail_scale_min_tokens=4)
    sizes = []
    vae.decoder.norm_out.register_forward_hook(lambda m, args, out: sizes.append(args[0].numel()))
    with torch.inference_mode():
        video = vae.decode(torch.randn(1, 64, 5, 4, 4))
    assert decode_bytes(vcfg, sched, 4) == max(sizes) * 4 * VAE_LIVE_TENSORS + video.numel() * (4 + 4)


def test_quantized_and_offloaded_weights():
    cfg = get_preset("8b").transformer
    sched = build_schedule(9 / 16, "720p", latent_frames(81))
    full = estimate_generation_memory(cfg, sched)
    int8 = estimate_generation_memory(cfg, sched, quantize="int8")
    blocks = estimate_generation_memory(cfg, sched, offload_blocks=True)
    one_block = block_weight_bytes_estimate(cfg, 2)
    assert 0.49 < int8.weights / full.weights < 0.52  # bf16 -> 1 byte per weight, embeddings and heads fp32
    assert 2 * one_block < blocks.weights < 2.1 * one_block  # two blocks resident + the fp32 outer layers
    assert int8.kv_cache == full.kv_cache and int8.activations == full.activations
    with_vae = estimate_generation_memory(cfg, sched, vae=VAEConfig())
    assert with_vae.vae > 0 and with_vae.decode > 0
    expected = with_vae.weights + with_vae.text_encoder + with_vae.vae
    expected += max(with_vae.kv_cache + with_vae.activations, with_vae.decode)
    assert abs(with_vae.total - expected) < 1


def test_the_estimate_counts_quantized_blocks_as_torchao_stores_them():
    """fp32 tiny preset: the estimate of an int8 block equals the bytes torchao's tensors hold."""
    from infinitystar.models.transformer.quantize import block_weight_bytes, quantize_transformer

    cfg = get_preset("tiny").transformer
    model = quantize_transformer(InfinityTransformer(cfg), "int8")
    assert block_weight_bytes(model) == cfg.depth * block_weight_bytes_estimate(cfg, 4, "int8")


def test_plan_orders_every_setting_and_picks_the_fastest_that_fits():
    cfg = get_preset("8b").transformer
    sched = build_schedule(9 / 16, "720p", latent_frames(81))
    rows = plan_settings(cfg, sched, VAEConfig(), mlp_chunk_tokens=8192)
    assert len(rows) == 72 and len({r.flags() for r in rows}) == 72  # 3 dtypes x 3 quantize x 4 offload x 2 VAE
    assert rows[0].flags() == "--dtype bf16" and rows[-1].dtype == "fp32"
    assert fastest_fitting(rows, 80).flags() == "--dtype bf16"
    # 720p in bf16 with the fp32 VAE (the original's) needs about 33 GiB; int8 alone about 24.7: T5 goes to the CPU
    assert fastest_fitting(rows, 24).flags() == "--dtype bf16 --quantize int8 --offload text"
    small = fastest_fitting(rows, 12)
    assert small.offload in ("blocks", "all") and fits(small, 12)
    assert fastest_fitting(rows, 2) is None


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
