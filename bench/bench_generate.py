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
from dataclasses import asdict

import torch

from _common import gemm_rate
from _generation import RunSpec, build_pipeline, measure, report, run_dtype


def run_one(spec: RunSpec) -> dict:
    """One run in this process: the GEMM rate first (on a quiet process), the pipeline, a warm-up, the timed run."""
    device = torch.device(spec.device)
    torch.set_grad_enabled(False)
    gemm = gemm_rate(device, run_dtype(spec, device))
    pipe = build_pipeline(spec, device)
    if spec.token_chunk is not None:
        pipe.transformer.inference.token_chunk = spec.token_chunk or None  # 0: whole scales
    pipe.transformer.inference.compile = spec.compile
    return measure(pipe, spec, gemm)


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
    ap.add_argument("--vae-dtype", choices=("fp32", "bf16"), default="fp32", help="the VAE's dtype (default fp32)")
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
            vae_dtype=args.vae_dtype,
        )
        r = _in_subprocess(spec, args.exact_cpu_memory)
        r["exact_cpu_memory"] = args.exact_cpu_memory
        report(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
