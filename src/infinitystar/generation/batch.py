"""Batch generation over prompt-file items: resumable (finished files are skipped) and sharded by the caller.

Shared by ``infinitystar generate --prompts`` and ``infinitystar evaluate``. Every finished output is
recorded in ``generations.rank{r}.jsonl`` next to the files (name, path, prompt, seed, mode, seconds).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infinitystar.files import append_jsonl
from infinitystar.generation.lora import BatchAdapters
from infinitystar.generation.prompt_files import PromptItem


@dataclass
class BatchSummary:
    generated: int = 0
    skipped: int = 0  #: already on disk from an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  #: (item name, reason)


def output_path(out_dir: Path, item: PromptItem, image: bool) -> Path:
    return out_dir / f"{item.name}{'.png' if image else '.mp4'}"


def item_output(out_dir: Path, item: PromptItem, default_duration: float | None) -> Path:
    """Where ``item``'s output goes: a .png when its duration (else the command's) is 0, an .mp4 otherwise."""
    duration = item.duration if item.duration is not None else default_duration
    return output_path(out_dir, item, image=duration == 0)


def output_problem(path: Path) -> str | None:
    """Why an existing output cannot count as done (it does not decode to its last frame), or None when it does.

    Outputs are written atomically, so a broken one comes from elsewhere (a copy cut short, a disk error, another
    tool); it is generated again rather than skipped forever.
    """
    from infinitystar.media.decode import verify_decodes
    from infinitystar.media.probe import MediaError

    try:
        verify_decodes(path, all_frames=True)
    except MediaError as exc:
        return exc.reason or str(exc)
    return None


def output_done(path: Path, *, report: bool = False) -> bool:
    """Whether ``path`` holds a finished output: it exists and decodes (with ``report``, a broken one is said, as it
    is about to be made again)."""
    if not path.exists():
        return False
    problem = output_problem(path)
    if problem is not None and report:
        print(f"infinitystar: {path} exists but does not decode ({problem}): generating it again", file=sys.stderr)
    return problem is None


def run_batch(
    pipe,
    items: list[PromptItem],
    out_dir: str | Path,
    *,
    rank: int = 0,
    defaults: dict[str, Any] | None = None,
    common: dict[str, Any] | None = None,
    rewrite: Callable[[str], str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> BatchSummary:
    """Generate every item whose output file is missing.

    ``defaults``: values for item fields the item leaves empty (``duration``, ``image``, ``video``,
    ``aspect_ratio``, ``negative_prompt``); ``common``: keyword arguments for every pipeline call
    (guidance, temperatures, ...). An item's ``lora`` replaces the adapters loaded on ``pipe`` for that item
    (:class:`~infinitystar.generation.lora.BatchAdapters`). A bad item (missing image or adapter, ...) is reported
    and skipped. An existing output counts as done only when it decodes (otherwise it is generated again);
    ``overwrite`` regenerates every item.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults, common = dict(defaults or {}), dict(common or {})
    record_file = out_dir / f"generations.rank{rank}.jsonl"
    summary = BatchSummary()
    adapters = BatchAdapters(pipe)
    for item in items:
        duration = item.duration if item.duration is not None else defaults.get("duration")
        path = item_output(out_dir, item, defaults.get("duration"))
        if not overwrite and output_done(path, report=True):
            summary.skipped += 1
            continue
        try:
            adapters.use(item.lora)
            out = pipe(
                rewrite(item.prompt) if rewrite is not None else item.prompt,
                image=item.image or defaults.get("image"),
                video=item.video or defaults.get("video"),
                duration=duration,
                aspect_ratio=item.aspect_ratio or defaults.get("aspect_ratio"),
                seed=item.seed,
                negative_prompt=item.negative_prompt or defaults.get("negative_prompt"),
                progress=progress,
                **common,
            )
        except ValueError as exc:  # a bad item must not stop the batch
            summary.failed.append((item.name, str(exc)))
            where = f"{item.source} ({item.name})" if item.source else item.name
            print(f"infinitystar: skipped {where}: {exc}", file=sys.stderr)
            continue
        if not getattr(pipe, "is_main", True):  # a rank of a parallel generation other than 0: rank 0 writes
            summary.generated += 1
            continue
        out.save(path)
        summary.generated += 1
        record = _record(item, out, path)
        with open(record_file, "a", encoding="utf-8") as f:
            append_jsonl(f, record)
        if log is not None:
            log(f"[{rank}] {path.name}: {out.mode}, seed {out.seed}, {record['seconds']} s")
    return summary


def _record(item: PromptItem, out, path: Path) -> dict:
    """The ``generations.rank{N}.jsonl`` line of one generated item."""
    record = {"name": item.name, "path": str(path), "prompt": item.prompt, "seed": out.seed, "mode": out.mode}
    if item.lora is not None:
        record["lora"] = {spec.source: spec.scale for spec in item.lora}
    record["seconds"] = round(out.timings.get("total", 0.0), 3)
    return record
