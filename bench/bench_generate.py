"""One whole generation, timed by phase, with peak memory, its FLOP count and the hardware floor.

    python bench/bench_generate.py                                   # CPU: the built-in model, tiny, small
    python bench/bench_generate.py --model builtin --sampler bernoulli
    python bench/bench_generate.py --device cuda --model 8b --resolution 480p --duration 5
    python bench/bench_generate.py --device cuda --model 8b --resolution 720p --duration 5 --token-chunk 8192
    python bench/bench_generate.py --device cuda --model 8b --resolution 720p --duration 5 --quantize int8
    python bench/bench_generate.py --device cuda --model 8b --resolution 720p --duration 5 --offload-blocks

``--model``: ``builtin`` (the model shipped in the package) or a preset name (``tiny``, ``small``, ``8b``...)
with random weights, built directly on the device in the run's dtype (no download: timing does not depend
on the values). A preset runs the whole pipeline: its text encoder (the built-in one, or with
``--text t5-xl`` a random Flan-T5-XL encoder on random token ids), the transformer over the schedule of
``--resolution`` / ``--duration``, and the VAE decode (the preset's VAE, the released one for the big
presets).

Every run is a fresh subprocess: one warm-up generation (kernels, allocator), then the timed one. Printed
per run: device, config, resolution, duration, wall time by phase (text encoder, text prefill, the
transformer steps grouped by clip and scale kind, the sampling loop around them, VAE decode), peak memory
(CUDA: ``max_memory_allocated``; CPU: the process's peak RSS), the FLOPs of the schedule
(``infinitystar.generation.flops``) and time / floor, where floor = FLOPs / the device's measured GEMM rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from _common import Clock, PeakMemory, materialise, matmul_rate, random_transformer
from infinitystar.generation.flops import generation_flops
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.placement import Placement, place_transformer
from infinitystar.generation.plan import PipelineConfig
from infinitystar.models.config import VAEConfig, get_preset
from infinitystar.models.transformer.quantize import block_weight_bytes
from infinitystar.models.vae.model import VideoVAE
from infinitystar.sizes import RESOLUTIONS
from infinitystar.text.builtin import BuiltinTextEncoder
from infinitystar.text.encoders import TextEncoder

PROMPT = "a red circle moving right on a black background"


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


class RandomT5(TextEncoder):
    """Flan-T5-XL's encoder architecture with random weights over random token ids of the prompt's
    typical length: the text phase's cost without a download."""

    def __init__(self, device: torch.device, dtype: torch.dtype, tokens: int = 64):
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

    def __getattr__(self, name):
        return getattr(self._model, name)

    def prefill_text(self, *args, **kwargs):
        if not self.steps and not self.prefill:
            self._memory.reset()
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


def _dtype(spec: RunSpec, device: torch.device) -> torch.dtype:
    if spec.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[spec.dtype]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _offload(spec: RunSpec) -> str:
    return {(False, False): "none", (True, False): "text", (False, True): "blocks"}.get(
        (spec.offload_text_encoder, spec.offload_blocks), "all"
    )


def build_pipeline(spec: RunSpec, device: torch.device) -> InfinityStarPipeline:
    dtype = _dtype(spec, device)
    if spec.model == "builtin":
        return InfinityStarPipeline.from_pretrained(
            None, device=device, dtype=dtype, quantize=spec.quantize, offload=_offload(spec)
        )
    preset = get_preset(spec.model)
    big = preset.vae is None  # the large presets use the released VAE
    resolution = spec.resolution or ("480p" if big else "0.06M")
    released = resolution in RESOLUTIONS
    config = PipelineConfig(
        resolution=resolution,
        max_duration=5 if released else 1,
        default_duration=5 if released else 1,
        frames_per_clip=20 if released else 4,
        detail_scale_min_tokens=None if released else 100,
        aspect_ratio="16:9" if released else "1:1",
        guidance="apg" if released else "cfg",
        guidance_scale=34.0 if released else 3.0,
    )
    transformer = random_transformer(spec.model, device, dtype)
    place_transformer(transformer, Placement.of(device, spec.quantize, "blocks" if spec.offload_blocks else None))
    vae_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    vae = materialise(lambda: VideoVAE(preset.vae or VAEConfig()), device, vae_dtype)
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


