"""Unit tests of the causal video VAE (tiny widths, small sizes) and of media.frames_to_uint8."""

from __future__ import annotations

import pytest
import torch

from infinitystar.checkpoints import CheckpointError, save_safetensors
from infinitystar.media import frames_to_uint8
from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.checkpoint import (
    infer_vae_config,
    load_original_vae_state_dict,
    original_vae_state_dict,
    save_original_vae_checkpoint,
)
from infinitystar.models.vae.model import VideoVAE

TINY = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)
WHOLE = 10_000  # a chunk size larger than any test video: one chunk, no cache


def _randomize(model: VideoVAE, seed: int = 0) -> VideoVAE:
    """Random weights with non-trivial norms and scales (default init leaves gammas at 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5))
        model.latent_scales.copy_(torch.tensor([1.3, 0.9, 1.1, 1.0]))
    return model.eval()


@pytest.fixture(scope="module")
def vae() -> VideoVAE:
    return _randomize(VideoVAE(TINY))


def _video(T: int, H: int = 32, W: int = 32, B: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, T, H, W, generator=g) * 2 - 1


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to fp32 rounding (conv kernels may sum in another order for another length)."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6 * scale)


def _latent(t: int, h: int = 2, w: int = 2, B: int = 1, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 64, t, h, w, generator=g)


# ---- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [1, 5, 9, 17])
@pytest.mark.parametrize("H,W,B", [(32, 32, 1), (16, 48, 2)])
def test_shapes(vae, T, H, W, B):
    with torch.inference_mode():
        video = _video(T, H, W, B)
        enc = vae.encoder_output(video)
        z = vae.encode(video, sample=False)
        out = vae.decode(z)
    t = 1 + (T - 1) // 4
    assert enc.shape == (B, 32, t, H // 8, W // 8)
    assert z.shape == (B, 64, t, H // 16, W // 16)
    assert out.shape == (B, 3, T, H, W)
    assert torch.isfinite(out).all()


def test_image_input_is_one_frame_video(vae):
    image = _video(1)[:, :, 0]  # [B,3,H,W]
    with torch.inference_mode():
        a = vae.encode(image, sample=False)
        b = vae.encode(image[:, :, None], sample=False)
    assert torch.equal(a, b)


def test_other_compression_layout():
    """3 down blocks, 8x space and 2x time: nothing is tied to the released layout."""
    cfg = VAEConfig(
        block_out_channels=(4, 8, 8, 8), layers_per_block=1, spatial_compression=(2, 2), temporal_compression=(2,)
    )
    vae = _randomize(VideoVAE(cfg))
    assert (vae.spatial_factor, vae.temporal_factor) == (8, 2)
    with torch.inference_mode():
        z = vae.encode(_video(7, 16, 24), sample=False)
        out = vae.decode(z, chunk_latents=1)
        whole = vae.decode(z, chunk_latents=WHOLE)
    assert z.shape == (1, 64, 4, 2, 3)
    assert out.shape == (1, 3, 7, 16, 24)
    _assert_same(out, whole)


# ---- causality and chunking ---------------------------------------------------------------


def test_encoder_is_causal(vae):
    video = _video(17)
    with torch.inference_mode():
        full = vae.encoder_output(video, chunk_frames=WHOLE)
        for T in (1, 5, 9):
            prefix = vae.encoder_output(video[:, :, :T], chunk_frames=WHOLE)
            _assert_same(prefix, full[:, :, : 1 + (T - 1) // 4])
        # changing the future does not change the past
        changed = video.clone()
        changed[:, :, 9:] = 0
        other = vae.encoder_output(changed, chunk_frames=WHOLE)
    _assert_same(other[:, :, :3], full[:, :, :3])
    assert not torch.allclose(other[:, :, 3:], full[:, :, 3:])


def test_decoder_is_causal(vae):
    z = _latent(5)
    with torch.inference_mode():
        full = vae.decode(z, chunk_latents=WHOLE)
        for t in (1, 2, 3):
            prefix = vae.decode(z[:, :, :t], chunk_latents=WHOLE)
            assert prefix.shape[2] == 1 + 4 * (t - 1)
            _assert_same(prefix, full[:, :, : prefix.shape[2]])


@pytest.mark.parametrize("T", [5, 9, 13, 21])
@pytest.mark.parametrize("chunk", [4, 8, 12])
def test_chunked_encode_equals_whole(vae, T, chunk):
    video = _video(T, 16, 32)
    with torch.inference_mode():
        whole = vae.encoder_output(video, chunk_frames=WHOLE)
        chunked = vae.encoder_output(video, chunk_frames=chunk)
    _assert_same(chunked, whole)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_decode_equals_whole(vae, t, chunk):
    z = _latent(t, 1, 2)
    with torch.inference_mode():
        whole = vae.decode(z, chunk_latents=WHOLE)
        chunked = vae.decode(z, chunk_latents=chunk)
    assert whole.shape == (1, 3, 1 + 4 * (t - 1), 16, 32)
    _assert_same(chunked, whole)


def test_chunking_is_exact_in_float64(vae):
    """In float64 the rounding noise vanishes: chunked and whole agree to ~1e-14, so any
    fp32 difference is summation order, not a logic error."""
    vae64 = VideoVAE(TINY).double().eval()
    vae64.load_state_dict(vae.state_dict())
    video = _video(13, 16, 16)  # float32 in: moved to the module's dtype
    z = _latent(4, 1, 1)
    with torch.inference_mode():
        enc = [vae64.encoder_output(video, chunk_frames=c) for c in (4, 8, WHOLE)]
        dec = [vae64.decode(z, chunk_latents=c) for c in (1, 2, 3, WHOLE)]
    assert enc[-1].dtype == dec[-1].dtype == torch.float64  # computation follows the module's dtype
    for e in enc[:-1]:
        torch.testing.assert_close(e, enc[-1], rtol=0, atol=1e-12)
    for d in dec[:-1]:
        torch.testing.assert_close(d, dec[-1], rtol=0, atol=1e-12)


def test_time_sliced_conv_equals_plain(vae, monkeypatch):
    """Very large conv inputs are convolved in overlapping time slices (like the original's
    SafeConv3d); force that path with a tiny limit."""
    import infinitystar.models.vae.layers as vae_module

    video = _video(9, 16, 16)
    with torch.inference_mode():
        ref = vae.encoder_output(video, chunk_frames=WHOLE)
        ref_dec = vae.decode(_latent(3, 1, 1), chunk_latents=WHOLE)
        monkeypatch.setattr(vae_module, "_MAX_CONV_NUMEL", 4096)
        out = vae.encoder_output(video, chunk_frames=WHOLE)
        out_dec = vae.decode(_latent(3, 1, 1), chunk_latents=WHOLE)
    _assert_same(out, ref)
    _assert_same(out_dec, ref_dec)


def test_default_chunking_equals_whole(vae):
    video = _video(21, 16, 16)
    with torch.inference_mode():
        z = vae.encode(video, sample=False)  # default: 8-frame chunks
        z_whole = vae.encode(video, sample=False, chunk_frames=WHOLE)
        out = vae.decode(z)  # default: 2-latent chunks
        out_whole = vae.decode(z, chunk_latents=WHOLE)
    _assert_same(z, z_whole)
    _assert_same(out, out_whole)


def test_autograd_path_matches_inference(vae):
    """With grad enabled no in-place op is used (and PyTorch picks the conv kernels, not the
    oneDNN fast path): the numbers agree up to fp32 summation order and grads flow."""
    video = _video(5, 16, 16).requires_grad_(True)
    with torch.inference_mode():
        ref_z = vae.encode(video.detach(), sample=False)
        ref_out = vae.decode(ref_z, chunk_latents=1)
    z = vae.encode(video, sample=False, chunk_frames=4)
    out = vae.decode(z, chunk_latents=1)
    for actual, expected in ((z, ref_z), (out, ref_out)):
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)
    out.square().mean().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0
    assert vae.encoder.conv_in.weight.grad is not None
    vae.zero_grad(set_to_none=True)


# ---- posterior sampling -------------------------------------------------------------------


def test_sampling_is_reproducible_and_mean_path(vae):
    video = _video(5)
    with torch.inference_mode():
        a = vae.encode(video, generator=torch.Generator().manual_seed(7))
        b = vae.encode(video, generator=torch.Generator().manual_seed(7))
        c = vae.encode(video, generator=torch.Generator().manual_seed(8))
        mode = vae.encode(video, sample=False)
        mean, std = vae.encode_moments(video)
        eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
        manual = vae.features_from_moments(mean, std, eps)
        via_mean = vae.features_from_moments(mean, std, None)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(a, manual)
    assert torch.equal(mode, via_mean)
    assert not torch.allclose(mode, a)
    assert (std > 0).all()


def test_decode_inverts_latent_projection(vae):
    """decode undoes encode's projection and scale: decoder_input(features) == pixel-shuffled mean."""
    with torch.inference_mode():
        mean, _ = vae.encode_moments(_video(1))
        feats = vae.features_from_moments(mean, mean, None)
        zq = vae.decoder_input(feats)
        expected = torch.nn.functional.pixel_shuffle(
            torch.nn.functional.linear(
                torch.nn.functional.linear(mean[:, :, 0].permute(0, 2, 3, 1), vae.proj_down.weight, vae.proj_down.bias),
                vae.proj_up.weight,
                vae.proj_up.bias,
            ).permute(0, 3, 1, 2),
            2,
        )
    torch.testing.assert_close(zq[:, :, 0], expected, rtol=1e-5, atol=1e-5)


