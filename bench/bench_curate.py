"""Throughput of ``infinitystar curate`` on synthetic videos (no captioner).

    python bench/bench_curate.py [--videos N] [--seconds S] [--size 480x848] [--fps 24] [--workers 1,2]

Writes N textured videos (a scene cut in the middle, moving content) into a temporary folder, then curates them
with each motion method (frame differences; optical flow when OpenCV is installed) and each worker count.
Prints seconds per run, video seconds curated per wall second, and decoded frames per second. Everything runs
on CPU; decoding (PyAV) and the per-frame analysis dominate.
"""

from __future__ import annotations

import argparse
import fractions
import tempfile
import time
from pathlib import Path

import numpy as np

from infinitystar.curate import CurateConfig, run_curate
from infinitystar.curate.filters import opencv_available


def _write(path: Path, seconds: float, height: int, width: int, fps: int, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    pad = 2 * n
    textures = []
    for palette in ((255, 90, 60), (60, 120, 255)):
        blocks = rng.random(((height + 15) // 16, (width + pad + 15) // 16, 1))
        tex = np.kron(blocks, np.ones((16, 16, 1)))[:height, : width + pad] * np.asarray(palette)
        textures.append(tex.astype(np.uint8))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fractions.Fraction(fps))
        stream.pix_fmt, stream.height, stream.width = "yuv420p", height, width
        stream.options = {"preset": "ultrafast"}
        for t in range(n):
            tex = textures[0] if t < n // 2 else textures[1]
            frame = np.ascontiguousarray(tex[:, 2 * t : 2 * t + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--size", default="480x848", help="HxW")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "videos"
        src.mkdir()
        for i in range(args.videos):
            _write(src / f"v{i}.mp4", args.seconds, height, width, args.fps, i)
        total_seconds = args.videos * args.seconds
        total_frames = args.videos * int(args.seconds * args.fps)
        methods = ["diff"] + (["flow"] if opencv_available() else [])
        print(f"{args.videos} videos x {args.seconds:g} s, {height}x{width} @ {args.fps} fps (H.264), CPU")
        print(f"{'motion':<6} {'workers':>7} {'seconds':>8} {'video s / s':>12} {'frames / s':>11} {'clips':>6}")
        for method in methods:
            for workers in (int(w) for w in args.workers.split(",")):
                out = Path(tmp) / f"out_{method}_{workers}" / "m.jsonl"
                config = CurateConfig(motion=method, min_short_edge=min(height, width))
                start = time.perf_counter()
                report = run_curate(src, out, config, workers=workers)
                took = time.perf_counter() - start
                print(
                    f"{method:<6} {workers:>7} {took:>8.2f} {total_seconds / took:>12.1f} "
                    f"{total_frames / took:>11.0f} {report['videos']['clips_kept']:>6}"
                )


if __name__ == "__main__":
    main()
