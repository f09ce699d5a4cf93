"""A small patch discriminator for the tokenizer's adversarial loss (3-D spacetime or 2-D per frame).

PatchGAN design: strided 4x4 convolutions halve the image ``layers`` times while the width
doubles, then a 3x3 convolution gives one logit per patch. The 3-D variant uses 3-frame
temporal kernels (stride 1 in time), so it also judges motion; the 2-D variant judges every
frame on its own. GroupNorm instead of BatchNorm: tokenizer batches are tiny (often 1 clip),
where batch statistics are meaningless. Hinge losses live in
:mod:`infinitystar.train.tokenizer.losses`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

__all__ = ["DiscriminatorConfig", "PatchDiscriminator"]


@dataclass(frozen=True)
class DiscriminatorConfig:
    """``kind``: "3d" (spacetime patches) or "2d" (per frame); ``channels``: first width;
    ``layers``: number of stride-2 convolutions (the receptive field grows with it)."""

    kind: str = "3d"
    channels: int = 64
    layers: int = 3
    max_channels: int = 512

    def __post_init__(self) -> None:
        if self.kind not in ("3d", "2d"):
            raise ValueError(f"discriminator kind must be '3d' or '2d', got {self.kind!r}")
        if self.channels < 1 or self.layers < 1 or self.max_channels < 1:
            raise ValueError(f"discriminator channels/layers must be positive, got {asdict(self)}")


def _groups(c: int) -> int:
    g = min(32, c)
    while c % g:
        g -= 1
    return g


class PatchDiscriminator(nn.Module):
    """``x [B, 3, T, H, W]`` in [-1, 1] -> patch logits (``[B, 1, T, h, w]`` for 3-D, ``[B*T, 1, h, w]`` for 2-D).

    H and W must be multiples of ``2 ** layers``.
    """

    def __init__(self, cfg: DiscriminatorConfig | None = None, in_channels: int = 3, seed: int = 0):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else DiscriminatorConfig()
        three_d = cfg.kind == "3d"
        conv = nn.Conv3d if three_d else nn.Conv2d
        k_down = (3, 4, 4) if three_d else 4
        s_down = (1, 2, 2) if three_d else 2
        p_down = 1
        layers: list[nn.Module] = [conv(in_channels, cfg.channels, k_down, s_down, p_down), nn.LeakyReLU(0.2)]
        c = cfg.channels
        for _ in range(1, cfg.layers):
            c_next = min(2 * c, cfg.max_channels)
            layers += [
                conv(c, c_next, k_down, s_down, p_down, bias=False),
                nn.GroupNorm(_groups(c_next), c_next),
                nn.LeakyReLU(0.2),
            ]
            c = c_next
        layers += [conv(c, c, 3, 1, 1, bias=False), nn.GroupNorm(_groups(c), c), nn.LeakyReLU(0.2)]
        layers.append(conv(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)
        self._init(seed)

    def _init(self, seed: int) -> None:
        """N(0, 0.02) convolutions (the usual GAN init), drawn from a seeded generator."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)
                    if m.bias is not None:
                        m.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5 or x.shape[1] != self.net[0].in_channels:
            raise ValueError(f"discriminator input must be [B, {self.net[0].in_channels}, T, H, W], got {x.shape}")
        f = 2**self.cfg.layers
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"discriminator input H, W must be multiples of {f}, got {tuple(x.shape[-2:])}")
        if self.cfg.kind == "2d":
            b, c, t, h, w = x.shape
            x = x.transpose(1, 2).reshape(b * t, c, h, w)  # [B*T, C, H, W]: frames judged alone
        return self.net(x)
