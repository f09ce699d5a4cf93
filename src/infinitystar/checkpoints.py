"""Checkpoint plumbing shared by every component: key coverage, safe reading, atomic and streamed saving.

The original loads its checkpoints with ``strict=False``, which hides missing and misnamed keys.
Here every load goes through :func:`check_coverage`: all expected keys present with equal shapes,
otherwise one :class:`CheckpointError` that names the offending keys. Entries the model does not know
are an error too, except where a loader tolerates them (the released files, which the original
loaded with ``strict=False`` and may carry extras nobody here has seen): then they are skipped with
one :class:`UnusedWeightsWarning` that lists them, so nothing is dropped silently.
Component-specific key adapters (original names -> our names) live next to their models.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from infinitystar.files import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or its keys or shapes do not match the model."""


class UnusedWeightsWarning(UserWarning):
    """A checkpoint holds entries the model does not know; they were skipped."""


def _fmt(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_coverage(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    what: str,
    *,
    tolerate_unexpected: bool = False,
) -> list[str]:
    """Raise :class:`CheckpointError` unless ``found`` has every key of ``expected`` with its shape, and (unless
    ``tolerate_unexpected``) no other key. Tolerated unexpected keys get one :class:`UnusedWeightsWarning`; the
    sorted list of them is returned (the caller skips them)."""
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    mis_shaped = {
        k: (tuple(found[k]), tuple(expected[k]))
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    }
    if not (missing or mis_shaped or (unexpected and not tolerate_unexpected)):
        if unexpected:
            warn_unexpected(unexpected, what)
        return sorted(unexpected)
    lines = [f"{what}: the checkpoint does not match the model"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
    if mis_shaped:
        items = [f"{k} {got} (model expects {exp})" for k, (got, exp) in sorted(mis_shaped.items())]
        lines.append(f"  wrong shapes ({len(items)}): " + "; ".join(items[:8]))
    raise CheckpointError("\n".join(lines))


def warn_unexpected(keys, what: str) -> None:
    """One warning that lists the entries a loader skipped because the model does not know them."""
    warnings.warn(
        f"{what}: skipped {len(keys)} entr{'y' if len(keys) == 1 else 'ies'} the model does not know: {_fmt(keys)}. "
        "Loading went on without them (every weight the model needs is present with its shape).",
        UnusedWeightsWarning,
        stacklevel=3,
    )


def shapes_of(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def torch_load_weights(path: str | os.PathLike, *, mmap: bool = False) -> dict:
    """``torch.load(weights_only=True)`` on CPU with a clear error for a missing or corrupt file.

    ``mmap=True`` maps the tensors instead of reading them (a training checkpoint's optimizer states are then never
    brought into memory); files in the legacy, non-zip format cannot be mapped and are read whole."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if mmap:
            import zipfile

            mmap = zipfile.is_zipfile(path)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
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


#: safetensors' names of the dtypes the project writes and reads directly
SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def stream_safetensors(
    path: str | os.PathLike, specs: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], tensors, metadata=None
) -> int:
    """Write a safetensors file one tensor at a time, atomically; returns the bytes of tensor data.

    ``specs`` (key -> (dtype, shape), in file order) makes the header, which safetensors puts before the data;
    ``tensors`` then yields ``(key, tensor)`` in the same order, each written and released before the next is
    read, so memory holds one tensor, not the file. Each tensor must match its spec (checked)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, (dtype, shape) in specs.items():
        if dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"{key}: dtype {dtype} cannot be stored in safetensors by this writer")
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        span = [offset, offset + nbytes]
        header[key] = {"dtype": SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": span}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it

    def write(tmp: str) -> None:
        order = iter(specs)
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for key, tensor in tensors:
                want = next(order, None)
                dtype, shape = specs.get(key, (None, None))
                if key != want or tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                    raise ValueError(
                        f"stream_safetensors: got {key} {tensor.dtype} {tuple(tensor.shape)}, expected "
                        f"{want} {specs.get(want)}"
                    )  # a bug in the caller
                f.write(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().data)
            if next(order, None) is not None:
                raise ValueError("stream_safetensors: fewer tensors than specs")

    atomic_write(path, write)
    return offset
