"""The scale-by-scale generation loop, separate from the model.

One function, :func:`generate_latent`, serves every mode: text-to-image (a schedule of the
image pyramid alone), text-to-video (one or more clips), image-to-video and video continuation
(teacher forcing of the first steps with the bits of an encoded reference), and long video
(clip after clip, see the pipeline). The model only answers "logits of this step"; the loop
owns the running sums, temperatures, guidance, sampling and teacher forcing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from infinitystar.generation.sampling import Guidance, apply_temperature, guide, sample_bits
from infinitystar.models.quantizer import RunningSum
from infinitystar.schedule import Schedule, Step


@dataclass(frozen=True)
class SamplingOptions:
    """How bits are drawn: guidance, per-scale temperature and the sampler.

    ``tau_image`` applies to the image pyramid and ``tau_video`` to every video clip (the
    released defaults are 1.0 and 0.4); ``temperatures`` / ``guidance_scales`` (one value per
    scale of the schedule) override them.
    """

    guidance: Guidance = field(default_factory=Guidance)
    tau_image: float = 1.0
    tau_video: float = 0.4
    temperatures: tuple[float, ...] | None = None
    guidance_scales: tuple[float, ...] | None = None
    sampler: str = "multinomial"

    def temperature_of(self, schedule: Schedule, scale: int) -> float:
        if self.temperatures is not None:
            return self._per_scale(self.temperatures, schedule, scale, "temperatures")
        return self.tau_image if schedule.scales[scale].clip == 0 else self.tau_video

    def guidance_scale_of(self, schedule: Schedule, scale: int) -> float:
        if self.guidance_scales is not None:
            return self._per_scale(self.guidance_scales, schedule, scale, "guidance_scales")
        return self.guidance.scale

    @staticmethod
    def _per_scale(values: Sequence[float], schedule: Schedule, scale: int, what: str) -> float:
        if len(values) < len(schedule.scales):
            raise ValueError(f"{what} needs one value per scale ({len(schedule.scales)}), got {len(values)}")
        return float(values[scale])


@dataclass
class StepRecord:
    """What happened at one step (handed to ``on_step``)."""

    step: Step
    codes_input: torch.Tensor | None  #: [1, 64, pt, ph, pw], None if the forward was skipped
    logits: torch.Tensor | None  #: raw head output [R, N, 2d], None if the forward was skipped (or not on rank 0)
    sampled: torch.Tensor | None  #: drawn bits [1, pt, ph, pw, d], None if nothing was drawn
    bits: torch.Tensor  #: bits added to the running sum (forced or sampled)
    forced: bool


@dataclass
class GenerationOutput:
    latent: torch.Tensor  #: [1, 64, t, h, w], the clips' running sums along time
    bits: list[torch.Tensor]  #: per step, [1, pt, ph, pw, d]


def _tokens(x: torch.Tensor, rows: int) -> torch.Tensor:
    """``[1, 64, pt, ph, pw]`` -> ``[rows, pt*ph*pw, 64]`` tokens in (t, h, w) row-major order."""
    return x.flatten(2).transpose(1, 2).expand(rows, -1, -1)


def _sample(logits: torch.Tensor, options: SamplingOptions, schedule: Schedule, scale: int, generator) -> torch.Tensor:
    """Temperature, guidance and the draw for the logits ``[R, N, 2d]`` of a step at ``scale``: bits ``[1, N, d]``."""
    z = apply_temperature(logits.float(), options.temperature_of(schedule, scale))
    z = guide(z, options.guidance, options.guidance_scale_of(schedule, scale))
    return sample_bits(z, generator, options.sampler)


def _start(model, schedule: Schedule, text, options: SamplingOptions, negative_text, parallel):
    """The KV cache of a generation with the text prefilled, its number of rows (this rank's, when parallel) and the
    device of the text (where the running sums live)."""
    rows_text, lengths = model.text_rows(text, options.guidance.active, negative=negative_text, return_lengths=True)
    if parallel is None:
        cache = model.new_cache(schedule, rows_text.shape[0])
    else:  # this rank's guidance row(s); a cache sharded by key/value head
        rows_text, lengths = parallel.local_rows(rows_text, lengths)
        cache = parallel.new_cache(model, schedule, rows_text.shape[0])
    model.prefill_text(cache, rows_text, lengths)
    return cache, rows_text.shape[0], rows_text.device


@torch.no_grad()
def generate_latent(
    model,
    schedule: Schedule,
    text: torch.Tensor,
    *,
    options: SamplingOptions | None = None,
    generator: torch.Generator | None = None,
    forced_bits: Sequence[torch.Tensor] | None = None,
    exact_forcing: bool = False,
    negative_text: torch.Tensor | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    parallel=None,
) -> GenerationOutput:
    """Generate the latent of ``schedule`` for text features ``text [L, Ct5]``.

    ``forced_bits``: bits of the first ``len(forced_bits)`` steps (teacher forcing, for image or
    video conditioning). With ``exact_forcing`` every forced step still runs the model and draws
    from the generator, exactly as the original does; otherwise only forced steps whose keys and
    values a later scale attends to are computed (the last repetition of a referenced scale),
    which gives the same output distribution for far less work.
    ``parallel``: this process's :class:`~infinitystar.generation.parallel.ParallelRun` when several processes
    generate this latent together (every rank calls with the same arguments; rank 0 draws every bit with
    ``generator`` and broadcasts it, and its step records alone carry the logits, gathered).
    """
    options = options or SamplingOptions()
    forced_bits = list(forced_bits or [])
    if len(forced_bits) > schedule.num_steps:
        raise ValueError(f"{len(forced_bits)} forced steps for a schedule of {schedule.num_steps} steps")
    cache, rows, device = _start(model, schedule, text, options, negative_text, parallel)
    sums: list[torch.Tensor] = []
    running: RunningSum | None = None
    all_bits: list[torch.Tensor] = []
    for step in schedule.steps:
        sc = schedule.scales[step.scale]
        if running is None or running.clip != sc.clip:
            if running is not None:
                sums.append(running.value)
            running = RunningSum(schedule, sc.clip, 1, device)
        forced = step.index < len(forced_bits)
        kv_needed = step.is_last_repetition and schedule.last_user(sc.index) >= 0
        codes_input = logits = sampled = None
        shape = (1, *sc.shape, schedule.bits(sc.index))
        if not forced or exact_forcing or kv_needed:
            codes_input = running.input_for(sc.index)  # [1, 64, pt, ph, pw]
            logits = model.step(cache, _tokens(codes_input, rows), schedule, step)  # [R, N, 2d]
            if parallel is not None:  # every rank's tokens and rows, on rank 0
                logits = parallel.gather_logits(logits, sc.num_tokens)
            if not forced or exact_forcing:
                if logits is not None:
                    sampled = _sample(logits, options, schedule, sc.index, generator).view(shape)
                if parallel is not None:
                    sampled = parallel.broadcast_bits(sampled, shape)
        if forced:
            bits = forced_bits[step.index].to(device)
            if tuple(bits.shape) != shape:
                raise ValueError(f"forced bits of step {step.index}: shape {tuple(bits.shape)}, expected {shape}")
        else:
            bits = sampled
        running.add_bits(bits)
        all_bits.append(bits)
        if on_step is not None:
            on_step(StepRecord(step, codes_input, logits, sampled, bits, forced))
    sums.append(running.value)
    return GenerationOutput(torch.cat(sums, dim=2), all_bits)
