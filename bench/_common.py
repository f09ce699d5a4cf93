"""Helpers the bench scripts share: random models built straight on the target device, a clock that
synchronises the GPU, the device's measured matmul rate and peak-memory readings."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

import torch
import torch.nn as nn

from infinitystar.models.config import get_preset
from infinitystar.models.transformer.model import InfinityTransformer


def materialise(build: Callable[[], nn.Module], device: torch.device, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """``build()`` on the meta device directly in ``dtype``, materialised once on ``device`` with random
    weights (matrices ~ N(0, 1/fan_in), vectors ~ N(1, 0.02)): no fp32 copy of an 8B model anywhere.
    Speed does not depend on the values, only on their being finite."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = build()
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in list(model.parameters()) + list(model.buffers()):
            if not p.is_floating_point():
                continue
            if p.ndim >= 2:
                p.normal_(0, p[0].numel() ** -0.5, generator=g)
            else:
                p.normal_(1.0, 0.02, generator=g)
    return model.eval()


def random_transformer(preset: str, device: torch.device, dtype: torch.dtype) -> InfinityTransformer:
    """The preset's transformer architecture with random weights."""
    cfg = get_preset(preset).transformer
    return materialise(lambda: InfinityTransformer(cfg), device, dtype)


class Clock:
    """Wall time of a callable, synchronising the GPU around it."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of one large square GEMM in ``dtype`` (best of ``repeats``): the rate the floor
    assumes. 8192 on a GPU, 1536 on a CPU unless ``size`` is given."""
    n = size or (8192 if device.type == "cuda" else 1536)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    clock = Clock(device)
    clock(lambda: a @ b)  # warm-up
    best = min(clock(lambda: a @ b) for _ in range(repeats))
    return 2.0 * n**3 / best


def peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB): the CPU's peak memory when each run has its own process."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory of a phase: CUDA ``max_memory_allocated`` (reset with ``reset_peak_memory_stats``); on a
    Linux CPU the process's peak resident set (``VmHWM``, reset by writing 5 to ``/proc/self/clear_refs``),
    which includes the weights and everything else alive."""

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "max_memory_allocated" if device.type == "cuda" else "peak RSS"

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass  # not Linux: the figure is then the peak since the process started

    def read_gib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 2**20  # kB -> GiB
        except OSError:
            pass
        return peak_rss_mib() / 1024
