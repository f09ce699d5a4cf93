"""One measured generation, shared by ``bench_generate.py`` (a fresh process per run) and ``gpu_suite.py`` (one
process, many runs): random models built on the device, the pipeline wrapped so that every phase is timed, and
the record (phases, peak memory, FLOPs, the GEMM rate and how it was measured) that ``summarize.py`` turns into
README rows.

Nothing here imports PyAV: an image-to-video run gets its first frame as an array at the model's size (no decode,
no resize), and no output file is written.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from _common import Clock, PeakMemory, describe_gemm, materialise, random_transformer
from infinitystar.devices import parse_dtype
from infinitystar.generation.flops import generation_flops
from infinitystar.generation.layouts import parse_vae_dtype
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.placement import Placement, place_transformer
from infinitystar.generation.plan import PipelineConfig
from infinitystar.models.config import VAEConfig, get_preset
from infinitystar.models.transformer.quantize import block_weight_bytes
from infinitystar.models.vae.model import VideoVAE
from infinitystar.sizes import RESOLUTIONS
from infinitystar.text.builtin import BuiltinTextEncoder
from infinitystar.text.encoders import TextEncoder
from summarize import threads

PROMPT = "a red circle moving right on a black background"
#: text tokens of the random T5-XL's prompt: the length of a rewritten prompt of about 60 words
T5_TOKENS = 128


@dataclass
class RunSpec:
    model: str  #: 'builtin' or a preset name
    device: str
    dtype: str | None  #: None: bf16 on CUDA, fp32 on CPU (the built-in model: its pipeline default)
    resolution: str | None  #: None: the model's own (presets: 480p for big ones, '0.06M' for tiny/small)
    duration: int | None  #: seconds; None: the model's default
    sampler: str
    token_chunk: int | None
    compile: bool
    text: str  #: 'builtin' or 't5-xl' (random Flan-T5-XL architecture)
    offload_text_encoder: bool
    mode: str = "t2v"  #: 't2v' or 'i2v' (a plain first frame forces the image pyramid)
    exact_forcing: bool = False  #: run forced steps too, as the original
    seed: int = 0
    quantize: str | None = None  #: 'int8' / 'fp8': weight-only quantized blocks
    offload_blocks: bool = False  #: blocks on the host, streamed to the device block by block
    vae_dtype: str = "fp32"  #: the VAE's dtype ('fp32' as the package's default and the original, or 'bf16')


class BudgetSpent(RuntimeError):
    """Raised from the step callback when a run passes its deadline: the run stops between two steps."""


class RandomT5(TextEncoder):
    """Flan-T5-XL's encoder architecture with random weights, fed ``tokens`` random token ids (no tokenizer, so
    nothing to download): the text phase's cost and its 2048-channel features."""

    def __init__(self, device: torch.device, dtype: torch.dtype, tokens: int = T5_TOKENS):
        from transformers import T5Config, T5EncoderModel

        cfg = T5Config(d_model=2048, d_ff=5120, d_kv=64, num_layers=24, num_heads=32, feed_forward_proj="gated-gelu")
        self.model = materialise(lambda: T5EncoderModel(cfg), device, dtype)
        self.tokens = tokens
        self.channels = 2048

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> RandomT5:
        self.model.to(device)
        return self

    def _encode(self, prompts: list[str]) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 32000, (len(prompts), self.tokens), generator=g).to(self.device)
        with torch.no_grad():
            return list(self.model(input_ids=ids).last_hidden_state.float())


class TimedTransformer:
    """Delegates to the transformer and records the time of the text prefill and of every step; the
    peak memory of the transformer phase is measured from the first prefill on."""

    def __init__(self, model, clock: Clock, memory: PeakMemory):
        self._model, self._clock, self._memory = model, clock, memory
        self.prefill = 0.0
        self.steps: dict[int, float] = {}
        self.schedule = None
        self.text_tokens = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def prefill_text(self, *args, **kwargs):
        if not self.steps and not self.prefill:
            self._memory.reset()
        text = args[1] if len(args) > 1 else kwargs["text"]
        self.text_tokens = int(text.shape[1])  # text rows [R, L, Ct5]
        self.prefill += self._clock(lambda: self._model.prefill_text(*args, **kwargs))

    def step(self, cache, codes, schedule, step):
        out = []
        self.schedule = schedule
        self.steps[step.index] = self._clock(lambda: out.append(self._model.step(cache, codes, schedule, step)))
        return out[0]


