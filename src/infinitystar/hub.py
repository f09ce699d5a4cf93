"""Model repositories on the Hugging Face hub: a repo id (``FoundationVision/InfinityStar``) wherever a checkpoint
folder is taken, downloading only what the call needs.

The release holds two fp32 transformers of 35 GB each, the VAE and a whole Flan-T5-XL; a 480p user who mirrors the
repository downloads 35 GB they never use. So a call names the parts it needs (transformer, VAE, text encoder) and
the resolution, and :func:`allow_patterns` turns that into ``snapshot_download``'s ``allow_patterns``: the chosen
resolution's weights folder, ``infinitystar_videovae.pth``, ``text_encoder/flan-t5-xl-official/`` in the released
layout; in our layout the components ``model_index.json`` lists. A path that exists locally always wins over a repo id.

``huggingface_hub`` is imported only when a repo id is given. ``revision``, ``cache_dir`` and ``local_files_only``
are passed through; ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``HF_HOME`` are read at call time (the library reads them
once, at its import), so they work however early the library was imported.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from infinitystar.files import read_json

log = logging.getLogger(__name__)

#: our own saved layout: this file at the root, one sub-folder per component
MODEL_INDEX = "model_index.json"
#: our layout's component folders; ``model_index.json`` lists them under "components" (indexes without: these)
OWN_COMPONENTS = {"transformer": "transformer", "vae": "vae", "text_encoder": "text_encoder"}
#: what a call can need from a model repository
PARTS = tuple(OWN_COMPONENTS)
#: the released layout (FoundationVision/InfinityStar)
RELEASED_WEIGHTS = {"720p": "infinitystar_8b_720p_weights", "480p": "infinitystar_8b_480p_weights"}
RELEASED_VAE = "infinitystar_videovae.pth"
RELEASED_T5 = "text_encoder/flan-t5-xl-official"
#: the resolution a released folder or repository gives when none is asked for
DEFAULT_RELEASED_RESOLUTION = "720p"

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
_TRUE = {"1", "on", "yes", "true"}


class HubError(ValueError):
    """A repo id could not be resolved to a local folder (not cached while offline, not found, incomplete)."""


@dataclass(frozen=True)
class HubOptions:
    """How a repo id is fetched: ``revision`` (branch, tag or commit; default main), ``cache_dir`` (default the
    library's: ``HF_HUB_CACHE`` or ``HF_HOME/hub``), ``local_files_only`` (never reach the network)."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False


def is_repo_id(source: object) -> bool:
    """Whether ``source`` has the form of a hub repo id (``ORG/NAME``); says nothing about whether it exists."""
    if not isinstance(source, str) or not _REPO_ID.match(source):
        return False
    return ".." not in source and not source.endswith((".git", "."))


def offline_env() -> bool:
    """``HF_HUB_OFFLINE`` as the library understands it (1, ON, YES, TRUE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cache_dir_of(options: HubOptions) -> str | None:
    """The hub cache a call uses: the option, else ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the library's default
    (None)."""
    if options.cache_dir is not None:
        return str(options.cache_dir)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def own_components(index: dict) -> dict[str, str]:
    """Component -> folder of an index of our layout (older indexes list none: the default folders)."""
    listed = index.get("components") if isinstance(index, dict) else None
    if not isinstance(listed, dict):
        return dict(OWN_COMPONENTS)
    return {part: str(listed.get(part, folder)) for part, folder in OWN_COMPONENTS.items()}


def allow_patterns(parts: Iterable[str], resolution: str | None, index: dict | None) -> list[str]:
    """The ``allow_patterns`` that fetch ``parts`` of a model repository, and nothing else.

    ``index``: the repository's ``model_index.json`` (our layout), or None (the released layout, where
    ``resolution`` picks the weights folder; default 720p). A pure function of its arguments.
    """
    parts = list(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown model part(s) {unknown}; accepted: {', '.join(PARTS)}")
    if index is not None:
        folders = own_components(index)
        return [MODEL_INDEX] + [f"{folders[p]}/*" for p in parts]
    res = resolution or DEFAULT_RELEASED_RESOLUTION
    if res not in RELEASED_WEIGHTS:
        raise ValueError(f"the released model comes in {' and '.join(RELEASED_WEIGHTS)}; got resolution={res!r}")
    released = {"transformer": f"{RELEASED_WEIGHTS[res]}/*", "vae": RELEASED_VAE, "text_encoder": f"{RELEASED_T5}/*"}
    return [released[p] for p in parts]


def download_command(repo_id: str, patterns: list[str], options: HubOptions) -> str:
    """The shell command that fills the cache with what a call needs (the ``hf`` command of huggingface_hub)."""
    words = ["hf", "download", repo_id, "--include", *patterns]
    if options.revision:
        words += ["--revision", options.revision]
    if options.cache_dir:
        words += ["--cache-dir", str(options.cache_dir)]
    return " ".join(shlex.quote(w) for w in words)


def _missing(folder: Path, patterns: list[str]) -> list[str]:
    """The patterns that match nothing in a snapshot folder (a file pattern: the file; ``dir/*``: a non-empty dir)."""
    out = []
    for pattern in patterns:
        if pattern.endswith("/*"):
            sub = folder / pattern[:-2]
            if not (sub.is_dir() and any(sub.iterdir())):
                out.append(pattern)
        elif not (folder / pattern).is_file():
            out.append(pattern)
    return out


def fetch(repo_id: str, patterns: Iterable[str], options: HubOptions | None = None) -> Path:
    """The snapshot folder of exactly ``patterns`` of ``repo_id`` (e.g. a LoRA adapter's two files), from the cache
    or downloaded, with the options and the environment honoured as for model repos."""
    options = options or HubOptions()
    return _snapshot(repo_id, list(patterns), options, options.local_files_only or offline_env())


def _snapshot(repo_id: str, patterns: list[str], options: HubOptions, offline: bool) -> Path:
    """``snapshot_download`` of ``patterns``, its errors turned into one :class:`HubError` that says what to do."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as exc:  # a core dependency; only a broken installation lacks it
        raise HubError(f"loading {repo_id!r} by repo id needs huggingface_hub: pip install huggingface_hub") from exc
    where = cache_dir_of(options)
    try:
        folder = snapshot_download(
            repo_id, revision=options.revision, cache_dir=where, local_files_only=offline, allow_patterns=patterns
        )
    except LocalEntryNotFoundError as exc:
        raise HubError(_not_cached(repo_id, patterns, options, offline, where)) from exc
    except GatedRepoError as exc:
        raise HubError(f"{repo_id} is gated: accept its terms on the hub, then log in with `hf auth login`") from exc
    except RepositoryNotFoundError as exc:
        raise HubError(
            f"{repo_id!r} is neither a local folder nor a model repository on the Hugging Face hub "
            "(private repositories need `hf auth login`)"
        ) from exc
    except RevisionNotFoundError as exc:
        raise HubError(f"{repo_id} has no revision {options.revision!r} (a branch, tag or commit hash)") from exc
    return Path(folder)


def _not_cached(repo_id: str, patterns: list[str], options: HubOptions, offline: bool, where: str | None) -> str:
    why = (
        "downloads are off (HF_HUB_OFFLINE=1 or --local-files-only)"
        if offline
        else "the hub could not be reached (no network?)"
    )
    return (
        f"{repo_id} is not a local folder and is not in the Hugging Face cache ({where or 'the default cache'}), "
        f"and {why}. Download what this needs, with network access:\n  {download_command(repo_id, patterns, options)}\n"
        "then run this command again (or pass a local model folder)."
    )


def resolve(
    source: str | os.PathLike | None,
    parts: Iterable[str] = PARTS,
    resolution: str | None = None,
    options: HubOptions | None = None,
) -> Path | None:
    """The local folder or file ``source`` names: an existing path as it is, a repo id fetched into the hub cache
    (only ``parts`` at ``resolution``) and its snapshot folder returned. ``None`` stays ``None`` (the caller's
    default). Anything else is a ``FileNotFoundError`` that names the accepted forms."""
    if source is None:
        return None
    path = Path(source).expanduser()
    if path.exists():
        return path
    if not is_repo_id(str(source)):
        raise FileNotFoundError(
            f"checkpoint not found: {source} is neither an existing path nor a Hugging Face repo id (ORG/NAME)"
        )
    options = options or HubOptions()
    repo_id, parts = str(source), list(parts)
    offline = options.local_files_only or offline_env()
    head = _snapshot(repo_id, [MODEL_INDEX], options, offline)  # tells the layout: ours has model_index.json
    index = None
    if (head / MODEL_INDEX).is_file():
        index = read_json(head / MODEL_INDEX, f"{MODEL_INDEX} of {repo_id}", HubError)
    patterns = allow_patterns(parts, resolution, index)
    layout = "our layout" if index is not None else "the released layout"
    log.info("%s (%s): fetching %s", repo_id, layout, ", ".join(patterns))
    folder = _snapshot(repo_id, patterns, options, offline)
    missing = _missing(folder, [p for p in patterns if p != MODEL_INDEX])
    if missing:
        if offline:
            raise HubError(_not_cached(repo_id, missing, options, offline, cache_dir_of(options)))
        raise HubError(f"{repo_id} ({layout}) has nothing matching {', '.join(missing)}")
    return folder
