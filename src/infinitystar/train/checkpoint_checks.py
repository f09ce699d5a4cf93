"""Which training checkpoint a run resumes from, and why one cannot be used.

Checkpoints are written atomically (:mod:`infinitystar.train.checkpointing`), so a damaged one comes from outside the
trainer: a copy cut short, a full disk while syncing, a file system error. A resume must then say which file is
damaged, which checkpoint is the newest intact one, and resume from it only when asked:

- ``--resume`` (``"latest"``): the newest checkpoint; when it is damaged, an error that names the file, the newest
  intact checkpoint and the two ways to resume from it;
- ``--resume latest-valid``: the newest intact checkpoint (the damaged newer ones are reported and set aside);
- ``--resume STEP``: that checkpoint.

Checking is cheap: ``meta.json`` parses, every rank file loads, and every shard file named by the DCP metadata is
at least as long as the data it must hold (a truncated shard is the usual damage). Newer checkpoints than the one
resumed from are renamed ``step_N.damaged`` / ``step_N.superseded`` (kept for inspection, ignored by loading and by
the rotation of old checkpoints), so that the run's history continues from the chosen step.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from infinitystar.checkpoints import CheckpointError
from infinitystar.train.checkpointing import META_NAME, list_checkpoints, load_checkpoint, short_reason

LATEST = "latest"
LATEST_VALID = "latest-valid"
RESUME_HELP = (
    "continue the run in --out: from the newest checkpoint (plain --resume), from the newest intact one "
    f"(--resume {LATEST_VALID}, when the newest is damaged) or from a step (--resume 1200)"
)


def parse_resume(value: object) -> str | int | bool:
    """A resume choice from a flag or a recipe: False (no resume), 'latest' (also True), 'latest-valid' or a step."""
    if value is None or value is False:
        return False
    if value is True:
        return LATEST
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"resume step must be >= 1, got {value}")
        return value
    text = str(value).strip().lower()
    if text in (LATEST, LATEST_VALID):
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"unknown resume choice {value!r}; accepted: {LATEST}, {LATEST_VALID}, or a step number (>= 1)")


def _dcp_problem(folder: Path) -> str | None:
    from torch.distributed.checkpoint import FileSystemReader

    if not (folder / ".metadata").is_file():
        return f"{folder / '.metadata'} is missing"
    try:
        metadata = FileSystemReader(str(folder)).read_metadata()
    except Exception as exc:  # a truncated or garbled pickle raises many kinds
        return f"{folder / '.metadata'} cannot be read ({short_reason(exc)})"
    needed: dict[str, int] = {}
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        have = path.stat().st_size
        if have < size:
            return f"{path} is truncated ({have} of at least {size} bytes)"
    return None


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why a checkpoint folder cannot be resumed from (naming the file), or None when it looks intact."""
    import torch

    folder = Path(folder)
    meta_file = folder / META_NAME
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        world = int(meta["world_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{meta_file} cannot be read ({short_reason(exc)})"
    for rank in range(world):
        rank_file = folder / f"rank_{rank:05d}.pt"
        if not rank_file.is_file():
            return f"{rank_file} is missing"
        try:
            torch.load(rank_file, map_location="cpu", weights_only=False)  # our own small file
        except Exception as exc:
            return f"{rank_file} cannot be read ({short_reason(exc)})"
    return _dcp_problem(folder) if meta.get("tensor_keys") else None


def _intact_older(found: list[tuple[int, Path]], below: int) -> tuple[int, Path] | None:
    for step, folder in found:
        if step < below and checkpoint_problem(folder) is None:
            return step, folder
    return None


def damaged_message(folder: Path, step: int, problem: str, run_dir: Path) -> str:
    """The error for a checkpoint that cannot be resumed from: the file, the newest intact one, what to type."""
    older = _intact_older(list_checkpoints(run_dir), step)
    message = f"checkpoint {folder} (step {step}) is damaged: {problem}."
    if older is None:
        return message + " No older checkpoint of this run is intact: start the run again with another --out."
    good_step, good = older
    return (
        f"{message} The newest intact checkpoint is {good} (step {good_step}): resume from it with "
        f"--resume {LATEST_VALID} (or --resume {good_step}); the damaged folder is then kept as {folder.name}.damaged."
    )


def choose_checkpoint(run_dir: str | os.PathLike, which: str | int) -> tuple[int, Path] | None:
    """``(step, folder)`` of the checkpoint to resume from (None when the run has none); see the module docstring.

    Raises :class:`CheckpointError` for a damaged ``latest`` or step checkpoint, a step that does not exist, or no
    intact checkpoint at all.
    """
    run_dir = Path(run_dir)
    which = parse_resume(which)
    found = list_checkpoints(run_dir)
    if not found or which is False:
        return None
    if which == LATEST_VALID:
        for step, folder in found:
            problem = checkpoint_problem(folder)
            if problem is None:
                return step, folder
            warnings.warn(f"skipping checkpoint {folder} (step {step}): {problem}", UserWarning, stacklevel=2)
        steps = ", ".join(str(s) for s, _ in found)
        raise CheckpointError(f"no intact checkpoint in {run_dir} (steps {steps} are all damaged): start again")
    if which == LATEST:
        step, folder = found[0]
    else:
        chosen = [(s, f) for s, f in found if s == which]
        if not chosen:
            steps = ", ".join(str(s) for s, _ in found)
            raise CheckpointError(f"{run_dir} has no checkpoint of step {which}; it has steps {steps}")
        step, folder = chosen[0]
    problem = checkpoint_problem(folder)
    if problem is not None:
        raise CheckpointError(damaged_message(folder, step, problem, run_dir))
    return step, folder


def set_aside_newer(run_dir: str | os.PathLike, step: int, damaged: set[Path] = frozenset()) -> list[Path]:
    """Rename the checkpoints newer than ``step`` (the one a run resumed from) out of the way: ``.damaged`` when they
    cannot be loaded (``damaged``: known to fail loading), ``.superseded`` otherwise. Returns their new paths."""
    moved = []
    for newer_step, folder in list_checkpoints(run_dir):
        if newer_step <= step:
            continue
        tag = "damaged" if folder in damaged or checkpoint_problem(folder) is not None else "superseded"
        target = folder.with_name(f"{folder.name}.{tag}")
        n = 1
        while target.exists():
            target = folder.with_name(f"{folder.name}.{tag}{n}")
            n += 1
        os.replace(folder, target)
        moved.append(target)
    return moved


def resume_from(run_dir: str | os.PathLike, state: dict, which: str | int | bool, *, is_main: bool = True,
                barrier=None) -> int | None:  # fmt: skip
    """Load the checkpoint ``which`` chooses (:func:`choose_checkpoint`) into ``state``; its step, or None when the run
    has none. A checkpoint that passes the checks but fails to load is reported like a damaged one. Every rank calls
    this; ``is_main`` sets the newer checkpoints aside (:func:`set_aside_newer`) between two ``barrier()`` calls."""
    chosen = choose_checkpoint(run_dir, which)
    if chosen is None:
        return None
    step, folder = chosen
    failed: set[Path] = set()
    while True:
        try:
            load_checkpoint(folder, state)  # every entry of ``state`` is set, so a failed attempt leaves no trace
            break
        except CheckpointError as exc:
            older = _intact_older(list_checkpoints(run_dir), step) if parse_resume(which) == LATEST_VALID else None
            if older is None:
                raise CheckpointError(damaged_message(folder, step, str(exc), Path(run_dir))) from None
            warnings.warn(f"skipping checkpoint {folder} (step {step}): {exc}", UserWarning, stacklevel=2)
            failed.add(folder)
            step, folder = older
    if barrier is not None:
        barrier()
    if is_main:
        moved = set_aside_newer(run_dir, step, failed)
        if moved:
            names = ", ".join(p.name for p in moved)
            warnings.warn(f"resumed from step {step}; the newer checkpoints are kept aside as {names}", stacklevel=2)
    if barrier is not None:
        barrier()
    return step
