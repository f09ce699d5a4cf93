"""Where transformer weights in the original key format are stored, read without loading the whole model.

Three forms hold the same key names (``block_chunks.{c}.module.{j}...``):

- a folder of safetensors shards with ``model.safetensors.index.json`` (the release, written by huggingface_hub's
  shard splitter, and our layout's ``transformer/``), or a folder with one ``model.safetensors``;
- one ``.safetensors`` file;
- a ``torch.save`` file (``.pth`` / ``.pt`` / ``.bin``): the original's training checkpoint ``global_step_N.pth``
  (weights under ``["trainer"]["gpt_fsdp"]``) or a bare state dict. It is read with ``weights_only=True`` and
  memory-mapped, so the optimizer states beside the weights are never brought into memory.

:func:`open_weights` reads every header first (key -> shape, nothing else), so a loader checks the full key set
before reading one tensor; :meth:`WeightSource.tensors` then yields tensors one at a time, group by group (one shard
at a time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from infinitystar.checkpoints import SAFETENSORS_DTYPES, CheckpointError, torch_load_weights

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
#: suffixes of ``torch.save`` files
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
#: module wrappers whose names training frameworks put into keys (FSDP1, activation checkpointing, torch.compile)
_WRAPPERS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


@dataclass
class WeightSource:
    """The weights at ``path``: per group (a shard file, or the one torch file), key -> shape."""

    path: Path
    groups: dict[Path, dict[str, tuple[int, ...]]]
    #: the state dict of a torch file (memory-mapped), None for safetensors
    _state: Mapping[str, torch.Tensor] | None = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape over every group."""
        out: dict[str, tuple[int, ...]] = {}
        for shapes in self.groups.values():
            out.update(shapes)
        return out

    def tensors(self, group: Path, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """(key, CPU tensor) of ``keys`` of one group, one at a time."""
        if self._state is not None:
            for k in keys:
                yield k, self._state[k]
            return
        yield from _iter_safetensors(group, keys)


def open_weights(path: str | Path) -> WeightSource:
    """The :class:`WeightSource` at ``path`` (a folder, a safetensors file or a torch file), headers checked."""
    path = Path(path)
    if path.is_file() and path.suffix in TORCH_SUFFIXES:
        state = torch_state_dict(path)
        return WeightSource(path, {path: {k: tuple(v.shape) for k, v in state.items()}}, state)
    headers: dict[Path, dict[str, tuple[int, ...]]] = {}
    owner: dict[str, Path] = {}
    for file, indexed in _safetensors_files(path).items():
        shapes = read_header(file)
        if indexed is not None:
            absent = sorted(set(indexed) - set(shapes))
            if absent:
                raise CheckpointError(
                    f"{file}: the index lists {len(absent)} key(s) the file does not hold: {', '.join(absent[:8])}"
                )
        for key in shapes:
            if key in owner:
                raise CheckpointError(f"key {key!r} is stored twice: in {owner[key].name} and {file.name}")
            owner[key] = file
        headers[file] = shapes
    return WeightSource(path, headers)


def _safetensors_files(path: Path) -> dict[Path, list[str] | None]:
    """The safetensors files of a checkpoint with the keys the index assigns to each (None without an index: the
    file's own header is authoritative)."""
    if path.is_file():
        return {path: None}
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read checkpoint index {index}: {type(exc).__name__}: {exc}") from exc
        files: dict[Path, list[str]] = {}
        for key, name in weight_map.items():
            files.setdefault(path / name, []).append(key)
        return files
    if (path / SINGLE_NAME).is_file():
        return {path / SINGLE_NAME: None}
    torch_files = sorted(p.name for p in path.iterdir() if p.suffix in TORCH_SUFFIXES)
    hint = f"; it holds {', '.join(torch_files[:4])}: pass the file itself" if torch_files else ""
    raise CheckpointError(f"{path} holds neither {INDEX_NAME} nor {SINGLE_NAME}{hint}")


def read_header(file: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape from a safetensors header (safetensors also checks that the file holds all the data the header
    announces, so a truncated shard fails here)."""
    from safetensors import safe_open

    if not file.is_file():
        raise CheckpointError(f"checkpoint shard not found: {file}")
    try:
        with safe_open(str(file), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except Exception as exc:
        raise CheckpointError(
            f"cannot read safetensors file {file}: {type(exc).__name__}: {exc}. It may be truncated or corrupt."
        ) from exc
    return shapes


#: safetensors dtype names -> torch dtypes read directly (others go through safetensors itself)
_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


def _iter_safetensors(file: Path, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, CPU tensor) one at a time, read with plain reads at the header's offsets rather than through a memory
    map: a mapped shard's pages count towards the process's memory as they are read (a 5.8 GB release shard would
    show as 5.8 GB), read buffers do not. The header was validated by :func:`read_header`."""
    try:
        with open(file, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            for key in keys:
                info = header[key]
                dtype = _DTYPES.get(info["dtype"])
                if dtype is None:  # a dtype this reader does not know (fp8...): safetensors reads it
                    yield from _iter_safe_open(file, [key])
                    continue
                begin, end = info["data_offsets"]
                buf = bytearray(end - begin)
                f.seek(8 + size + begin)
                if f.readinto(buf) != len(buf):
                    raise CheckpointError(f"{file} is truncated: {key} ends past the end of the file")
                flat = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
                yield key, flat.reshape(info["shape"])
                del buf, flat
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"cannot read tensors of {file}: {type(exc).__name__}: {exc}") from exc


def _iter_safe_open(file: Path, keys: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt", device="cpu") as f:
        for k in keys:
            yield k, f.get_tensor(k)


def unwrapped_key(key: str) -> str:
    """A key without the wrappers training adds (``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``,
    ``_orig_mod.``, a leading DDP ``module.``); the original's own ``block_chunks.{c}.module.{j}`` is kept."""
    key = _WRAPPERS.sub("", key)
    return key[len("module.") :] if key.startswith("module.") else key


def torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The transformer state dict in a ``torch.save`` file: ``["trainer"]["gpt_fsdp"]`` of the original's training
    checkpoint, or the file itself when it is a flat dict of tensors. Memory-mapped where the file allows it."""
    obj = torch_load_weights(path, mmap=True)
    state, where = obj, "the file"
    if isinstance(obj, Mapping) and isinstance(obj.get("trainer"), Mapping) and "gpt_fsdp" in obj["trainer"]:
        state, where = obj["trainer"]["gpt_fsdp"], "['trainer']['gpt_fsdp']"
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(map(str, obj))[:12] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path}: expected the original's training checkpoint (weights under ['trainer']['gpt_fsdp']) or a "
            f"state dict of tensors; {where} is neither (top-level entries: {found})"
        )
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        name = unwrapped_key(str(key))
        if name in out:
            raise CheckpointError(f"{path}: two entries map to {name!r} once wrapper prefixes are removed")
        out[name] = tensor
    return out