# ---- input errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.zeros(1, 4, 5, 32, 32), r"\[B, 3, T, H, W\]"),
        (lambda: torch.zeros(3, 32, 32), r"\[B, 3, T, H, W\]"),
        (lambda: torch.zeros(1, 3, 5, 32, 32, 1), r"got shape"),
        (lambda: torch.zeros(1, 3, 6, 32, 32), r"6 frames; accepted frame counts are 1 \+ 4k"),
        (lambda: torch.zeros(1, 3, 5, 40, 32), r"40x32.*multiples of 16"),
        (lambda: torch.zeros(1, 3, 5, 32, 8), r"multiples of 16"),
        (lambda: torch.zeros(1, 3, 5, 32, 32, dtype=torch.uint8), r"x/127.5 - 1"),
        (lambda: torch.full((1, 3, 5, 32, 32), float("nan")), r"NaN or infinite"),
        (lambda: torch.zeros(1, 3, 1, 32, 32).index_fill_(4, torch.tensor([3]), float("inf")), "NaN or infinite"),
        (lambda: [[0.0]], r"got list"),
    ],
)
def test_bad_video_raises(vae, make, match):
    with pytest.raises(ValueError, match=match):
        vae.encode(make())


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: torch.zeros(1, 16, 2, 2, 2), r"\[B, 64, t, h, w\]"),
        (lambda: torch.zeros(1, 64, 2, 2), r"\[B, 64, t, h, w\].*latent\[:, :, None\]"),
        (lambda: torch.zeros(1, 64, 2, 2, 2, dtype=torch.int64), r"dtype"),
        (lambda: torch.zeros(1, 64, 0, 2, 2), r"shape"),
        (lambda: torch.full((1, 64, 2, 2, 2), float("-inf")), r"NaN or infinite"),
    ],
)
def test_bad_latent_raises(vae, make, match):
    with pytest.raises(ValueError, match=match):
        vae.decode(make())


