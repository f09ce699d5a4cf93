#!/usr/bin/env bash
# The README's CPU performance rows: every command below RUNS times (default 3, round-robin so that a busy minute
# of a shared machine does not fall on one row), each in a fresh process, appended to OUT/cpu.jsonl; then one row
# per command with the range over its runs and the GEMM rate beside it (bench/summarize.py).
#
#   bash bench/cpu_rows.sh [OUT_DIR] [RUNS]        # OMP_NUM_THREADS sets the threads (the rows say how many)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results/cpu}
runs=${2:-3}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
rows=(
    "--model builtin"
    "--model builtin --sampler bernoulli"
    "--model builtin --mode i2v --exact-forcing"
    "--model builtin --mode i2v"
    "--model builtin --compile"
    "--model tiny"
    "--model small"
    "--model small --resolution 0.25M --token-chunk 0 --exact-cpu-memory"
    "--model small --resolution 0.25M --token-chunk 1024 --exact-cpu-memory"
)
for i in $(seq "$runs"); do
    for r in "${rows[@]}"; do
        echo "run $i/$runs: bench_generate.py $r" >&2
        # shellcheck disable=SC2086 - the row's options are words
        python bench/bench_generate.py $r --json "$out/cpu.jsonl" >/dev/null
    done
done
python bench/summarize.py "$out/cpu.jsonl" | tee "$out/cpu.md"
