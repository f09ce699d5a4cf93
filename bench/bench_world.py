"""Speed of the procedural world, its evaluator and the built-in text encoder (CPU, prints a table).

python bench/bench_world.py [--sizes 64 128 256] [--frames 17] [--n 200]
"""

from __future__ import annotations

import argparse
import time

import torch

from infinitystar.text.builtin import BuiltinTextEncoder
from infinitystar.world.captions import caption, prompts
from infinitystar.world.dataset import WorldDataset
from infinitystar.world.evaluate import evaluate_video
from infinitystar.world.render import render
from infinitystar.world.scenes import WorldSpec, sample_scene


def per_item_ms(fn, n: int) -> float:
    fn(0)  # warm up (caches, lazy tables)
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--n", type=int, default=200, help="items per measurement")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"{'what':<34} {'size':>5} {'ms/item':>9}")
    scenes = [sample_scene(i) for i in range(args.n)]
    print(f"{'sample_scene':<34} {'':>5} {per_item_ms(lambda i: sample_scene(i), args.n):>9.3f}")
    for size in args.sizes:
        ms = per_item_ms(lambda i, s=size: render(scenes[i % len(scenes)], args.frames, s), args.n)
        print(f"{f'render {args.frames} frames (uint8)':<34} {size:>5} {ms:>9.3f}")
        ds = WorldDataset(args.n, spec=WorldSpec(frames=args.frames, size=size))
        print(f"{'WorldDataset item (float [-1,1])':<34} {size:>5} {per_item_ms(lambda i, d=ds: d[i], args.n):>9.3f}")
        videos = [render(scenes[i], args.frames, size) for i in range(min(args.n, 50))]
        texts = [caption(scenes[i]) for i in range(len(videos))]
        ms = per_item_ms(lambda i, v=videos, t=texts: evaluate_video(v[i % len(v)], t[i % len(t)]), len(videos))
        print(f"{'evaluate_video':<34} {size:>5} {ms:>9.3f}")
    encoder = BuiltinTextEncoder()
    texts = prompts("train", args.n, seed=0)
    ms = per_item_ms(lambda i: encoder.encode([texts[i]]), args.n)
    print(f"{'BuiltinTextEncoder.encode (1 prompt)':<34} {'':>5} {ms:>9.3f}")
    start = time.perf_counter()
    BuiltinTextEncoder()
    print(f"{'BuiltinTextEncoder() construction':<34} {'':>5} {(time.perf_counter() - start) * 1e3:>9.3f}")


if __name__ == "__main__":
    main()
