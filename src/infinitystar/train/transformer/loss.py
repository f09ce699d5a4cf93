"""The transformer's training loss: per-bit two-class cross-entropy with each scale's head, weighted per scale.

Kept apart from the model (which only produces logits) so that inference code never imports training concerns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from infinitystar.schedule import Schedule


@dataclass
class LossOutput:
    loss: torch.Tensor  #: scalar, the scale-weighted loss
    token_loss: torch.Tensor  #: [B, Nvis] mean over a token's bits of the 2-class cross-entropy
    token_acc: torch.Tensor  #: [B, Nvis] fraction of a token's bits predicted right (argmax)
    scale_loss: torch.Tensor  #: [B, S] mean token loss per scale
    scale_weights: torch.Tensor  #: [S] weights of the scales (sum 1); loss = mean over samples


# --------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------


def scale_loss_weights(schedule: Schedule, reweight_by_scale: float = 4.0, max_reweight: float = 40.0) -> torch.Tensor:
    """Per-scale loss weights ``[S]`` (sum 1): ``w_s = min(max_reweight, (V_max / V_s)^(1/(1+r))) * V_s``.

    V_s = t*h*w of scale s, V_max that of the largest scale. ``r = 0`` turns the reweighting
    off (the original's flag is falsy): ``w_s = V_s``, i.e. a plain mean over all tokens.
    Small scales get more weight than their token count so that the coarse structure is learned.
    """
    vol = torch.tensor([float(sc.num_tokens) for sc in schedule.scales], dtype=torch.float64)
    if reweight_by_scale:
        per_token = (vol.max() / vol) ** (1.0 / (1.0 + reweight_by_scale))
        w = torch.clamp(per_token, max=max_reweight) * vol
    else:
        w = vol
    return (w / w.sum()).float()


def bit_loss(
    detail_logits: torch.Tensor,
    semantic_logits: torch.Tensor,
    labels: Sequence[torch.Tensor],
    schedule: Schedule,
    *,
    reweight_by_scale: float = 4.0,
    max_reweight: float = 40.0,
) -> LossOutput:
    """Per-bit 2-class cross-entropy with each scale's head, weighted per scale.

    ``detail_logits [B, Nvis, 2*64]`` / ``semantic_logits [B, Nvis, 2*16]``: both heads on the
    pack (:meth:`InfinityTransformer.forward`). ``labels``: per scale the bits of the chosen
    repetition, anything that reshapes to ``[B, N_s, d_s]`` (e.g. ``[B, pt, ph, pw, d]``).
    Token loss = mean over its d bits; scale loss = mean over its tokens; total = sum over
    samples and scales of ``scale_weights`` x scale loss / B.
    """
    if len(labels) != len(schedule.scales):
        raise ValueError(f"need labels for each of the {len(schedule.scales)} scales, got {len(labels)}")
    b = detail_logits.shape[0]
    token_loss, token_acc, scale_loss = [], [], []
    start = 0
    for sc, lab in zip(schedule.scales, labels):
        d = schedule.bits(sc.index)
        logits = (semantic_logits if sc.semantic else detail_logits)[:, start : start + sc.num_tokens]
        if logits.shape[-1] != 2 * d:
            raise ValueError(f"scale {sc.index} needs {2 * d} logits per token, got {logits.shape[-1]}")
        logits = logits.float().unflatten(-1, (d, 2))  # [B, N, d, 2]: last axis = (bit 0, bit 1)
        lab = lab.to(logits.device).long().reshape(b, sc.num_tokens, d)  # [B, N, d]
        ce = F.cross_entropy(logits.permute(0, 3, 1, 2), lab, reduction="none")  # [B, N, d]
        tl = ce.mean(-1)  # [B, N]
        token_loss.append(tl)
        token_acc.append((logits.argmax(-1) == lab).float().mean(-1))  # [B, N]
        scale_loss.append(tl.mean(-1))  # [B]
        start += sc.num_tokens
    if start != detail_logits.shape[1]:
        raise ValueError(f"logits have {detail_logits.shape[1]} tokens, the schedule packs {start}")
    weights = scale_loss_weights(schedule, reweight_by_scale, max_reweight).to(detail_logits.device)
    per_scale = torch.stack(scale_loss, dim=1)  # [B, S]
    loss = (per_scale * weights).sum() / b
    return LossOutput(loss, torch.cat(token_loss, 1), torch.cat(token_acc, 1), per_scale, weights)
