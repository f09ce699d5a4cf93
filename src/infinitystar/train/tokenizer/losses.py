"""Tokenizer training: the loss terms on pixels and on the posterior (reconstruction, KL, GAN).

What the trainer (:mod:`infinitystar.train.tokenizer.trainer`) adds up besides the quantizer's own
auxiliary loss (that one is computed inside the straight-through pyramid, in
:mod:`infinitystar.train.tokenizer.pyramid`): L1 reconstruction, KL of the posterior to N(0, 1),
PSNR for the metrics, the hinge GAN losses and VQGAN's adaptive adversarial weight. Kept apart
from the quantizer so that the continuous stage and the discriminator need none of it.

Shapes: videos ``[B, 3, T, H, W]`` in [-1, 1]; posterior moments ``[B, 64, t, h, w]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "kl_divergence",
    "l1_loss",
    "reconstruction_psnr",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
]


def l1_loss(recon: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over every pixel of every frame."""
    return (recon - target).abs().mean()


def kl_divergence(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std^2) || N(0, 1)), averaged over elements (the continuous stage's regulariser).

    ``std`` comes from the clamped log-variance (``VideoVAE.moments_from_encoder_output``).
    """
    var = std.square()
    logvar = 2 * torch.log(std)
    return 0.5 * (mean.square() + var - 1.0 - logvar).mean()


def reconstruction_psnr(recon: Tensor, target: Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (the reconstruction is clamped first; peak-to-peak 2)."""
    from infinitystar.evaluation.metrics import psnr

    return psnr(recon.detach().clamp(-1, 1), target.detach(), data_range=2.0)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``, halved."""
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss: ``-mean(D(fake))``."""
    return -fake_logits.mean()


def adaptive_gan_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """VQGAN's balance: ``|grad rec| / (|grad gan| + 1e-4)`` at the decoder's last layer (detached).

    Keeps the adversarial gradient at the scale of the reconstruction gradient whatever the
    losses' magnitudes; clamped to ``[0, max_weight]``.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
