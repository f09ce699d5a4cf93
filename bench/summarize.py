"""README table rows from run records (``bench_generate.py --json FILE``, ``gpu_suite.py``'s ``gpu.jsonl``): device,
model, video, time, transformer time / FLOP floor, the GEMM rate the floor used, peak memory and the command that
reproduces the row. Runs of the same command on the same device are one row: each figure is the range over the
runs (min-max) with the number of runs, so a figure quoted in the README is never one lucky run.

    python bench/summarize.py bench/results/generate.jsonl [more.jsonl ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable

HEADER = (
    "| device | model | video | time | transformer / floor | GEMM rate | peak memory | command |\n"
    "|---|---|---|---|---:|---:|---|---|"
)


def command(r: dict) -> str:
    """The command line of a run: the one it recorded (``gpu_suite.py``), else its bench_generate.py line."""
    if r.get("command"):
        return r["command"]
    s = r["spec"]
    parts = ["python bench/bench_generate.py", f"--model {s['model']}"]
    if s["device"] != "cpu":
        parts.append(f"--device {s['device']}")
    for key, flag in (("resolution", "--resolution"), ("duration", "--duration"), ("token_chunk", "--token-chunk")):
        if s[key] is not None:
            parts.append(f"{flag} {s[key]}")
    if s["sampler"] != "multinomial":
        parts.append(f"--sampler {s['sampler']}")
    if s["mode"] != "t2v":
        parts.append(f"--mode {s['mode']}")
    if s.get("quantize"):
        parts.append(f"--quantize {s['quantize']}")
    if s.get("vae_dtype", "fp32") != "fp32":
        parts.append(f"--vae-dtype {s['vae_dtype']}")
    for key in ("compile", "exact_forcing", "offload_text_encoder", "offload_blocks"):
        if s.get(key):
            parts.append("--" + key.replace("_", "-"))
    if r.get("exact_cpu_memory"):
        parts.append("--exact-cpu-memory")
    return " ".join(parts)


def threads(n: int) -> str:
    """``1 thread`` / ``2 threads``."""
    return f"{n} thread{'s' if n != 1 else ''}"


def device_of(r: dict) -> str:
    return r["device_name"] if r["device_name"] != "cpu" else f"CPU, {threads(r['threads'])}"


def span(values: Iterable[float], fmt: Callable[[float], str]) -> str:
    """``fmt(v)`` of one value, or ``fmt(min)-fmt(max)`` when the runs differ at the printed precision."""
    values = list(values)
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _model(r: dict) -> str:
    s = r["spec"]
    options = [f"chunk {r['inference']['token_chunk'] or 'none (whole scales)'}"]
    options += [f"{k} {v}" for k, v in r.get("settings", {}).items() if k not in ("token_chunk", "compile")]
    if s["compile"]:
        options.append("compiled" + (" (FAILED: ran eagerly)" if r.get("compile_failed") else ""))
    if s["sampler"] != "multinomial":
        options.append(s["sampler"])
    if s["mode"] != "t2v":
        options.append(s["mode"] + (" (exact forcing)" if s["exact_forcing"] else ""))
    settings = r.get("settings", {})
    if s.get("quantize") and "quantize" not in settings:
        options.append(s["quantize"])
    if s.get("offload_blocks") and "offload" not in settings:
        options.append("blocks offloaded")
    if s.get("vae_dtype", "fp32") != "fp32" and "vae_dtype" not in settings:
        options.append(f"VAE {s['vae_dtype']}")
    return f"{s['model']} ({r['dtype']}; {', '.join(options)})"


def row(runs: list[dict]) -> str:
    """One table row for one or more runs of the same command on the same device."""
    r = runs[0]
    frames, h, w = r["frames"][:3]
    n = f"; {len(runs)} runs" if len(runs) > 1 else ""
    time = (
        f"{span((x['total_s'] for x in runs), lambda v: f'{v:.2f}')} s "
        f"(transformer {span((x['transformer_s'] for x in runs), lambda v: f'{v:.2f}')} s{n})"
    )
    if r["spec"]["compile"] and r.get("warmup_s") is not None:
        time += f"; first video {span((x['warmup_s'] for x in runs), lambda v: f'{v:.1f}')} s"
        if all(x.get("compile_s") is not None for x in runs):
            time += f", compiling ~{span((x['compile_s'] for x in runs), lambda v: f'{v:.0f}')} s"
    ratio = span((x["transformer_s"] * x["matmul_rate"] / x["flops"] for x in runs), lambda v: f"{v:.1f}x")
    gemm = span((x["matmul_rate"] / 1e12 for x in runs), lambda v: f"{v:.2f}") + " TFLOP/s"
    peak = span((x["peak_memory_gib"] for x in runs), lambda v: f"{v:.2f}")
    phase = span((x["phase_peak_gib"]["transformer"] for x in runs), lambda v: f"{v:.2f}")
    memory = f"{peak} GiB, transformer phase {phase} GiB ({r['peak_memory_kind']})"
    return (
        f"| {device_of(r)} | {_model(r)} | {w}x{h}, {frames} frames | {time} | {ratio} | {gemm} | {memory} | "
        f"`{command(r)}` |"
    )


def grouped(records: Iterable[dict]) -> list[list[dict]]:
    """Runs grouped by (command, device), in the order each group first appears."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((command(r), device_of(r)), []).append(r)
    return list(groups.values())


def read_records(paths: Iterable[str]) -> list[dict]:
    """Every run record of some JSON-lines files (records of steps that did not run are left out)."""
    out = []
    for path in paths:
        with open(path) as f:
            out += [json.loads(line) for line in f if line.strip()]
    return [r for r in out if "total_s" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="+")
    args = ap.parse_args()
    print(HEADER)
    for runs in grouped(read_records(args.jsonl)):
        print(row(runs))


if __name__ == "__main__":
    main()
