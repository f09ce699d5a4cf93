"""The transformer's layers: Qwen3-style blocks (pre-RMSNorm, GQA self-attention with per-head q/k RMSNorm and 4-axis
RoPE, SwiGLU MLP), no biases, no AdaLN, no cross-attention.

*Who* a token attends to is not decided here: a block is handed an ``attend(q, k, v)`` function (a masked pack in
training, the KV cache at inference), so the same weights serve both. A block is cut at attention
(``qkv -> attend -> attn_residual -> mlp_residual``) so that inference can compile the attention-free pieces and
run them over token chunks (``block_runner``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from infinitystar.models.config import TransformerConfig
from infinitystar.models.rope import apply_rope

#: attend(q [B, H, n, hd], k [B, KV, m, hd], v [B, KV, m, hd]) -> [B, H, n, hd]


#: attend(q [B, H, n, hd], k [B, KV, m, hd], v [B, KV, m, hd]) -> [B, H, n, hd]
AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back: bf16 residual streams keep an exact normaliser."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention with native GQA (no repeated K/V copies), scale hd^-0.5.

    Query head h uses key/value head ``h // (H / KV)``, as the original's ``repeat_kv`` does.
    """
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=q.shape[-1] ** -0.5, enable_gqa=q.shape[1] != k.shape[1]
    )


class Attention(nn.Module):
    """GQA self-attention: bias-free projections, per-head q/k RMSNorm (shared over heads)
    before RoPE. *Who* attends to whom is decided by the ``attend`` function it is handed."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        c, hd = cfg.embed_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(c, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(c, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(c, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * hd, c, bias=False)
        self.q_norm = RMSNorm(hd, cfg.norm_eps)
        self.k_norm = RMSNorm(hd, cfg.norm_eps)

    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q [B, H, n, hd], k / v [B, KV, n, hd]; q and k normalised then rotated."""
        b, n, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, n, self.num_heads, self.head_dim))  # [B, n, H, hd]
        k = self.k_norm(self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim))  # [B, n, KV, hd]
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim)  # [B, n, KV, hd]
        q = apply_rope(q.transpose(1, 2), cos, sin)  # [B, H, n, hd]
        k = apply_rope(k.transpose(1, 2), cos, sin)  # [B, KV, n, hd]
        return q, k, v.transpose(1, 2)  # v: [B, KV, n, hd]

    def output(self, o: torch.Tensor) -> torch.Tensor:
        """o_proj of the attention output ``o [B, H, n, hd]`` with its heads merged -> ``[B, n, C]``."""
        b, _, n, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        return self.output(attend(*self.project(x, cos, sin)))


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, bias-free."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: ``h = x + attn(norm(x))``, ``y = h + mlp(norm(h))``."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.mlp = SwiGLU(cfg.embed_dim, cfg.mlp_hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: AttendFn) -> torch.Tensor:
        return self.mlp_residual(self.attn_residual(x, attend(*self.qkv(x, cos, sin))))

    # The block cut at attention: the pieces around ``attend`` are pure tensor functions, so
    # inference can compile them (dynamic shapes) and run them over token chunks (block_runner).
    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """q [B, H, n, hd], k / v [B, KV, n, hd] of ``x [B, n, C]``."""
        return self.attn.project(self.attn_norm(x), cos, sin)

    def attn_residual(self, x: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
        """``x + o_proj(o)`` for the attention output ``o [B, H, n, hd]``."""
        return x + self.attn.output(o)  # [B, n, C]

    def mlp_residual(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.mlp(self.mlp_norm(h))
