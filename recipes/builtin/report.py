"""Evaluate the built-in model and print the one table the README keeps.

    python recipes/builtin/report.py [--runs runs/builtin] [--model src/infinitystar/assets/default] [--n 100]

Rows:
- tokenizer reconstruction PSNR on held-out world clips (17 x 128 x 128, posterior mean, through the model's
  8-scale bit pyramid), for the inherited tokenizer (continuous VAE, then the quantizer in the loop), the same
  budget trained from scratch with the quantizer, and the continuous VAE without any quantizer (for reference);
- prompt-following accuracy (colour, shape, motion, all three) of generated videos on ``--n`` prompts of held-out
  colour-shape-motion combinations and ``--n`` of seen ones (``infinitystar evaluate --world-prompts``);
- the same for the bitwise-self-correction ablation when its run exists (``runs/builtin/transformer_nobsc`` and a
  BSC run of the same budget, ``runs/builtin/transformer_bsc_small``);
- the wall time of one default ``infinitystar generate`` video on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from infinitystar.cli import main as cli
from infinitystar.media import frames_to_uint8
from infinitystar.quantizer import decode_bits, encode_pyramid
from infinitystar.schedule import build_schedule
from infinitystar.train.tokenizer_train import load_vae_weights
from infinitystar.vae import VideoVAE, infer_vae_config, read_original_vae_state
from infinitystar.world import WorldDataset, WorldSpec
from infinitystar.world_eval import evaluate_video


def tokenizer_eval(vae_file: Path, n: int, quantize: bool = True) -> tuple[float, dict[str, float]]:
    """Mean PSNR (dB, frames in [0, 255]) of held-out world clips through VAE encode -> bits -> decode, and the
    analytic evaluator's accuracy on those reconstructions against the clips' captions: the ceiling that
    generation through this tokenizer can reach."""
    vae = VideoVAE(infer_vae_config(read_original_vae_state(vae_file)))
    load_vae_weights(vae, vae_file)
    vae.eval()
    data = WorldDataset(n, seed=12345, split="heldout", spec=WorldSpec(frames=17, size=128))
    sched = build_schedule(1.0, "0.016M", 5, detail_scale_min_tokens=16, frames_per_clip=2)
    values, hits = [], {"color": 0, "shape": 0, "motion": 0, "all": 0}
    with torch.no_grad():
        for i in range(n):
            video, caption = data[i]
            x = video[None]  # [1, 3, 17, 128, 128] in [-1, 1]
            latent = vae.encode(x, sample=False)
            if quantize:
                latent = decode_bits(encode_pyramid(latent, sched).bits, sched)
            y = vae.decode(latent).clamp(-1, 1)
            mse = ((y - x) * 127.5).pow(2).mean().item()
            values.append(10 * math.log10(255.0**2 / max(mse, 1e-10)))
            r = evaluate_video(frames_to_uint8(y)[0].numpy(), caption)
            for key, ok in (("color", r.color_correct), ("shape", r.shape_correct), ("motion", r.motion_correct)):
                hits[key] += bool(ok)
            hits["all"] += r.all_correct
    return sum(values) / len(values), {k: v / n for k, v in hits.items()}


def prompt_following(model: Path, out_dir: Path, n: int) -> dict | None:
    if not (model / "model_index.json").is_file():
        return None
    code = cli(
        [
            "evaluate",
            "--world-prompts",
            f"heldout:{n},train:{n}",
            "--out-dir",
            str(out_dir),
            "--checkpoint",
            str(model),
            "--quiet",
        ]
    )
    if code not in (0, 1):
        return None
    return json.loads((out_dir / "summary.json").read_text())


def weights_digest(model: Path) -> str:
    """Short hash of a model folder's transformer weights: evaluation outputs of other weights are never reused
    (``infinitystar evaluate`` skips files that exist)."""
    h = hashlib.sha256()
    for f in sorted((model / "transformer").glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def fmt(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/builtin")
    ap.add_argument("--model", default="src/infinitystar/assets/default")
    ap.add_argument("--n", type=int, default=100, help="prompts per split (held-out, seen)")
    ap.add_argument("--clips", type=int, default=32, help="held-out clips for the tokenizer rows")
    args = ap.parse_args()
    runs = Path(args.runs)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print("| measure | value | target |\n|---|---|---|")
    for name, path, quant in (
        ("tokenizer PSNR, inherited (continuous VAE, then quantizer in the loop)", runs / "vae_quantized", True),
        ("tokenizer PSNR, same budget from scratch with the quantizer", runs / "vae_scratch", True),
        ("VAE PSNR without quantizer (continuous stage alone, reference)", runs / "vae_continuous", False),
    ):
        f = path / "vae.safetensors"
        if not f.is_file():
            print(f"| {name} | not trained | |")
            continue
        psnr, ceiling = tokenizer_eval(f, args.clips, quant)
        print(f"| {name} | {psnr:.2f} dB | {'>= 30 dB' if quant else ''} |", flush=True)
        if path.name == "vae_quantized":
            cells = ", ".join(f"{k} {fmt(v)}" for k, v in ceiling.items())
            print(f"| evaluator on these reconstructions (the ceiling of generation) | {cells} | |", flush=True)

    models = [("built-in model", Path(args.model))]
    for tag in ("transformer_bsc_small", "transformer_nobsc"):
        if (runs / f"{tag}_model" / "model_index.json").is_file():
            models.append((f"ablation: {tag}", runs / f"{tag}_model"))
    for label, model in models:
        summary = prompt_following(model, runs / "eval" / f"{model.name}-{weights_digest(model)}", args.n)
        if summary is None:
            print(f"| {label}: prompt following | no model | |")
            continue
        for split in ("heldout", "train"):
            w = summary["world"]["splits"].get(split)
            if not w:
                continue
            cells = f"color {fmt(w['color'])}, shape {fmt(w['shape'])}, motion {fmt(w['motion'])}, all {fmt(w['all'])}"
            print(f"| {label}: {split} prompts (n={w['n']}) | {cells} | color 90%, shape 80%, motion 80% |")

    if (Path(args.model) / "model_index.json").is_file():
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "infinitystar.cli",
                "generate",
                "a red circle moving right on a black background",
                "--checkpoint",
                args.model,
                "--seed",
                "0",
                "--out",
                str(runs / "timing.mp4"),
                "--quiet",
            ],
            check=True,
        )
        seconds = time.perf_counter() - t0
        print(f"| `infinitystar generate` wall time (process start to mp4) | {seconds:.1f} s | < 30 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
