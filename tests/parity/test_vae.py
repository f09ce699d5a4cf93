"""Parity of the video VAE with tensors dumped by the original implementation.

Every dump is rebuilt from its own config.json and its weights are loaded from vae.safetensors
(original key names) through the loader users use. Each stage is fed dumped inputs, so a failure
points at one stage. Tolerances: parity/README.md section 7.
"""

from __future__ import annotations

import pytest
import torch

from infinitystar.media import frames_to_uint8
from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.checkpoint import infer_vae_config, read_original_vae_state
from infinitystar.models.vae.model import VideoVAE
from tests.helpers.parity import assert_close_rel, dump_params, get_dump

pytestmark = pytest.mark.parity


def _skip_absent(dump, *names: str) -> None:
    missing = [n for n in names if not dump.has(n)]
    if missing:
        pytest.skip(f"not in this dump: {', '.join(missing)}")


def _cfg(dump) -> VAEConfig:
    return VAEConfig.from_original_namespace(dump.config["vae_namespace"])


_MODELS: dict[str, VideoVAE] = {}


def _model(dump) -> VideoVAE:
    key = str(dump.path)
    if key not in _MODELS:
        _MODELS[key] = VideoVAE.from_original_checkpoint(dump.path / "vae.safetensors", cfg=_cfg(dump))
    return _MODELS[key]


def _assert_uint8_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """|delta| <= 1 everywhere and at most 0.1 % of entries differ (truncation boundaries)."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual.to(torch.int64) - expected.to(torch.int64)).abs()
    frac = (diff > 0).double().mean().item()
    assert diff.max().item() <= 1, f"{name}: max |delta| {diff.max().item()} > 1"
    assert frac <= 1e-3, f"{name}: {100 * frac:.3f}% of entries differ (> 0.1%)"


@pytest.fixture(params=dump_params())
def dump(request):
    return get_dump(request.param)


def test_config_inferred_from_weights(dump):
    """The weights alone determine the architecture, and it is the one the config describes."""
    state = read_original_vae_state(dump.path / "vae.safetensors")
    cfg = _cfg(dump)
    inferred = infer_vae_config(state)
    assert inferred.block_out_channels == cfg.block_out_channels
    assert inferred.layers_per_block == cfg.layers_per_block
    assert inferred.spatial_compression == cfg.spatial_compression
    assert inferred.temporal_compression == cfg.temporal_compression
    shapes = {k: tuple(v) for k, v, _ in dump.summary["vae_state_dict"]}
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes


def test_posterior_eps_from_seed(dump):
    eps = dump["vae.posterior_eps"]
    seed = dump.config["seeds"]["posterior_eps"]
    drawn = torch.randn(eps.shape, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(drawn, eps), "torch.randn with the posterior_eps seed does not reproduce the dump"


@pytest.mark.parametrize("chunk", ["default", "smallest"])
def test_encode(dump, chunk):
    """input.video -> encoder_out -> posterior mean / std -> raw features (dumped eps)."""
    _skip_absent(dump, "input.video")
    vae = _model(dump)
    chunk_frames = vae.temporal_factor if chunk == "smallest" else None
    with torch.inference_mode():
        h = vae.encoder_output(dump["input.video"], chunk_frames=chunk_frames)
        mean, std = vae.moments_from_encoder_output(h)
        if dump.has("vae.encoder_out"):
            assert_close_rel(h, dump["vae.encoder_out"], "vae.encoder_out")
        if dump.has("vae.posterior_mean"):
            assert_close_rel(mean, dump["vae.posterior_mean"], "vae.posterior_mean")
        if dump.has("vae.posterior_std"):
            assert_close_rel(std, dump["vae.posterior_std"], "vae.posterior_std")
        if dump.has("vae.posterior_eps") and dump.has("vae.raw_features"):
            raw = vae.features_from_moments(mean, std, dump["vae.posterior_eps"])
            assert_close_rel(raw, dump["vae.raw_features"], "vae.raw_features")


def test_encode_samples_like_original(dump):
    """The public encode() with a generator seeded as the original reproduces raw_features."""
    _skip_absent(dump, "input.video", "vae.raw_features")
    vae = _model(dump)
    gen = torch.Generator().manual_seed(dump.config["seeds"]["posterior_eps"])
    with torch.inference_mode():
        raw = vae.encode(dump["input.video"], generator=gen)
    assert_close_rel(raw, dump["vae.raw_features"], "vae.encode(sample=True)")


# (latent tensor, reference tensor, clamp to [-1, 1] as the original caller does)
_DECODES = [
    ("vae.raw_features", "vae.recon_unquantized", True),
    ("tfkv.summed_codes", "tfkv.decoded_float", False),
    ("tfkv.summed_codes", "vae.recon_quantized", True),
    ("ar.summed_codes", "ar.decoded_float", False),
    ("t2i.summed_codes", "t2i.decoded_float", False),
]


@pytest.mark.parametrize("chunk", ["default", "one_latent", "whole"])
@pytest.mark.parametrize("latent_name, ref_name, clamp", _DECODES, ids=[r for _, r, _ in _DECODES])
def test_decode(dump, latent_name, ref_name, clamp, chunk):
    _skip_absent(dump, latent_name, ref_name)
    vae = _model(dump)
    latent = dump[latent_name]
    chunk_latents = {"default": None, "one_latent": 1, "whole": latent.shape[2]}[chunk]
    with torch.inference_mode():
        out = vae.decode(latent, chunk_latents=chunk_latents)
    if clamp:
        out = out.clamp(-1, 1)
    assert_close_rel(out, dump[ref_name], ref_name)


@pytest.mark.parametrize("run", ["tfkv", "ar"])
def test_video_uint8(dump, run):
    """The original post-processing (truncation, BGR, frame 0 := frame 1) of our decode."""
    _skip_absent(dump, f"{run}.summed_codes", f"{run}.video_uint8")
    vae = _model(dump)
    with torch.inference_mode():
        frames = frames_to_uint8(vae.decode(dump[f"{run}.summed_codes"]), original_quirks=True)
    _assert_uint8_close(frames, dump[f"{run}.video_uint8"], f"{run}.video_uint8")
    if dump.has(f"{run}.decoded_float"):  # and exactly from the dumped float frames
        exact = frames_to_uint8(dump[f"{run}.decoded_float"], original_quirks=True)
        assert torch.equal(exact, dump[f"{run}.video_uint8"]), f"{run}.video_uint8 from dumped decoded_float"
