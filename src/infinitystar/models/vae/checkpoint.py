"""The VAE's weight formats: the original checkpoint layout (an explicit key adapter, strict coverage), the
released .pth, and the VAE folder the project writes (model folders and tokenizer runs).

The model uses clean parameter names; everything that knows the original's names
(encoder.down_blocks.0.downsamplers.0.conv.conv.conv.weight...) is here, outside the model."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from infinitystar.checkpoints import (
    CheckpointError,
    check_coverage,
    read_safetensors,
    save_safetensors,
    shapes_of,
    torch_load_weights,
)
from infinitystar.files import atomic_write, read_json, write_json
from infinitystar.hub import RELEASED_VAE
from infinitystar.models.config import VAEConfig

if TYPE_CHECKING:  # the adapter reads a model's names and config; it never builds one
    from infinitystar.models.vae.model import VideoVAE

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Original checkpoint layout (explicit key adapter)
# --------------------------------------------------------------------------------------------

#: Leaf renames, ours -> original; the first matching rule applies.
_LEAF_RULES = [
    (re.compile(r"^latent_scales$"), "scale_learnable_parameters"),
    (re.compile(r"\.rms\.gamma$"), ".norm_layer.gamma"),
    (re.compile(r"\.to_scale\.(weight|bias)$"), r".conv_y.conv.\1"),
    (re.compile(r"\.to_shift\.(weight|bias)$"), r".conv_b.conv.\1"),
    # CausalConv3d wraps its Conv3d as ".conv" in the original
    (re.compile(r"\.(conv_in|conv_out|conv1|conv2|conv)\.(weight|bias)$"), r".\1.conv.\2"),
]
#: Container renames, ours -> original, applied in order.
_PREFIX_RULES = [
    (re.compile(r"^encoder\.down\.(\d+)\.downsample\."), r"encoder.down_blocks.\1.downsamplers.0.conv."),
    (re.compile(r"^decoder\.up\.(\d+)\.upsample\."), r"decoder.up_blocks.\1.upsamplers.0.conv."),
    (re.compile(r"^encoder\.down\.(\d+)\."), r"encoder.down_blocks.\1."),
    (re.compile(r"^decoder\.up\.(\d+)\."), r"decoder.up_blocks.\1."),
    (re.compile(r"^(encoder|decoder)\.mid\.(\d+)\."), r"\1.mid_block.resnets.\2."),
]


def _to_original_key(key: str) -> str:
    for pattern, repl in _LEAF_RULES:
        new, n = pattern.subn(repl, key)
        if n:
            key = new
            break
    for pattern, repl in _PREFIX_RULES:
        key = pattern.sub(repl, key)
    return key


def _key_map(model: VideoVAE) -> dict[str, str]:
    """Our parameter name -> the original's, for every entry of ``model.state_dict()``."""
    names = {k: _to_original_key(k) for k in model.state_dict()}
    if len(set(names.values())) != len(names):
        raise RuntimeError("VAE key adapter is not one-to-one")  # a bug, not a user error
    return names


def _mask_shapes(cfg: VAEConfig) -> dict[str, tuple[int, ...]]:
    """The BSQ quantizers' ``mask`` buffers, registered twice (``quantizer`` / ``quantize``)."""
    dims = {"semantic": cfg.semantic_bits, "detail": cfg.detail_bits}
    return {f"{owner}.lfq_{kind}.mask": (d,) for owner in ("quantizer", "quantize") for kind, d in dims.items()}


def _bsq_mask(d: int) -> Tensor:
    """The original's ``2 ** arange(d-1, ..., 0)`` in int64 (wraps to -2**63 for d = 64)."""
    return 2 ** torch.arange(d - 1, -1, -1, dtype=torch.int64)


#: the original's second ("256-res") projection branch: unused at inference, loaded when present with the model's
#: shapes, zeros otherwise (a checkpoint without it is complete)
_OPTIONAL = re.compile(r"^proj_(down|up)_two\.(weight|bias)$")


