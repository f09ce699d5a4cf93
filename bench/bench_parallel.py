"""One video on several processes: time per phase and per step by process count (sequence / guidance parallel).

    python bench/bench_parallel.py                       # CPU: small preset, 512x512, 17 frames; 1, sp2, cfg, sp2+cfg
    python bench/bench_parallel.py --runs 1,sp2 --threads 1
    python bench/bench_parallel.py --device cuda --model 8b --resolution 720p --duration 5 \\
        --runs 1,sp2,sp4,sp8,cfg,sp4+cfg,sp2+fsdp          # a machine with 8 GPUs (not measured yet)

Every configuration runs in fresh processes (``torch.distributed.run`` for more than one): one warm-up generation,
then the timed one, with the same seed (so the same bits as one process). ``--runs`` names configurations: ``1``
(one process), ``spK`` (sequence parallel over K), ``cfg`` (guidance parallel), joined with ``+`` (``sp2+cfg``: 4
processes; ``+fsdp`` shards the blocks' weights). On the CPU each process gets ``--threads`` threads (default: the
cores divided by the processes, at least 1; more processes than cores share them, which the table says).

Printed per run (rank 0's view): wall time by phase (text encoder, text prefill, the transformer steps grouped by
clip and scale kind, of which the all-to-alls around attention, including waiting for the slowest rank; gathering
the logits on rank 0; broadcasting the bits; sampling and the loop; VAE decode on rank 0), the mean time per computed
step and that of the largest step, and the CPU seconds every process spent in the steps (the work the split adds,
whatever else runs on the machine; wall times on a shared machine are not); then one summary row per run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

import infinitystar.parallel as ulysses
from _common import Clock, PeakMemory
from _generation import PROMPT, RunSpec, TimedTransformer, _groups, build_pipeline
from infinitystar.generation.layouts import BUILTIN_MODEL_DIR, read_transformer_config
from infinitystar.generation.parallel import ParallelConfig, start_parallel
from infinitystar.models.config import get_preset


@dataclass
class ParallelSpec:
    run: str  #: '1', 'sp2', 'cfg', 'sp2+cfg', '+fsdp'...
    model: str
    device: str
    dtype: str | None
    resolution: str | None
    duration: int | None
    token_chunk: int | None
    threads: int
    seed: int = 0


def parse_run(name: str) -> ParallelConfig:
    """``1`` / ``spK`` / ``cfg`` / ``fsdp`` joined with ``+`` -> a :class:`ParallelConfig`."""
    sp, cfg, fsdp = 1, False, False
    for part in name.split("+"):
        if part == "cfg":
            cfg = True
        elif part == "fsdp":
            fsdp = True
        elif part.startswith("sp") and part[2:].isdigit():
            sp = int(part[2:])
        elif part != "1":
            raise SystemExit(f"unknown run {name!r}: use 1, spK, cfg and fsdp joined with '+' (e.g. sp2+cfg)")
    return ParallelConfig(sp, cfg, fsdp)


class Timed:
    """A function whose calls add their wall time (GPU synchronised) to ``seconds[name]``."""

    def __init__(self, fn, name: str, seconds: dict[str, float], clock: Clock):
        self.fn, self.name, self.seconds, self.clock = fn, name, seconds, clock

    def __call__(self, *args, **kwargs):
        out = []
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + self.clock(
            lambda: out.append(self.fn(*args, **kwargs))
        )
        return out[0]


def _pipeline(spec: ParallelSpec):
    """The pipeline of a run and this process's place in it (None for one process)."""
    config = parse_run(spec.run)
    run = None
    device = torch.device(spec.device)
    if config.enabled:
        arch = read_transformer_config(BUILTIN_MODEL_DIR, None) if spec.model == "builtin" else None
        run = start_parallel(config, spec.device, arch or get_preset(spec.model).transformer)
        device = run.device
    gen = RunSpec(
        spec.model, str(device), spec.dtype, spec.resolution, spec.duration, "multinomial", spec.token_chunk,
        False, "builtin", False, seed=spec.seed,
    )  # fmt: skip
    pipe = build_pipeline(gen, device)  # random weights from a fixed seed: the same on every rank
    if spec.token_chunk is not None:
        pipe.transformer.inference.token_chunk = spec.token_chunk or None
    if run is not None:
        run.shard_weights(pipe.transformer)
        pipe.parallel = run
    return pipe, run, device


