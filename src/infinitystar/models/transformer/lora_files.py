"""LoRA adapter folders on disk: peft's format, plus what this package needs to check an adapter before using it.

A folder holds ``adapter_config.json`` (peft's ``LoraConfig``: ``r``, ``lora_alpha``, ``target_modules``, ...) and
``adapter_model.safetensors`` (``base_model.model.{module}.lora_A.weight`` ``[r, in]`` and ``...lora_B.weight``
``[out, r]``), exactly what ``PeftModel.save_pretrained`` writes, so peft itself can load it onto an
``InfinityTransformer``. The safetensors header's metadata carries, under ``infinitystar``, the transformer
architecture the adapter was trained for, its name and its training step: a mismatch is then one message that names
the differing fields, instead of a list of wrong shapes. Adapters without it (made by other tools) are checked by
module names and shapes alone.

Why a module of its own: the trainer writes these folders, the pipeline reads them, and neither should depend on
the other; the runtime (:mod:`infinitystar.models.transformer.lora`) only sees tensors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from infinitystar.checkpoints import CheckpointError, read_safetensors, save_safetensors
from infinitystar.files import read_json, write_json
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.lora import LoraError, LoraWeights

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "AdapterFile",
    "check_architecture",
    "is_adapter_folder",
    "read_adapter",
    "write_adapter",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: how peft prefixes the module names of a model it wraps
PEFT_PREFIX = "base_model.model."
META_KEY = "infinitystar"
META_FORMAT = "infinitystar.lora"
#: TransformerConfig fields that do not change what a linear layer computes (checkpoint key names, training packs)
_LAYOUT_ONLY = ("block_chunks", "pad_to_multiplier")


@dataclass
class AdapterFile:
    """An adapter read from disk: its updates per module (our module names) and what it says about itself."""

    path: Path
    rank: int
    alpha: float
    weights: dict[str, LoraWeights]
    name: str | None = None  #: the name it was trained under (None: not recorded)
    transformer: dict[str, Any] | None = None  #: the TransformerConfig it was trained for (None: not recorded)
    info: dict[str, Any] = field(default_factory=dict)  #: the rest of its metadata (step, seed, base model, ...)

    @property
    def num_parameters(self) -> int:
        return sum(w.down.numel() + w.up.numel() for w in self.weights.values())


def is_adapter_folder(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and (p / ADAPTER_WEIGHTS).is_file()


def write_adapter(
    folder: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    peft_config: Mapping[str, Any],
    meta: Mapping[str, Any],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write an adapter folder. ``tensors``: ``{module}.lora_A.weight`` / ``{module}.lora_B.weight`` (our module
    names); ``peft_config``: the ``LoraConfig`` as a JSON dict; ``meta``: this package's metadata (``transformer``,
    ``name``, ``step``, ...). Both files are written atomically, the weights first."""
    folder = Path(folder)  # created by the atomic writes
    state = {PEFT_PREFIX + k: (v if dtype is None else v.to(dtype)) for k, v in tensors.items()}
    header = {"format": "pt", META_KEY: json.dumps({"format": META_FORMAT, "version": 1, **meta}, sort_keys=True)}
    save_safetensors(state, folder / ADAPTER_WEIGHTS, metadata=header)
    write_json(folder / ADAPTER_CONFIG, dict(peft_config))
    return folder


