"""Evaluate the built-in model and print the one table the README keeps.

    python recipes/builtin/report.py [--runs runs/builtin] [--model src/infinitystar/assets/default] [--n 100]

Rows:
- tokenizer reconstruction PSNR on held-out world clips (17 x 128 x 128, posterior mean, through the model's
  8-scale bit pyramid) of the shipped tokenizer on the model's world (its decoder fine-tuned on the fixed tokens
  of ``vae_quantized`` in two cosine cycles), the same after the first cycle and before the fine-tune, and the
  analytic evaluator on the shipped reconstructions (the ceiling of generation);
- knowledge inheritance on the small-object world of the curriculum's first stage: the inherited tokenizer
  (continuous VAE, then 250 steps with the quantizer in the loop), the same budget trained from scratch with the
  quantizer, and the continuous VAE without any quantizer (for reference);
- prompt-following accuracy (colour, shape, motion, all three) of generated videos on ``--n`` prompts of held-out
  colour-shape-motion combinations and ``--n`` of seen ones (``infinitystar evaluate --world-prompts``);
- the same for the bitwise-self-correction ablation when its runs exist: 600 steps from scratch with and without
  it, on the small-object world (``transformer_bsc_small``, ``transformer_nobsc``) and on the model's world
  (``transformer_world_bsc``, ``transformer_world_nobsc``);
- the wall time of one default ``infinitystar generate`` video on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from infinitystar.cli import main as cli
from infinitystar.evaluation.metrics import psnr
from infinitystar.media import frames_to_uint8
from infinitystar.models.quantizer import decode_bits, encode_pyramid
from infinitystar.models.vae.checkpoint import vae_weights_file
from infinitystar.models.vae.model import VideoVAE
from infinitystar.schedule import build_schedule
from infinitystar.world.dataset import WorldDataset
from infinitystar.world.evaluate import evaluate_video
from infinitystar.world.scenes import WorldSpec

SMALL_WORLD = WorldSpec(frames=17, size=128, size_range=(0.18, 0.30), travel_range=(0.30, 0.50))  # run.sh's SMALL
MODEL_WORLD = WorldSpec(frames=17, size=128)


def tokenizer_eval(
    vae_file: Path, n: int, quantize: bool = True, spec: WorldSpec = MODEL_WORLD, decoder_file: Path | None = None
) -> tuple[float, dict[str, float]]:
    """Mean PSNR (dB, frames in [0, 255]) of held-out world clips through VAE encode -> bits -> decode, and the
    analytic evaluator's accuracy on those reconstructions against the clips' captions: the ceiling that
    generation through this tokenizer can reach. ``decoder_file``: decode with that VAE's decoder instead (an
    encoder trained for another model's decoder, as ``recipes/lora_pink``'s)."""
    vae = VideoVAE.from_original_checkpoint(vae_file).eval()
    decoder = VideoVAE.from_original_checkpoint(decoder_file).eval() if decoder_file is not None else vae
    data = WorldDataset(n, seed=12345, split="heldout", spec=spec)
    sched = build_schedule(1.0, "0.016M", 5, detail_scale_min_tokens=16, frames_per_clip=2)
    values, hits = [], {"color": 0, "shape": 0, "motion": 0, "all": 0}
    with torch.no_grad():
        for i in range(n):
            video, caption = data[i]
            x = video[None]  # [1, 3, 17, 128, 128] in [-1, 1]
            latent = vae.encode(x, sample=False)
            if quantize:
                latent = decode_bits(encode_pyramid(latent, sched).bits, sched)
            y = decoder.decode(latent).clamp(-1, 1)
            values.append(psnr(y, x, data_range=2.0))
            r = evaluate_video(frames_to_uint8(y)[0].numpy(), caption)
            for key, ok in (("color", r.color_correct), ("shape", r.shape_correct), ("motion", r.motion_correct)):
                hits[key] += bool(ok)
            hits["all"] += r.all_correct
    return sum(values) / len(values), {k: v / n for k, v in hits.items()}


def prompt_following(model: Path, out_dir: Path, n: int) -> dict | None:
    """``infinitystar evaluate --world-prompts`` of ``model`` (its printed summary goes to ``out_dir/evaluate.log``,
    so that this script's output stays one table); the summary, or None without a model or on failure."""
    if not (model / "model_index.json").is_file():
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "evaluate.log").open("w") as log, contextlib.redirect_stdout(log):
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


