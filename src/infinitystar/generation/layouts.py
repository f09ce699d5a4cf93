"""Model folders on disk: the built-in model, our own layout and the released one, read and written.

Three layouts hold the same three components (transformer, VAE, text encoder) plus the generation settings:

- our layout (``model_index.json`` at the root; ``transformer/``, ``vae/``, ``text_encoder/``), which
  ``save_pretrained`` writes and the built-in default model inside the package uses;
- the released layout (FoundationVision/InfinityStar): ``infinitystar_8b_{480p,720p}_weights/`` shard folders,
  ``infinitystar_videovae.pth`` and ``text_encoder/flan-t5-xl-official/`` (or one of the weights folders itself);
- the built-in default model, our layout shipped as package data.

Each function returns or takes plain components, so the pipeline class stays a thin shell over them.
"""

from __future__ import annotations

import importlib.resources
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from infinitystar.checkpoints import CheckpointError
from infinitystar.files import read_json, write_json
from infinitystar.generation.plan import RELEASED_CONFIGS, PipelineConfig
from infinitystar.hub import (
    DEFAULT_RELEASED_RESOLUTION,
    MODEL_INDEX,
    OWN_COMPONENTS,
    PARTS,
    RELEASED_T5,
    RELEASED_VAE,
    RELEASED_WEIGHTS,
    HubOptions,
    own_components,
    resolve,
)
from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.transformer.quantize import check_saveable
from infinitystar.models.vae.model import VideoVAE
from infinitystar.text.encoders import TextEncoder
from infinitystar.text.loading import load_text_encoder

#: where the built-in default model lives inside the package (trained by the project); found through the
#: package's resources, so it follows the package wherever it is installed
BUILTIN_MODEL_DIR = Path(str(importlib.resources.files("infinitystar").joinpath("assets", "default")))
# the layouts' file names (MODEL_INDEX, RELEASED_*) live in infinitystar.hub (the trainer needs them too) and are
# imported here for the callers that have always found them in this module


class BuiltinModelMissing(FileNotFoundError):
    """Raised when no checkpoint is given and the package ships no built-in model."""


@dataclass
class Components:
    """What a model folder holds, loaded: the three networks and the generation settings."""

    transformer: InfinityTransformer
    vae: VideoVAE
    text_encoder: TextEncoder
    config: PipelineConfig


def describe_layouts() -> str:
    """The accepted folder layouts, for error messages."""
    return (
        f"a folder with {MODEL_INDEX} (our layout: transformer/, vae/, text_encoder/), or the released layout "
        f"({' or '.join(RELEASED_WEIGHTS.values())}/ + {RELEASED_VAE} + {RELEASED_T5}/)"
    )


def model_folder(
    path: str | Path | None, resolution: str | None = None, hub: HubOptions | None = None, parts=PARTS
) -> Path:
    """The folder ``path`` names (``None``: the built-in default model), checked to exist. A Hugging Face repo id
    (``ORG/NAME``) that is not a local path is fetched into the hub cache, only the ``parts`` a call needs at
    ``resolution`` (:mod:`infinitystar.hub`); a local path always wins."""
    if path is None:
        if not (BUILTIN_MODEL_DIR / MODEL_INDEX).is_file():
            raise BuiltinModelMissing(
                "this installation has no built-in default model (see the README). "
                f"Pass a checkpoint folder or a Hugging Face repo id instead: {describe_layouts()}"
            )
        return BUILTIN_MODEL_DIR
    try:
        return resolve(path, parts, resolution, hub)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"checkpoint folder not found: {path}; expected {describe_layouts()}, or a Hugging Face repo id ORG/NAME"
        ) from None


def released_root(path: Path, resolution: str | None) -> tuple[Path, Path, str]:
    """(root, weights folder, resolution) of a released layout, or ``FileNotFoundError`` if ``path`` is not one.

    ``resolution`` picks the 480p or 720p weights when both are present (default 720p).
    """
    if (path / "model.safetensors.index.json").is_file() and path.name in RELEASED_WEIGHTS.values():
        res = next(r for r, n in RELEASED_WEIGHTS.items() if n == path.name)
        if resolution is not None and resolution != res:
            raise ValueError(f"{path} holds the {res} model, but resolution={resolution!r} was asked for")
        return path.parent, path, res
    present = {r: path / n for r, n in RELEASED_WEIGHTS.items() if (path / n).is_dir()}
    if not present:
        raise FileNotFoundError("no released weights folder")
    if resolution is None:
        resolution = DEFAULT_RELEASED_RESOLUTION if DEFAULT_RELEASED_RESOLUTION in present else next(iter(present))
    if resolution not in present:
        have = ", ".join(f"{r} ({p.name})" for r, p in present.items())
        raise ValueError(f"{path} has no {RELEASED_WEIGHTS.get(resolution, resolution)} folder; it has: {have}")
    return path, present[resolution], resolution


