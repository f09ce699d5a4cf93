"""Checkpoint plumbing shared by every component: strict key coverage, safe reading, atomic saving.

The original loads its checkpoints with ``strict=False``, which hides missing and misnamed keys.
Here every load goes through :func:`check_coverage`: all expected keys present, no unexpected
key, equal shapes; otherwise one :class:`CheckpointError` that names the offending keys.
Component-specific key adapters (original names -> our names) live next to their models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from infinitystar.files import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or its keys or shapes do not match the model."""


def _fmt(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_coverage(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    what: str,
) -> None:
    """Raise :class:`CheckpointError` unless ``found`` has exactly the keys and shapes of ``expected``."""
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    mis_shaped = {
        k: (tuple(found[k]), tuple(expected[k]))
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    }
    if not (missing or unexpected or mis_shaped):
        return
    lines = [f"{what}: the checkpoint does not match the model"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
    if mis_shaped:
        items = [f"{k} {got} (model expects {exp})" for k, (got, exp) in sorted(mis_shaped.items())]
        lines.append(f"  wrong shapes ({len(items)}): " + "; ".join(items[:8]))
    raise CheckpointError("\n".join(lines))


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def torch_load_weights(path: str | os.PathLike) -> dict:
    """``torch.load(weights_only=True)`` on CPU with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with disallowed globals, not a checkpoint...
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}. "
            "Expected a PyTorch file saved with torch.save (weights only); it may be truncated or corrupt."
        ) from exc


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file with a clear error for a missing, truncated or corrupt file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:
        raise CheckpointError(
            f"cannot read safetensors file {path}: {type(exc).__name__}: {exc}. It may be truncated or corrupt."
        ) from exc


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Atomically save a state dict as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
