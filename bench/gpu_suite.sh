#!/usr/bin/env bash
# The GPU figures of the README's performance table, in two parts that each fit one 10-minute call
# (the package runs from src/ without installing: torch, numpy, safetensors, transformers and tqdm suffice).
#
#   bash bench/gpu_suite.sh 480p [OUT_DIR]     # 8B, 480p 5 s: before/after each optimisation, I2V forcing
#   bash bench/gpu_suite.sh 720p [OUT_DIR]     # 8B, 720p 5 s, eager and compiled; attention; the VAE
#   bash bench/gpu_suite.sh memory [OUT_DIR]   # 8B, 720p 5 s: --quantize int8 / fp8, --offload blocks (+ int8)
#
# Every run appends its figures to OUT_DIR/generate.jsonl (default bench/results) and prints its table.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?give 480p, 720p or memory}
out=${2:-${OUT:-bench/results}}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$out/gpu.txt"
run() {
    echo "== bench_generate $*"
    $py bench/bench_generate.py --device cuda --model 8b --duration 5 "$@" --json "$out/generate.jsonl" 2>&1 \
        | tee -a "$out/generate.log"
}

case $part in
480p)
    run --resolution 480p --token-chunk 0                 # whole scales (no chunks)
    run --resolution 480p                                 # default: 8192-token chunks
    run --resolution 480p --sampler bernoulli             # fused sigmoid-Bernoulli sampler
    run --resolution 480p --offload-text-encoder          # T5 back on the CPU after encoding
    run --resolution 480p --mode i2v --exact-forcing      # forced steps computed, as the original
    run --resolution 480p --mode i2v                      # forced steps skipped
    ;;
720p)
    run --resolution 720p
    run --resolution 720p --compile
    run --resolution 720p --compile --sampler bernoulli --offload-text-encoder
    $py bench/bench_attention.py --device cuda 2>&1 | tee -a "$out/attention.log"
    $py bench/bench_vae.py --device cuda --widths full 2>&1 | tee -a "$out/vae.log"
    ;;
memory)
    run --resolution 720p --quantize int8
    run --resolution 720p --offload-blocks
    run --resolution 720p --quantize int8 --offload-blocks --offload-text-encoder
    run --resolution 720p --quantize fp8                  # compute capability 8.9+ (H100 / H200)
    $py bench/bench_quantize.py --device cuda --dtype bf16 --quantize int8 fp8 --model small 8b 2>&1 \
        | tee -a "$out/quantize.log"
    ;;
*)
    echo "unknown part $part: give 480p, 720p or memory" >&2
    exit 2
    ;;
esac
[ -f "$out/generate.jsonl" ] && $py bench/summarize.py "$out/generate.jsonl" | tee "$out/table.md"