@pytest.mark.parametrize("chunk", [0, -4, 3, 6, 2.0, True])
def test_bad_encode_chunk_raises(vae, chunk):
    with pytest.raises(ValueError, match="chunk_frames must be a positive multiple of 4"):
        vae.encode(_video(5, 16, 16), chunk_frames=chunk)


@pytest.mark.parametrize("chunk", [0, -1, 1.5])
def test_bad_decode_chunk_raises(vae, chunk):
    with pytest.raises(ValueError, match="chunk_latents must be a positive multiple of 1"):
        vae.decode(_latent(2, 1, 1), chunk_latents=chunk)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(block_out_channels=(8, 16, 16, 16, 32)), r"down block 3 has no resampler.*16 -> 32"),
        (dict(spatial_compression=(2, 3, 2)), r"factor-2"),
        (dict(temporal_compression=(2, 2, 2, 2)), r"temporal compression.*spatial"),
        (dict(spatial_compression=(2, 2, 2, 2, 2)), r"5 spatial compressions but only 4 down blocks"),
        (dict(block_out_channels=(8, 6, 16, 16, 16)), r"multiple of 4"),
        (dict(block_out_channels=(8,)), r"at least 2 entries"),
    ],
)
def test_invalid_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VideoVAE(VAEConfig(**kwargs))


