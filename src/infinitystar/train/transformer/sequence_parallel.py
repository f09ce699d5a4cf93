"""Ulysses sequence parallelism for the training forward (all-to-all around attention).

The packed training sequence of one batch ``[B, T, C]`` is split along T over the ``sp`` ranks
of a sequence-parallel group; every rank runs the blocks on its ``T / sp`` positions. Only the
attention needs the whole sequence: around it, q / k / v go through an all-to-all from
sequence-sharded ``[B, H, T/sp, hd]`` to head-sharded ``[B, H/sp, T, hd]``; each rank attends
with its heads over all positions under the full mask, and a second all-to-all brings the
output back to sequence-sharded. This is the original's scheme (its ``sp_size``); it needs the
query and key/value head counts divisible by ``sp`` and pads T to a multiple of ``sp``. The all-to-alls
themselves are :mod:`infinitystar.parallel`'s, which inference uses too.

Gradients. After the blocks, the final norm and the heads run on the local positions and the
logits are gathered, so every rank computes the same loss. The backward of the gather takes
the local slice and the backward of the split pads with zeros (no communication): every
parameter then holds, on each rank, the gradient contribution of its own positions, and the
sum over the group is the exact full gradient. FSDP averages over all ranks, so the trainer
multiplies the loss by ``sp`` before ``backward`` (see :func:`sp_loss_scale`).

The hook: :func:`enable_sequence_parallel` sets ``model.sequence_parallel``, which the
transformer's training forward consults (shard, wrapped attention, gather); inference is not
affected.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

from infinitystar.models.transformer.layers import AttendFn
from infinitystar.parallel import heads_to_seq, seq_to_heads


class _SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sp, group):
        ctx.sp, ctx.group = sp, group
        return seq_to_heads(x, sp, group)

    @staticmethod
    def backward(ctx, grad):
        return heads_to_seq(grad, ctx.sp, ctx.group), None, None


class _HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sp, group):
        ctx.sp, ctx.group = sp, group
        return heads_to_seq(x, sp, group)

    @staticmethod
    def backward(ctx, grad):
        return seq_to_heads(grad, ctx.sp, ctx.group), None, None


class _Split(torch.autograd.Function):
    """Keep this rank's slice of dim 1; backward pads with zeros (each rank's part of the gradient)."""

    @staticmethod
    def forward(ctx, x, sp, rank):
        n = x.shape[1] // sp
        ctx.shape, ctx.start, ctx.n = x.shape, rank * n, n
        return x[:, rank * n : (rank + 1) * n].contiguous()

    @staticmethod
    def backward(ctx, grad):
        full = grad.new_zeros(ctx.shape)
        full[:, ctx.start : ctx.start + ctx.n] = grad
        return full, None, None


class _Gather(torch.autograd.Function):
    """All-gather along dim 1; backward keeps this rank's slice (the loss is the same on every rank)."""

    @staticmethod
    def forward(ctx, x, sp, rank, group):
        ctx.rank, ctx.n = rank, x.shape[1]
        parts = [torch.empty_like(x) for _ in range(sp)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx, grad):
        return grad[:, ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n].contiguous(), None, None, None


class UlyssesSP:
    """The sequence-parallel hook the transformer's training forward calls."""

    def __init__(self, group=None):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's positions of ``x [B, T, ...]`` (T divisible by ``size``)."""
        if x.shape[1] % self.size:
            raise ValueError(f"sequence length {x.shape[1]} is not divisible by the sequence-parallel size {self.size}")
        return _Split.apply(x, self.size, self.rank)

    def shard_rope(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's positions of a RoPE table ``[B, 1, T, hd/2]`` (a constant)."""
        n = t.shape[2] // self.size
        return t[:, :, self.rank * n : (self.rank + 1) * n]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """All positions ``[B, T, ...]`` from every rank's ``[B, T/size, ...]``."""
        return _Gather.apply(x, self.size, self.rank, self.group)

    def wrap(self, attend: AttendFn) -> AttendFn:
        """``attend`` (over all positions) run on this rank's heads, with all-to-alls around it."""
        sp, group = self.size, self.group

        def sp_attend(q, k, v):
            if q.shape[1] % sp or k.shape[1] % sp:
                raise ValueError(f"heads ({q.shape[1]} query, {k.shape[1]} key/value) must be divisible by sp {sp}")
            q, k, v = (_SeqToHeads.apply(t, sp, group) for t in (q, k, v))  # [B, heads/sp, T, hd]
            return _HeadsToSeq.apply(attend(q, k, v), sp, group)  # [B, H, T/sp, hd]

        return sp_attend


def enable_sequence_parallel(model: nn.Module, group=None) -> UlyssesSP:
    """Make ``model`` (an :class:`~infinitystar.models.transformer.model.InfinityTransformer`) run its training
    forward sequence-parallel over ``group`` (the default group when None)."""
    sp = UlyssesSP(group)
    cfg = model.cfg
    if cfg.num_heads % sp.size or cfg.num_kv_heads % sp.size:
        raise ValueError(
            f"sequence parallel over {sp.size} ranks needs heads ({cfg.num_heads}) and key/value heads "
            f"({cfg.num_kv_heads}) divisible by {sp.size}"
        )
    model.sequence_parallel = sp
    return sp


def disable_sequence_parallel(model: nn.Module) -> None:
    model.sequence_parallel = None


def sp_loss_scale(sp_size: int) -> float:
    """Factor on the loss before ``backward`` so that FSDP's average over all ranks equals the
    average over data-parallel replicas of the full gradient (each SP rank holds a part)."""
    return float(sp_size)