def _count_step_cpu(timed: TimedTransformer) -> list[float]:
    """Add the CPU time (all threads of this process) of every step to the returned one-element list: work done,
    whatever else the machine runs (wall time is not)."""
    cpu = [0.0]
    wall_step = timed.step

    def step(*args):
        c0 = time.process_time()
        out = wall_step(*args)
        cpu[0] += time.process_time() - c0
        return out

    timed.step = step
    return cpu


def _gather(value: float, world: int) -> list[float]:
    import torch.distributed as dist

    got = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(got, torch.tensor([value], dtype=torch.float64))  # CPU tensors: the gloo part of the group
    return [t.item() for t in got]


def run_one(spec: ParallelSpec) -> dict | None:
    torch.set_grad_enabled(False)
    torch.set_num_threads(spec.threads)
    pipe, run, device = _pipeline(spec)
    clock, comm = Clock(device), {}
    ulysses.all_to_all = Timed(ulysses.all_to_all, "all-to-all", comm, clock)  # seq_to_heads / heads_to_seq call it
    if run is not None:
        run.gather_logits = Timed(run.gather_logits, "gather logits on rank 0", comm, clock)
        run.broadcast_bits = Timed(run.broadcast_bits, "broadcast bits", comm, clock)
    timed = TimedTransformer(pipe.transformer, clock, PeakMemory(device))
    pipe.transformer = timed
    cpu = _count_step_cpu(timed)
    kwargs = dict(duration=spec.duration, seed=spec.seed, progress=False)
    t0 = time.perf_counter()
    pipe(PROMPT, **kwargs)  # warm-up
    warm = time.perf_counter() - t0
    timed.prefill, timed.steps = 0.0, {}
    comm.clear()
    cpu[0] = 0.0
    clock.sync()
    result = pipe(PROMPT, **kwargs)
    clock.sync()
    step_cpu = [cpu[0]]
    if run is not None:
        step_cpu = _gather(cpu[0], run.world_size)
        run.finish()
    if not pipe.is_main:
        return None
    t, sched = result.timings, timed.schedule
    phases = {"text encoder": t.get("text", 0.0), "text prefill": timed.prefill}
    for name, idx in _groups(sched).items():
        phases[name] = sum(timed.steps.get(i, 0.0) for i in idx)
    steps_total = sum(timed.steps.values())
    outside = comm.get("gather logits on rank 0", 0.0) + comm.get("broadcast bits", 0.0)
    phases["gather logits on rank 0"] = comm.get("gather logits on rank 0", 0.0)
    phases["broadcast bits"] = comm.get("broadcast bits", 0.0)
    phases["sampling + loop"] = t["transformer"] - timed.prefill - steps_total - outside
    phases["VAE decode (rank 0)"] = t.get("decode", 0.0)
    phases["other"] = t["total"] - sum(phases.values())
    largest = max(sched.steps, key=lambda st: sched.scales[st.scale].num_tokens).index
    config = parse_run(spec.run)
    return {
        "spec": asdict(spec),
        "processes": config.world_size,
        "flags": config.flags(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "frames": list(result.frames.shape),
        "steps": sched.num_steps,
        "computed_steps": len(timed.steps),
        "largest_step_tokens": sched.scales[sched.steps[largest].scale].num_tokens,
        "warmup_s": warm,
        "total_s": t["total"],
        "transformer_s": t["transformer"],
        "steps_s": steps_total,
        "all_to_all_s": comm.get("all-to-all", 0.0),
        "step_cpu_s": step_cpu,  #: CPU seconds of the steps, per rank
        "largest_step_s": timed.steps.get(largest, 0.0),
        "phases": phases,
        #: of the generated latent: equal across runs when the split draws the bits of one process
        "latent_sha256": hashlib.sha256(result.latents[0].float().cpu().numpy().tobytes()).hexdigest()[:16],
    }


def _launch(spec: ParallelSpec) -> dict:
    n = parse_run(spec.run).world_size
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)] if n > 1 else []
    cmd = [*(head or [sys.executable]), os.path.abspath(__file__), "--one", json.dumps(asdict(spec))]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads)}
    load_before = os.getloadavg()[0]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"run {spec.run} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    r = json.loads(lines[-1])
    r["load_average"] = [load_before, os.getloadavg()[0]]  # other work on the machine (1-minute averages)
    return r


