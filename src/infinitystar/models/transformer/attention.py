"""Who attends to whom: the attention pattern of a training pack and the KV cache of a generation.

A scale sees all of its own tokens, the text and its ``ref_scales`` (for video clips: the last full-size scale of the
previous clip), nothing else; the text sees only itself. Training packs ``[visual | text | pad]`` rows and masks
them (a dense boolean mask, or a FlexAttention block mask that skips empty tiles); inference keeps the text K/V and,
per referenced scale, the K/V of its last repetition in a :class:`KVCache`, so each step attends without a mask."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from infinitystar.models.transformer.layers import AttendFn, sdpa
from infinitystar.schedule import Schedule

# --------------------------------------------------------------------------------------
# The attention pattern of a training pack
# --------------------------------------------------------------------------------------


def block_visibility(schedule: Schedule) -> torch.Tensor:
    """Who attends to whom, per block of a training pack: bool ``[S + 2, S + 2]``.

    Blocks ``0 .. S-1`` are the scales, ``S`` the text, ``S + 1`` the padding; entry ``[q, k]``
    is True when block q attends to block k. A scale sees itself, the text and its
    ``ref_scales``; the text sees itself; padding sees nothing and is seen by nothing. (The
    original's ``querysid_refsid`` has the same layout plus one unused row / column.)
    """
    s = len(schedule.scales)
    vis = torch.zeros(s + 2, s + 2, dtype=torch.bool)
    for sc in schedule.scales:
        vis[sc.index, sc.index] = True
        vis[sc.index, s] = True
        for r in sc.ref_scales:
            vis[sc.index, r] = True
    vis[s, s] = True
    return vis


def pack_block_ids(schedule: Schedule, text_lengths: Sequence[int], total: int) -> torch.Tensor:
    """Block id of every position of the packed rows ``[visual | text_b | pad]``: int64 ``[B, total]``."""
    s = len(schedule.scales)
    visual = torch.repeat_interleave(torch.arange(s), torch.tensor([sc.num_tokens for sc in schedule.scales]))  # [Nvis]
    rows = []
    for length in text_lengths:
        pad = total - visual.numel() - length
        rows.append(torch.cat([visual, torch.full((length,), s), torch.full((pad,), s + 1)]))
    return torch.stack(rows)  # [B, total]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def _dense_attend(block_ids: torch.Tensor, vis: torch.Tensor) -> AttendFn:
    """Masked SDPA over the packed rows; exact (fp32 softmax over the allowed keys).

    Padding rows would have no allowed key (NaN softmax, which would leak into every later
    layer through 0 * NaN); they are allowed to see themselves only. Nothing sees them, and
    their outputs are discarded, so this changes no visible result.
    """
    allowed = vis[block_ids[:, :, None], block_ids[:, None, :]]  # [B, T, T]
    allowed |= torch.eye(block_ids.shape[1], dtype=torch.bool, device=block_ids.device)
    mask = allowed[:, None]  # [B, 1, T, T], broadcast over heads
    return lambda q, k, v: sdpa(q, k, v, mask)


_COMPILED: dict[str, Callable] = {}


def _compiled(name: str) -> Callable:
    """``flex_attention`` / ``create_block_mask`` compiled once: eager flex attention is a slow
    reference that materialises the scores, and an eager block mask evaluates all T x T pairs."""
    if name not in _COMPILED:
        from torch.nn.attention import flex_attention as fa

        _COMPILED[name] = torch.compile(getattr(fa, name))  # goes dynamic after a new length
    return _COMPILED[name]


def _flex_attend(block_ids: torch.Tensor, vis: torch.Tensor, compiled: bool) -> AttendFn:
    """FlexAttention with a block mask built from the pack's block ids (empty tiles are skipped).
    ``compiled=False`` runs the eager reference implementation (CPU tests)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    b, t = block_ids.shape

    def mask_mod(bi, hi, qi, ki):
        return vis[block_ids[bi, qi], block_ids[bi, ki]]

    make_mask = _compiled("create_block_mask") if compiled else create_block_mask
    block_mask = make_mask(mask_mod, b, None, t, t, device=block_ids.device)
    fn = _compiled("flex_attention") if compiled else flex_attention

    def attend(q, k, v):
        return fn(q, k, v, block_mask=block_mask, scale=q.shape[-1] ** -0.5, enable_gqa=q.shape[1] != k.shape[1])

    return attend


# --------------------------------------------------------------------------------------
# KV cache for inference
# --------------------------------------------------------------------------------------


class KVCache:
    """Keys and values of one generation (R rows), per layer.

    Holds the text K/V once (never freed) and, for every scale that a later scale refers to,
    the K/V of its **last** repetition (what the original caches), stored pre-concatenated
    with the text as ``[text | scale]`` because that is exactly the context its users attend
    to. A stored scale is freed as soon as its last user (``Schedule.last_user``) has run.
    Keys are post-RoPE; both are ``[R, KV, n, hd]`` in the blocks' dtype.

    ``shard`` (an :class:`infinitystar.parallel.SequenceShard`, or None) makes it one rank's part of a
    sequence-parallel generation: it holds that rank's key/value heads only, and the model's steps run on that
    rank's tokens.
    """

    def __init__(self, schedule: Schedule, rows: int, depth: int, shard=None):
        if rows < 1:
            raise ValueError(f"batch_size must be >= 1, got {rows}")
        self.schedule = schedule
        self.rows = rows
        self.depth = depth
        self.shard = shard
        self.text_k: list[torch.Tensor | None] = [None] * depth
        self.text_v: list[torch.Tensor | None] = [None] * depth
        self.text_length = 0
        self.text_key_mask: torch.Tensor | None = None  #: [R, L] bool, None when every row is full
        self.scales: dict[int, list[tuple[torch.Tensor, torch.Tensor] | None]] = {}

    @property
    def has_text(self) -> bool:
        return self.text_k[0] is not None

    def set_text(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep the text's keys / values ``[R, KV, L, hd]`` of ``layer`` (this rank's heads when sharded)."""
        if self.shard is not None:
            k, v = self.shard.heads(k), self.shard.heads(v)
        self.text_k[layer], self.text_v[layer] = k, v

    def context(self, layer: int, refs: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K / V ``[R, KV, L + refs, hd]`` a scale with references ``refs`` attends to besides itself."""
        if not refs:
            return self.text_k[layer], self.text_v[layer]
        missing = [r for r in refs if r not in self.scales]
        if missing:
            raise RuntimeError(
                f"keys/values of scale(s) {missing} are not cached: run the last repetition of a "
                "referenced scale before the scales that refer to it"
            )
        if len(refs) == 1:
            return self.scales[refs[0]][layer]
        n = self.text_length  # several references: text once, then each reference's own tokens
        ks = [self.text_k[layer]] + [self.scales[r][layer][0][:, :, n:] for r in refs]
        vs = [self.text_v[layer]] + [self.scales[r][layer][1][:, :, n:] for r in refs]
        return torch.cat(ks, dim=2), torch.cat(vs, dim=2)

    def key_mask(self, num_keys: int) -> torch.Tensor | None:
        """Boolean mask ``[R, 1, 1, num_keys]`` hiding padded text keys (keys start with the text)."""
        if self.text_key_mask is None:
            return None
        rest = torch.ones(self.rows, num_keys - self.text_length, dtype=torch.bool, device=self.text_key_mask.device)
        return torch.cat([self.text_key_mask, rest], dim=1)[:, None, None, :]

    def store(self, scale: int, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Keep ``[text | scale]`` K/V of a scale's last repetition for its later users."""
        slots = self.scales.setdefault(scale, [None] * self.depth)
        slots[layer] = (torch.cat([self.text_k[layer], k], dim=2), torch.cat([self.text_v[layer], v], dim=2))

    def free_unused(self, current_scale: int, finished: bool) -> None:
        """Drop stored scales that no remaining step needs: those whose last user comes before
        ``current_scale`` and, once ``current_scale`` is ``finished`` (its last repetition ran),
        those whose last user is ``current_scale``. Checking at the start of a step too keeps
        this right when the generation loop skips steps."""
        for r in list(self.scales):
            last = self.schedule.last_user(r)
            if last < current_scale or (finished and last <= current_scale and r != current_scale):
                del self.scales[r]

    def nbytes(self) -> int:
        """Bytes held by cached keys and values."""
        total = sum(t.numel() * t.element_size() for t in self.text_k + self.text_v if t is not None)
        for slots in self.scales.values():
            for kv in slots:
                if kv is not None:
                    total += sum(t.numel() * t.element_size() for t in kv)
        return total
