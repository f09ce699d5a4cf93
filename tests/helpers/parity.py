"""Finding and reading parity dumps of the original implementation.

Dumps are found in the folders listed in ``INFINITYSTAR_PARITY_DIRS`` (separated by ``:``),
defaulting to every folder under ``../shared/parity/`` next to the checkout. When ``CI`` is set
and no dump is found, the parity tests fail instead of skipping.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def parity_dirs() -> list[Path]:
    env = os.environ.get("INFINITYSTAR_PARITY_DIRS")
    if env:
        roots = [Path(p) for p in env.split(":") if p]
    else:
        base = REPO.parent / "shared" / "parity"
        roots = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    return [p for p in roots if (p / "config.json").is_file()]


def dump_params():
    """pytest params, one per dump; a failing placeholder under CI when none is found."""
    dirs = parity_dirs()
    if dirs:
        return [pytest.param(d, id=d.name) for d in dirs]
    if os.environ.get("CI"):
        return [pytest.param(None, id="no-dump-found")]
    return [pytest.param(None, id="no-dump", marks=pytest.mark.skip(reason="no parity dump found"))]


class Dump:
    """One dump folder: config, summary, tensors, weights (loaded lazily, cached)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = json.loads((self.path / "config.json").read_text())
        self.summary = json.loads((self.path / "summary.json").read_text())
        self._tensors = None

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = load_file(str(self.path / "tensors.safetensors"))
        return self._tensors

    def has(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def names(self, prefix: str) -> list[str]:
        return sorted(k for k in self.tensors if k.startswith(prefix))

    @property
    def meta(self) -> dict:
        return self.summary["meta"]


@lru_cache(maxsize=8)
def _load(path: str) -> Dump:
    return Dump(Path(path))


def get_dump(path) -> Dump:
    if path is None:
        pytest.fail("no parity dump found: set INFINITYSTAR_PARITY_DIRS or put dumps under ../shared/parity/")
    return _load(str(path))


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, name: str, rel: float = 1e-4) -> None:
    """max |a - e| <= rel * max(1, max |e|): the parity README's rule for floats."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double(), expected.detach().double()
    tol = rel * max(1.0, e.abs().max().item() if e.numel() else 1.0)
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol, f"{name}: max abs diff {err:.3e} > tolerance {tol:.3e}"


def assert_close_abs(actual: torch.Tensor, expected: torch.Tensor, name: str, atol: float = 1e-5) -> None:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.detach().double() - expected.detach().double()).abs().max().item() if expected.numel() else 0.0
    assert err <= atol, f"{name}: max abs diff {err:.3e} > {atol:.1e}"


def assert_equal_int(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    a, e = actual.to(torch.int64), expected.to(torch.int64)
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    bad = (a != e).sum().item()
    assert bad == 0, f"{name}: {bad} of {e.numel()} entries differ"
