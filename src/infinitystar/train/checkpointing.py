"""Training checkpoints: sharded, atomic, exactly resumable.

:func:`save_checkpoint` / :func:`load_latest_checkpoint` take a ``state`` dict naming what to
save: modules, optimizers, anything with ``state_dict()`` / ``load_state_dict()`` (LR
schedules, datasets, EMA), ``torch.Generator`` objects and plain picklable values.

Layout of ``run_dir/step_{step:08d}/``:

- tensor state (modules, optimizers, and any state dict holding tensors) through
  ``torch.distributed.checkpoint`` (DCP): every rank writes its own shards, nobody gathers the
  model, and a checkpoint can be loaded on another number of ranks. Modules and optimizers go
  through ``get_/set_model_state_dict`` and ``get_/set_optimizer_state_dict``, which also strip
  FSDP and activation-checkpointing wrappers from the names.
- ``rank_{r:05d}.pt``: what is per rank (RNG states of torch CPU/CUDA, ``random``, numpy and
  of the generators in ``state``; dataset positions; plain values), written by each rank.
- ``meta.json``: step and world size, written last.

Everything is written into ``run_dir/.tmp_step_{step:08d}`` and renamed into place once every
rank has finished, so a ``step_*`` folder is always complete; a run killed while saving leaves
only a temporary folder, which loading ignores and the next save removes. The newest ``keep``
checkpoints are kept. The original writes one unsharded ``.pth`` from rank 0 (the whole model
and optimizer gathered) and every rank reads all of it back.

The final model is written separately, as a trained-model folder
(:func:`infinitystar.models.transformer.checkpoint.save_model_folder`), which ``--init`` accepts.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from infinitystar.checkpoints import CheckpointError
from infinitystar.files import atomic_write, write_json

STEP_RE = re.compile(r"^step_(\d{8,})$")
TMP_PREFIX = ".tmp_step_"
META_NAME = "meta.json"


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank() -> int:
    return dist.get_rank() if _dist() else 0


def _world() -> int:
    return dist.get_world_size() if _dist() else 1


def _barrier() -> None:
    if _dist():
        dist.barrier()


@contextlib.contextmanager
def quiet_single_process():
    """Silence torch.distributed.checkpoint's "torch.distributed is disabled ... assuming ... a single process"
    warning: a run without a process group is single-process by design (the tokenizer trainer, a one-process
    transformer run), so the warning carries no information."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled", category=UserWarning)
        yield


class TrainableState:
    """Checkpoint entry for a module whose frozen parameters are not saved (LoRA: the adapters without the base).

    Saved and loaded through the same DCP helpers as a module (FSDP shards, wrapper prefixes stripped), with
    ``ignore_frozen_params``; loading fills the trainable parameters and leaves the frozen ones as they are (the
    trainer reloads those from where they came from). An optimizer over these parameters is saved with it.
    """

    def __init__(self, module: nn.Module):
        self.module = module


def _module_of(obj: Any) -> nn.Module | None:
    if isinstance(obj, TrainableState):
        return obj.module
    return obj if isinstance(obj, nn.Module) else None


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_has_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_has_tensor(v) for v in obj)
    return False


def _owner_module(opt: torch.optim.Optimizer, state: Mapping[str, Any]) -> nn.Module | None:
    """The module in ``state`` holding every parameter of ``opt`` (needed by the DCP helpers)."""
    params = {id(p) for g in opt.param_groups for p in g["params"]}
    for obj in state.values():
        module = _module_of(obj)
        if module is not None and params <= {id(p) for p in module.parameters()}:
            return module
    return None


