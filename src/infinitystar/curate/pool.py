"""The worker pool: inputs curated on spawned processes, surviving workers that die.

A corrupt input is recorded as failed with its error and the run goes on (see ``process``); a worker that dies
(a decoder crash, out of memory) takes the pool with it, so the pool is rebuilt and the inputs it had in flight
are retried one at a time: the culprit alone is marked failed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from infinitystar.curate.filters import CurateConfig
from infinitystar.curate.inputs import InputItem
from infinitystar.curate.process import Context, failed_result, process_item

CRASH_ERROR = "the worker process died while processing this input (decoder crash or out of memory)"

# Per worker process: the settings from the initializer, then the Context built on the first input.
_WORKER: dict[str, Any] = {}


def _init_worker(config: CurateConfig, threads: int) -> None:
    # Before torch is imported in this process (only captioners and model scorers import it): N workers must not
    # each start one thread per core.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    _WORKER["config"] = config


def _work(item: InputItem) -> dict:
    if "ctx" not in _WORKER:
        _WORKER["ctx"] = Context(_WORKER["config"])  # SetupError propagates to the main process
    return process_item(item, _WORKER["ctx"])


class _Delivery:
    """Passes each result on and counts them: a pool that breaks before any input came back is broken by its
    setup (a plug-in that kills the process, say), not by an input, and retrying inputs would not help."""

    def __init__(self, on_result: Callable[[dict], None]) -> None:
        self.on_result = on_result
        self.received = 0

    def __call__(self, result: dict) -> None:
        self.received += 1
        self.on_result(result)


def _retry_suspects(pool: Executor, suspects: deque, inflight: dict, deliver: _Delivery) -> None:
    """Run the inputs that were in flight at a crash one at a time: a crash now pins the culprit, which is
    recorded as failed before the pool is rebuilt for the rest."""
    while suspects:
        item = suspects[0]
        future = pool.submit(_work, item)
        inflight[future] = item
        try:
            result = future.result()
        except BrokenProcessPool:
            if not deliver.received:
                raise RuntimeError(
                    "curation worker processes die before finishing any input; run with --workers 1 to see the error"
                ) from None
            suspects.popleft()
            inflight.clear()
            deliver(failed_result(item, CRASH_ERROR))
            raise
        suspects.popleft()
        inflight.clear()
        deliver(result)


def _run_pending(pool: Executor, pending: deque, inflight: dict, workers: int, deliver: _Delivery) -> None:
    """Keep every worker busy (two inputs queued each) until ``pending`` is done; a crash or a setup error
    leaves with ``inflight`` holding the inputs that did not come back."""
    while pending or inflight:
        while pending and len(inflight) < 2 * workers:
            item = pending.popleft()
            inflight[pool.submit(_work, item)] = item
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for future in done:
            result = future.result()  # BrokenProcessPool / SetupError leave the loop
            inflight.pop(future)
            deliver(result)


def run_pool(items: list[InputItem], config: CurateConfig, workers: int, on_result: Callable[[dict], None]) -> None:
    """Process ``items`` on ``workers`` spawned processes, calling ``on_result`` in the main process as each
    finishes. After a worker death the inputs that were in flight are retried alone, to find the culprit."""
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    pending, suspects = deque(items), deque()
    deliver = _Delivery(on_result)
    while pending or suspects:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(config, threads)
        ) as pool:
            inflight: dict[Any, InputItem] = {}
            try:
                _retry_suspects(pool, suspects, inflight, deliver)
                _run_pending(pool, pending, inflight, workers, deliver)
            except BrokenProcessPool:
                suspects.extend(inflight.values())
                continue
            except BaseException:  # Ctrl-C or a setup error: do not wait for the queued inputs
                pool.shutdown(wait=False, cancel_futures=True)
                raise