class MeasuredVAE:
    """Delegates to the VAE; ``decode`` closes the transformer phase's memory reading and measures its own."""

    def __init__(self, vae, memory: PeakMemory):
        self._vae, self._memory = vae, memory
        self.peaks = {"transformer": 0.0, "VAE decode": 0.0}

    def __getattr__(self, name):
        return getattr(self._vae, name)

    def decode(self, *args, **kwargs):
        self.peaks["transformer"] = max(self.peaks["transformer"], self._memory.read_gib())
        self._memory.reset()
        out = self._vae.decode(*args, **kwargs)
        self.peaks["VAE decode"] = max(self.peaks["VAE decode"], self._memory.read_gib())
        return out


def run_dtype(spec: RunSpec, device: torch.device) -> torch.dtype:
    """The run's dtype: ``spec.dtype``, else the package's default for ``device`` (bf16 on CUDA, fp32 elsewhere)."""
    return parse_dtype(spec.dtype, device)


def pipeline_config(resolution: str) -> PipelineConfig:
    """Generation settings of a preset at ``resolution``: the release's at 480p / 720p (16:9, APG 34, clips of
    20 latent frames), a small square CFG setting at the CPU budgets ('0.016M', '0.06M', ...)."""
    released = resolution in RESOLUTIONS
    return PipelineConfig(
        resolution=resolution,
        max_duration=5 if released else 1,
        default_duration=5 if released else 1,
        frames_per_clip=20 if released else 4,
        detail_scale_min_tokens=None if released else 100,
        aspect_ratio="16:9" if released else "1:1",
        guidance="apg" if released else "cfg",
        guidance_scale=34.0 if released else 3.0,
    )


def _offload(spec: RunSpec) -> str:
    return Placement(torch.device(spec.device), None, spec.offload_text_encoder, spec.offload_blocks).offload


def build_pipeline(spec: RunSpec, device: torch.device) -> InfinityStarPipeline:
    """The pipeline of ``spec``: the built-in model, or a preset with random weights built on the device (then
    quantized and offloaded as ``spec`` says, as ``from_pretrained`` would)."""
    dtype = run_dtype(spec, device)
    if spec.model == "builtin":
        return InfinityStarPipeline.from_pretrained(
            None, device=device, dtype=dtype, quantize=spec.quantize, offload=_offload(spec), vae_dtype=spec.vae_dtype
        )
    preset = get_preset(spec.model)
    big = preset.vae is None  # the large presets use the released VAE
    config = pipeline_config(spec.resolution or ("480p" if big else "0.06M"))
    transformer = random_transformer(spec.model, device, dtype)
    place_transformer(transformer, Placement.of(device, spec.quantize, "blocks" if spec.offload_blocks else None))
    vae = materialise(lambda: VideoVAE(preset.vae or VAEConfig()), device, parse_vae_dtype(spec.vae_dtype))
    if spec.text == "t5-xl":
        text = RandomT5(device, torch.bfloat16 if device.type == "cuda" else torch.float32)  # bf16: no overflow
    else:
        text = BuiltinTextEncoder.for_config(transformer.cfg, device=device)
    return InfinityStarPipeline(transformer, vae, text, config, offload_text_encoder=spec.offload_text_encoder)


def _groups(schedule) -> dict[str, list[int]]:
    """Step indices grouped by (clip, semantic / detail scales): 'image semantic', 'clip 1 detail', ..."""
    groups: dict[str, list[int]] = {}
    for st in schedule.steps:
        sc = schedule.scales[st.scale]
        name = f"{'image' if sc.clip == 0 else f'clip {sc.clip}'} {'semantic' if sc.semantic else 'detail'}"
        groups.setdefault(name, []).append(st.index)
    return groups


