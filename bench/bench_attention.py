"""Attention of one inference step, three ways, to measure two of the original's costs in isolation.

    python bench/bench_attention.py                                  # CPU: small preset, 0.25M last scale
    python bench/bench_attention.py --device cuda --preset 8b --resolution 720p

For the largest scale of a schedule (its N queries attend to text + reference scale + themselves):

- ``repeat_kv + cat``: the original: K/V of the step concatenated to the cached context, then every K/V
  head repeated H / KV times before attention;
- ``native GQA + cat``: ours: the concatenation, then attention with grouped heads (``enable_gqa``);
- ``native GQA, preallocated``: the step's K/V written into a buffer that already holds the context
  (what a preallocated cache would do), so no concatenation.

Prints milliseconds per call (median of ``--repeats``) and the bytes the extra copies move.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from _common import Clock
from infinitystar.models.config import get_preset
from infinitystar.schedule import build_schedule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default=None, help="default: small on CPU, 8b on CUDA")
    ap.add_argument("--resolution", default=None, help="default: 0.25M on CPU, 720p on CUDA")
    ap.add_argument("--text-len", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--query-chunk", type=int, default=8192, help="queries per attention call (as inference)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = get_preset(args.preset or ("8b" if cuda else "small")).transformer
    res = args.resolution or ("720p" if cuda else "0.25M")
    if res.endswith("p"):  # a released resolution: 16:9, 5 s
        sched = build_schedule(9 / 16, res, 21)
    else:
        sched = build_schedule(1.0, res, 5, detail_scale_min_tokens=100)
    sc = max(sched.scales, key=lambda s: s.num_tokens)
    n = sc.num_tokens
    ctx = args.text_len + sum(sched.scales[r].num_tokens for r in sc.ref_scales)
    rows, h, kv, hd = 2, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=dtype)

    q, k, v = rnd(rows, h, n, hd), rnd(rows, kv, n, hd), rnd(rows, kv, n, hd)
    ctx_k, ctx_v = rnd(rows, kv, ctx, hd), rnd(rows, kv, ctx, hd)
    buf_k, buf_v = torch.cat([ctx_k, k], 2), torch.cat([ctx_v, v], 2)  # the preallocated buffers

    def attend(keys, values, gqa):
        for s in range(0, n, args.query_chunk):
            F.scaled_dot_product_attention(q[:, :, s : s + args.query_chunk], keys, values, enable_gqa=gqa)

    def original():
        keys, values = torch.cat([ctx_k, k], 2), torch.cat([ctx_v, v], 2)
        attend(keys.repeat_interleave(h // kv, 1), values.repeat_interleave(h // kv, 1), False)

    def ours():
        attend(torch.cat([ctx_k, k], 2), torch.cat([ctx_v, v], 2), True)

    def preallocated():
        buf_k[:, :, ctx:], buf_v[:, :, ctx:] = k, v
        attend(buf_k, buf_v, True)

    clock = Clock(device)
    print(
        f"device {device}, {cfg.num_heads} heads / {kv} KV of {hd}, scale {sc.shape}: {n} queries x {rows} rows, "
        f"{ctx + n} keys, {dtype}"
    )
    print("| variant | ms / call | extra bytes copied |\n|---|---:|---:|")
    kv_bytes = rows * kv * hd * (ctx + n) * 2 * q.element_size()
    for name, fn, extra in (
        ("repeat_kv + cat (original)", original, kv_bytes * (1 + h // kv)),
        ("native GQA + cat (ours)", ours, kv_bytes),
        ("native GQA, preallocated", preallocated, kv_bytes * n / (ctx + n)),
    ):
        fn()  # warm-up
        ms = statistics.median(1e3 * clock(fn) for _ in range(args.repeats))
        print(f"| {name} | {ms:.2f} | {extra / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
