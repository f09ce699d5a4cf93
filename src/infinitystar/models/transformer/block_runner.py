"""How inference runs a transformer block: token chunks for bounded memory, torch.compile with a fallback.

A block at inference is ``qkv -> attend -> attn_residual -> mlp_residual`` (see
:class:`~infinitystar.models.transformer.model.Block`). ``attend`` holds the KV-cache logic and stays eager; the three
other pieces are pure tensor functions, so they compile once with dynamic token counts and serve every
scale and every block. The MLP is the largest activation of a step (four ``[R, N, mlp_hidden]``
tensors: 19 GB in bf16 for the 8B model's last 720p scale of 72,000 tokens), so on large scales it runs
over chunks of ``token_chunk`` tokens, and attention's queries likewise.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class InferenceOptions:
    """How :meth:`~infinitystar.models.transformer.model.InfinityTransformer.step` runs; none of it changes what is
    computed (chunks and compiled kernels can round differently in the last bits).

    ``token_chunk``: every per-token part of a block (norms, projections, RoPE, MLP) and attention's
    queries process at most this many tokens per row at a time (``None``: whole scales). The default
    only touches scales larger than any CPU model uses; on the 8B model it bounds the MLP's activations
    by 8192 x 2 rows x 16384 x 4 tensors (2 GB in bf16).
    ``compile``: ``torch.compile`` the block's attention-free pieces (dynamic shapes); if compiling fails
    (no C++ compiler, unsupported backend) a warning is given and the blocks run eagerly.
    ``compile_mode``: torch.compile's mode; ``reduce-overhead`` adds CUDA graphs for the many small scales.
    """

    token_chunk: int | None = 8192
    compile: bool = False
    compile_mode: str = "default"

    def __post_init__(self) -> None:
        if self.token_chunk is not None and (not isinstance(self.token_chunk, int) or self.token_chunk < 1):
            raise ValueError(f"token_chunk must be a positive integer or None, got {self.token_chunk!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; accepted: {', '.join(COMPILE_MODES)}")


class _CompiledOrEager:
    """``torch.compile(fn)``; if a compiled call raises, warn once and run ``fn`` eagerly from then on (a
    genuine error in ``fn`` then surfaces from the eager call)."""

    def __init__(self, fn: Callable, mode: str):
        self.eager = fn
        self.compiled = torch.compile(fn, dynamic=True, mode=mode)
        self.failed = False

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 - any compile failure means: run eagerly
                self.failed = True
                warnings.warn(
                    f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                    "running the blocks eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self.eager(*args)


class BlockRunner:
    """Runs blocks at inference under :class:`InferenceOptions`; keeps the (compiled) block pieces, built
    lazily and rebuilt when the compile settings change."""

    def __init__(self):
        self._key: tuple | None = None
        self._fns: tuple[Callable, Callable, Callable] | None = None

    @property
    def compile_failed(self) -> bool:
        return self._fns is not None and any(getattr(f, "failed", False) for f in self._fns)

    def _functions(self, options: InferenceOptions, block_type: type) -> tuple[Callable, Callable, Callable]:
        """The block class's three pieces as plain functions of ``(block, ...)``: one compiled function then
        serves every block (they differ in weights only)."""
        key = (options.compile, options.compile_mode, block_type)
        if self._fns is None or key != self._key:
            plain = (block_type.qkv, block_type.attn_residual, block_type.mlp_residual)
            if options.compile:
                self._fns = tuple(_CompiledOrEager(f, options.compile_mode) for f in plain)
            else:
                self._fns = plain
            self._key = key
        return self._fns

    def run_blocks(
        self, options: InferenceOptions, blocks, x: torch.Tensor, cos, sin, attend_for: Callable, offload=None
    ) -> torch.Tensor:
        """Every block in turn on ``x [R, N, C]``, block ``i`` with ``attend_for(i)``. With ``offload`` (a
        :class:`~infinitystar.models.transformer.offload.BlockOffload`) each block is brought to the device for its
        turn and the next one prefetched; whatever happens, no block is left on the device afterwards."""
        if offload is None:
            for i, blk in enumerate(blocks):
                x = self(options, blk, x, cos, sin, attend_for(i))
            return x
        try:
            for i in range(len(blocks)):
                blk = offload.enter(i)
                x = self(options, blk, x, cos, sin, attend_for(i))
                offload.leave(i)
        finally:
            offload.finish()
        return x

    def __call__(
        self, options: InferenceOptions, blk, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend
    ) -> torch.Tensor:
        """One block on ``x [R, N, C]`` with ``attend(q, k, v)``; same result as ``blk(x, cos, sin, attend)``.

        A block sharded with FSDP2 (``fully_shard``, weight sharding at inference) gathers its weights in its module
        call; when it runs as pieces instead, they are gathered here around them and freed after.
        """
        chunk = options.token_chunk
        n = x.shape[1]
        whole = chunk is None or n <= chunk or torch.is_grad_enabled()
        if whole and not options.compile:
            return blk(x, cos, sin, attend)  # the module call itself (its hooks run)
        sharded = callable(getattr(blk, "unshard", None))  # FSDP2: the module call would gather its weights
        if sharded:
            blk.unshard()
        try:
            return self._pieces(options, blk, x, cos, sin, attend, whole)
        finally:
            if sharded:
                blk.reshard()

    def _pieces(self, options: InferenceOptions, blk, x, cos, sin, attend, whole: bool) -> torch.Tensor:
        """The block as its three (compiled) pieces; ``whole`` False: over token chunks (a scale larger than
        ``token_chunk``)."""
        chunk = options.token_chunk
        n = x.shape[1]
        qkv, attn_residual, mlp_residual = self._functions(options, type(blk))
        if whole:
            q, k, v = qkv(blk, x, cos, sin)
            return mlp_residual(blk, attn_residual(blk, x, attend(q, k, v)))
        # Pass 1: q, k, v chunk by chunk (the normalised input and RoPE's fp32 temporaries never exist
        # for the whole scale). Attention needs every key, so it runs once (over query chunks inside
        # ``attend``). Pass 2: both residual branches chunk by chunk, written over the block's input.
        bounds = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
        q = k = v = None
        for s, e in bounds:
            parts = qkv(blk, x[:, s:e], cos[s:e], sin[s:e])  # each [R, heads, e - s, hd]
            if q is None:
                q, k, v = (t.new_empty(*t.shape[:2], n, t.shape[3]) for t in parts)
            for full, piece in zip((q, k, v), parts):
                full[:, :, s:e] = piece
        o = attend(q, k, v)  # [R, H, N, hd]
        del q, k, v
        for s, e in bounds:
            x[:, s:e] = mlp_residual(blk, attn_residual(blk, x[:, s:e], o[:, :, s:e]))
        return x


def attend_in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], q: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """``fn(q)`` for queries ``q [R, H, N, hd]``, over query chunks of ``chunk`` tokens when N is larger
    (every query attends to the same keys, so chunks are independent); output preallocated."""
    n = q.shape[2]
    if chunk is None or n <= chunk:
        return fn(q)
    out = None
    for s in range(0, n, chunk):
        part = fn(q[:, :, s : s + chunk])  # [R, H, n_chunk, hd]
        if out is None:
            out = part.new_empty(*part.shape[:2], n, part.shape[3])
        out[:, :, s : s + chunk] = part
    return out