# ---- checkpoints ---------------------------------------------------------------------------


def _assert_same_weights(a: VideoVAE, b: VideoVAE) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_original_key_names(vae):
    state = original_vae_state_dict(vae)
    for key in [
        "scale_learnable_parameters",
        "encoder.conv_in.conv.weight",
        "encoder.down_blocks.0.resnets.0.norm1.gamma",
        "encoder.down_blocks.0.resnets.0.conv2.conv.bias",
        "encoder.down_blocks.0.downsamplers.0.conv.norm.gamma",
        "encoder.down_blocks.0.downsamplers.0.conv.conv.conv.weight",
        "encoder.mid_block.resnets.0.conv1.conv.weight",
        "encoder.norm_out.gamma",
        "encoder.conv_out.conv.weight",
        "decoder.mid_block.resnets.0.norm1.norm_layer.gamma",
        "decoder.mid_block.resnets.0.norm2.conv_y.conv.weight",
        "decoder.up_blocks.3.resnets.1.norm1.conv_b.conv.bias",
        "decoder.up_blocks.1.upsamplers.0.conv.conv.conv.weight",
        "decoder.norm_out.conv_y.conv.weight",
        "decoder.conv_out.conv.bias",
        "proj_down.weight",
        "proj_up_two.bias",
        "quantizer.lfq_detail.mask",
        "quantize.lfq_semantic.mask",
    ]:
        assert key in state, key
    assert "decoder.up_blocks.0.upsamplers.0.conv.norm.gamma" not in state  # no resampler there
    assert state["encoder.down_blocks.0.downsamplers.0.conv.conv.conv.weight"].shape == (2, 4, 3, 3, 3)
    assert state["decoder.up_blocks.3.upsamplers.0.conv.conv.conv.weight"].shape == (32, 8, 3, 3, 3)
    assert state["quantizer.lfq_semantic.mask"].tolist() == [2**i for i in range(15, -1, -1)]
    assert state["quantize.lfq_detail.mask"].dtype == torch.int64
    assert state["quantize.lfq_detail.mask"].shape == (64,)


def test_pth_round_trip(vae, tmp_path):
    path = tmp_path / "infinitystar_videovae.pth"
    save_original_vae_checkpoint(vae, path)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"vae"}
    loaded = VideoVAE.from_original_checkpoint(path)  # config inferred from the shapes
    assert loaded.cfg == TINY
    _assert_same_weights(vae, loaded)
    loaded2 = VideoVAE.from_original_checkpoint(path, cfg=TINY)
    _assert_same_weights(vae, loaded2)
    assert not loaded.training
    assert all(p.device.type == "cpu" and p.requires_grad for p in loaded.parameters())


def test_safetensors_round_trip(vae, tmp_path):
    path = tmp_path / "vae.safetensors"
    save_safetensors(original_vae_state_dict(vae), path)
    _assert_same_weights(vae, VideoVAE.from_original_checkpoint(path, cfg=TINY))


def test_vae_folders_and_older_tokenizer_runs_load(vae, tmp_path):
    """One VAE folder format (``model.safetensors`` + ``config.json``) for model folders and tokenizer runs; a
    path may name the file, the VAE folder or a folder holding ``vae/``; runs written before VAE folders existed
    (``vae.safetensors`` + ``vae_config.json``) keep loading."""
    import json

    from infinitystar.models.vae.checkpoint import save_vae_folder, vae_config_of, vae_weights_file

    weights = save_vae_folder(vae, tmp_path / "run" / "vae", dtype=torch.float16)
    assert weights == tmp_path / "run" / "vae" / "model.safetensors"
    for path in (weights, tmp_path / "run" / "vae", tmp_path / "run"):
        assert vae_weights_file(path) == weights and vae_config_of(path) == TINY
        loaded = VideoVAE.from_original_checkpoint(path)
        assert loaded.cfg == TINY
        torch.testing.assert_close(loaded.decoder.conv_out.weight, vae.decoder.conv_out.weight.half().float())

    legacy = tmp_path / "old_run"
    legacy.mkdir()
    save_safetensors(original_vae_state_dict(vae), legacy / "vae.safetensors")
    (legacy / "vae_config.json").write_text(json.dumps(TINY.to_dict()))
    assert vae_weights_file(legacy) == legacy / "vae.safetensors" and vae_config_of(legacy) == TINY
    _assert_same_weights(vae, VideoVAE.from_original_checkpoint(legacy))
    with pytest.raises(CheckpointError, match="no VAE weights in .*expected model.safetensors"):
        vae_weights_file(tmp_path)