#: the VAE's precisions: fp32 (the original's ``vae.float()``) or bf16; fp16 overflows the VAE's activations
VAE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def parse_vae_dtype(value: str | torch.dtype | None) -> torch.dtype:
    """The VAE's dtype from ``fp32`` / ``bf16`` (long names and ``torch.dtype`` too); None is fp32."""
    from infinitystar.devices import parse_dtype

    dtype = torch.float32 if value is None else parse_dtype(value)
    if dtype not in VAE_DTYPES.values():
        raise ValueError(
            f"unsupported VAE dtype {value!r}; accepted: {', '.join(VAE_DTYPES)} (fp16 overflows the VAE's activations)"
        )
    return dtype


def read_pipeline_config(path: Path, resolution: str | None = None) -> PipelineConfig:
    """The generation settings of a model folder (:func:`model_folder`'s result), read without loading any weights:
    what a command checks a request against before it spends time loading the model."""
    if (path / MODEL_INDEX).is_file():
        return _own_config(path, _own_index(path), resolution)
    return RELEASED_CONFIGS[_released(path, resolution)[2]]


def load_components(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    resolution: str | None,
    config: PipelineConfig | None,
    *,
    vae_dtype: torch.dtype = torch.float32,
    transformer_weights: str | Path | None = None,
) -> Components:
    """Load a folder of either layout. ``dtype`` is the transformer's blocks (embeddings and heads stay fp32);
    ``vae_dtype`` the VAE's (fp32 as in the original, which runs ``vae.float()``); ``config`` overrides the
    generation settings the folder implies; ``transformer_weights`` replaces the folder's transformer weights (a
    fine-tuned transformer: the original's ``global_step_N.pth``, a safetensors file or a shard folder)."""
    if path.is_file():
        raise CheckpointError(
            f"{path} is a file; a model is a folder ({describe_layouts()}). A transformer checkpoint (such as the "
            "original's global_step_N.pth) holds only the transformer: pass the model folder as the checkpoint and "
            "this file as the transformer weights (--transformer / transformer_weights=)"
        )
    if (path / MODEL_INDEX).is_file():
        return load_own_layout(path, device, dtype, resolution, config, vae_dtype, transformer_weights)
    root, weights, res = _released(path, resolution)
    return load_released(root, transformer_weights or weights, res, device, dtype, config, vae_dtype)


def read_transformer_config(path: Path, resolution: str | None) -> TransformerConfig:
    """The transformer's architecture of a model folder of either layout, read without loading a weight (checks
    that depend on it, such as the head count a sequence-parallel run splits, come before the minutes of loading)."""
    if (path / MODEL_INDEX).is_file():
        folder = path / own_components(_own_index(path))["transformer"]
        return TransformerConfig.from_dict(_read(folder / "config.json"))
    from infinitystar.models.transformer.checkpoint import infer_transformer_config

    return infer_transformer_config(_released(path, resolution)[1])


def check_released_parts(root: Path) -> None:
    """The VAE checkpoint and the text encoder folder a released root needs besides the transformer weights."""
    for name, what in ((RELEASED_VAE, "VAE checkpoint"), (RELEASED_T5, "text encoder folder")):
        if not (root / name).exists():
            raise CheckpointError(f"released layout at {root}: {what} {name} is missing ({root / name})")


def load_released(
    root: Path, weights: Path, resolution: str, device, dtype, config: PipelineConfig | None, vae_dtype=torch.float32
) -> Components:
    """The released layout: the chosen resolution's shards (or ``weights``), the VAE ``.pth`` and the T5 folder."""
    from infinitystar.models.transformer.checkpoint import infer_transformer_config, load_original_transformer
    from infinitystar.models.transformer.sources import open_weights

    check_released_parts(root)
    vae_path, t5_path = root / RELEASED_VAE, root / RELEASED_T5
    source = open_weights(weights)
    transformer = load_original_transformer(
        source, infer_transformer_config(source), device, dtype, outer_dtype=torch.float32
    )
    vae = VideoVAE.from_original_checkpoint(vae_path, device=device).to(dtype=vae_dtype)
    text_encoder = load_text_encoder(t5_path, device)
    return Components(transformer, vae, text_encoder, config or RELEASED_CONFIGS[resolution])


