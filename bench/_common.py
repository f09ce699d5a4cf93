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
from summarize import threads


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
    """The preset's transformer architecture with random weights, as the pipeline loads a released model: the
    blocks in ``dtype``, the rest (null text, embeddings, final norm, heads: ~0.1 % of the weights) in fp32."""
    cfg = get_preset(preset).transformer
    model = materialise(lambda: InfinityTransformer(cfg), device, dtype)
    for name, p in model.named_parameters():
        if not name.startswith("blocks."):
            p.data = p.data.float()
    return model


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


#: how the GEMM rate printed beside every row is measured, the same way in every script and run: one square
#: matrix product of this size in the run's dtype, on the run's threads, ``GEMM_WARMUP`` untimed calls, then the
#: best of ``GEMM_REPEATS`` timed ones (the best, not the mean: the floor is what the device can do, and a shared
#: machine's load only ever slows a call down)
GEMM_SIZE = {"cuda": 8192, "cpu": 1536}
GEMM_WARMUP = 3
GEMM_REPEATS = 10


def gemm_rate(device: torch.device, dtype: torch.dtype) -> dict:
    """The measured GEMM rate the FLOP floor uses, with how it was measured: ``{"flops_per_s", "size", "dtype",
    "threads", "warmup", "repeats", "stat"}`` (see ``GEMM_SIZE``)."""
    n = GEMM_SIZE["cuda" if device.type == "cuda" else "cpu"]
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    clock = Clock(device)
    for _ in range(GEMM_WARMUP):
        clock(lambda: a @ b)
    best = min(clock(lambda: a @ b) for _ in range(GEMM_REPEATS))
    return {
        "flops_per_s": 2.0 * n**3 / best,
        "device": device.type,
        "size": n,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
        "warmup": GEMM_WARMUP,
        "repeats": GEMM_REPEATS,
        "stat": "best",
    }


def describe_gemm(g: dict) -> str:
    """``0.17 TFLOP/s (1536^3 float32, 2 threads, best of 10 after 3 warm-ups)``."""
    where = "GPU" if g["device"] == "cuda" else threads(g["threads"])
    return (
        f"{g['flops_per_s'] / 1e12:.2f} TFLOP/s ({g['size']}^3 {g['dtype']}, {where}, "
        f"{g['stat']} of {g['repeats']} after {g['warmup']} warm-ups)"
    )


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
