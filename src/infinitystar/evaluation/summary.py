"""The report of a scoring run: what it holds, its summary over the set, and the files and table it ends as.

This is the last step of ``infinitystar evaluate`` (generation is :func:`infinitystar.generation.batch.run_batch`,
scoring :func:`infinitystar.evaluation.score.score_outputs`). Separate from the scoring because it needs no frames and
no model: it turns per-item rows into ``summary.json`` (the mean and count of each per-item metric, world accuracy
overall and per split, FVD as scored) and a plain-text table, and writes ``scores.jsonl`` and ``summary.json``
atomically, dropping the ``scores.partial.jsonl`` log that the scorer appends to while it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinitystar.files import write_json, write_jsonl

__all__ = [
    "PARTIAL_FILE",
    "SCORES_FILE",
    "SUMMARY_FILE",
    "EvalReport",
    "format_summary",
    "summarize",
    "write_report",
]

#: per-item rows of a finished run (one json line per scored item, prompt-file order)
SCORES_FILE = "scores.jsonl"
#: rows appended while a run scores, so that a killed run resumes; removed by :func:`write_report`
PARTIAL_FILE = "scores.partial.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass
class EvalReport:
    """Scores of one folder: per-item rows (prompt-file order), what is missing or unreadable, and the summary."""

    rows: list[dict]
    missing: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    reused: int = 0  #: rows taken from an earlier run instead of recomputed


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> dict:
    return {"mean": (sum(values) / len(values)) if values else None, "n": len(values)}


def _split_order(split: str) -> tuple[int, str, int]:
    """Default-world splits first (train, heldout, image), then each new colour's (``pink-train``, ...)."""
    colour, _, base = split.rpartition("-")
    return (1 if colour else 0, colour, ("train", "heldout", "image").index(base))


def _world_accuracy(flags: list[dict]) -> dict:
    def frac(key: str) -> float | None:
        vals = [f[key] for f in flags if f[key] is not None]
        return sum(vals) / len(vals) if vals else None

    return {"n": len(flags), **{k: frac(k) for k in ("color", "shape", "motion", "all", "background")}}


def summarize(report: EvalReport, metrics: Sequence[str], *, fvd: dict | None = None) -> dict:
    """The summary of ``report``'s rows: mean and count per metric, world accuracy overall and per split."""
    rows = report.rows
    summary: dict[str, Any] = {
        "items": len(rows) + len(report.missing) + len(report.unreadable),
        "scored": len(rows),
        "missing": list(report.missing),
        "unreadable": dict(report.unreadable),
        "metrics": {},
        "world": None,
        "fvd": fvd,
    }
    for name in ("flicker", "smoothness", "clip"):
        if name in metrics:
            summary["metrics"][name] = _mean([r[name] for r in rows if name in r])
    psnrs = [r["first_frame_psnr"] for r in rows if "first_frame_psnr" in r]
    if psnrs:
        summary["metrics"]["first_frame_psnr"] = _mean(psnrs)
    if "world" in metrics:
        flags = [r["world"] for r in rows if "world" in r]
        if flags:
            world = _world_accuracy(flags)
            splits = sorted({f["split"] for f in flags}, key=_split_order)
            world["splits"] = {s: _world_accuracy([f for f in flags if f["split"] == s]) for s in splits}
            summary["world"] = world
    return summary


def write_report(report: EvalReport, out_dir: str | Path, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``scores.jsonl`` and ``summary.json`` (with ``extra`` keys merged in) atomically; drop the partial log."""
    out_dir = Path(out_dir)
    scores = write_jsonl(out_dir / SCORES_FILE, report.rows)
    summary = write_json(out_dir / SUMMARY_FILE, {**report.summary, **(extra or {})}, indent=1)
    (out_dir / PARTIAL_FILE).unlink(missing_ok=True)
    return scores, summary


_LABELS = {
    "flicker": "temporal flickering",
    "smoothness": "motion smoothness (proxy)",
    "clip": "CLIP score",
    "first_frame_psnr": "first-frame PSNR (dB)",
}


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table."""

    def num(v: float | None, digits: int = 4) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    lines = [f"scored {summary['scored']} of {summary['items']} items"]
    if summary["missing"]:
        shown = ", ".join(summary["missing"][:10]) + (" ..." if len(summary["missing"]) > 10 else "")
        lines.append(f"missing outputs ({len(summary['missing'])}): {shown}")
    for name, error in summary["unreadable"].items():
        lines.append(f"unreadable: {name}: {error}")
    lines.append("")
    lines.append(f"  {'metric':<28} {'mean':>10} {'n':>6}")
    for name, entry in summary["metrics"].items():
        lines.append(f"  {_LABELS.get(name, name):<28} {num(entry['mean']):>10} {entry['n']:>6}")
    fvd = summary.get("fvd")
    if fvd is not None:
        value = num(fvd["value"], 2) if fvd["value"] is not None else f"n/a ({fvd.get('note', '')})"
        lines.append(
            f"  {'FVD':<28} {value:>10} {fvd['generated']:>6}  vs {fvd['real']} real videos, {fvd['frames']} frames"
        )
    world = summary.get("world")
    if world is not None:
        lines.append("")
        lines.append(
            f"  {'world accuracy':<16} {'color':>7} {'shape':>7} {'motion':>7} {'all':>7} {'backgr.':>7} {'n':>6}"
        )
        for label, acc in [("all prompts", world), *world["splits"].items()]:
            lines.append(
                f"  {label:<16} {pct(acc['color']):>7} {pct(acc['shape']):>7} {pct(acc['motion']):>7} "
                f"{pct(acc['all']):>7} {pct(acc['background']):>7} {acc['n']:>6}"
            )
    return "\n".join(lines)
