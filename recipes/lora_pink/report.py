"""Measure the pink LoRA and print the table the README keeps.

    python recipes/lora_pink/report.py [--runs runs/lora_pink] [--adapter recipes/lora_pink/adapter] [--n 100]

Rows:
- the tokenizer on held-out pink clips (17 x 128 x 128, posterior mean, through the built-in model's 8-scale bit
  pyramid, decoded by the built-in model's decoder): with the built-in encoder, and with the encoder this recipe
  trained for the same decoder (``runs/lora_pink/encoder``), PSNR and the analytic evaluator on the reconstructions
  (the ceiling of what any transformer can draw through these tokens);
- ``infinitystar evaluate`` of the built-in model, with and without the adapter: pink prompts of the held-out and
  the trained shape-motion combinations, and the default world's held-out and seen prompts.

Each evaluation is the printed command; its outputs go to ``RUNS/eval/<name>-<weights digest>`` (rerunning reuses
finished files) and its printed summary to ``evaluate.log`` there.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import runpy
import sys
from pathlib import Path

from infinitystar.cli import main as cli
from infinitystar.generation.layouts import BUILTIN_MODEL_DIR
from infinitystar.models.vae.checkpoint import vae_weights_file
from infinitystar.world.scenes import WorldSpec

PINK_WORLD = WorldSpec(frames=17, size=128, colors=("pink",))
TARGETS = {"pink-heldout": "color 90%, shape 80%, motion 80%", "heldout": "within 5 points of the base model"}


#: ``recipes/builtin/report.py`` (a script beside this one, not a package): its tokenizer evaluation and number format
BUILTIN_REPORT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "builtin" / "report.py"), run_name="builtin")
fmt = BUILTIN_REPORT["fmt"]


def tokenizer_row(encoder_file: Path, n: int) -> tuple[float, dict[str, float]]:
    """Mean PSNR (dB) of ``n`` held-out pink clips encoded by ``encoder_file``'s encoder, quantised over the model's
    pyramid and decoded by the built-in decoder, and the evaluator's accuracy on the reconstructions."""
    decoder = vae_weights_file(BUILTIN_MODEL_DIR)
    return BUILTIN_REPORT["tokenizer_eval"](encoder_file, n, True, PINK_WORLD, decoder_file=decoder)


def digest(path: Path | None) -> str:
    """Short hash of an adapter's files ('base' without one): evaluation outputs of other weights are never reused."""
    if path is None:
        return "base"
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:10]


def evaluate(spec: str, adapter: Path | None, out_dir: Path) -> tuple[dict, list[str]]:
    """``infinitystar evaluate --world-prompts SPEC [--lora ADAPTER]``: its summary and the command."""
    args = ["evaluate", "--world-prompts", spec, "--out-dir", str(out_dir), "--quiet"]
    if adapter is not None:
        args += ["--lora", str(adapter)]
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "evaluate.log").open("w") as log, contextlib.redirect_stdout(log):
        code = cli(args)
    if code not in (0, 1):
        raise SystemExit(f"infinitystar {' '.join(args)} failed ({code}); see {out_dir / 'evaluate.log'}")
    return json.loads((out_dir / "summary.json").read_text()), ["infinitystar", *(a for a in args if a != "--quiet")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/lora_pink")
    ap.add_argument("--adapter", default="recipes/lora_pink/adapter")
    ap.add_argument("--n", type=int, default=100, help="prompts per split")
    ap.add_argument("--clips", type=int, default=32, help="held-out pink clips for the tokenizer rows")
    args = ap.parse_args()
    runs, adapter = Path(args.runs), Path(args.adapter)

    print("| measure | value | target |\n|---|---|---|")
    for label, path in (("built-in encoder", BUILTIN_MODEL_DIR), ("this recipe's encoder", runs / "encoder")):
        try:
            file = vae_weights_file(path)
        except ValueError:
            print(f"| tokenizer on held-out pink clips, {label} | not trained | |")
            continue
        value, ceiling = tokenizer_row(file, args.clips)
        cells = ", ".join(f"{k} {fmt(v)}" for k, v in ceiling.items())
        print(f"| tokenizer on {args.clips} held-out pink clips, {label} + the built-in decoder | {value:.2f} dB; "
              f"evaluator on the reconstructions: {cells} | |", flush=True)  # fmt: skip

    n = args.n
    runs_of = [
        ("pink prompts, with the adapter", f"pink-heldout:{n},pink-train:{n}", adapter),
        ("pink prompts, without the adapter (the built-in model)", f"pink-heldout:{n}", None),
        ("the default world's prompts, with the adapter", f"heldout:{n},train:{n}", adapter),
        ("the default world's prompts, without the adapter (the built-in model)", f"heldout:{n},train:{n}", None),
    ]
    for label, spec, lora in runs_of:
        name = "pink" if spec.startswith("pink") else "world"
        summary, command = evaluate(spec, lora, runs / "eval" / f"{name}-{digest(lora)}")
        for split, w in summary["world"]["splits"].items():
            cells = f"color {fmt(w['color'])}, shape {fmt(w['shape'])}, motion {fmt(w['motion'])}, all {fmt(w['all'])}"
            target = TARGETS.get(split, "") if lora is not None else ""
            print(f"| {label}: {split} (n={w['n']}) | {cells} | {target} |")
        print(f"|   `{' '.join(command)}` | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
