"""The suite's measured generations as a table of steps, which of them this version of the code can run, and
how long each will take.

A step is one entry of :data:`STEPS`, in order of value. Its settings are model options exactly as the command line
takes them (``infinitystar.cli.model_options``: ``--token-chunk 0``, ``--compile``, ``--quantize int8``...), so
whether a setting exists is found at run time, not assumed: the options are parsed with the parser that
``generate``, ``serve`` and ``evaluate`` share, and a step whose options that parser rejects is listed as "not
available in this version". A setting that lands later (a new flag plus its line in
``model_options.apply_runtime_options``) is measured by the existing entry with no other change; a new setting is
one new entry here.

The estimate of a step comes from :mod:`infinitystar.generation.flops` and the measured GEMM rate: transformer time =
FLOPs / GEMM rate x the ratio of time to that floor last measured on this device (a stated guess before the first
run), plus the VAE decode at the last measured seconds per decoded pixel, the text encoder, a 1 s warm-up video and,
for ``--compile``, a compile allowance. The suite skips a step whose estimate exceeds the time left.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from _generation import T5_TOKENS, with_resolution
from infinitystar.cli.model_options import add_model_arguments
from infinitystar.generation.flops import generation_flops
from infinitystar.sizes import latent_frames, nearest_template, parse_aspect_ratio, video_frames_for_duration

#: the smoke run's stand-ins for the released resolutions (the tiny preset on a CPU)
SMOKE_RESOLUTIONS = {"480p": "0.016M", "720p": "0.06M"}


@dataclass(frozen=True)
class Step:
    """One measured generation of the suite."""

    name: str  #: what ``--only`` / ``--skip`` take
    title: str
    resolution: str  #: '480p' or '720p' (the smoke run maps them to small budgets)
    flags: tuple[str, ...] = ()  #: model options as the command line takes them
    mode: str = "t2v"  #: 't2v' or 'i2v' (a plain first frame forces the image pyramid)
    exact_forcing: bool = False  #: compute forced steps too, as the original
    warmup: bool = True  #: a 1 s video first (new kernels, compilation); off when an earlier step ran the same ones
    fresh_model: bool = False  #: the settings change the weights or where they live: a new model before, and after
    #: the smoke run measures this step at that resolution's stand-in instead (a CPU path too slow at the larger one)
    smoke_as: str | None = None

    @property
    def compiles(self) -> bool:
        return "--compile" in self.flags


STEPS: tuple[Step, ...] = (
    Step("480p", "8B T2V 480p 5 s, default settings", "480p"),
    Step("720p", "8B T2V 720p 5 s, default settings", "720p"),
    Step("720p-int8", "720p 5 s, weight-only int8 blocks", "720p", ("--quantize", "int8"), fresh_model=True),
    Step("720p-fp8", "720p 5 s, weight-only fp8 blocks", "720p", ("--quantize", "fp8"), fresh_model=True),
    Step("720p-offload", "720p 5 s, blocks offloaded to the CPU", "720p", ("--offload", "blocks"), fresh_model=True),
    Step(
        "720p-16gb",
        "720p 5 s, the planner's 16 GB setting (blocks offloaded, bf16 VAE)",
        "720p",
        ("--offload", "blocks", "--vae-dtype", "bf16"),
        fresh_model=True,
        smoke_as="480p",  # bf16 convolutions on a CPU without AVX-512: ~70 s for one 256x256 decode
    ),
    Step("720p-chunk-0", "720p 5 s, whole scales (no token chunks)", "720p", ("--token-chunk", "0"), warmup=False),
    Step("720p-compile", "720p 5 s, --compile (compile time apart)", "720p", ("--compile",)),
    Step("480p-i2v", "480p 5 s I2V, forced steps skipped (ours)", "480p", mode="i2v", warmup=False),
    Step(
        "480p-i2v-exact",
        "480p 5 s I2V, forced steps computed (the original)",
        "480p",
        mode="i2v",
        exact_forcing=True,
        warmup=False,
    ),
    Step("720p-chunk-4096", "720p 5 s, 4096-token chunks", "720p", ("--token-chunk", "4096"), warmup=False),
)


class Rejected(Exception):
    """The shared model-option parser refused a step's options."""