def report(r: dict) -> None:
    s = r["spec"]
    over = " (more processes than cores: they share them)" if r["processes"] * s["threads"] > r["cores"] else ""
    print(
        f"\n## {s['model']} on {r['device_name']}, {r['frames'][2]}x{r['frames'][1]}, {r['frames'][0]} frames, "
        f"{r['steps']} steps: {r['processes']} process(es) {r['flags'] or '(one process)'}, "
        f"{s['threads']} thread(s) each on {r['cores']} cores{over}; load average {r['load_average'][0]:.1f} before, "
        f"{r['load_average'][1]:.1f} after"
    )
    print("| phase | seconds | share |")
    print("|---|---:|---:|")
    for name, sec in r["phases"].items():
        print(f"| {name} | {sec:.3f} | {100 * sec / r['total_s']:.0f}% |")
    print(f"| of the steps: all-to-all around attention (incl. waiting) | {r['all_to_all_s']:.3f} | |")
    cpu = ", ".join(f"{c:.2f}" for c in r["step_cpu_s"])
    print(f"| CPU seconds of the steps, per process | {cpu} | |")
    per_step = r["steps_s"] / max(1, r["computed_steps"])
    print(
        f"\ntotal {r['total_s']:.2f} s (warm-up {r['warmup_s']:.2f} s); transformer {r['transformer_s']:.2f} s; "
        f"{r['computed_steps']} steps, {1000 * per_step:.1f} ms each on average; largest step "
        f"({r['largest_step_tokens']} tokens per row) {1000 * r['largest_step_s']:.1f} ms"
    )


def summary(rows: list[dict]) -> None:
    base = rows[0]
    print(
        "\n| processes | flags | threads each | total s | transformer s | all-to-all s | per step ms | largest ms "
        "| step CPU s, all processes | latent sha256 |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        per_step = 1000 * r["steps_s"] / max(1, r["computed_steps"])
        print(
            f"| {r['processes']} | {r['flags'] or '-'} | {r['spec']['threads']} | {r['total_s']:.2f} | "
            f"{r['transformer_s']:.2f} ({r['transformer_s'] / base['transformer_s']:.2f}x) | {r['all_to_all_s']:.2f} | "
            f"{per_step:.1f} | {1000 * r['largest_step_s']:.1f} | {sum(r['step_cpu_s']):.2f} "
            f"({sum(r['step_cpu_s']) / sum(base['step_cpu_s']):.2f}x) | {r['latent_sha256']} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="1,sp2,cfg,sp2+cfg", help="comma-separated configurations (see above)")
    ap.add_argument("--model", default="small", help="'builtin' or a preset (default small)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (each rank takes cuda:LOCAL_RANK)")
    ap.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None)
    ap.add_argument("--resolution", default="0.25M", help="480p / 720p / a budget name (default 0.25M: 512x512)")
    ap.add_argument("--duration", type=int, default=None, help="seconds (default: the model's)")
    ap.add_argument("--token-chunk", type=int, default=None, help="tokens per block chunk (0 = whole scales)")
    ap.add_argument("--threads", type=int, default=None, help="threads per process (default: cores / processes)")
    ap.add_argument("--json", help="also append every run's figures to this JSON-lines file")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        r = run_one(ParallelSpec(**json.loads(args.one)))
        if r is not None:
            print(json.dumps(r))
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    rows = []
    for name in args.runs.split(","):
        n = parse_run(name).world_size
        threads = args.threads or max(1, cores // n)
        spec = ParallelSpec(
            name, args.model, args.device, args.dtype, args.resolution, args.duration, args.token_chunk, threads
        )
        r = _launch(spec)
        report(r)
        rows.append(r)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
    summary(rows)


if __name__ == "__main__":
    main()
