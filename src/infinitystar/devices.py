"""Which device and which floating-point type a command runs on: the one place that reads ``--device`` / ``--dtype``.

Both are checked before any model is loaded, so a misspelt device or a GPU that is not there is one clear
message, not a traceback minutes later.
"""

from __future__ import annotations

import torch

#: accepted dtype names (``--dtype`` and the ``dtype=`` arguments)
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
#: what ``--device`` accepts, for messages
DEVICE_HELP = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


def default_device() -> torch.device:
    """CUDA when a GPU is there, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device ``device`` names (None or 'auto': :func:`default_device`), checked to exist on this machine.

    Raises ``ValueError`` naming the value and what is accepted for an unknown name, a CUDA device on a machine
    without one, or a GPU index beyond the number of GPUs.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return default_device()
    if isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(str(device).strip())
        except (RuntimeError, ValueError):
            raise ValueError(f"unknown device {device!r}; accepted: {DEVICE_HELP}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for, but this machine has no usable CUDA GPU; use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {str(device)!r} does not exist: this machine has {count} GPU(s) (cuda:0..{count - 1})"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {str(device)!r} was asked for, but MPS is not available here; use cpu")
    elif dev.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported; accepted: {DEVICE_HELP}")
    return dev


def parse_dtype(value: str | torch.dtype | None, device: torch.device | str | None = None) -> torch.dtype:
    """A dtype from its name (``fp32``, ``bf16``, ``fp16`` and the long forms) or a ``torch.dtype``.

    ``None`` picks the default for ``device``: bf16 on CUDA (the speed and memory the released model is used
    with), fp32 elsewhere (CPUs are slow in bf16 and exactness is cheap there).
    """
    if value is None:
        return torch.bfloat16 if device is not None and torch.device(device).type == "cuda" else torch.float32
    if isinstance(value, torch.dtype):
        if value not in DTYPES.values():
            raise ValueError(f"unsupported dtype {value}; accepted: {', '.join(DTYPES)}")
        return value
    try:
        return DTYPES[str(value).strip().lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}; accepted: {', '.join(DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype (``bf16``), for messages, metadata and file names."""
    return next(name for name, d in DTYPES.items() if d == dtype)
