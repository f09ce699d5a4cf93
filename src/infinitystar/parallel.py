"""Ulysses sequence parallelism: the all-to-all between sequence and heads that training and inference share.

A sequence-parallel group of ``sp`` ranks splits a sequence of tokens; every rank runs the per-token parts of a
block (norms, projections, RoPE, MLP) on its own tokens. Only attention needs every token: around it q / k / v go
through an all-to-all from sequence-sharded ``[B, H, n, hd]`` (this rank's tokens, all heads) to head-sharded
``[B, H/sp, sp*n, hd]`` (this rank's heads, every token), each rank attends with its heads, and a second all-to-all
brings the output back. Training wraps these in autograd functions (``train.transformer.sequence_parallel``);
inference uses :class:`SequenceShard`, which a sharded :class:`~infinitystar.models.transformer.attention.KVCache`
carries so that :meth:`~infinitystar.models.transformer.model.InfinityTransformer.step` runs on this rank's tokens
and keeps this rank's key/value heads only.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from infinitystar.models.transformer.layers import AttendFn


def all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    """``all_to_all_single`` over dim 0 (chunk j goes to rank j, chunk j of the result came from rank j)."""
    x = x.contiguous()  # before empty_like, which would copy a permuted layout
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def seq_to_heads(x: torch.Tensor, sp: int, group) -> torch.Tensor:
    """``[B, H, n, hd]`` (this rank's positions, all heads) -> ``[B, H/sp, sp*n, hd]`` (its heads, all positions)."""
    b, h, n, hd = x.shape
    chunks = x.view(b, sp, h // sp, n, hd).permute(1, 0, 2, 3, 4)  # [sp, B, H/sp, n, hd]: chunk j -> rank j
    got = all_to_all(chunks, group)  # [sp, B, H/sp, n, hd]: got[j] = rank j's positions of my heads
    return got.permute(1, 2, 0, 3, 4).reshape(b, h // sp, sp * n, hd)  # positions in rank order


def heads_to_seq(x: torch.Tensor, sp: int, group) -> torch.Tensor:
    """``[B, H/sp, sp*n, hd]`` -> ``[B, H, n, hd]``: the inverse of :func:`seq_to_heads`."""
    b, hl, t, hd = x.shape
    n = t // sp
    chunks = x.view(b, hl, sp, n, hd).permute(2, 0, 1, 3, 4)  # [sp, B, H/sp, n, hd]: rank j's positions -> j
    got = all_to_all(chunks, group)  # [sp, B, H/sp, n, hd]: got[j] = head chunk j of my positions
    return got.permute(1, 0, 2, 3, 4).reshape(b, sp * hl, n, hd)  # heads in rank order


def check_heads(num_heads: int, num_kv_heads: int, sp_size: int) -> None:
    """Sequence parallel over ``sp_size`` ranks shards the heads: both head counts must divide evenly."""
    if num_kv_heads % sp_size or num_heads % sp_size:
        fits = [k for k in range(1, num_kv_heads + 1) if num_kv_heads % k == 0 and num_heads % k == 0]
        raise ValueError(
            f"sequence parallel size {sp_size} must divide the model's key/value heads ({num_kv_heads}) and query "
            f"heads ({num_heads}); accepted sizes for this model: {', '.join(map(str, fits))}"
        )


class SequenceShard:
    """This rank's part of a sequence-parallel inference step: a contiguous run of every scale's tokens, and the
    key/value heads ``kv_heads`` (with the query heads that use them).

    A scale of ``n`` tokens is cut into ``size`` runs of ``ceil(n / size)`` tokens; the last runs are padded with
    zeros (a 1-token scale leaves every rank but the first with padding only). Padded positions are dropped before
    attention, so no real token ever attends to one, and their outputs are never read.
    """

    def __init__(self, group, num_heads: int, num_kv_heads: int):
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        check_heads(num_heads, num_kv_heads, self.size)
        per = num_kv_heads // self.size
        self.kv_heads = slice(self.rank * per, (self.rank + 1) * per)

    def per_rank(self, n: int) -> int:
        """Tokens every rank holds (padding included) for a scale of ``n`` tokens."""
        return -(-n // self.size)

    def tokens(self, t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        """This rank's run of the ``n`` tokens along ``dim`` of ``t``, zero-padded to :meth:`per_rank`."""
        per = self.per_rank(n)
        start = min(self.rank * per, n)
        part = t.narrow(dim, start, min(per, n - start))
        if part.shape[dim] < per:
            pad = [0, 0] * (t.ndim - 1 - dim % t.ndim) + [0, per - part.shape[dim]]
            part = F.pad(part, pad)
        return part

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """The key/value heads this rank keeps of ``t [R, KV, L, hd]`` (a copy: the other heads are freed)."""
        return t[:, self.kv_heads].clone(memory_format=torch.contiguous_format)

    def wrap(self, attend: AttendFn, n: int) -> AttendFn:
        """``attend`` (over every real token of the scale, this rank's heads) between two all-to-alls.

        The wrapped function takes and returns this rank's tokens with every head (``[R, H, per, hd]``).
        """
        sp, group = self.size, self.group

        def sp_attend(q, k, v):
            per = q.shape[2]
            q, k, v = (seq_to_heads(t, sp, group)[:, :, :n] for t in (q, k, v))  # [R, heads/sp, n, hd]
            o = attend(q, k, v)  # [R, H/sp, n, hd]
            o = F.pad(o, (0, 0, 0, sp * per - n))  # [R, H/sp, sp*per, hd]
            return heads_to_seq(o, sp, group)  # [R, H, per, hd]

        return sp_attend