def _read(path: Path) -> dict:
    return read_json(path, f"{path.name} of the model folder {path.parent}", CheckpointError)


def _own_index(root: Path) -> dict:
    """``model_index.json`` of our layout, checked to be one."""
    index = _read(root / MODEL_INDEX)
    if not isinstance(index, dict) or index.get("format") != "infinitystar":
        raise CheckpointError(f"{root / MODEL_INDEX} is not an infinitystar model index: {index!r:.200}")
    return index


def _own_config(root: Path, index: dict, resolution: str | None, config: PipelineConfig | None = None):
    """The generation settings (``config``, else the index's), checked against the asked ``resolution``."""
    cfg = config or PipelineConfig.from_dict(index.get("pipeline", {}))
    if resolution is not None and resolution != cfg.resolution:
        raise ValueError(f"{root} holds a {cfg.resolution} model, but resolution={resolution!r} was asked for")
    return cfg


def _released(path: Path, resolution: str | None) -> tuple[Path, Path, str]:
    """:func:`released_root` of ``path``, or the error that names the layouts a model folder can have."""
    try:
        return released_root(path, resolution)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not a model folder; expected {describe_layouts()}") from None


def load_own_layout(
    root: Path,
    device,
    dtype,
    resolution: str | None,
    config: PipelineConfig | None,
    vae_dtype=torch.float32,
    transformer_weights: str | Path | None = None,
) -> Components:
    """Our layout: ``model_index.json`` (format, version, components, generation settings) and one folder per
    component."""
    from infinitystar.models.transformer.checkpoint import load_original_transformer

    index = _own_index(root)
    folders = {part: root / name for part, name in own_components(index).items()}
    pipe_cfg = _own_config(root, index, resolution, config)
    t_cfg = TransformerConfig.from_dict(_read(folders["transformer"] / "config.json"))
    weights = transformer_weights or folders["transformer"]
    transformer = load_original_transformer(weights, t_cfg, device, dtype, outer_dtype=torch.float32)
    v_cfg = VAEConfig.from_dict(_read(folders["vae"] / "config.json"))
    vae = VideoVAE.from_original_checkpoint(folders["vae"] / "model.safetensors", v_cfg, device=device)
    text_encoder = load_text_encoder(folders["text_encoder"], device)
    return Components(transformer, vae.to(dtype=vae_dtype), text_encoder, pipe_cfg)


def save_own_layout(parts: Components, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write our layout: ``model_index.json``, ``transformer/`` and ``vae/`` (safetensors with the original key
    names + ``config.json``) and ``text_encoder/``. ``dtype`` (e.g. fp16) stores the floating-point weights in that
    type (loading casts them back)."""
    from infinitystar.models.transformer.checkpoint import save_original_transformer
    from infinitystar.models.vae.checkpoint import save_vae_folder

    check_saveable(parts.transformer)  # before anything is written
    folder = Path(folder)
    (folder / "transformer").mkdir(parents=True, exist_ok=True)
    save_original_transformer(parts.transformer, folder / "transformer", dtype=dtype)
    write_json(folder / "transformer" / "config.json", parts.transformer.cfg.to_dict())
    save_vae_folder(parts.vae, folder / "vae", dtype=dtype, metadata={"format": "pt"})
    save_text_encoder(parts.text_encoder, folder / "text_encoder")
    write_json(folder / MODEL_INDEX, model_index(parts.config))
    return folder


def model_index(config: PipelineConfig, **extra) -> dict:
    """Our layout's ``model_index.json``: format, version, the component folders (a download fetches these and
    nothing else) and the generation settings."""
    return {
        "format": "infinitystar",
        "version": 1,
        "components": dict(OWN_COMPONENTS),
        **extra,
        "pipeline": config.to_dict(),
    }


def save_text_encoder(encoder: TextEncoder, folder: Path) -> None:
    """The package's own encoders write their settings; a T5 encoder's local folder is copied as it is."""
    if hasattr(encoder, "save_pretrained"):
        encoder.save_pretrained(folder)
    elif getattr(encoder, "path", None) is not None:
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(encoder.path, folder)
    else:
        raise TypeError(f"cannot save a {type(encoder).__name__}: it has neither save_pretrained nor a source folder")
