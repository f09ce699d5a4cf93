"""LoRA adapters for the pipeline: where an adapter comes from, how the command line and batch files name one, and
loading it onto the pipeline's transformer.

The pipeline's methods (``load_lora``, ``set_lora_scale``, ``unload_lora``, ``fuse_lora``, ``unfuse_lora``) are thin
calls into this module, which resolves a source (an adapter folder, a training run, a file in an adapter folder, or
a Hugging Face repo id), reads and checks it (:mod:`infinitystar.models.transformer.lora_files`) and attaches it
(:mod:`infinitystar.models.transformer.lora`).

On the command line and in batch files an adapter is ``PATH[:SCALE]`` (``recipes/lora_pink/adapter:0.8``); a batch
item's ``lora`` (one such string, or a list) replaces the command's adapters for that item: every adapter it names is
loaded once and kept, and the others are set to scale 0 (exactly the base model) while it runs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infinitystar import hub
from infinitystar.models.transformer import lora as runtime
from infinitystar.models.transformer.lora import LoraError
from infinitystar.models.transformer.lora_files import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    check_architecture,
    is_adapter_folder,
    read_adapter,
)

__all__ = [
    "BatchAdapters",
    "LoraLoaderMixin",
    "LoraSpec",
    "check_source",
    "load_lora",
    "parse_lora_spec",
    "resolve_adapter_source",
]


def _accepted() -> str:
    return (
        f"an adapter folder ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}, written by `infinitystar train` with a lora "
        "section), a training run folder (its final/ adapter), or a Hugging Face repo id (owner/name)"
    )


def _from_hub(repo_id: str) -> Path:
    """The adapter files of a hub repo, from the local cache or downloaded (:func:`infinitystar.hub.fetch`)."""
    try:
        folder = hub.fetch(repo_id, [ADAPTER_CONFIG, ADAPTER_WEIGHTS])
    except Exception as exc:  # offline and not cached, unknown repo, no permission: one message
        raise LoraError(f"cannot fetch LoRA adapter {repo_id!r} from the hub ({type(exc).__name__}: {exc})") from None
    if not is_adapter_folder(folder):
        raise LoraError(f"hub repo {repo_id!r} has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} at its root")
    return folder


def resolve_adapter_source(source: str | os.PathLike) -> Path:
    """The adapter folder ``source`` names (see :func:`_accepted`); a clear :class:`LoraError` otherwise."""
    path = Path(source)
    if path.is_file() and path.name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        path = path.parent
    if path.is_dir():
        for candidate in (path, path / "final"):
            if is_adapter_folder(candidate):
                return candidate
        raise LoraError(f"{path} holds no LoRA adapter; expected {_accepted()}")
    if not path.exists() and hub.is_repo_id(source):
        return _from_hub(source)
    raise LoraError(f"LoRA adapter not found: {source}; expected {_accepted()}")


def check_source(source: str | os.PathLike) -> None:
    """Fail now if ``source`` is neither an adapter on disk nor a repo id (which is only fetched when loaded)."""
    if Path(source).exists() or not hub.is_repo_id(source):
        resolve_adapter_source(source)


def _default_name(adapter, folder: Path, taken: Iterable[str]) -> str:
    """The recorded name, else the folder's (a run's name for ``RUN/final``), made unique among ``taken``."""
    base = adapter.name or (folder.parent.name if folder.name == "final" else folder.name)
    base = re.sub(r"[^A-Za-z0-9_-]", "_", base).lstrip("-")[:60] or "lora"
    taken = set(taken)
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def load_lora(transformer, source: str | os.PathLike, scale: float = 1.0, name: str | None = None) -> str:
    """Read the adapter ``source`` names, check it against ``transformer``'s architecture, attach it with ``scale``;
    returns its name (``name``, else its recorded name or its folder's, made unique)."""
    folder = resolve_adapter_source(source)
    adapter = read_adapter(folder)
    label = repr(name) if name is not None else f"{folder}"
    check_architecture(adapter, transformer.cfg, label)
    if name is None:
        name = _default_name(adapter, folder, runtime.loaded_adapters(transformer))
    runtime.attach(transformer, name, adapter.weights, scale)
    return name


# ----------------------------------------------------------------------------------------------------------------
# PATH[:SCALE] on the command line and in batch files


class LoraLoaderMixin:
    """The pipeline's LoRA methods (diffusers' names); the class it is mixed into has a ``transformer``."""

    transformer: object

    def load_lora(self, path_or_repo_id: str | os.PathLike, scale: float = 1.0, name: str | None = None) -> str:
        """Load a LoRA adapter onto the transformer and return its name; several can be loaded, each with its
        own ``scale``. ``path_or_repo_id``: an adapter folder (``adapter_config.json`` +
        ``adapter_model.safetensors``), a training run folder (its ``final/``) or a Hugging Face repo id. An adapter
        trained for another architecture is refused with the differing fields named. Works on quantized blocks
        (applied on the fly) and with block offload (the adapters travel with their blocks)."""
        return load_lora(self.transformer, path_or_repo_id, scale, name)

    @property
    def lora_adapters(self) -> dict[str, float]:
        """``{name: scale}`` of the loaded adapters."""
        return runtime.loaded_adapters(self.transformer)

    def set_lora_scale(self, scale: float, name: str | None = None) -> None:
        """Scale of adapter ``name`` (every adapter when None); 0 gives exactly the base model."""
        runtime.set_scale(self.transformer, scale, name)

    def unload_lora(self, name: str | None = None) -> list[str]:
        """Remove adapter ``name`` (every adapter when None); what :meth:`fuse_lora` fused stays in the weights."""
        return runtime.detach(self.transformer, name)

    def fuse_lora(self) -> list[str]:
        """Fuse the active adapters into the weights (base-model speed); :meth:`unfuse_lora` takes them out.
        Refused on quantized weights."""
        return runtime.fuse(self.transformer)

    def unfuse_lora(self) -> list[str]:
        return runtime.unfuse(self.transformer)


@dataclass(frozen=True)
class LoraSpec:
    """One ``PATH[:SCALE]``: where the adapter is and its scale."""

    source: str
    scale: float = 1.0

    def key(self) -> str:
        """What identifies the adapter (its resolved folder for local paths), so a batch loads each one once."""
        path = Path(self.source)
        return str(path.resolve()) if path.exists() else self.source


def parse_lora_spec(text: str, base: Path | None = None) -> LoraSpec:
    """``PATH[:SCALE]`` -> :class:`LoraSpec`; a relative PATH resolves against ``base`` (a batch file's folder)."""
    if not isinstance(text, str) or not text.strip():
        raise LoraError(f"a LoRA is given as PATH[:SCALE] (e.g. recipes/lora_pink/adapter:0.8), got {text!r}")
    text = text.strip()
    source, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
        except ValueError:
            pass  # a ':' inside the path itself
        else:
            source = head
    scale = runtime._check_scale(scale, f"the scale of LoRA {text!r}")
    if base is not None and not Path(source).is_absolute() and (base / source).exists():
        source = str(base / source)
    return LoraSpec(source, scale)


class BatchAdapters:
    """The adapters of a batch, item by item: an item with ``lora`` gets exactly those adapters (each loaded once,
    then kept; every other loaded adapter at scale 0, which is exactly the base model); an item without it gets the
    adapters and scales ``pipe`` had when the batch started (the command's ``--lora``)."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.initial = dict(pipe.lora_adapters)
        self.loaded: dict[str, str] = {}  # spec key -> adapter name

    def use(self, specs: Sequence[LoraSpec] | None) -> None:
        wanted: dict[str, float] = dict(self.initial)
        if specs is not None:
            wanted = {}
            for spec in specs:
                key = spec.key()
                if key not in self.loaded:
                    self.loaded[key] = self.pipe.load_lora(spec.source, scale=spec.scale)
                wanted[self.loaded[key]] = spec.scale
        for name in self.pipe.lora_adapters:
            self.pipe.set_lora_scale(wanted.get(name, 0.0), name=name)