def _config(folder: Path) -> tuple[int, float, bool]:
    """(r, lora_alpha, use_rslora) of ``adapter_config.json``, refusing what the runtime cannot apply."""
    cfg = read_json(folder / ADAPTER_CONFIG, "LoRA adapter config", LoraError)
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise LoraError(f"{folder / ADAPTER_CONFIG} is not a LoRA adapter config (peft_type {cfg.get('peft_type')!r})")
    unsupported = {
        "use_dora": bool(cfg.get("use_dora")),
        "bias": cfg.get("bias", "none") not in (None, "none"),
        "fan_in_fan_out": bool(cfg.get("fan_in_fan_out")),
        "rank_pattern": bool(cfg.get("rank_pattern")),
        "alpha_pattern": bool(cfg.get("alpha_pattern")),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise LoraError(
            f"{folder}: LoRA options {', '.join(bad)} are not supported; plain LoRA (optionally rank-stabilised) is"
        )
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1 or not isinstance(alpha, (int, float)):
        raise LoraError(
            f"{folder / ADAPTER_CONFIG}: r must be a positive int and lora_alpha a number, got {r!r}, {alpha!r}"
        )
    return r, float(alpha), bool(cfg.get("use_rslora"))


def _metadata(file: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise LoraError(f"cannot read {file}: {type(exc).__name__}: {exc}. It may be truncated or corrupt.") from exc
    if META_KEY not in header:
        return {}
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise LoraError(f"{file}: its {META_KEY!r} metadata is not valid JSON; the file is damaged") from None
    return meta if isinstance(meta, dict) else {}


def _pair_up(file: Path, state: dict[str, torch.Tensor], r: int, scaling: float) -> dict[str, LoraWeights]:
    """``{module: LoraWeights}`` from the file's tensors (peft names), with every key and shape checked."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    strange = []
    for key, t in state.items():
        name = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
        module, _, kind = name.rpartition(".lora_")
        if kind not in ("A.weight", "B.weight") or not module:
            strange.append(key)
            continue
        parts.setdefault(module, {})[kind[0]] = t
    if strange:
        raise LoraError(f"{file}: keys that are not LoRA A/B weights: {', '.join(sorted(strange)[:6])}")
    out = {}
    for module, ab in sorted(parts.items()):
        a, b = ab.get("A"), ab.get("B")
        if a is None or b is None:
            raise LoraError(f"{file}: {module} has lora_{'A' if a is None else 'B'}.weight missing")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise LoraError(
                f"{file}: {module} has A {tuple(a.shape)} and B {tuple(b.shape)}; rank {r} needs [r, in] and [out, r]"
            )
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise LoraError(f"{file}: {module} holds NaN or infinite values; the adapter is damaged")
        out[module] = LoraWeights(a.float(), b.float(), scaling)
    if not out:
        raise LoraError(f"{file} holds no LoRA weights")
    return out


def read_adapter(folder: str | os.PathLike) -> AdapterFile:
    """Read and check an adapter folder (see the module docstring). Errors are :class:`LoraError`."""
    folder = Path(folder)
    missing = [n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (folder / n).is_file()]
    if missing:
        raise LoraError(f"{folder} is not a LoRA adapter folder: {' and '.join(missing)} missing")
    r, alpha, rslora = _config(folder)
    file = folder / ADAPTER_WEIGHTS
    meta = _metadata(file)
    try:
        state = read_safetensors(file)
    except CheckpointError as exc:
        raise LoraError(str(exc)) from None
    scaling = alpha / math.sqrt(r) if rslora else alpha / r
    weights = _pair_up(file, state, r, scaling)
    info = {k: v for k, v in meta.items() if k not in ("format", "version", "name", "transformer")}
    transformer = meta.get("transformer") if isinstance(meta.get("transformer"), dict) else None
    return AdapterFile(folder, r, alpha, weights, meta.get("name"), transformer, info)


def check_architecture(adapter: AdapterFile, cfg: TransformerConfig, label: str) -> None:
    """Raise :class:`LoraError` naming every differing field when ``adapter`` was trained for another architecture
    than ``cfg``. Adapters that do not record one pass (their shapes are checked when attached)."""
    if adapter.transformer is None:
        return
    mine = cfg.to_dict()
    theirs = adapter.transformer
    diff = [k for k in mine if k not in _LAYOUT_ONLY and k in theirs and theirs[k] != mine[k]]
    if diff:
        want = ", ".join(f"{k}={theirs[k]}" for k in diff)
        have = ", ".join(f"{k}={mine[k]}" for k in diff)
        base = adapter.info.get("base_model", "unknown")
        raise LoraError(
            f"LoRA adapter {label} ({adapter.path}) was trained for another transformer: it needs {want}, this model "
            f"has {have}. Load it on the model it was trained on (its base: {base})"
        )
