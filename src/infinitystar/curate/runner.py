"""The curation run: inputs -> probe -> scenes -> filters -> scorers -> captions -> training manifest.

:func:`run_curate` ties the pieces together: ``inputs`` (what to curate), ``process`` (one input),
``pool`` (many inputs on worker processes) and ``outputs`` (the files a run writes, their format, and the
state log that makes a run resumable). This module only checks the arguments, decides which inputs still need
doing, and makes sure the outputs are rewritten from the state log however the run ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from infinitystar.curate.captioner import check_captioner_spec
from infinitystar.curate.filters import CurateConfig
from infinitystar.curate.inputs import InputItem, collect_inputs
from infinitystar.curate.outputs import STATE_VERSION, OutputPaths, StateLog, load_state, remove_outputs, write_outputs
from infinitystar.curate.pool import run_pool
from infinitystar.curate.process import Context, process_item
from infinitystar.curate.scorers import check_scorer_specs


def _check_arguments(
    source: str | Path, out: str | Path, config: CurateConfig, workers: int, max_items: int | None
) -> OutputPaths:
    """Fail before any work (and before any file is touched) on arguments that cannot give a run."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1; got {workers}")
    if max_items is not None and max_items < 0:
        raise ValueError(f"max_items must be >= 0; got {max_items}")
    paths = OutputPaths.for_manifest(out)
    if Path(source).resolve() in {p.resolve() for p in (paths.manifest, paths.uncaptioned, paths.state)}:
        raise ValueError(f"the input {source} is one of the outputs; choose another --out")
    check_scorer_specs(config.scorers)
    if config.captioner is not None:
        check_captioner_spec(config.captioner)
    return paths


def _unique(items: Iterable[InputItem]) -> list[InputItem]:
    """The items in order, each key once (a manifest may list a file twice; the state keeps one record a key)."""
    unique, seen = [], set()
    for item in items:
        if item.key not in seen:
            seen.add(item.key)
            unique.append(item)
    return unique


def _normalise(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), so settings compare equal to a state header."""
    return json.loads(json.dumps(obj))


def _earlier_state(paths: OutputPaths, settings: dict, resume: bool) -> tuple[dict | None, dict[str, dict]]:
    """The state of an earlier run into ``paths``; continuing it needs ``resume`` and the same settings, since
    mixing records made under different settings would give a manifest that no single setting describes."""
    header, records = load_state(paths.state)
    if header is not None and not resume:
        raise ValueError(
            f"{paths.state} exists from an earlier run; pass --resume to continue it or --overwrite to start over"
        )
    if header is not None and header["settings"] != settings:
        diff = sorted(k for k in settings if settings[k] != header["settings"].get(k))
        raise ValueError(
            f"the settings differ from the run being resumed ({', '.join(diff)}); use the same settings, or "
            "--overwrite to start over"
        )
    return header, records


def _process_all(todo: list[InputItem], config: CurateConfig, workers: int, on_result: Callable[[dict], None]) -> None:
    """One worker runs in this process (no spawn cost, errors surface directly); more go to the pool."""
    if todo and workers == 1:
        ctx = Context(config)
        for item in todo:
            on_result(process_item(item, ctx))
    elif todo:
        run_pool(todo, config, min(workers, len(todo)), on_result)


def _progress_bar(total: int):
    from tqdm import tqdm  # only when asked for: the library path does not need it

    return tqdm(total=total, unit="input", desc="curate")


def run_curate(
    source: str | Path,
    out: str | Path,
    config: CurateConfig | None = None,
    *,
    workers: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    retry_failed: bool = False,
    max_items: int | None = None,
    progress: bool = False,
) -> dict:
    """Curate ``source`` (folder, ``.jsonl`` manifest or media file) into the manifest ``out``; return the report.

    ``resume``: continue from ``out``'s state file (inputs already done are skipped; the settings must match).
    ``overwrite``: discard an earlier run's state and outputs. ``retry_failed``: with ``resume``, process failed
    inputs again. ``max_items``: stop after that many new inputs (the outputs then hold what is done so far).
    """
    config = (config or CurateConfig()).resolved()
    paths = _check_arguments(source, out, config, workers, max_items)
    items = _unique(collect_inputs(source))
    settings = _normalise(config.to_json())
    if overwrite:
        remove_outputs(paths)
    header, records = _earlier_state(paths, settings, resume)
    todo = [i for i in items if i.key not in records or (retry_failed and records[i.key]["status"] == "failed")]
    if max_items is not None:
        todo = todo[:max_items]

    log = StateLog(paths.state, None if header else {"curate_state": STATE_VERSION, "settings": settings})
    bar = _progress_bar(len(todo)) if progress else None

    def on_result(result: dict) -> None:
        log.append(result)
        records[result["key"]] = result
        if bar is not None:
            bar.update(1)

    try:
        _process_all(todo, config, workers, on_result)
    finally:
        log.close()
        if bar is not None:
            bar.close()
        report = write_outputs(items, records, config, paths)
    return report
