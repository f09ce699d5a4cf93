"""The spacetime autoregressive transformer: Qwen3-style blocks, text as prefix tokens.

Architecture (the released InfinityStar 8B, fp32-exact to the original):

- ``text_proj``: Linear(text_channels -> C) turns text-encoder features into prefix tokens;
  ``cfg_uncond`` is the learned null text (in text-encoder space) for guidance.
- ``word_embed``: Linear(64 -> C) embeds the visual input of a step (the running sum of codes
  area-downsampled to the scale).
- ``blocks``: pre-RMSNorm, GQA self-attention with per-head q/k RMSNorm then 4-axis RoPE, SwiGLU
  MLP; no biases, no AdaLN, no cross-attention.
- ``norm`` + two fp32 heads: ``detail_head`` (64 bits x 2 logits) and ``semantic_head``
  (16 bits x 2 logits). A scale's kind (``Scale.semantic``) picks the head.

Attention is sparse in spacetime: a scale sees all of its own tokens, the text, and its
``ref_scales`` (for video clips: the last full-size scale of the previous clip), nothing else.
The text sees only itself. Two mechanisms implement it:

- training (:meth:`InfinityTransformer.forward`): one packed sequence ``[visual | text | pad]``
  per sample with a block mask (dense boolean mask on CPU, FlexAttention on CUDA);
- inference (:meth:`~InfinityTransformer.new_cache`, :meth:`~InfinityTransformer.prefill_text`,
  :meth:`~InfinityTransformer.step`): a :class:`KVCache` keeps the text K/V and, per referenced
  scale, the K/V of its *last* repetition until its last user has run; each step attends to
  ``[text, refs, own]`` without any mask.

The blocks are in :mod:`.layers`, the attention pattern and the KV cache in
:mod:`.attention`, how inference runs a block in :mod:`.block_runner`, the weight
formats in :mod:`.checkpoint`; the training loss lives with the trainer.

Shapes: B batch, R rows of a generation (cond / uncond), N tokens, C width, H query heads,
KV key/value heads, hd head width, L text tokens, S scales.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from infinitystar.models.config import TransformerConfig
from infinitystar.models.rope import packed_visual_rope, text_rope, visual_rope
from infinitystar.models.transformer.attention import (
    KVCache,
    _dense_attend,
    _flex_attend,
    _round_up,
    block_visibility,
    pack_block_ids,
)
from infinitystar.models.transformer.block_runner import BlockRunner, InferenceOptions, attend_in_chunks
from infinitystar.models.transformer.layers import AttendFn, Block, RMSNorm, sdpa
from infinitystar.schedule import Schedule, Step

ATTN_IMPLS = ("auto", "dense", "flex")


_FLEX_FAILED = False  #: set when the automatic FlexAttention path failed once in this process

# --------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------


class PackedLogits(NamedTuple):
    """Both heads on every visual token of a training pack (fp32)."""

    detail: torch.Tensor  #: [B, Nvis, 2 * detail_dim]
    semantic: torch.Tensor  #: [B, Nvis, 2 * semantic_dim]


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def _as_text_list(text, batch: int) -> list[torch.Tensor]:
    """Text features as one ``[L_b, Ct5]`` tensor per sample."""
    if isinstance(text, torch.Tensor):
        if text.ndim == 2:
            text = [text]
        elif text.ndim == 3:
            text = list(text.unbind(0))
        else:
            raise ValueError(f"text must be [L, Ct5], [B, L, Ct5] or a list of [L_b, Ct5], got {tuple(text.shape)}")
    text = list(text)
    if len(text) != batch:
        raise ValueError(f"got text for {len(text)} samples but visual input for {batch}")
    return text


class InfinityTransformer(nn.Module):
    """The InfinityStar transformer. Build with a :class:`TransformerConfig`; load the released
    weights with :func:`infinitystar.models.transformer.checkpoint.load_original_transformer`."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.cfg_uncond = nn.Parameter(torch.empty(cfg.text_maxlen, cfg.text_channels))
        self.sos_token = nn.Parameter(torch.empty(1, 1, c))  # in the checkpoint, unused by the model
        self.text_proj = nn.Linear(cfg.text_channels, c)
        self.word_embed = nn.Linear(cfg.latent_channels, c)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(c, cfg.norm_eps)
        self.detail_head = nn.Linear(c, 2 * cfg.detail_dim)
        self.semantic_head = nn.Linear(c, 2 * cfg.semantic_dim)
        #: how inference steps run (token chunks, torch.compile); change the fields freely
        self.inference = InferenceOptions()
        self._runner = BlockRunner()
        self.offload = None  #: a BlockOffload when the blocks live on the host (``offload.enable_block_offload``)
        self.quantization: str | None = None  #: 'int8' / 'fp8' once ``quantize.quantize_transformer`` ran
        if self.cfg_uncond.device.type != "meta":
            self.reset_parameters()

    # -- init ------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Fresh weights as the original trains from: Linear N(0, 0.02) with zero bias, norms 1,
        null text trunc-normal(std 1.2, seed 0) / sqrt(text_channels)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        nn.init.normal_(self.sos_token, std=0.02, generator=generator)
        null = torch.empty(self.cfg_uncond.shape)
        nn.init.trunc_normal_(null, std=1.2, generator=torch.Generator().manual_seed(0))
        self.cfg_uncond.copy_(null / math.sqrt(self.cfg.text_channels))

    # -- small helpers ---------------------------------------------------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the residual stream (that of the blocks)."""
        return self.blocks[0].attn.q_proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.word_embed.weight.device

    def _truncate_text(self, text: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Cut prompts longer than ``text_maxlen`` tokens (with a warning): the null text and the
        text RoPE positions only exist for that many tokens."""
        n = self.cfg.text_maxlen
        if text.shape[dim] > n:
            warnings.warn(
                f"prompt has {text.shape[dim]} tokens; only the first {n} (text_maxlen) are used",
                stacklevel=3,
            )
            text = text.narrow(dim, 0, n)
        return text

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """text_proj of features ``[..., L, Ct5]`` -> ``[..., L, C]`` in the residual dtype."""
        return self.text_proj(text.to(self.text_proj.weight.dtype)).to(self.compute_dtype)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """word_embed of visual inputs ``[..., N, 64]`` -> ``[..., N, C]`` in the residual dtype."""
        return self.word_embed(codes.to(self.word_embed.weight.dtype)).to(self.compute_dtype)

    def _head(self, head: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        """A head on already normalised features, in fp32 with autocast off (as the original)."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            return F.linear(h.float(), head.weight.float(), head.bias.float())

    def _rope(self, cos_sin: tuple[torch.Tensor, torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
        return cos_sin[0].to(device), cos_sin[1].to(device)

    # -- training forward --------------------------------------------------------------------
    def forward(
        self,
        codes: torch.Tensor,
        text: torch.Tensor | Sequence[torch.Tensor],
        schedule: Schedule,
        step_counters: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | None = None,
        *,
        cond_drop_prob: float = 0.0,
        generator: torch.Generator | None = None,
        attn_impl: str = "auto",
    ) -> PackedLogits:
        """Teacher-forced forward over a packed sequence; both heads on every visual token.

        ``codes [B, Nvis, 64]``: the visual input of every scale in schedule order (tokens
        (t, h, w) row-major), each taken at the repetition chosen for training.
        ``text``: ``[L, Ct5]`` (B = 1), ``[B, L, Ct5]`` or a list of ``[L_b, Ct5]``.
        ``step_counters``: the global step counter of the chosen repetition of every scale
        (``Scale.first_step + repetition``), ``[S]`` shared or ``[B, S]``; it is the scale-axis
        RoPE position. Default: every scale's last repetition (what inference caches).
        ``cond_drop_prob``: probability to replace a sample's text by the null text
        (``cfg_uncond[:L]``), drawn with ``generator``.
        ``attn_impl``: 'dense' (exact boolean-mask SDPA), 'flex' (FlexAttention block mask) or
        'auto' (flex on CUDA when available, falling back to dense with a warning).
        """
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        b, nvis, _ = codes.shape
        if nvis != schedule.num_visual_tokens():
            raise ValueError(f"codes has {nvis} tokens, the schedule packs {schedule.num_visual_tokens()}")
        texts = [self._truncate_text(t) for t in _as_text_list(text, b)]
        texts = self._drop_conditions(texts, cond_drop_prob, generator)
        counters = self._step_counters(schedule, step_counters, b)

        global _FLEX_FAILED
        auto_flex = attn_impl == "auto" and codes.is_cuda and not _FLEX_FAILED and _flex_available()
        if attn_impl == "flex" or auto_flex:
            try:
                return self._forward_packed(codes, texts, schedule, counters, flex=True)
            except Exception as exc:  # no Triton, unsupported shape, compile failure...
                if attn_impl == "flex":
                    raise
                _FLEX_FAILED = True  # do not retry (and re-warn) at every training step
                warnings.warn(
                    f"FlexAttention failed ({type(exc).__name__}: {exc}); using dense attention from now on",
                    stacklevel=2,
                )
        return self._forward_packed(codes, texts, schedule, counters, flex=False)

    def _drop_conditions(
        self, texts: list[torch.Tensor], prob: float, generator: torch.Generator | None
    ) -> list[torch.Tensor]:
        """Classifier-free-guidance training: each sample's text becomes the null text with ``prob``."""
        if prob <= 0:
            return texts
        drop = torch.rand(len(texts), generator=generator) < prob
        return [self.cfg_uncond[: t.shape[0]].to(t.dtype) if d else t for t, d in zip(texts, drop.tolist())]

    @staticmethod
    def _step_counters(schedule: Schedule, counters, batch: int) -> torch.Tensor:
        """Per-sample step counters ``[B, S]`` (int64)."""
        s = len(schedule.scales)
        if counters is None:
            counters = [sc.last_step for sc in schedule.scales]
        t = torch.as_tensor(counters, dtype=torch.int64)
        if t.ndim == 1:
            t = t.expand(batch, -1)  # [B, S]
        if tuple(t.shape) != (batch, s):
            raise ValueError(f"step_counters must be [S={s}] or [B={batch}, S={s}], got {tuple(t.shape)}")
        for sc in schedule.scales:
            col = t[:, sc.index]
            if bool(((col < sc.first_step) | (col > sc.last_step)).any()):
                raise ValueError(
                    f"step counter of scale {sc.index} must be in [{sc.first_step}, {sc.last_step}], got {col.tolist()}"
                )
        return t

    def _pack_rope(
        self, schedule: Schedule, counters: torch.Tensor, lengths: Sequence[int], total: int, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos / sin ``[B, 1, T, hd/2]`` of the packed rows (padding: identity rotation)."""
        hd, theta, off = self.cfg.head_dim, self.cfg.rope_theta, self.cfg.rope_text_offset
        cos_rows, sin_rows = [], []
        for row, length in zip(counters.tolist(), lengths):
            vc, vs = packed_visual_rope(schedule, row, hd, theta, off)  # [Nvis, hd/2]
            tc, ts = text_rope(length, hd, theta)  # [L_b, hd/2]
            pad = total - vc.shape[0] - length
            cos_rows.append(torch.cat([vc, tc, torch.ones(pad, hd // 2)]))
            sin_rows.append(torch.cat([vs, ts, torch.zeros(pad, hd // 2)]))
        cos = torch.stack(cos_rows)[:, None].to(device)  # [B, 1, T, hd/2], broadcast over heads
        sin = torch.stack(sin_rows)[:, None].to(device)
        return cos, sin

    def _forward_packed(
        self, codes: torch.Tensor, texts: list[torch.Tensor], schedule: Schedule, counters: torch.Tensor, flex: bool
    ) -> PackedLogits:
        """Rows ``[visual | text_b | zero padding]`` through every block under the sparse mask;
        final norm and both heads on the visual tokens."""
        if self.offload is not None:
            raise ValueError(
                "block offload is for inference (prefill_text / step); training needs the blocks on the device"
            )
        device = codes.device
        nvis = codes.shape[1]
        lengths = [t.shape[0] for t in texts]
        total = nvis + max(lengths)
        if flex:  # FlexAttention works on 128-token tiles
            total = _round_up(total, max(self.cfg.pad_to_multiplier, 128))
        sp = getattr(self, "sequence_parallel", None)  # set by train.sequence_parallel (Ulysses)
        if sp is not None:  # every sequence-parallel rank holds total / sp positions
            total = _round_up(total, sp.size)
        visual = self.embed_codes(codes)  # [B, Nvis, C]
        rows = []
        for i, t in enumerate(texts):
            pad = visual.new_zeros(total - nvis - t.shape[0], visual.shape[-1])
            rows.append(torch.cat([visual[i], self.embed_text(t.to(device)), pad]))  # [T, C]
        x = torch.stack(rows)  # [B, T, C]

        cos, sin = self._pack_rope(schedule, counters, lengths, total, device)
        block_ids = pack_block_ids(schedule, lengths, total).to(device)  # [B, T]
        vis = block_visibility(schedule).to(device)
        attend = _flex_attend(block_ids, vis, compiled=device.type == "cuda") if flex else _dense_attend(block_ids, vis)
        if sp is not None:  # local positions [B, T/sp, C]; all-to-all around attention
            x, cos, sin, attend = sp.shard(x), sp.shard_rope(cos), sp.shard_rope(sin), sp.wrap(attend)
        for blk in self.blocks:
            x = blk(x, cos, sin, attend)
        if sp is not None:  # norm and heads on the local positions, logits gathered [B, Nvis, 2d]
            h = self.norm(x)
            heads = (self.detail_head, self.semantic_head)
            return PackedLogits(*(sp.gather(self._head(head, h))[:, :nvis] for head in heads))
        h = self.norm(x[:, :nvis])  # [B, Nvis, C]
        return PackedLogits(self._head(self.detail_head, h), self._head(self.semantic_head, h))

    # -- inference with a KV cache -------------------------------------------------------------
    def new_cache(self, schedule: Schedule, batch_size: int, shard=None) -> KVCache:
        """An empty cache for one generation of ``batch_size`` rows (2 with guidance); ``shard``: this rank's part
        of a sequence-parallel generation (an :class:`infinitystar.parallel.SequenceShard`)."""
        return KVCache(schedule, batch_size, len(self.blocks), shard)

    def text_rows(
        self,
        text: torch.Tensor,
        guidance: bool,
        negative: torch.Tensor | None = None,
        return_lengths: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[int]]:
        """The text rows of a generation ``[R, L, Ct5]``: row 0 the prompt ``text [L, Ct5]``;
        with guidance, row 1 the negative prompt or, by default, the null text ``cfg_uncond[:L]``.

        A negative prompt of another length is zero-padded to the longer one; the padded keys
        must then be masked, so the lengths are needed: pass ``return_lengths=True`` and hand
        them to :meth:`prefill_text` (without it this case raises instead of attending to
        padding as the original would).
        """
        if text.ndim != 2:
            raise ValueError(f"text must be [L, Ct5], got {tuple(text.shape)}")
        text = self._truncate_text(text)
        if not guidance:
            if negative is not None:
                warnings.warn("a negative prompt has no effect without guidance; it is ignored", stacklevel=2)
            rows, lengths = text[None], [text.shape[0]]  # [1, L, Ct5]
        else:
            if negative is None:
                neg = self.cfg_uncond[: text.shape[0]].detach().to(device=text.device, dtype=text.dtype)
            else:
                if negative.ndim != 2 or negative.shape[1] != text.shape[1]:
                    raise ValueError(f"negative must be [L', {text.shape[1]}], got {tuple(negative.shape)}")
                neg = self._truncate_text(negative).to(device=text.device, dtype=text.dtype)
            lengths = [text.shape[0], neg.shape[0]]
            n = max(lengths)
            if n != min(lengths) and not return_lengths:
                raise ValueError(
                    f"the negative prompt has {neg.shape[0]} tokens and the prompt {text.shape[0]}: "
                    "call text_rows(..., return_lengths=True) and pass the lengths to prefill_text "
                    "so that the padding is masked"
                )
            rows = torch.stack([F.pad(t, (0, 0, 0, n - t.shape[0])) for t in (text, neg)])  # [2, n, Ct5]
        return (rows, lengths) if return_lengths else rows

    @torch.no_grad()
    def prefill_text(self, cache: KVCache, text: torch.Tensor, lengths: Sequence[int] | None = None) -> None:
        """Run the text rows ``[R, L, Ct5]`` through every block (text attends to itself only)
        and cache their keys / values. The output is discarded (the original's "step000").

        ``lengths`` (per row) marks zero-padded rows; their padded keys are masked everywhere.
        """
        if text.ndim != 3 or text.shape[0] != cache.rows:
            raise ValueError(f"text must be [R={cache.rows}, L, Ct5], got {tuple(text.shape)}")
        text = self._truncate_text(text, dim=1)
        r, n, _ = text.shape
        cache.text_length = n
        cache.text_key_mask = None
        if lengths is not None:
            lengths = [min(int(v), n) for v in lengths]
            if len(lengths) != r or min(lengths) < 1:
                raise ValueError(f"lengths must give 1..{n} tokens for each of the {r} rows, got {lengths}")
            if min(lengths) < n:
                valid = torch.arange(n)[None] < torch.tensor(lengths)[:, None]  # [R, L]
                cache.text_key_mask = valid.to(self.device)
        cache.scales.clear()
        x = self.embed_text(text.to(self.device))  # [R, L, C]
        cos, sin = self._rope(text_rope(n, self.cfg.head_dim, self.cfg.rope_theta), x.device)
        mask = cache.key_mask(n)
        self._run_blocks(x, cos, sin, lambda i: self._text_attend(cache, i, mask))

    @staticmethod
    def _text_attend(cache: KVCache, layer: int, mask: torch.Tensor | None) -> AttendFn:
        def attend(q, k, v):
            cache.set_text(layer, k, v)
            return sdpa(q, k, v, mask)

        return attend

    @torch.no_grad()
    def step(self, cache: KVCache, codes_input: torch.Tensor, schedule: Schedule, step: Step) -> torch.Tensor:
        """Logits ``[R, N, 2d]`` (fp32, before temperature and guidance) of one step.

        ``codes_input [R, N, 64]``: the step's visual input, tokens (t, h, w) row-major. The
        tokens attend to ``[text, ref scales' cached K/V, themselves]``; the head is the scale's
        kind. On the last repetition of a scale that a later scale refers to, its K/V is cached.
        With a sharded cache (sequence parallel) the logits are this rank's run of tokens
        (``SequenceShard.tokens``: ``[R, ceil(N / sp), 2d]``, zero-padded at the end).
        """
        if not cache.has_text:
            raise RuntimeError("prefill_text(cache, text) must run before the first step")
        if cache.schedule is not schedule and cache.schedule != schedule:
            raise ValueError("step() got another schedule than the one the cache was made for")
        sc = schedule.scales[step.scale]
        expected = (cache.rows, sc.num_tokens, self.cfg.latent_channels)
        if tuple(codes_input.shape) != expected:
            raise ValueError(
                f"codes_input must be {list(expected)} for scale {sc.index}, got {list(codes_input.shape)}"
            )
        cache.free_unused(sc.index, finished=False)
        store = step.is_last_repetition and schedule.last_user(sc.index) > sc.index
        codes = codes_input.to(self.device)
        rope = visual_rope(
            schedule, sc.index, step.index, self.cfg.head_dim, self.cfg.rope_theta, self.cfg.rope_text_offset
        )
        cos, sin = self._rope(rope, codes.device)  # [N, hd/2]
        shard, n = cache.shard, sc.num_tokens
        if shard is not None:  # this rank's tokens [R, ceil(N/sp), 64]; all-to-alls around attention
            codes, cos, sin = shard.tokens(codes, n, 1), shard.tokens(cos, n, 0), shard.tokens(sin, n, 0)
        x = self.embed_codes(codes)  # [R, N, C] (this rank's tokens when sharded)
        chunk = self.inference.token_chunk
        stored = sc.index if store else None

        def attend_for(i: int) -> AttendFn:
            attend = self._step_attend(cache, i, sc.ref_scales, stored, chunk)
            return attend if shard is None else shard.wrap(attend, n)

        x = self._run_blocks(x, cos, sin, attend_for)
        if step.is_last_repetition:
            cache.free_unused(sc.index, finished=True)
        head = self.semantic_head if sc.semantic else self.detail_head
        return self._head(head, self.norm(x))

    def _run_blocks(self, x: torch.Tensor, cos, sin, attend_for) -> torch.Tensor:
        """Every block on ``x`` (``attend_for(i)``: block i's attention) under :attr:`inference` and :attr:`offload`."""
        return self._runner.run_blocks(self.inference, self.blocks, x, cos, sin, attend_for, self.offload)

    @staticmethod
    def _step_attend(
        cache: KVCache, layer: int, refs: Sequence[int], store_as: int | None, chunk: int | None = None
    ) -> AttendFn:
        def attend(q, k, v):
            ctx_k, ctx_v = cache.context(layer, refs)  # [R, KV, L + refs, hd]
            if store_as is not None:
                cache.store(store_as, layer, k, v)
            keys = torch.cat([ctx_k, k], dim=2)  # [R, KV, L + refs + N, hd]
            values = torch.cat([ctx_v, v], dim=2)
            mask = cache.key_mask(keys.shape[2])
            return attend_in_chunks(lambda qc: sdpa(qc, keys, values, mask), q, chunk)

        return attend


def _flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except Exception:
        return False
    return True
