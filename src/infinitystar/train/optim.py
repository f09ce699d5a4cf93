"""What both trainers keep next to their optimizer: the learning-rate schedule and a weight EMA.

:class:`LRSchedule` is the one warmup + decay schedule of the package: the transformer trainer sets
the learning rate of step ``n`` from it directly, the tokenizer trainer drives a
``torch.optim.lr_scheduler.LambdaLR`` with :meth:`LRSchedule.factor` (``LambdaLR`` counts from 0,
the schedule from 1: it is called with ``i + 1``). :class:`EMA` averages the transformer's weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from infinitystar.train.distributed import unwrapped_name

#: learning-rate schedules after the warmup
LR_SCHEDULES = ("constant", "cosine")

__all__ = ["LRSchedule", "EMA"]


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate of optimizer step ``n`` (1-based): linear warmup over ``warmup_steps`` (``lr * n / W``
    for ``n <= W``), then constant (the original: no warmup, constant) or cosine down to
    ``min_lr_ratio * lr``, reached at ``total_steps``. A function of the step alone, so a resumed run
    needs no state for it."""

    lr: float
    kind: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 1
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"learning-rate schedule must be one of {LR_SCHEDULES}, got {self.kind!r}")

    def factor(self, step: int) -> float:
        """The learning rate of ``step`` as a fraction of ``lr`` (what ``LambdaLR`` expects)."""
        if self.warmup_steps and step <= self.warmup_steps:
            return step / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step <= self.warmup_steps:
            return self.lr * step / self.warmup_steps  # this rounding order: the values runs have always had
        return self.lr * self.factor(step)


class EMA:
    """Exponential moving average of the trainable parameters: ``ema = decay * ema + (1 - decay) * p``.

    Works on sharded (FSDP2 DTensor) parameters shard by shard. The original hard-codes a decay
    of 0.9999 (and ignores its own option); here it is ``optim.ema_decay``. Names are the model's
    own (without the activation-checkpointing wrapper's prefix), so a checkpoint's EMA loads with
    activation checkpointing on or off.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {
            unwrapped_name(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            name = unwrapped_name(n)
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise ValueError(f"EMA state lacks {missing[:5]}")
        with torch.no_grad():
            for k, v in self.shadow.items():
                if v is not state[k]:
                    v.copy_(state[k])

    def full_state(self) -> dict[str, torch.Tensor]:
        """Unsharded CPU copies (every rank must call this under FSDP)."""
        out = {}
        for k, v in self.shadow.items():
            full = v.full_tensor() if hasattr(v, "full_tensor") else v
            out[k] = full.detach().cpu()
        return out


def init_adam_state(opt: torch.optim.Optimizer) -> None:
    """Create AdamW's per-parameter state up front, exactly as its first step would (step 0, zero
    moments), so that checkpoints always hold the same keys: a checkpoint written before a
    parameter's first update (e.g. the discriminator before ``gan_start``) then loads into a
    fresh optimizer."""
    for group in opt.param_groups:
        for p in group["params"]:
            if not opt.state[p]:
                opt.state[p] = {
                    "step": torch.tensor(
                        0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                    ),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
