"""The multi-scale BSQ quantizer in the tokenizer's training loop (straight-through, differentiable).

Tokenizer stage 2 trains the VAE through the quantizer, so the forward pass must produce exactly
the codes inference will see. :func:`quantize_pyramid_ste` runs the multi-scale residual of
:func:`infinitystar.models.quantizer.encode_pyramid` (same schedule, same two-stage 16-bit semantic /
64-bit detail widths, same channel/space resampling, same per-clip reset), so its codes are
bit-identical to the inference tokeniser's. Gradients pass the sign with a straight-through
estimator on the L2-normalised residual (as BSQ does): ``q_ste = q + (z - z.detach())`` equals
``q`` exactly in the forward pass (``z - z`` is an exact zero) and has the identity Jacobian with
respect to ``z``.

Also here, because they are computed inside that loop or shape it: the pyramid for arbitrary
training sizes (:func:`tokenizer_schedule`), stochastic quantizer depth
(:func:`draw_quantizer_depth`, random skipping of detail scales), and the BSQ auxiliary loss
(commitment + factorised entropy terms, :class:`BSQLossConfig`, :func:`bsq_entropy`). The
reconstruction / KL / GAN terms are in :mod:`infinitystar.train.tokenizer.losses`.

Shapes: latents ``[B, 64, t, h, w]``; per-step residuals ``[B, d, pt, ph, pw]``; bits
``[B, pt, ph, pw, d]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from infinitystar.models.quantizer import LATENT_CHANNELS, bits_to_codes, quantize_bits, walk_pyramid
from infinitystar.schedule import SCHEDULE_SPECS, Schedule, build_schedule, pyramid_schedule
from infinitystar.sizes import aspect_templates, nearest_template, spatial_scales

__all__ = [
    "BSQLossConfig",
    "QuantizerOutput",
    "tokenizer_schedule",
    "draw_quantizer_depth",
    "bsq_entropy",
    "quantize_pyramid_ste",
    "best_latent_scale",
]


# --------------------------------------------------------------------------------------------
# Schedules for arbitrary training sizes
# --------------------------------------------------------------------------------------------


def _released_match(t: int, h: int, w: int, frames_per_clip: int) -> Schedule | None:
    """The released 480p / 720p schedule when ``(h, w)`` is exactly one of its full sizes."""
    for name in SCHEDULE_SPECS:
        sizes = spatial_scales(h / w, name)
        if sizes[-1] == (h, w):
            return build_schedule(h / w, name, t, frames_per_clip=frames_per_clip)
    return None


def tokenizer_schedule(
    t: int,
    h: int,
    w: int,
    *,
    repetitions: int | None = None,
    detail_scale_min_tokens: int | None = None,
    frames_per_clip: int = 20,
) -> Schedule:
    """The spacetime pyramid used to quantise a ``[B, 64, t, h, w]`` latent during tokenizer training.

    Rule: if ``(h, w)`` is the full size of a released 480p / 720p template and neither option is
    given, this is exactly the released schedule (its repetitions and 350 / 750 detail threshold).
    Otherwise the spatial sizes are those of the nearest aspect template that fit inside
    ``(h, w)`` (in order), ending with ``(h, w)`` itself; every scale is repeated ``repetitions``
    times (default 1) and a scale is a 64-bit detail scale when ``ph * pw >=
    detail_scale_min_tokens`` (default 350, the 480p value). Clips are cut as in
    :func:`~infinitystar.schedule.build_schedule`: the first latent frame is the image pyramid,
    then clips of ``frames_per_clip`` latent frames.
    """
    if min(t, h, w) < 1:
        raise ValueError(f"latent size (t, h, w) must be positive, got {(t, h, w)}")
    if repetitions is None and detail_scale_min_tokens is None:
        released = _released_match(t, h, w, frames_per_clip)
        if released is not None:
            return released
    reps = 1 if repetitions is None else int(repetitions)
    if reps < 1:
        raise ValueError(f"repetitions must be >= 1, got {repetitions}")
    threshold = 350 if detail_scale_min_tokens is None else int(detail_scale_min_tokens)
    template = aspect_templates()[nearest_template(h / w)]
    sizes: list[tuple[int, int]] = []
    for ph, pw in template:
        if ph <= h and pw <= w and (not sizes or sizes[-1] != (ph, pw)):
            sizes.append((ph, pw))
    if not sizes or sizes[-1] != (h, w):
        sizes.append((h, w))
    k = len(sizes)
    return pyramid_schedule(
        sizes,
        t,
        image_repetition=[reps] * k,
        video_repetition=[reps] * k,
        detail_scale_min_tokens=threshold,
        frames_per_clip=frames_per_clip,
    )


# --------------------------------------------------------------------------------------------
# Stochastic quantizer depth
# --------------------------------------------------------------------------------------------


def draw_quantizer_depth(
    schedule: Schedule, batch_size: int, prob: float, generator: torch.Generator | None, device=None
) -> Tensor:
    """Which steps each sample keeps: ``[B, num_steps]`` bool (stochastic quantizer depth).

    Rule (the paper's "randomly drop the last scales"; the original's probability is unknown):
    with probability ``prob`` a sample drops a random suffix of the *detail* scales of every
    pyramid: ``n ~ U{1, ..., D}`` where D is the number of detail scales of a pyramid, and the
    last ``n`` detail scales of each clip (all their repetitions) are skipped, so the decoder
    must reconstruct from the coarser, semantic part of the sum. Semantic scales are never
    skipped. Two draws per sample are always made, so the generator advances the same way
    whatever the outcome (reproducible, exactly resumable).
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"skip_detail_prob must be in [0, 1], got {prob}")
    skip = torch.rand(batch_size, generator=generator, device=device) < prob  # [B]
    detail_per_clip = [sum(not s.semantic for s in schedule.clip_scales(c)) for c in range(schedule.num_clips)]
    most = max(detail_per_clip)
    n_drop = torch.randint(1, max(most, 1) + 1, (batch_size,), generator=generator, device=device)  # [B]
    n_drop = torch.where(skip, n_drop, torch.zeros_like(n_drop)).tolist()
    keep = torch.ones(batch_size, schedule.num_steps, dtype=torch.bool)
    # rank of each detail scale counted from the end of its clip: 1 = the clip's last detail scale
    from_end: dict[int, int] = {}
    for c in range(schedule.num_clips):
        detail = [s.index for s in schedule.clip_scales(c) if not s.semantic]
        for r, idx in enumerate(reversed(detail), start=1):
            from_end[idx] = r
    for step in schedule.steps:
        r = from_end.get(step.scale)
        if r is None:
            continue
        for b, n in enumerate(n_drop):
            if r <= n:
                keep[b, step.index] = False
    return keep.to(device) if device is not None else keep


