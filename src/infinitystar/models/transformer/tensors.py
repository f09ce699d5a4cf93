"""Tensors that may be tensor subclasses (torchao's quantized weights are made of plain inner tensors): map a function
over the plain tensors, list them, count their bytes. Block offload copies and quantization moves go through these,
so they never depend on a subclass implementing ``.to()``, ``pin_memory()`` or ``copy_()`` itself."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass


def map_tensor(t: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn`` applied to a plain tensor, or to every inner tensor of a tensor subclass (torchao's quantized
    weights), rebuilt as the same subclass."""
    if not is_traceable_wrapper_subclass(t):
        return fn(t)
    names, ctx = t.__tensor_flatten__()
    inner = {n: None if getattr(t, n) is None else map_tensor(getattr(t, n), fn) for n in names}
    return type(t).__tensor_unflatten__(inner, ctx, t.size(), t.stride())


def leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors a (possibly subclass) tensor is made of, in a fixed order."""
    found: list[torch.Tensor] = []

    def keep(x: torch.Tensor) -> torch.Tensor:
        found.append(x)
        return x

    map_tensor(t, keep)
    return found


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a (possibly quantized) tensor holds: the sum of its inner tensors for torchao's subclasses."""
    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()
