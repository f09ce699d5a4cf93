"""Prompt files for batch generation: jsonl, VBench's JSON, or plain text.

Each file becomes a list of :class:`PromptItem`, one per output file (a prompt with several
samples gives several items), with a stable output name, so that an interrupted batch resumes by
skipping the names that exist, and ranks under torchrun split the items without talking.

Formats
- ``.jsonl``: one object per line, ``{"prompt": ...}`` plus optional ``seed``, ``duration``,
  ``image``, ``video``, ``negative_prompt``, ``aspect_ratio``, ``name``, ``lora`` (``"PATH[:SCALE]"``
  or a list of them: the adapters of this item, replacing the command's ``--lora``; ``[]`` = none);
  a bare JSON string line is a prompt. Relative media and adapter paths resolve against the file's folder.
- ``.json``: a list of such objects, or VBench's prompt list (``prompt_en`` with an optional
  ``refined_prompt``, the rewritten prompt InfinityStar was evaluated with): the refined prompt
  is generated, the file is named after ``prompt_en`` as VBench expects (``{prompt_en}-{k}.mp4``).
- ``.txt``: one prompt per line (blank lines and lines starting with ``#`` skipped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infinitystar.generation.lora import LoraSpec, parse_lora_spec
from infinitystar.generation.naming import slugify

_ITEM_KEYS = {"prompt", "seed", "duration", "image", "video", "negative_prompt", "aspect_ratio", "name", "lora"}
_VBENCH_KEYS = {"prompt_en", "refined_prompt", "dimension", "auxiliary_info"}


@dataclass(frozen=True)
class PromptItem:
    """One output of a batch: what to generate and the file stem to write it to."""

    prompt: str
    name: str  #: output file stem (no suffix), unique in the batch
    seed: int
    sample: int = 0
    duration: float | None = None
    image: str | None = None
    video: str | None = None
    negative_prompt: str | None = None
    aspect_ratio: str | None = None
    #: LoRA adapters of this item (None: the command's); see :mod:`infinitystar.generation.lora`
    lora: tuple[LoraSpec, ...] | None = None


def _safe_stem(text: str, limit: int = 180) -> str:
    """A file stem from free text: path separators and control characters replaced, length capped."""
    cleaned = "".join("_" if ch in '/\\\0:*?"<>|' or ord(ch) < 32 else ch for ch in text).strip(" .")
    return cleaned[:limit] or "prompt"


def _fail(path: Path, where: str, msg: str) -> ValueError:
    return ValueError(f"{path}{where}: {msg}")


def _entry(path: Path, where: str, obj: Any) -> dict:
    """Normalise one record to the jsonl item keys."""
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected a JSON object or string, got {type(obj).__name__}")
    if "prompt_en" in obj:  # VBench
        extra = set(obj) - _VBENCH_KEYS
        prompt = obj.get("refined_prompt") or obj["prompt_en"]
        entry = {"prompt": prompt, "name": obj["prompt_en"], "vbench": True}
        if extra:
            raise _fail(path, where, f"unknown VBench keys {sorted(extra)}; accepted: {sorted(_VBENCH_KEYS)}")
        return entry
    unknown = set(obj) - _ITEM_KEYS
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}; accepted: {sorted(_ITEM_KEYS)}")
    if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        raise _fail(path, where, "needs a non-empty 'prompt' string")
    entry = dict(obj)
    if "lora" in entry:
        entry["lora"] = _lora(path, where, entry["lora"])
    return entry


def _lora(path: Path, where: str, value: Any) -> tuple[LoraSpec, ...]:
    """An item's ``lora``: ``"PATH[:SCALE]"`` or a list of them, paths relative to the prompt file's folder."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _fail(path, where, f"'lora' must be \"PATH[:SCALE]\" or a list of them, got {value!r}")
    try:
        return tuple(parse_lora_spec(t, base=path.parent) for t in texts)
    except ValueError as exc:
        raise _fail(path, where, str(exc)) from None


def _records(path: Path) -> list[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((f":{i}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise _fail(path, f":{i}", f"not valid JSON ({exc.msg})") from None
        return out
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(path, "", f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise _fail(path, "", "a .json prompt file must hold a list (jsonl items or VBench's prompt list)")
        return [(f"[{i}]", obj) for i, obj in enumerate(data)]
    if suffix == ".txt":
        return [
            (f":{i}", line.strip())
            for i, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    raise ValueError(f"unsupported prompt file {path}; accepted: .jsonl, .json (list or VBench), .txt")


def read_prompt_file(path: str | Path, *, num_samples: int = 1, seed: int = 0) -> list[PromptItem]:
    """The items of a prompt file; sample k of a prompt uses ``seed + k`` unless the item sets a seed.

    Names: VBench items ``{prompt_en}-{k}``; others the item's ``name`` or ``{index:05d}_{prompt slug}``,
    with ``-{k}`` when ``num_samples > 1``. Two items that would write the same file are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file not found: {path}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    for n, (where, obj) in enumerate(_records(path)):
        e = _entry(path, where, obj)
        for k in range(num_samples):
            if e.get("vbench"):
                name = f"{_safe_stem(e['name'])}-{k}"
            else:
                base = _safe_stem(e["name"]) if e.get("name") else f"{n:05d}_{slugify(e['prompt'])}"
                name = base if num_samples == 1 else f"{base}-{k}"
            if name in seen:
                raise _fail(path, where, f"output name {name!r} is also produced by {seen[name]}; give distinct names")
            seen[name] = where
            media = {m: str((path.parent / e[m]).resolve()) if e.get(m) else None for m in ("image", "video")}
            items.append(
                PromptItem(
                    prompt=e["prompt"],
                    name=name,
                    seed=int(e["seed"]) + k if e.get("seed") is not None else seed + k,
                    sample=k,
                    duration=e.get("duration"),
                    negative_prompt=e.get("negative_prompt"),
                    aspect_ratio=e.get("aspect_ratio"),
                    lora=e.get("lora"),
                    **media,
                )
            )
    if not items:
        raise ValueError(f"prompt file {path} holds no prompts")
    return items


def shard(items: list[PromptItem], rank: int, world_size: int) -> list[PromptItem]:
    """This rank's share: items ``rank, rank + world_size, ...``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return items[rank::world_size]