def load_original_vae_state_dict(
    model: VideoVAE, state: Mapping[str, Tensor], *, assign: bool = False, extras: Sequence[str] = ()
) -> None:
    """Copy weights stored under the original key names into ``model``: tolerant, but honest.

    Every weight inference needs must be present with its shape, otherwise :class:`CheckpointError` names the
    keys and the model is left untouched. Entries known to be unused at inference are skipped: the quantizers'
    ``mask`` buffers (registered twice in the original, under ``quantizer`` and its alias ``quantize``; when present
    their shapes must fit the config, since they tell the bit widths), and the unused ``proj_*_two`` branch (loaded
    when it fits, zeros when absent). They and ``extras`` (the training entries found next to ``"vae"`` in the file)
    are listed in one INFO line. Any other entry the model does not know gets one :class:`UnusedWeightsWarning`
    that lists them, and loading goes on. ``assign=True`` adopts the given tensors (for a model built on the meta
    device) instead of copying into the existing ones.
    """
    names = _key_map(model)
    ours_state = model.state_dict()
    found = shapes_of(state)
    optional = {orig: tuple(ours_state[ours].shape) for ours, orig in names.items() if _OPTIONAL.match(orig)}
    expected = {names[k]: tuple(v.shape) for k, v in ours_state.items() if names[k] not in optional}
    masks = _mask_shapes(model.cfg)
    expected.update({k: shape for k, shape in masks.items() if k in found})
    check_coverage(
        expected, {k: v for k, v in found.items() if k not in optional}, "VAE checkpoint", tolerate_unexpected=True
    )
    not_float = [orig for orig in names.values() if orig in expected and not state[orig].is_floating_point()]
    if not_float:
        raise CheckpointError(f"VAE checkpoint: expected floating-point weights, got integers for {not_float[:8]}")
    fitting = {k for k, shape in optional.items() if found.get(k) == shape and state[k].is_floating_point()}
    device = state[names["latent_scales"]].device
    weights = {}
    for ours, orig in names.items():  # cast to the model's dtype (a no-op for the fp32 release), also when assigning
        dtype = ours_state[ours].dtype
        if orig in expected or orig in fitting:
            weights[ours] = state[orig].to(dtype)
        else:  # an absent or misfit unused branch
            weights[ours] = torch.zeros(optional[orig], dtype=dtype, device=device)
    model.load_state_dict(weights, strict=True, assign=assign)
    skipped = sorted(k for k in found if k in masks or (k in optional and k not in fitting))
    absent = sorted(k for k in optional if k not in found)
    if skipped or absent or extras:
        log.info(
            "VAE checkpoint: skipped what inference does not use: %s%s%s",
            ", ".join(skipped) or "nothing",
            f"; training entries beside 'vae': {', '.join(extras)}" if extras else "",
            f"; absent (zeros, unused): {', '.join(absent)}" if absent else "",
        )


def original_vae_state_dict(model: VideoVAE) -> dict[str, Tensor]:
    """Our weights under the original key names, incl. the quantizers' mask buffers: the
    ``"vae"`` entry of the released checkpoint format."""
    names = _key_map(model)
    out = {names[k]: v.detach() for k, v in model.state_dict().items()}
    for key, (d,) in _mask_shapes(model.cfg).items():
        out[key] = _bsq_mask(d)
    return out


def save_original_vae_checkpoint(model: VideoVAE, path: str | os.PathLike) -> None:
    """Write ``{"vae": original_vae_state_dict(model)}`` with ``torch.save`` (atomically)."""
    state = {k: v.to("cpu").contiguous() for k, v in original_vae_state_dict(model).items()}
    atomic_write(path, lambda tmp: torch.save({"vae": state}, tmp))


#: a VAE folder (inside a model folder, or a tokenizer run's export): weights with the original key names + config
VAE_WEIGHTS = "model.safetensors"
VAE_CONFIG = "config.json"
#: the names tokenizer runs used before VAE folders (still read)
_LEGACY_RUN_FILES = ("vae.safetensors", "vae_config.json")


def save_vae_folder(
    model: VideoVAE, folder: str | os.PathLike, *, dtype: torch.dtype | None = None, metadata: dict | None = None
) -> Path:
    """Write a VAE folder: ``model.safetensors`` (original key names, floating-point weights stored in
    ``dtype`` when given) and ``config.json``, each atomically. Model folders and tokenizer runs both use it,
    so any VAE the project writes loads the same way. Returns the weights' path."""
    folder = Path(folder)
    state = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
        for k, v in original_vae_state_dict(model).items()
    }
    save_safetensors(state, folder / VAE_WEIGHTS, metadata=metadata)
    write_json(folder / VAE_CONFIG, model.cfg.to_dict())
    return folder / VAE_WEIGHTS


def vae_weights_file(path: str | os.PathLike) -> Path:
    """The VAE weights a path names: a ``.pth`` / ``.safetensors`` file, a VAE folder, or a folder holding one
    (a tokenizer run or a model folder: ``vae/``; a released model folder: its ``.pth``), including runs written
    before VAE folders existed."""
    path = Path(path)
    if path.is_dir():
        candidates = (path / VAE_WEIGHTS, path / "vae" / VAE_WEIGHTS, path / RELEASED_VAE, path / _LEGACY_RUN_FILES[0])
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"no VAE weights in {path}: expected {VAE_WEIGHTS} (a VAE folder), vae/{VAE_WEIGHTS} (a model folder or a "
            f"tokenizer run), {RELEASED_VAE} (the released model) or a .pth / .safetensors file"
        )
    if not path.is_file():
        raise CheckpointError(f"VAE checkpoint not found: {path} (give a .pth / .safetensors file or a VAE folder)")
    return path


