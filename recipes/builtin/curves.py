"""Copy the loss curves of the built-in model's runs into ``recipes/builtin/curves/`` as small CSV files.

    python recipes/builtin/curves.py [--runs runs/builtin] [--out recipes/builtin/curves]

The runs keep their full ``metrics.jsonl`` (gitignored, several MB); the repository keeps these columns of it, so
the curves behind the README's table can be plotted without rerunning anything. Runs that do not exist are skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

TOKENIZER = ("loss", "l1", "l2", "psnr", "bit_usage", "lr")
TRANSFORMER = ("loss", "acc", "grad_norm", "lr", "tokens")

#: csv name -> (run folder under --runs, columns after ``step``)
CURVES = {
    "tokenizer_continuous": ("vae_continuous", ("loss", "l1", "l2", "psnr", "kl", "lr")),
    "tokenizer_quantized_inherited": ("vae_quantized_small", TOKENIZER),
    "tokenizer_quantized_scratch": ("vae_scratch", TOKENIZER),
    "tokenizer_quantized_model_world": ("vae_quantized", TOKENIZER),
    "tokenizer_decoder_fixed_tokens": ("vae_decoder", ("loss", "l2", "psnr", "lr")),
    "tokenizer_decoder_fixed_tokens_continued": ("vae_decoder_long", ("loss", "l2", "psnr", "lr")),
    "transformer": ("transformer", TRANSFORMER),
    "transformer_continued": ("transformer_long", TRANSFORMER),
    "transformer_model_world": ("transformer_objects", TRANSFORMER),
    "transformer_ablation_bsc": ("transformer_bsc_small", TRANSFORMER),
    "transformer_ablation_nobsc": ("transformer_nobsc", TRANSFORMER),
    "transformer_ablation_world_bsc": ("transformer_world_bsc", TRANSFORMER),
    "transformer_ablation_world_nobsc": ("transformer_world_nobsc", TRANSFORMER),
}


def write_curve(metrics: Path, out: Path, columns: tuple[str, ...]) -> int:
    """One row per logged step (the last entry wins when a resumed run logged a step twice); returns the rows."""
    rows: dict[int, dict] = {}
    for line in metrics.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            rows[int(entry["step"])] = entry
    with out.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("step", *columns))
        for step in sorted(rows):
            w.writerow((step, *(_fmt(rows[step].get(c)) for c in columns)))
    return len(rows)


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/builtin")
    ap.add_argument("--out", default="recipes/builtin/curves")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (run, columns) in CURVES.items():
        metrics = Path(args.runs) / run / "metrics.jsonl"
        if metrics.is_file():
            print(f"{name}.csv: {write_curve(metrics, out / f'{name}.csv', columns)} steps of {run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