def test_released_architecture_parameter_count():
    """The released VAE has 184,659,383 parameters (encoder 54.72 M, decoder 129.92 M)."""
    with torch.device("meta"):
        vae = VideoVAE()
    assert sum(p.numel() for p in vae.parameters()) == 184_659_383
    assert sum(p.numel() for p in vae.encoder.parameters()) == 54_722_288
    assert len(original_vae_state_dict(vae)) == 301


def test_infer_config_of_default_layout():
    cfg = VAEConfig(block_out_channels=(8, 16, 32, 32, 32), layers_per_block=2)
    state = original_vae_state_dict(VideoVAE(cfg))
    assert infer_vae_config(state) == cfg


def test_truncated_file_raises(vae, tmp_path):
    path = tmp_path / "vae.pth"
    save_original_vae_checkpoint(vae, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        VideoVAE.from_original_checkpoint(path, cfg=TINY)


def test_missing_file_raises(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        VideoVAE.from_original_checkpoint(tmp_path / "nope.pth", cfg=TINY)


def test_missing_vae_entry_raises(vae, tmp_path):
    path = tmp_path / "vae.pth"
    torch.save({"ema": original_vae_state_dict(vae), "step": 3}, path)
    with pytest.raises(CheckpointError, match=r"'vae'.*\['ema', 'step'\]"):
        VideoVAE.from_original_checkpoint(path, cfg=TINY)


def _load_modified(vae, edit) -> None:
    state = original_vae_state_dict(vae)
    edit(state)
    load_original_vae_state_dict(VideoVAE(TINY), state)


def test_missing_key_raises(vae):
    key = "decoder.up_blocks.2.resnets.0.norm1.conv_b.conv.weight"
    with pytest.raises(CheckpointError, match=rf"missing keys \(1\): {key}"):
        _load_modified(vae, lambda s: s.pop(key))


def test_masks_and_the_unused_branch_are_not_required(vae, caplog):
    """The quantizers' mask buffers and the unused ``proj_*_two`` branch may be absent (the original loads with
    strict=False): the model loads, the unused branch is zeros, and one INFO line says so."""
    state = original_vae_state_dict(vae)
    unused = [k for k in state if k.endswith(".mask") or "_two." in k]
    for k in unused:
        del state[k]
    target = VideoVAE(TINY)
    with caplog.at_level("INFO", logger="infinitystar.models.vae.checkpoint"):
        load_original_vae_state_dict(target, state)
    assert torch.equal(target.proj_down.weight, vae.proj_down.weight)
    assert not target.proj_up_two.weight.any() and not target.proj_down_two.bias.any()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "absent (zeros, unused): proj_down_two.bias" in lines[0]


def test_unexpected_key_warns_and_loads(vae):
    from infinitystar.checkpoints import UnusedWeightsWarning

    with pytest.warns(UnusedWeightsWarning, match=r"skipped 1 entry the model does not know: encoder\.extra\.weight"):
        _load_modified(vae, lambda s: s.__setitem__("encoder.extra.weight", torch.zeros(2)))


def test_wrong_shape_raises(vae):
    key = "encoder.conv_out.conv.weight"
    with pytest.raises(CheckpointError, match=rf"wrong shapes \(1\): {key} \(16, 8, 3, 3, 3\)"):
        _load_modified(vae, lambda s: s.__setitem__(key, torch.zeros(16, 8, 3, 3, 3)))


def test_wrong_mask_shape_raises(vae):
    with pytest.raises(CheckpointError, match=r"quantizer\.lfq_semantic\.mask \(8,\) \(model expects \(16,\)\)"):
        _load_modified(vae, lambda s: s.__setitem__("quantizer.lfq_semantic.mask", torch.ones(8, dtype=torch.int64)))


def test_failed_load_leaves_model_untouched(vae):
    target = VideoVAE(TINY)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = original_vae_state_dict(vae)
    state.pop("proj_up.bias")
    with pytest.raises(CheckpointError):
        load_original_vae_state_dict(target, state)
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k])