def _call_kwargs(pipe: InfinityStarPipeline, spec: RunSpec, deadline: float | None) -> dict:
    """The pipeline call of ``spec``; with a ``deadline`` (``time.monotonic``) the run stops between two steps
    once it has passed (:class:`BudgetSpent`)."""
    kwargs = dict(
        duration=spec.duration, seed=spec.seed, sampler=spec.sampler, exact_forcing=spec.exact_forcing, progress=False
    )
    if spec.mode == "i2v":
        h, w = pipe.pixel_size(pipe.config.aspect_ratio)
        frame = np.zeros((h, w, 3), np.uint8)
        frame[h // 4 : h // 2, w // 4 : w // 2] = (200, 40, 40)  # a red square on black, at the model's size
        kwargs["image"] = frame
    if deadline is not None:

        def stop_when_late(done, total, record):
            if time.monotonic() > deadline:
                raise BudgetSpent(f"the budget ran out after {done} of {total} steps")

        kwargs["callback"] = stop_when_late
    return kwargs


def measure(
    pipe: InfinityStarPipeline, spec: RunSpec, gemm: dict, *, warmup: bool = True, deadline: float | None = None
) -> dict:
    """Generate once (after a 1 s warm-up video unless ``warmup`` is False) and return the run's record.

    The pipeline's transformer and VAE are wrapped for the run and restored afterwards, so one pipeline serves
    many measured runs. ``gemm`` is :func:`_common.gemm_rate`'s reading, stored with the record.
    """
    device = pipe.device
    clock, memory = Clock(device), PeakMemory(device)
    transformer, vae = pipe.transformer, pipe.vae
    timed = TimedTransformer(transformer, clock, memory)
    measured_vae = MeasuredVAE(vae, memory)
    kwargs = _call_kwargs(pipe, spec, deadline)
    warm = None
    try:
        pipe.transformer = timed
        if warmup:
            t_warm = time.perf_counter()
            short = 0 if spec.duration == 0 else min(1, spec.duration or 1)
            pipe(PROMPT, **{**kwargs, "duration": short})  # an image or a short video: kernels, compile
            warm = time.perf_counter() - t_warm
            timed.prefill, timed.steps = 0.0, {}
        graphs = _compiled_graphs()
        pipe.vae = measured_vae
        memory.reset()
        clock.sync()
        result = pipe(PROMPT, **kwargs)
        clock.sync()
        peak = memory.read_gib()
        graphs = _compiled_graphs() - graphs
    finally:
        pipe.transformer, pipe.vae = transformer, vae
    record = _record(pipe, spec, timed, result, gemm)
    record.update(
        warmup_s=warm,
        peak_memory_gib=max(peak, *measured_vae.peaks.values()),
        phase_peak_gib=measured_vae.peaks,
        peak_memory_kind=memory.kind,
        peak_reserved_gib=torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None,
        compile_failed=bool(transformer._runner.compile_failed),
        graphs_compiled_in_timed_run=graphs if transformer.inference.compile else None,
    )
    return record


def _compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (a recompile in a timed run shows up here)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:  # noqa: BLE001 - a private counter: absent in some versions
        return 0


def _record(pipe, spec: RunSpec, timed: TimedTransformer, result, gemm: dict) -> dict:
    """Phases, FLOPs and sizes of a finished run (memory is added by the caller)."""
    sched, cfg = timed.schedule, pipe.transformer.cfg
    rows = 2 if pipe.config.guidance != "none" else 1
    text_len = timed.text_tokens
    skipped = {st.index for st in sched.steps if st.index not in timed.steps}  # forced steps not computed
    flops = generation_flops(cfg, sched, rows=rows, text_tokens=text_len, skipped=skipped)
    t = result.timings
    steps_total = sum(timed.steps.values())
    phases = {"text encoder": t.get("text", 0.0), "VAE encode (reference)": t.get("encode", 0.0)}
    phases["text prefill"] = timed.prefill
    group_flops = {}
    for name, idx in _groups(sched).items():
        phases[name] = sum(timed.steps.get(i, 0.0) for i in idx)
        group_flops[name] = flops.of_steps(idx)
    phases["sampling + loop"] = t["transformer"] - timed.prefill - steps_total
    phases["VAE decode"] = t.get("decode", 0.0)
    phases["other"] = t["total"] - sum(phases.values())
    device = pipe.device
    return {
        "block_weight_bytes": block_weight_bytes(pipe.transformer),
        "spec": asdict(spec),
        "inference": asdict(pipe.transformer.inference),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(pipe.transformer.compute_dtype).replace("torch.", ""),
        "resolution": pipe.config.resolution,
        "frames": list(result.frames.shape),
        "steps": sched.num_steps,
        "computed_steps": len(timed.steps),
        "tokens_per_row": sched.num_step_tokens(),
        "text_tokens": text_len,
        "rows": rows,
        "total_s": t["total"],
        "transformer_s": t["transformer"],
        "phases": phases,
        "flops": flops.total,
        "group_flops": group_flops,
        "prefill_flops": flops.prefill,
        "matmul_rate": gemm["flops_per_s"],
        "gemm": gemm,
    }


def with_resolution(pipe: InfinityStarPipeline, resolution: str) -> None:
    """Point a random-weight pipeline at another resolution (its weights do not depend on it)."""
    if pipe.config.resolution != resolution:
        pipe.config = pipeline_config(resolution)


def report(r: dict) -> None:
    """Print a run: its settings, a table of phases (seconds, share, FLOPs, time / floor), totals and memory."""
    s = r["spec"]
    rate = r["matmul_rate"]
    floor_t = r["flops"] / rate
    print(
        f"\n## {s['model']} on {r['device_name']} ({threads(r['threads'])}, torch {r['torch']}), {r['dtype']}, "
        f"{r['frames'][2]}x{r['frames'][1]}, {r['frames'][0]} frames, {r['steps']} steps, "
        f"{r['tokens_per_row']} tokens x {r['rows']} rows, sampler {s['sampler']}, "
        f"token_chunk {r['inference']['token_chunk']}, compile {s['compile']}, {s['mode']}, "
        f"quantize {s.get('quantize') or 'none'}, offload blocks {s.get('offload_blocks', False)}, "
        f"VAE {s.get('vae_dtype', 'fp32')} "
        f"({r['computed_steps']} steps computed{', exact forcing' if s['exact_forcing'] else ''})"
    )
    print("| phase | seconds | share | GFLOP | time / floor |")
    print("|---|---:|---:|---:|---:|")
    total = r["total_s"]
    for name, sec in r["phases"].items():
        f = r["group_flops"].get(name, r["prefill_flops"] if name == "text prefill" else None)
        ratio = f"{sec / (f / rate):.1f}x" if f else ""
        gf = f"{f / 1e9:.1f}" if f else ""
        print(f"| {name} | {sec:.3f} | {100 * sec / total:.0f}% | {gf} | {ratio} |")
    warm = "no warm-up run" if r["warmup_s"] is None else f"warm-up run {r['warmup_s']:.2f} s"
    if r.get("compile_failed"):
        warm += "; torch.compile FAILED, the blocks ran eagerly"
    print(
        f"\ntotal {total:.2f} s ({warm}); transformer {r['transformer_s']:.2f} s for "
        f"{r['flops'] / 1e12:.3f} TFLOP; GEMM rate {describe_gemm(r['gemm'])} -> floor {floor_t:.3f} s, "
        f"transformer time / floor {r['transformer_s'] / floor_t:.1f}x; "
        f"peak memory {r['peak_memory_gib']:.2f} GiB ({r['peak_memory_kind']}: transformer phase "
        f"{r['phase_peak_gib']['transformer']:.2f}, VAE decode {r['phase_peak_gib']['VAE decode']:.2f}); "
        f"block weights {r.get('block_weight_bytes', 0) / 2**30:.3f} GiB"
    )