def run_one(spec: RunSpec) -> dict:
    device = torch.device(spec.device)
    torch.set_grad_enabled(False)
    rate = matmul_rate(device, _dtype(spec, device))  # first, on a quiet process
    pipe = build_pipeline(spec, device)
    if spec.token_chunk is not None:
        pipe.transformer.inference.token_chunk = spec.token_chunk or None  # 0: whole scales
    pipe.transformer.inference.compile = spec.compile
    options = asdict(pipe.transformer.inference)
    clock = Clock(device)
    memory = PeakMemory(device)
    timed = TimedTransformer(pipe.transformer, clock, memory)
    pipe.transformer = timed
    kwargs = dict(
        duration=spec.duration, seed=spec.seed, sampler=spec.sampler, exact_forcing=spec.exact_forcing, progress=False
    )
    if spec.mode == "i2v":
        h, w = pipe.pixel_size(pipe.config.aspect_ratio)
        frame = np.zeros((h, w, 3), np.uint8)
        frame[h // 4 : h // 2, w // 4 : w // 2] = (200, 40, 40)  # a red square on black
        kwargs["image"] = frame
    t_warm = time.perf_counter()
    warm_duration = 0 if spec.duration == 0 else min(1, spec.duration or 1)
    pipe(PROMPT, **{**kwargs, "duration": warm_duration})  # warm-up: an image, or a short video
    warm = time.perf_counter() - t_warm
    timed.prefill, timed.steps = 0.0, {}
    measured_vae = MeasuredVAE(pipe.vae, memory)
    pipe.vae = measured_vae
    memory.reset()
    clock.sync()
    result = pipe(PROMPT, **kwargs)
    clock.sync()
    overall_peak = memory.read_gib()
    sched = timed.schedule
    cfg = timed.cfg
    rows = 2 if pipe.config.guidance != "none" else 1
    text_len = int(pipe.text_encoder.encode([PROMPT])[0].shape[0])
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
    dtype = _dtype(spec, device) if spec.model != "builtin" else next(timed.parameters()).dtype
    return {
        "block_weight_bytes": block_weight_bytes(pipe.transformer._model),
        "spec": asdict(spec),
        "inference": options,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "frames": list(result.frames.shape),
        "steps": sched.num_steps,
        "computed_steps": len(timed.steps),
        "tokens_per_row": sched.num_step_tokens(),
        "text_tokens": text_len,
        "rows": rows,
        "warmup_s": warm,
        "total_s": t["total"],
        "transformer_s": t["transformer"],
        "phases": phases,
        "flops": flops.total,
        "group_flops": group_flops,
        "prefill_flops": flops.prefill,
        "matmul_rate": rate,
        "peak_memory_gib": max(overall_peak, *measured_vae.peaks.values()),
        "phase_peak_gib": measured_vae.peaks,
        "peak_memory_kind": memory.kind,
    }


#: glibc settings under which freed tensors go back to the system at once, so that the peak RSS is the peak of
#: live tensors (slower: every large allocation is an mmap)
EXACT_CPU_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}


def _in_subprocess(spec: RunSpec, exact_cpu_memory: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(asdict(spec))]
    env = {**os.environ, **(EXACT_CPU_MEMORY if exact_cpu_memory else {})}
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"run {spec.model} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def report(r: dict) -> None:
    s = r["spec"]
    rate = r["matmul_rate"]
    floor_t = r["flops"] / rate
    print(
        f"\n## {s['model']} on {r['device_name']} ({r['threads']} threads, torch {r['torch']}), {r['dtype']}, "
        f"{r['frames'][2]}x{r['frames'][1]}, {r['frames'][0]} frames, {r['steps']} steps, "
        f"{r['tokens_per_row']} tokens x {r['rows']} rows, sampler {s['sampler']}, "
        f"token_chunk {r['inference']['token_chunk']}, compile {s['compile']}, {s['mode']}, "
        f"quantize {s.get('quantize') or 'none'}, offload blocks {s.get('offload_blocks', False)} "
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
    print(
        f"\ntotal {total:.2f} s (warm-up run {r['warmup_s']:.2f} s); transformer {r['transformer_s']:.2f} s for "
        f"{r['flops'] / 1e12:.3f} TFLOP; GEMM rate {rate / 1e12:.2f} TFLOP/s -> floor {floor_t:.3f} s, "
        f"transformer time / floor {r['transformer_s'] / floor_t:.1f}x; "
        f"peak memory {r['peak_memory_gib']:.2f} GiB ({r['peak_memory_kind']}: transformer phase "
        f"{r['phase_peak_gib']['transformer']:.2f}, VAE decode {r['phase_peak_gib']['VAE decode']:.2f}); "
        f"block weights {r['block_weight_bytes'] / 2**30:.3f} GiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="'builtin' or a preset (default: builtin, tiny, small)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None)
    ap.add_argument("--resolution", default=None, help="480p / 720p / a budget name such as 0.06M")
    ap.add_argument("--duration", type=int, default=None, help="seconds (default: the model's)")
    ap.add_argument("--sampler", choices=("multinomial", "bernoulli"), default="multinomial")
    ap.add_argument(
        "--token-chunk", type=int, default=None, help="tokens per block chunk (0 = whole scales; default: 8192)"
    )
    ap.add_argument("--compile", action="store_true", help="torch.compile the blocks")
    ap.add_argument("--text", choices=("builtin", "t5-xl"), default=None, help="default: t5-xl on CUDA")
    ap.add_argument("--offload-text-encoder", action="store_true")
    ap.add_argument("--quantize", choices=("int8", "fp8"), help="weight-only quantized blocks (torchao)")
    ap.add_argument("--offload-blocks", action="store_true", help="blocks on the host, streamed block by block")
    ap.add_argument("--mode", choices=("t2v", "i2v"), default="t2v", help="i2v: a plain image forces the first frame")
    ap.add_argument("--exact-forcing", action="store_true", help="compute forced steps too (as the original)")
    ap.add_argument(
        "--exact-cpu-memory",
        action="store_true",
        help="CPU: glibc returns freed memory at once, so peak RSS = peak of live tensors (slower)",
    )
    ap.add_argument("--json", help="also append every run's figures to this JSON-lines file")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(RunSpec(**json.loads(args.one)))))
        return
    text = args.text or ("t5-xl" if args.device.startswith("cuda") else "builtin")
    for model in args.model or ["builtin", "tiny", "small"]:
        spec = RunSpec(
            model,
            args.device,
            args.dtype,
            args.resolution,
            args.duration,
            args.sampler,
            args.token_chunk,
            args.compile,
            text,
            args.offload_text_encoder,
            args.mode,
            args.exact_forcing,
            quantize=args.quantize,
            offload_blocks=args.offload_blocks,
        )
        r = _in_subprocess(spec, args.exact_cpu_memory)
        r["exact_cpu_memory"] = args.exact_cpu_memory
        report(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
