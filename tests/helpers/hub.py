"""A Hugging Face hub cache written as a download leaves it, so repo-id loading is tested with the real
``huggingface_hub`` and nothing reaches the network.

Layout of the cache (huggingface_hub's ``file_download``): ``models--ORG--NAME/blobs/<hash>`` holds each file's
content once, ``models--ORG--NAME/snapshots/<commit>/<path>`` is a relative symlink to its blob, and
``models--ORG--NAME/refs/main`` holds the commit the branch points to.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def commit_of(repo_id: str) -> str:
    """A fixed 40-hex commit hash per repo id."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


def populate_hub_cache(
    cache: Path, repo_id: str, folder: Path, keep: Callable[[str], bool] = lambda rel: True, revision: str = "main"
) -> Path:
    """Put the files of ``folder`` whose repo path passes ``keep`` into ``cache`` as the snapshot of ``repo_id`` at
    ``revision``; returns the snapshot folder."""
    repo_dir = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    commit = commit_of(repo_id)
    snapshot = repo_dir / "snapshots" / commit
    for file in sorted(Path(folder).rglob("*")):
        rel = file.relative_to(folder).as_posix()
        if not file.is_file() or not keep(rel):
            continue
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)  # no final newline, as the library writes it
    return snapshot


def forbid_network(monkeypatch) -> None:
    """Make any connection attempt fail loudly, so a test proves that nothing reached the network."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to reach the network: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
