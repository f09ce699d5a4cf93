"""Tolerant but honest loading, on the parity dump's weights damaged the ways a real file might differ.

The original loads both files with ``strict=False``: the real VAE dict may carry entries nobody here has seen or
lack non-essential ones. Every weight inference needs must be present with its shape (an error naming the keys);
entries known to be unused are skipped and listed in one INFO line; anything else unknown gets one warning that lists
it, and loading goes on. A VAE that loads still reproduces the original's decode."""

from __future__ import annotations

import logging
import re
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from infinitystar.checkpoints import CheckpointError, UnusedWeightsWarning
from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.models.transformer.checkpoint import load_original_transformer
from infinitystar.models.vae.model import VideoVAE
from tests.helpers.parity import assert_close_rel, dump_params, get_dump

pytestmark = pytest.mark.parity
VAE_LOG = "infinitystar.models.vae.checkpoint"


@pytest.fixture(params=dump_params())
def dump(request):
    return get_dump(request.param)


def _vae_pth(dump, tmp_path, edit=None, extras=None):
    state = load_file(str(dump.path / "vae.safetensors"))
    if edit is not None:
        edit(state)
    path = tmp_path / "infinitystar_videovae.pth"
    torch.save({"vae": state, **(extras or {})}, path)
    return path


def _load_vae(path, caplog):
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, logger=VAE_LOG):
        warnings.simplefilter("always")
        vae = VideoVAE.from_original_checkpoint(path)
    infos = [r.getMessage() for r in caplog.records if r.name == VAE_LOG]
    return vae, infos, [str(w.message) for w in caught if issubclass(w.category, UnusedWeightsWarning)]


def _decodes_like_the_original(dump, vae) -> None:
    assert (
        vae.cfg.block_out_channels == VAEConfig.from_original_namespace(dump.config["vae_namespace"]).block_out_channels
    )
    with torch.inference_mode():
        recon = vae.decode(dump["vae.raw_features"]).clamp(-1, 1)
    assert_close_rel(recon, dump["vae.recon_unquantized"], "vae.recon_unquantized")


def test_training_extras_beside_vae_are_named_in_one_info_line(dump, tmp_path, caplog):
    extras = {"ema": {"w": torch.ones(2)}, "discriminator": {"d": torch.ones(2)}, "optimizer": {"state": {}}, "step": 9}
    vae, infos, warned = _load_vae(_vae_pth(dump, tmp_path, extras=extras), caplog)
    assert not warned and len(infos) == 1
    assert "training entries beside 'vae': discriminator, ema, optimizer, step" in infos[0]
    assert "quantize.lfq_detail.mask" in infos[0]  # the alias buffers: known, unused
    _decodes_like_the_original(dump, vae)


def test_absent_non_essential_entries_load(dump, tmp_path, caplog):
    def drop(state):
        for k in [k for k in state if k.startswith("quantize.") or "_two." in k]:
            del state[k]

    vae, infos, warned = _load_vae(_vae_pth(dump, tmp_path, drop), caplog)
    assert not warned and len(infos) == 1 and "absent (zeros, unused): proj_down_two.bias" in infos[0]
    _decodes_like_the_original(dump, vae)


def test_unknown_entries_warn_once_and_loading_goes_on(dump, tmp_path, caplog):
    def add(state):
        state["encoder.norm_out.num_batches_tracked"] = torch.tensor(3)
        state["lpips.net.weight"] = torch.ones(4)

    vae, infos, warned = _load_vae(_vae_pth(dump, tmp_path, add), caplog)
    assert len(warned) == 1
    assert (
        "skipped 2 entries the model does not know: encoder.norm_out.num_batches_tracked, lpips.net.weight" in warned[0]
    )
    _decodes_like_the_original(dump, vae)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.pop("decoder.mid_block.resnets.0.conv1.conv.weight"),
            r"missing keys \(1\): decoder\.mid_block\.resnets\.0\.conv1\.conv\.weight",
        ),
        (lambda s: s.pop("scale_learnable_parameters"), r"missing keys \(1\): scale_learnable_parameters"),
        (lambda s: s.__setitem__("proj_up.weight", torch.zeros(64, 32)), r"proj_up\.weight \(64, 32\) \(model expects"),
        (
            lambda s: s.__setitem__("quantize.lfq_semantic.mask", torch.ones(8, dtype=torch.int64)),
            r"quantize\.lfq_semantic\.mask \(8,\) \(model expects \(16,\)\)",
        ),
    ],
)
def test_missing_or_misshaped_needed_weights_fail_with_their_names(dump, tmp_path, edit, message):
    with pytest.raises(CheckpointError, match=message):
        VideoVAE.from_original_checkpoint(_vae_pth(dump, tmp_path, edit))


def _transformer_cfg(dump) -> TransformerConfig:
    shapes = {k: s for k, s, _ in dump.summary["transformer_state_dict"]}
    mlp = next(s[0] for k, s in shapes.items() if k.endswith("mlp.gate_proj.weight"))
    return TransformerConfig.from_original_kwargs(dump.config["transformer_kwargs"], mlp_hidden=mlp)


def test_transformer_same_rule(dump, tmp_path):
    cfg = _transformer_cfg(dump)
    state = load_file(str(dump.path / "transformer.safetensors"))
    reference = load_original_transformer(dump.path / "transformer.safetensors", cfg).state_dict()
    extra = dict(state, **{"block_chunks.0.module.0.attn.rotary.inv_freq": torch.ones(4), "ema_step": torch.ones(())})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.warns(UnusedWeightsWarning, match=r"skipped 2 entries .*attn\.rotary\.inv_freq, ema_step"):
        loaded = load_original_transformer(tmp_path / "extra.safetensors", cfg).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    key = next(k for k in state if k.endswith("mlp.down_proj.weight"))
    missing = {k: v for k, v in state.items() if k != key}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): " + re.escape(key)):
        load_original_transformer(tmp_path / "missing.safetensors", cfg)
    state["head.bias"] = torch.zeros(7)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(CheckpointError, match=r"head\.bias \(7,\) \(model expects"):
        load_original_transformer(tmp_path / "shape.safetensors", cfg)