def vae_config_of(path: str | os.PathLike) -> VAEConfig:
    """The VAEConfig of the weights :func:`vae_weights_file` finds: the ``config.json`` beside them (or a legacy
    run's ``vae_config.json``), else inferred from the weight shapes (the released ``.pth`` has no config)."""
    file = vae_weights_file(path)
    names = (VAE_CONFIG,) if file.name == VAE_WEIGHTS else (_LEGACY_RUN_FILES[1],)
    for name in names:
        if (file.parent / name).is_file():
            return VAEConfig.from_dict(read_json(file.parent / name, "VAE config", CheckpointError))
    return infer_vae_config(read_original_vae_state(file))


def load_vae_weights(model: VideoVAE, path: str | os.PathLike) -> Path:
    """Load the weights :func:`vae_weights_file` finds into ``model``, strictly. Returns the file read."""
    file = vae_weights_file(path)
    state, extras = read_original_vae_checkpoint(file)
    device = model.latent_scales.device
    load_original_vae_state_dict(model, {k: v.to(device) for k, v in state.items()}, extras=extras)
    return file


def read_original_vae_state(path: str | os.PathLike) -> dict[str, Tensor]:
    """The original-layout VAE state dict from a released ``.pth`` or a ``.safetensors`` file."""
    return read_original_vae_checkpoint(path)[0]


def read_original_vae_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], list[str]]:
    """``(state dict, training entries)`` of a released ``.pth`` (the state dict under ``"vae"``; the other top-level
    entries, such as a discriminator, optimizer or EMA dict, are training extras, named but not loaded) or of a
    ``.safetensors`` file (no extras). The ``.pth`` is memory-mapped: extras are never read into memory."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path), []
    obj = torch_load_weights(path, mmap=True)
    if not isinstance(obj, Mapping) or "vae" not in obj:
        found = sorted(map(str, obj))[:20] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected the released VAE format, a dict with the state dict under 'vae'; found {found}"
        )
    state = obj["vae"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: the 'vae' entry is a {type(state).__name__}, not a state dict")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: the 'vae' state dict holds entries that are not tensors: {not_tensors[:8]}")
    return dict(state), sorted(str(k) for k in obj if k != "vae")


def _count(state: Mapping[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_vae_config(state: Mapping[str, Tensor]) -> VAEConfig:
    """Rebuild the VAEConfig from an original-layout state dict's shapes (widths, depths,
    which blocks resample space and time). Raises CheckpointError if keys it needs are missing."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"VAE checkpoint: cannot infer the architecture, missing key {key}")
        return tuple(state[key].shape)

    n_down = _count(state, r"^encoder\.down_blocks\.(\d+)\.")
    if n_down == 0:
        raise CheckpointError("VAE checkpoint: no encoder.down_blocks.* keys; is this the InfinityStar VAE?")
    ch = [shape("encoder.conv_in.conv.weight")[0]]
    n_spatial = 0
    for i in range(n_down):
        key = f"encoder.down_blocks.{i}.downsamplers.0.conv.conv.conv.weight"
        if key in state:
            n_spatial += 1
            ch.append(4 * shape(key)[0])
        else:
            ch.append(ch[-1])
    n_temporal = 0
    for j in range(n_down):
        key = f"decoder.up_blocks.{j}.upsamplers.0.conv.conv.conv.weight"
        if key in state:
            c_out = ch[n_down - 1 - j]  # up block j mirrors down block n-1-j
            n_temporal += shape(key)[0] == 8 * c_out
    return VAEConfig(
        in_channels=shape("encoder.conv_in.conv.weight")[1],
        out_channels=shape("decoder.conv_out.conv.weight")[0],
        latent_channels=shape("encoder.conv_out.conv.weight")[0] // 2,
        block_out_channels=tuple(ch),
        layers_per_block=_count(state, r"^encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        spatial_compression=(2,) * n_spatial,
        temporal_compression=(2,) * n_temporal,
        mid_layers=_count(state, r"^encoder\.mid_block\.resnets\.(\d+)\."),
        semantic_bits=_mask_width(state, "semantic", VAEConfig.semantic_bits),
        detail_bits=_mask_width(state, "detail", VAEConfig.detail_bits),
    )


def _mask_width(state: Mapping[str, Tensor], kind: str, default: int) -> int:
    """A quantizer's bit width from its ``mask`` buffer (either registration), the released width without one."""
    for owner in ("quantizer", "quantize"):
        if f"{owner}.lfq_{kind}.mask" in state:
            return int(state[f"{owner}.lfq_{kind}.mask"].shape[0])
    return default