# ---- media ---------------------------------------------------------------------------------


def test_frames_to_uint8_default():
    x = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0])
    decoded = x.view(1, 1, 8, 1, 1).expand(1, 3, 8, 1, 1).clone()
    decoded[:, 1] = 0.0
    out = frames_to_uint8(decoded)
    assert out.dtype == torch.uint8 and out.shape == (1, 8, 1, 1, 3)
    assert out[0, :, 0, 0, 0].tolist() == [0, 0, 0, 128, 191, 255, 255, 255]
    assert out[0, :, 0, 0, 1].tolist() == [128] * 8  # 127.5 rounds half to even
    assert out[0, :, 0, 0, 2].tolist() == out[0, :, 0, 0, 0].tolist()  # RGB kept


def test_frames_to_uint8_original_quirks():
    g = torch.Generator().manual_seed(0)
    decoded = torch.rand(2, 3, 3, 4, 5, generator=g) * 2.4 - 1.2
    out = frames_to_uint8(decoded, original_quirks=True)
    assert out.shape == (2, 3, 4, 5, 3) and out.dtype == torch.uint8
    trunc = (((decoded + 1) / 2).clamp(0, 1) * 255).floor().to(torch.uint8)  # [B,3,T,H,W]
    expected = trunc.permute(0, 2, 3, 4, 1).flip(-1)  # BGR
    assert torch.equal(out[:, 1:], expected[:, 1:])
    assert torch.equal(out[:, 0], expected[:, 1])  # frame 0 replaced by frame 1
    # truncation: 0.999 -> 254.87 -> 254 (rounding would give 255)
    one = frames_to_uint8(torch.full((1, 3, 1, 1, 1), 0.999), original_quirks=True)
    assert one.flatten().tolist() == [254, 254, 254]
    assert frames_to_uint8(torch.full((1, 3, 1, 1, 1), 0.999)).flatten().tolist() == [255, 255, 255]
    # a single frame is left alone; channel order is reversed
    rgb = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1, 1)
    assert frames_to_uint8(rgb, original_quirks=True).flatten().tolist() == [255, 127, 0]
    assert frames_to_uint8(rgb).flatten().tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(1, 3, 4, 4), r"\[B, 3, T, H, W\]"),
        (torch.zeros(1, 4, 1, 4, 4), r"\[B, 3, T, H, W\]"),
        (torch.zeros(1, 3, 1, 4, 4, dtype=torch.uint8), "floating point"),
        (torch.full((1, 3, 1, 4, 4), float("nan")), "NaN"),
    ],
)
def test_frames_to_uint8_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        frames_to_uint8(bad)


@pytest.mark.parametrize(
    "total, size, expected",
    [
        (1, 8, [(0, 1)]),
        (9, 8, [(0, 9)]),
        (17, 8, [(0, 9), (9, 17)]),  # as the original: 9, then 8
        (13, 8, [(0, 5), (5, 13)]),
        (17, 16, [(0, 17)]),
        (2, 2, [(0, 2)]),  # the 2-latent decode that crashes in the original
        (3, 2, [(0, 3)]),
        (4, 2, [(0, 2), (2, 4)]),
        (4, 1, [(0, 2), (2, 3), (3, 4)]),
    ],
)
def test_chunk_plan(total, size, expected):
    from infinitystar.models.vae.model import _chunk_bounds

    assert _chunk_bounds(total, size) == expected


def test_bf16_decode_runs_on_any_cpu_and_stays_close_to_fp32(vae):
    """oneDNN's bf16 convolutions need AVX-512 or AVX-NE-CONVERT; on other CPUs the decode takes PyTorch's own
    bf16 path instead of failing (it did: ``mkldnn_convolution: bf16 path needs the cpu support ...``)."""
    import copy

    latent = _latent(3)
    with torch.no_grad():
        ref = vae.decode(latent)
        low = copy.deepcopy(vae).to(torch.bfloat16).decode(latent)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    err = (low.float() - ref).abs().max().item()
    assert err < 0.05 * max(1.0, ref.abs().max().item())
