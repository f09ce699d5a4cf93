"""Turning a micro-batch of training samples into the transformer's inputs.

Per sample: the schedule of its latent shape (the original's template schedule, or a custom pyramid), the
multi-scale bitwise quantisation of its latent with bitwise self-correction, one random repetition per scale (its
input, its clean bit labels and its global step counter, the RoPE scale position), condition dropout, and the
subset of scales this micro-step trains. Every draw comes from a generator seeded by ``(seed, step, sample key)``
or ``(seed, step, micro-step)``, so a resumed run repeats an uninterrupted run's draws exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from infinitystar.models.config import TransformerConfig
from infinitystar.models.quantizer import SelfCorrection, encode_pyramid
from infinitystar.schedule import Schedule, build_schedule, pyramid_schedule
from infinitystar.sizes import aspect_templates, nearest_template
from infinitystar.text.loading import make_text_encoder
from infinitystar.train.seeds import make_generator
from infinitystar.train.transformer.config import TrainConfig, template_scale_count
from infinitystar.train.transformer.scale_subsets import ScaleSubsetSampler, sub_schedule, subset_loss_weights


@dataclass
class PreparedBatch:
    """One micro-batch ready for the model."""

    codes: torch.Tensor  #: [B, Nvis, 64] inputs of the kept scales at their chosen repetitions
    texts: list[torch.Tensor]  #: per sample [L_b, Ct5]
    labels: list[torch.Tensor]  #: per kept scale [B, pt, ph, pw, d] clean bits
    counters: torch.Tensor  #: [B, S_kept] global step counters of the chosen repetitions
    drop: list[bool]  #: per sample: trained with the null text
    schedule: Schedule  #: the kept scales (a SubSchedule)
    weights: torch.Tensor  #: [S_kept] loss weights (sum 1)
    option: int  #: index of the subset option drawn
    keys: list[str] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return self.codes.shape[0] * self.codes.shape[1] + sum(t.shape[0] for t in self.texts)


def _check_sample(s: Any, latent_channels: int) -> None:
    for name in ("key", "latent", "caption", "text", "h_div_w", "duration"):
        if not hasattr(s, name):
            raise ValueError(f"training samples need a {name!r} field (TrainSample); got {type(s).__name__}")
    lat = s.latent
    if not isinstance(lat, torch.Tensor) or lat.ndim != 4 or lat.shape[0] != latent_channels:
        shape = tuple(lat.shape) if isinstance(lat, torch.Tensor) else type(lat).__name__
        raise ValueError(f"sample {s.key}: latent must be [{latent_channels}, t, h, w], got {shape}")
    if s.text is None and not (isinstance(s.caption, str) and s.caption.strip()):
        raise ValueError(f"sample {s.key}: no cached text features and an empty caption")


class BatchPreparer:
    """Schedules, text features, quantised inputs and labels of micro-batches, for one training config.

    ``text_encoder``: encodes the captions of samples without cached text features (default: the encoder
    ``cfg.data.text_encoder`` names, built on first need).
    """

    def __init__(self, cfg: TrainConfig, tcfg: TransformerConfig, device: torch.device, text_encoder=None):
        self.cfg, self.tcfg, self.device = cfg, tcfg, device
        self.text_encoder = text_encoder
        self.sampler = ScaleSubsetSampler(cfg.loss.var_len, tuple(cfg.loss.var_len_probs), cfg.loss.drop_last_scale)
        self.self_correction = SelfCorrection(cfg.loss.self_correction) if cfg.loss.self_correction > 0 else None
        self._schedules: dict[tuple, Schedule] = {}

    def schedule_for(self, h_div_w: float, t: int, h: int, w: int) -> Schedule:
        """The full schedule of a latent of shape ``[64, t, h, w]`` (cached)."""
        key = (round(float(h_div_w), 6), t, h, w)
        if key in self._schedules:
            return self._schedules[key]
        sc = self.cfg.schedule
        if sc.resolution is not None and sc.resolution.startswith("scales:"):
            k = template_scale_count(sc.resolution)
            hws = [list(hw) for hw in aspect_templates()[nearest_template(h_div_w)][:k]]
            if tuple(hws[-1]) != (h, w):
                raise ValueError(
                    f"latent of size {h}x{w} does not match the {sc.resolution} pyramid of aspect {h_div_w:.3f}, "
                    f"whose largest scale is {hws[-1][0]}x{hws[-1][1]}"
                )
            sched = self._pyramid_schedule(hws, t)
        elif sc.resolution is not None:
            sched = build_schedule(
                h_div_w,
                sc.resolution,
                t,
                image_repetition=sc.image_repetition,
                video_repetition=sc.video_repetition,
                detail_scale_min_tokens=sc.detail_scale_min_tokens,
                frames_per_clip=sc.frames_per_clip,
            )
            if sched.final_hw != (h, w):
                raise ValueError(
                    f"latent of size {h}x{w} does not match the {sc.resolution} schedule of aspect {h_div_w:.3f}, "
                    f"whose largest scale is {sched.final_hw[0]}x{sched.final_hw[1]}"
                )
        else:
            if tuple(sc.scales[-1]) != (h, w):
                raise ValueError(
                    f"latent of size {h}x{w} does not match schedule.scales, whose last (largest) scale is "
                    f"{sc.scales[-1][0]}x{sc.scales[-1][1]}"
                )
            sched = self._pyramid_schedule(sc.scales, t)
        self._schedules[key] = sched
        return sched

    def _pyramid_schedule(self, hws: list[list[int]], t: int) -> Schedule:
        """The image pyramid ``hws`` then one pyramid per clip of ``frames_per_clip`` latent frames."""
        sc = self.cfg.schedule
        return pyramid_schedule(
            [tuple(hw) for hw in hws],
            t,
            image_repetition=sc.image_repetition,
            video_repetition=sc.video_repetition,
            detail_scale_min_tokens=350 if sc.detail_scale_min_tokens is None else sc.detail_scale_min_tokens,
            frames_per_clip=sc.frames_per_clip,
            semantic_dim=self.tcfg.semantic_dim,
            detail_dim=self.tcfg.detail_dim,
        )

    def texts(self, batch: list) -> list[torch.Tensor]:
        missing = [i for i, s in enumerate(batch) if s.text is None]
        texts: list[torch.Tensor | None] = [s.text for s in batch]
        if missing:
            if self.text_encoder is None:
                if not self.cfg.data.text_encoder:
                    raise ValueError(
                        f"sample {batch[missing[0]].key} has no cached text features: set data.text_encoder "
                        "to a T5 folder, a saved text-encoder folder or 'builtin' (encoded online), or extract the "
                        "cache with text features"
                    )
                self.text_encoder = make_text_encoder(self.cfg.data.text_encoder, self.tcfg, self.device)
            with torch.no_grad():
                encoded = self.text_encoder.encode([batch[i].caption for i in missing])
            for i, feats in zip(missing, encoded):
                texts[i] = feats
        out = []
        for s, t in zip(batch, texts):
            if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] != self.tcfg.text_channels:
                raise ValueError(
                    f"sample {s.key}: text features must be [L >= 1, {self.tcfg.text_channels}], got {tuple(t.shape)}"
                )
            t = t[: self.tcfg.text_maxlen].to(self.device, torch.float32)
            if not torch.isfinite(t).all():
                raise ValueError(f"sample {s.key}: text features contain NaN or infinite values")
            out.append(t)
        return out

    def prepare(self, batch: list, step: int, micro: int) -> PreparedBatch:
        """Quantise, pick repetitions and subsets, draw condition dropout for one micro-batch."""
        if not isinstance(batch, (list, tuple)) or not batch:
            raise ValueError(f"a batch must be a non-empty list of samples, got {type(batch).__name__}")
        for s in batch:
            _check_sample(s, self.tcfg.latent_channels)
        shape = tuple(batch[0].latent.shape)
        odd = [s.key for s in batch if tuple(s.latent.shape) != shape]
        if odd:
            raise ValueError(f"a batch must share one latent shape {shape}; samples {odd[:4]} differ")
        _, t, h, w = shape
        full = self.schedule_for(batch[0].h_div_w, t, h, w)
        option, kept = self.sampler.sample(full, make_generator("cpu", self.cfg.seed, "subset", step, micro))
        sub = sub_schedule(full, kept)
        weights = subset_loss_weights(full, kept, self.cfg.loss.reweight_by_scale, self.cfg.loss.max_reweight)

        codes, labels, counters, drop = [], [[] for _ in kept], [], []
        for s in batch:
            g_cpu = make_generator("cpu", self.cfg.seed, "sample", step, s.key)
            g_dev = make_generator(self.device, self.cfg.seed, "bsc", step, s.key)
            latent = s.latent.to(self.device, torch.float32)[None]  # [1, 64, t, h, w]
            try:
                tokens = encode_pyramid(latent, full, self_correction=self.self_correction, generator=g_dev)
            except ValueError as exc:
                raise ValueError(f"sample {s.key}: {exc}") from None
            u = torch.rand(len(full.scales), generator=g_cpu)  # one repetition per scale, uniformly
            picks = [
                sc.first_step + min(int(u[i] * sc.repetitions), sc.repetitions - 1) for i, sc in enumerate(full.scales)
            ]
            drop.append(bool(torch.rand(1, generator=g_cpu).item() < self.cfg.loss.cond_drop_prob))
            parts = []
            for j, i in enumerate(kept):
                n = picks[i]
                parts.append(tokens.inputs[n].flatten(2).transpose(1, 2))  # [1, 64, pt, ph, pw] -> [1, N, 64]
                labels[j].append(tokens.bits[n])  # [1, pt, ph, pw, d]
            codes.append(torch.cat(parts, dim=1))
            counters.append([picks[i] for i in kept])
        return PreparedBatch(
            codes=torch.cat(codes, dim=0),  # [B, Nvis, 64]
            texts=self.texts(batch),
            labels=[torch.cat(x, dim=0) for x in labels],
            counters=torch.tensor(counters, dtype=torch.int64),
            drop=drop,
            schedule=sub,
            weights=weights.to(self.device),
            option=option,
            keys=[s.key for s in batch],
        )