class _StrictParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print and exit
        raise Rejected(message)


def model_parser() -> argparse.ArgumentParser:
    """The model options of ``generate`` / ``serve`` / ``evaluate``, raising :class:`Rejected` instead of exiting."""
    parser = _StrictParser(prog="infinitystar generate", add_help=False)
    add_model_arguments(parser)
    return parser


def parse_step(step: Step) -> tuple[argparse.Namespace | None, dict, str | None]:
    """``(options, settings, reason)``: the parsed options, what they change from the defaults (``{dest: value}``),
    and ``None``; or ``(None, {}, why)`` when this version's parser rejects them."""
    parser = model_parser()
    try:
        args = parser.parse_args(list(step.flags))
    except Rejected as exc:
        return None, {}, f"not available in this version: `{' '.join(step.flags)}` is refused ({exc})"
    defaults = vars(parser.parse_args([]))
    return args, {k: v for k, v in vars(args).items() if v != defaults[k]}, None


@dataclass
class Rates:
    """What the budget logic knows of this device; the guesses are replaced by measured figures as runs finish."""

    flops_per_s: float  #: the measured GEMM rate
    floor_ratio: float  #: transformer time / FLOP floor: a guess until the first eager run
    decode_s_per_pixel: float  #: seconds per decoded pixel (frames x H x W): a guess until the first run
    text_s: float  #: the text encoder's seconds
    compile_s: float  #: allowance for torch.compile's first video (a guess: the suite measures one)
    rebuild_s: float = 0.0  #: a new random model (measured when the suite builds its first)
    measured: bool = False

    @classmethod
    def guess(cls, flops_per_s: float, cuda: bool) -> Rates:
        if cuda:  # 8B on an H100 / H200: ~2x the floor, ~10 s to decode 720p 5 s, T5-XL 1 s, compile 0.5-2 min
            return cls(flops_per_s, 2.5, 1.5e-7, 1.0, 150.0)
        return cls(flops_per_s, 3.0, 1.0e-6, 0.05, 60.0)

    def learn(self, record: dict) -> None:
        """Take the figures of a finished run."""
        frames, h, w = record["frames"][:3]
        self.decode_s_per_pixel = record["phases"]["VAE decode"] / (frames * h * w)
        self.text_s = record["phases"]["text encoder"]
        if not record["spec"]["compile"]:
            self.floor_ratio = record["transformer_s"] * record["matmul_rate"] / record["flops"]
        self.measured = True


def _video_seconds(pipe, rates: Rates, duration: int) -> tuple[float, float]:
    """(transformer floor, estimated seconds) of one T2V video of ``duration`` at the pipeline's resolution."""
    h_div_w = nearest_template(parse_aspect_ratio(pipe.config.aspect_ratio))
    frames = video_frames_for_duration(duration)
    sched = pipe.schedule(h_div_w, latent_frames(frames))
    rows = 1 if pipe.config.guidance == "none" else 2
    floor = generation_flops(pipe.transformer.cfg, sched, rows=rows, text_tokens=T5_TOKENS).total / rates.flops_per_s
    h, w = sched.pixel_hw
    return floor, floor * rates.floor_ratio + frames * h * w * rates.decode_s_per_pixel + rates.text_s


def estimate(step: Step, pipe, resolution: str, duration: int, rates: Rates) -> tuple[float, str]:
    """Seconds the step will take, and how that was reckoned (printed before the step)."""
    with_resolution(pipe, resolution)
    floor, run = _video_seconds(pipe, rates, duration)
    total, parts = run, [f"floor {floor:.1f} s x {rates.floor_ratio:.1f}{'' if rates.measured else ' (guess)'}"]
    if step.warmup:
        total += _video_seconds(pipe, rates, min(1, duration))[1]
        parts.append("1 s warm-up video")
    if step.compiles:
        total += rates.compile_s
        parts.append(f"compile {rates.compile_s:.0f} s (allowance)")
    if step.fresh_model:
        total += 2 * rates.rebuild_s
        parts.append("a new model before and after")
    return total, ", ".join(parts)
