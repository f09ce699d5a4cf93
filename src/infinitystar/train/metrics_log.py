"""Training metrics: a per-step jsonl file, a tqdm bar, TensorBoard and wandb (rank 0 only).

``metrics.jsonl`` in the run folder holds one JSON object per logged step (``step``, ``loss``,
``acc``, ``grad_norm``, ``lr``, ``tokens``, ``tokens_per_s``, per-group accuracies ``acc/<group>``
...). It is the record a resumed run continues: :func:`truncate_metrics` drops the lines past
the checkpoint being resumed, so the file never holds a step twice.

Accuracy groups follow the original's ``Details/Acc`` idea at a coarser grain: per clip (the
image pyramid, then each 5 s clip) and per kind of scale (16-bit semantic, 64-bit detail), e.g.
``acc/image/semantic``, ``acc/clip1/detail``. TensorBoard is used when the ``tensorboard``
package is installed (``pip install 'infinitystar[train]'``), wandb when asked for and installed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from infinitystar.files import append_jsonl
from infinitystar.schedule import Schedule

#: accuracy groups are summed over ranks in a fixed layout: clips 0 .. MAX_CLIPS-1 x (semantic, detail)
MAX_CLIPS = 16


def group_name(clip: int, semantic: bool) -> str:
    return f"{'image' if clip == 0 else f'clip{clip}'}/{'semantic' if semantic else 'detail'}"


def group_sums(token_acc: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Per-group (sum of token accuracies, token count) ``[MAX_CLIPS * 2, 2]`` of a pack.

    ``token_acc [B, Nvis]``: fraction of each token's bits predicted right. Group index
    ``2 * clip + (0 semantic | 1 detail)``; sums add over ranks and micro-batches.
    """
    out = torch.zeros(MAX_CLIPS * 2, 2, dtype=torch.float64)
    start = 0
    acc = token_acc.detach().double().cpu()
    for sc in schedule.scales:
        n = sc.num_tokens
        g = 2 * min(sc.clip, MAX_CLIPS - 1) + (0 if sc.semantic else 1)
        out[g, 0] += acc[:, start : start + n].sum()
        out[g, 1] += acc.shape[0] * n
        start += n
    return out


def group_accuracies(sums: torch.Tensor) -> dict[str, float]:
    """``{'acc/image/semantic': ..., ...}`` from summed :func:`group_sums` (groups with tokens only)."""
    out = {}
    for g in range(sums.shape[0]):
        if sums[g, 1] > 0:
            out[f"acc/{group_name(g // 2, g % 2 == 0)}"] = float(sums[g, 0] / sums[g, 1])
    return out


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics jsonl file (an empty list when it does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for i, line in enumerate(p.read_text().splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                # a run killed mid-write leaves at most one partial last line
                warnings.warn(f"{p}:{i}: skipping an unreadable metrics line", stacklevel=2)
    return out


def truncate_metrics(path: str | os.PathLike, last_step: int) -> None:
    """Keep only the records with ``step <= last_step`` (rewritten atomically).

    Both trainers call it when they resume, so that the lines a killed run wrote after its last
    checkpoint are not followed by a second copy of those steps; a partial last line (a run killed
    mid-write) is dropped with a warning."""
    from infinitystar.files import jsonl_text, write_text

    p = Path(path)
    if not p.is_file():
        return
    keep = [r for r in read_metrics(p) if int(r.get("step", 0)) <= last_step]
    write_text(p, jsonl_text(keep))


class MetricsLogger:
    """Writes metrics on rank 0 (``enabled``); a no-op on other ranks."""

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        enabled: bool = True,
        total_steps: int,
        start_step: int = 0,
        progress: bool = True,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_project: str = "infinitystar",
        config: dict | None = None,
    ):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.bar = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the whole run
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.tb = None  # optional: pip install tensorboard
            else:
                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_step + 1)
        if wandb:
            try:
                import wandb as wandb_mod
            except ImportError:
                warnings.warn(
                    "log.wandb is on but the wandb package is not installed; not logging to wandb", stacklevel=2
                )
            else:
                self.wandb = wandb_mod.init(
                    project=wandb_project, name=Path(run_dir).name, config=config or {}, resume="allow"
                )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record one step's metrics (plain floats / ints)."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        append_jsonl(self._file, record)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def progress(self, step: int, metrics: dict[str, Any]) -> None:
        """Advance the bar to ``step`` with loss, bit accuracy and tokens/s."""
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        post = {}
        for key, fmt in (("loss", ".4f"), ("acc", ".3f"), ("tokens_per_s", ".0f")):
            if key in metrics:
                post["tok/s" if key == "tokens_per_s" else key] = format(metrics[key], fmt)
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
