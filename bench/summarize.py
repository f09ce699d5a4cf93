"""One README table row per run of ``bench_generate.py --json FILE``: device, model, resolution, duration,
time, time / floor, peak memory and the command that reproduces the row.

    python bench/summarize.py bench/results/generate.jsonl
"""

from __future__ import annotations

import argparse
import json


def command(r: dict) -> str:
    """The bench_generate.py command line of a run."""
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
    for key in ("compile", "exact_forcing", "offload_text_encoder", "offload_blocks"):
        if s.get(key):
            parts.append("--" + key.replace("_", "-"))
    if r.get("exact_cpu_memory"):
        parts.append("--exact-cpu-memory")
    return " ".join(parts)


def row(r: dict) -> str:
    s = r["spec"]
    frames, h, w = r["frames"][:3]
    device = r["device_name"] if r["device_name"] != "cpu" else f"CPU, {r['threads']} threads"
    floor = r["flops"] / r["matmul_rate"]
    options = [f"chunk {r['inference']['token_chunk']}"]
    if s["compile"]:
        options.append("compiled")
    if s["sampler"] != "multinomial":
        options.append(s["sampler"])
    if s["mode"] != "t2v":
        options.append(s["mode"] + (" (exact forcing)" if s["exact_forcing"] else ""))
    if s.get("quantize"):
        options.append(s["quantize"])
    if s.get("offload_blocks"):
        options.append("blocks offloaded")
    return (
        f"| {device} | {s['model']} ({r['dtype']}; {', '.join(options)}) | {w}x{h}, {frames} frames | "
        f"{r['total_s']:.2f} s (transformer {r['transformer_s']:.2f} s) | {r['transformer_s'] / floor:.1f}x | "
        f"{r['peak_memory_gib']:.2f} GiB, transformer phase {r['phase_peak_gib']['transformer']:.2f} GiB "
        f"({r['peak_memory_kind']}) | `{command(r)}` |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl", nargs="+")
    args = ap.parse_args()
    print("| device | model | video | time | transformer / floor | peak memory | command |")
    print("|---|---|---|---|---:|---|---|")
    for path in args.jsonl:
        with open(path) as f:
            for line in f:
                if line.strip():
                    print(row(json.loads(line)))


if __name__ == "__main__":
    main()
