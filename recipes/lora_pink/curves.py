"""Copy the loss curves of the pink LoRA's runs into ``recipes/lora_pink/curves/`` as small CSV files.

    python recipes/lora_pink/curves.py [--runs runs/lora_pink] [--out recipes/lora_pink/curves]

The same columns as the built-in model's curves (``recipes/builtin/curves.py``); runs that do not exist are skipped.
"""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path

#: csv name -> (run folder under --runs, columns after ``step``)
CURVES = {
    "encoder_for_pink": ("encoder", ("loss", "l1", "l2", "psnr", "lr")),
    "lora_pink": ("lora", ("loss", "acc", "grad_norm", "lr", "tokens")),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="runs/lora_pink")
    ap.add_argument("--out", default="recipes/lora_pink/curves")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # recipes/builtin/curves.py (a script beside this one, not a package): its CSV writer
    write_curve = runpy.run_path(str(Path(__file__).resolve().parents[1] / "builtin" / "curves.py"))["write_curve"]
    for name, (run, columns) in CURVES.items():
        metrics = Path(args.runs) / run / "metrics.jsonl"
        if metrics.is_file():
            print(f"{name}.csv: {write_curve(metrics, out / f'{name}.csv', columns)} steps of {run}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