def _rng_state() -> dict[str, Any]:
    out = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(s: Mapping[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


def _tensor_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``state`` into (DCP-saved tensor state dicts, per-rank picklable values)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    tensors: dict[str, Any] = {}
    per_rank: dict[str, Any] = {}
    for key, obj in state.items():
        if isinstance(obj, nn.Module):
            tensors[key] = get_model_state_dict(obj)
        elif isinstance(obj, TrainableState):
            tensors[key] = get_model_state_dict(obj.module, options=StateDictOptions(ignore_frozen_params=True))
        elif isinstance(obj, torch.optim.Optimizer):
            owner = _owner_module(obj, state)
            tensors[key] = get_optimizer_state_dict(owner, obj) if owner is not None else obj.state_dict()
        elif isinstance(obj, torch.Generator):
            per_rank[key] = obj.get_state()
        elif hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict"):
            sd = obj.state_dict()
            (tensors if _has_tensor(sd) else per_rank)[key] = sd
        else:
            per_rank[key] = obj
    return tensors, per_rank


def _step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``run_dir``, newest first."""
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and (p / META_NAME).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one complete training checkpoint (``run_dir/step_*`` with its metadata)."""
    p = Path(path)
    return p.is_dir() and STEP_RE.match(p.name) is not None and (p / META_NAME).is_file()


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint in ``run_dir``, newest first."""
    return _step_dirs(Path(run_dir))


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Save ``state`` as ``run_dir/step_{step:08d}`` (sharded, atomic) and keep the newest ``keep``.

    Every rank must call this. Returns the checkpoint folder.
    """
    import torch.distributed.checkpoint as dcp

    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    run_dir = Path(run_dir)
    final = run_dir / f"step_{int(step):08d}"
    tmp = run_dir / f"{TMP_PREFIX}{int(step):08d}"
    rank = _rank()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        for p in run_dir.glob(f"{TMP_PREFIX}*"):  # leftovers of a run killed while saving
            shutil.rmtree(p, ignore_errors=True)
        tmp.mkdir()
    _barrier()

    tensors, per_rank = _tensor_state(state)
    per_rank["__rng__"] = _rng_state()
    if tensors:
        with quiet_single_process():
            dcp.save(tensors, checkpoint_id=str(tmp), no_dist=not _dist())
    rank_file = tmp / f"rank_{rank:05d}.pt"
    atomic_write(rank_file, lambda f: torch.save(per_rank, f))
    _barrier()

    if rank == 0:
        meta = {"step": int(step), "world_size": _world(), "keys": sorted(state), "tensor_keys": sorted(tensors)}
        write_json(tmp / META_NAME, meta)
        if final.exists():  # the same step saved again (e.g. after a resume): replace it
            old = run_dir / f".old_step_{int(step):08d}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(run_dir)
        for _, p in _step_dirs(run_dir)[keep:]:
            shutil.rmtree(p, ignore_errors=True)
    _barrier()
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def short_reason(exc: BaseException) -> str:
    """An exception in one line, without the tracebacks that ``torch.distributed.checkpoint`` puts in its messages."""
    failures = getattr(exc, "failures", None)  # CheckpointException: {rank: exception or (exception, traceback)}
    if isinstance(failures, dict) and failures:
        first = next(iter(failures.values()))
        exc = first[0] if isinstance(first, tuple) else first
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = "".join(ch if ch.isprintable() else "?" for ch in lines[-1].strip())  # garbage bytes quoted by a decoder
    return f"{type(exc).__name__}: {last if len(last) <= 200 else last[:197] + '...'}"


def load_latest_checkpoint(run_dir: str | os.PathLike, state: dict[str, Any]) -> int | None:
    """Load the newest complete checkpoint of ``run_dir`` into ``state`` in place; its step, or
    None when there is none. Temporary (incomplete) folders are ignored.

    Modules, optimizers and objects with ``load_state_dict`` are restored in place; generators
    get their state back; plain values are replaced in ``state``; the global RNG states of this
    rank are restored. Every rank must call this.
    """
    found = _step_dirs(Path(run_dir))
    if not found:
        return None
    step, folder = found[0]
    load_checkpoint(folder, state)
    return step


def load_checkpoint(folder: str | os.PathLike, state: dict[str, Any]) -> int:
    """Load one checkpoint folder (``run_dir/step_*``) into ``state``; returns its step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    folder = Path(folder)
    meta_file = folder / META_NAME
    if not meta_file.is_file():
        raise CheckpointError(f"{folder} is not a complete training checkpoint (no {META_NAME})")
    meta = json.loads(meta_file.read_text())
    rank, world = _rank(), _world()
    rank_file = folder / f"rank_{rank:05d}.pt"
    if not rank_file.is_file():
        if meta.get("world_size") != world:
            warnings.warn(
                f"checkpoint {folder.name} was written by {meta.get('world_size')} ranks and is loaded by {world}: "
                "rank 0's RNG states and data positions are used",
                stacklevel=2,
            )
        rank_file = folder / "rank_00000.pt"
    missing = sorted(set(state) - set(meta.get("keys", [])))
    if missing:
        raise CheckpointError(f"checkpoint {folder} has no entry for {missing}; it holds {meta.get('keys')}")
    try:
        per_rank = torch.load(rank_file, map_location="cpu", weights_only=False)  # our own file
    except Exception as exc:
        raise CheckpointError(f"cannot read {rank_file}: {short_reason(exc)}") from exc

    tensors, _ = _tensor_state({k: v for k, v in state.items() if k in set(meta.get("tensor_keys", []))})
    if tensors:
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            with quiet_single_process():
                dcp.load(tensors, checkpoint_id=str(folder), no_dist=not _dist())
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            raise CheckpointError(f"cannot load the sharded state of {folder}: {short_reason(exc)}") from exc

    for key, obj in list(state.items()):
        if key in tensors:
            if isinstance(obj, nn.Module):
                set_model_state_dict(obj, tensors[key])
            elif isinstance(obj, TrainableState):
                set_model_state_dict(obj.module, tensors[key], options=StateDictOptions(strict=False))
            elif isinstance(obj, torch.optim.Optimizer):
                owner = _owner_module(obj, state)
                if owner is not None:
                    set_optimizer_state_dict(owner, obj, tensors[key])
                else:
                    obj.load_state_dict(tensors[key])
            else:
                obj.load_state_dict(tensors[key])
        elif key in per_rank:
            value = per_rank[key]
            if isinstance(obj, torch.Generator):
                obj.set_state(value)
            elif hasattr(obj, "load_state_dict") and not isinstance(obj, (nn.Module, torch.optim.Optimizer)):
                obj.load_state_dict(value)
            else:
                state[key] = value
        else:
            raise CheckpointError(f"checkpoint {folder} holds no value for {key!r}")
    _set_rng_state(per_rank["__rng__"])
    return int(meta["step"])