# --------------------------------------------------------------------------------------------
# BSQ entropy terms and the STE pyramid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BSQLossConfig:
    """Weights of the BSQ auxiliary loss (the original's values are the defaults).

    Per step: ``commit_weight * MSE(z, q) + entropy_weight * (sample_gamma * H_sample -
    codebook_gamma * H_codebook) / inv_temperature``, with ``z`` the L2-normalised residual and
    the entropies factorised per bit (BSQ paper): ``p_i = sigmoid(4 * inv_temperature * z_i /
    sqrt(d))`` is the soft probability of bit i being 1, ``H_sample`` the mean over tokens of
    ``sum_i H(p_i)`` (minimised: confident bits) and ``H_codebook = sum_i H(mean_tokens p_i)``
    (maximised: every bit used half the time). Entropies are in nats; at most ``d * ln 2``.
    """

    commit_weight: float = 0.25
    entropy_weight: float = 0.1
    sample_gamma: float = 1.0
    codebook_gamma: float = 1.0
    inv_temperature: float = 100.0


def bsq_entropy(z: Tensor, inv_temperature: float, token_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Factorised BSQ entropies of normalised residuals ``z [B, d, pt, ph, pw]``.

    Returns ``(sample_entropy, codebook_entropy)`` in nats, both summed over the d bits.
    ``token_weight [B]`` (0 or 1 per sample) restricts both to the kept samples.
    """
    b, d = z.shape[:2]
    logits = (4.0 * inv_temperature / math.sqrt(d)) * z.float()  # [B, d, pt, ph, pw]
    logits = logits.movedim(1, -1).reshape(b, -1, d)  # [B, N, d] tokens of each sample
    p = torch.sigmoid(logits)
    per_bit = F.softplus(logits) - p * logits  # H(p) = softplus(l) - p*l, stable for any logit
    if token_weight is None:
        token_weight = torch.ones(b, device=z.device)
    w = token_weight.to(logits.dtype).view(b, 1, 1)  # [B, 1, 1]
    total = w.sum() * logits.shape[1]  # kept tokens
    sample = (per_bit.sum(-1, keepdim=True) * w).sum() / total
    p_mean = ((p * w).sum(dim=(0, 1)) / total).clamp(1e-7, 1 - 1e-7)  # [d]
    codebook = -(p_mean * p_mean.log() + (1 - p_mean) * (1 - p_mean).log()).sum()
    return sample, codebook


@dataclass
class QuantizerOutput:
    """Result of :func:`quantize_pyramid_ste`.

    ``latent``: the quantised latent (straight-through), ``[B, 64, t, h, w]``; equals
    ``encode_pyramid(...).latent`` bit for bit when no step is skipped.
    ``bits[n]``: the clean bits of step n, ``[B, pt, ph, pw, d]`` int64 (computed for skipped steps too).
    ``loss``: the BSQ auxiliary loss (commitment + entropy terms), averaged over the kept steps.
    ``commit`` / ``sample_entropy`` / ``codebook_entropy``: the averaged terms (detached scalars).
    ``bit_usage``: codebook entropy / its maximum ``d ln 2``, averaged over the kept steps, in [0, 1].
    ``keep``: ``[B, num_steps]`` which steps each sample kept.
    """

    latent: Tensor
    bits: list[Tensor]
    loss: Tensor
    commit: float
    sample_entropy: float
    codebook_entropy: float
    bit_usage: float
    keep: Tensor


def _check_latent(latent: Tensor, schedule: Schedule) -> None:
    t, (h, w) = schedule.num_latent_frames, schedule.final_hw
    if latent.ndim != 5 or latent.shape[1] != LATENT_CHANNELS or tuple(latent.shape[2:]) != (t, h, w):
        raise ValueError(
            f"latent must be [B, {LATENT_CHANNELS}, {t}, {h}, {w}] for this schedule, got {tuple(latent.shape)}"
        )


def _check_keep(keep: Tensor | None, batch_size: int, schedule: Schedule, device: torch.device) -> Tensor:
    """``keep`` as a ``[B, num_steps]`` bool tensor on ``device`` (None: every sample keeps every step)."""
    if keep is None:
        keep = torch.ones(batch_size, schedule.num_steps, dtype=torch.bool)
    if tuple(keep.shape) != (batch_size, schedule.num_steps):
        raise ValueError(f"keep must be [B, num_steps] = {(batch_size, schedule.num_steps)}, got {tuple(keep.shape)}")
    return keep.to(device)


def _bsq_step_loss(z: Tensor, codes: Tensor, weights: Tensor, cfg: BSQLossConfig) -> tuple[Tensor, ...]:
    """One step's BSQ auxiliary loss over the samples that keep it.

    ``z`` / ``codes``: the normalised residual and its codes, ``[B, d, pt, ph, pw]``; ``weights
    [B]``: 1 for a sample that keeps the step, 0 otherwise (so a dropped step teaches nothing).
    Returns ``(loss, commit, sample_entropy, codebook_entropy)``.
    """
    per_sample = (z - codes).square().flatten(1).mean(1)  # [B]
    commit = (per_sample * weights).sum() / weights.sum()
    h_sample, h_code = bsq_entropy(z, cfg.inv_temperature, weights)
    penalty = cfg.sample_gamma * h_sample - cfg.codebook_gamma * h_code
    loss = cfg.commit_weight * commit + cfg.entropy_weight * penalty / cfg.inv_temperature
    return loss, commit, h_sample, h_code


@dataclass
class _StepTerms:
    """What the STE walk collects step by step, turned into a :class:`QuantizerOutput` at the end."""

    bits: list[Tensor] = field(default_factory=list)
    losses: list[Tensor] = field(default_factory=list)
    commits: list[Tensor] = field(default_factory=list)
    sample_hs: list[Tensor] = field(default_factory=list)
    codebook_hs: list[Tensor] = field(default_factory=list)
    usages: list[Tensor] = field(default_factory=list)

    def add_loss(self, loss: Tensor, commit: Tensor, h_sample: Tensor, h_code: Tensor, bits: int) -> None:
        """Record a kept step's loss (with graph) and its terms (detached; usage relative to ``bits ln 2``)."""
        self.losses.append(loss)
        self.commits.append(commit.detach())
        self.sample_hs.append(h_sample.detach())
        self.codebook_hs.append(h_code.detach())
        self.usages.append(h_code.detach() / (bits * math.log(2)))

    def output(self, latent: Tensor, quantized: Tensor, keep: Tensor) -> QuantizerOutput:
        """The result, losses averaged over the kept steps (zero when no step was kept)."""

        def mean(xs: list[Tensor]) -> float:
            return float(torch.stack(xs).mean()) if xs else 0.0

        loss = torch.stack(self.losses).mean() if self.losses else latent.new_zeros(())
        return QuantizerOutput(
            latent=quantized,
            bits=self.bits,
            loss=loss,
            commit=mean(self.commits),
            sample_entropy=mean(self.sample_hs),
            codebook_entropy=mean(self.codebook_hs),
            bit_usage=mean(self.usages),
            keep=keep,
        )


def quantize_pyramid_ste(
    latent: Tensor,
    schedule: Schedule,
    *,
    keep: Tensor | None = None,
    config: BSQLossConfig | None = None,
) -> QuantizerOutput:
    """Differentiable multi-scale residual BSQ of ``latent [B, 64, t, h, w]`` over ``schedule``.

    The same loop as :func:`~infinitystar.models.quantizer.encode_pyramid` (no self-correction): per
    clip a running sum starts at zero; per step the residual is area-resampled to the step's
    (channels, size), L2-normalised to ``z``, quantised to codes ``q = ±1/sqrt(d)``; the
    straight-through codes ``q + (z - z.detach())`` are trilinearly resampled to the clip's full
    size and added. ``keep [B, num_steps]`` (from :func:`draw_quantizer_depth`) drops steps per
    sample: a dropped step adds nothing to that sample's sum and is left out of its losses.
    Runs in float32.
    """
    cfg = config if config is not None else BSQLossConfig()
    _check_latent(latent, schedule)
    latent = latent.float()
    b = latent.shape[0]
    keep = _check_keep(keep, b, schedule, latent.device)
    keep_f = keep.to(latent.dtype)
    all_kept = keep.all(dim=0).tolist()  # per step: no sample drops it (skip the mask multiply)
    any_kept = keep.any(dim=0).tolist()
    terms = _StepTerms()

    def step(n: int, sc, residual: Tensor, running: Tensor) -> Tensor:
        bits = quantize_bits(residual)  # [B, pt, ph, pw, d], exactly the inference bits
        terms.bits.append(bits)
        z = F.normalize(residual, dim=1)  # the sphere BSQ quantises on
        codes = bits_to_codes(bits, running.dtype)  # [B, d, pt, ph, pw] of ±1/sqrt(d)
        q = codes + (z - z.detach())  # forward: exactly the codes; backward: identity to z
        if not all_kept[n]:  # a per-sample 0/1 factor: the same before or after the (linear) upsampling
            q = q * keep_f[:, n].view(b, 1, 1, 1, 1)
        if any_kept[n]:
            terms.add_loss(*_bsq_step_loss(z, codes, keep_f[:, n], cfg), bits=residual.shape[1])
        return q

    quantized = walk_pyramid(latent, schedule, step)
    return terms.output(latent, quantized, keep)


@torch.no_grad()
def best_latent_scale(features: Tensor, schedule: Schedule, config: BSQLossConfig | None = None) -> float:
    """The latent scale at which the pyramid quantises ``features [B, 64, t, h, w]`` best.

    Why: BSQ codes have unit norm per step, and a continuous VAE's features have no reason to
    match that magnitude; a poor scale wastes the coarse steps on magnitude instead of content.
    The scale ``s`` is chosen on the grid ``2^(j/4)``, ``s in [1/64, 4]``, to minimise the
    decoder-side error ``|Q(s z) / s - z|`` of the un-scaled features ``z`` (ties: the smaller).
    """
    best, best_err = 1.0, math.inf
    for j in range(-24, 9):
        s = 2.0 ** (j / 4)
        err = float((quantize_pyramid_ste(features * s, schedule, config=config).latent / s - features).norm())
        if err < best_err:
            best, best_err = s, err
    return best