def shapes_figure(eval_dir: Path, out: Path, per_shape: int = 3) -> Path | None:
    """First frames of the first ``per_shape`` generated held-out videos of each shape, side by side (circles,
    squares, triangles): what the shape row of the table looks like."""
    from PIL import Image

    from infinitystar.media import read_video

    frames = []
    for shape in ("circle", "square", "triangle"):
        paths = sorted(eval_dir.glob(f"heldout_*_{shape}_*.mp4"))[:per_shape]
        for path in paths:
            video = read_video(path)  # [3, T, H, W] in [-1, 1]
            frames.append(frames_to_uint8(video[None, :, :1])[0, 0])  # [H, W, 3]
    if not frames:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(torch.cat(frames, dim=1).numpy()).save(out)
    return out


def weights_digest(model: Path) -> str:
    """Short hash of a model folder's weights and configs (transformer, VAE, text encoder, pipeline): evaluation
    outputs of other weights are never reused (``infinitystar evaluate`` skips files that exist)."""
    h = hashlib.sha256()
    for f in sorted(model.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".json"):
            h.update(str(f.relative_to(model)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:10]


def fmt(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/builtin")
    ap.add_argument("--model", default="src/infinitystar/assets/default")
    ap.add_argument("--n", type=int, default=100, help="prompts per split (held-out, seen)")
    ap.add_argument("--clips", type=int, default=32, help="held-out clips for the tokenizer rows")
    ap.add_argument(
        "--figure",
        default="recipes/builtin/curves/generated_shapes.png",
        help="where to write first frames of generated circles, squares and triangles ('' to skip)",
    )
    args = ap.parse_args()
    runs = Path(args.runs)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print("| measure | value | target |\n|---|---|---|")
    small = "small-object world (curriculum stage 1)"
    for name, path, quant, spec in (
        (
            "tokenizer PSNR, shipped (inherited, the model's world, then the decoder on its fixed tokens)",
            runs / "vae_decoder_long",
            True,
            MODEL_WORLD,
        ),
        ("tokenizer PSNR after the decoder's first cycle (3000 steps)", runs / "vae_decoder", True, MODEL_WORLD),
        ("tokenizer PSNR before the decoder fine-tune (same tokens)", runs / "vae_quantized", True, MODEL_WORLD),
        (
            f"tokenizer PSNR, inherited (continuous VAE, then quantizer), {small}",
            runs / "vae_quantized_small",
            True,
            SMALL_WORLD,
        ),
        (
            f"tokenizer PSNR, same budget from scratch with the quantizer, {small}",
            runs / "vae_scratch",
            True,
            SMALL_WORLD,
        ),
        (
            f"VAE PSNR without quantizer (continuous stage alone, reference), {small}",
            runs / "vae_continuous",
            False,
            SMALL_WORLD,
        ),
    ):
        try:
            f = vae_weights_file(path)
        except ValueError:
            print(f"| {name} | not trained | |")
            continue
        psnr, ceiling = tokenizer_eval(f, args.clips, quant, spec)
        print(f"| {name} | {psnr:.2f} dB | {'>= 30 dB' if quant else ''} |", flush=True)
        if path.name in ("vae_decoder_long", "vae_quantized_small"):
            cells = ", ".join(f"{k} {fmt(v)}" for k, v in ceiling.items())
            print(f"| evaluator on these reconstructions (the ceiling of generation) | {cells} | |", flush=True)

    models = [("built-in model", Path(args.model))]
    for tag, world in (
        ("transformer_bsc_small", small),
        ("transformer_nobsc", small),
        ("transformer_world_bsc", "model's world"),
        ("transformer_world_nobsc", "model's world"),
    ):
        if (runs / f"{tag}_model" / "model_index.json").is_file():
            models.append((f"ablation ({world}): {tag}", runs / f"{tag}_model"))
    for label, model in models:
        eval_dir = runs / "eval" / f"{model.name}-{weights_digest(model)}"
        summary = prompt_following(model, eval_dir, args.n)
        if summary is not None and label == "built-in model" and args.figure:
            shapes_figure(eval_dir, Path(args.figure))
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
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - t0
        print(f"| `infinitystar generate` wall time (process start to mp4) | {seconds:.1f} s | < 30 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
