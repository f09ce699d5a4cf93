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
from infinitystar.generation.prompt_checks import decode_lines, field_problems, utf8_problem, vbench_problems

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
    source: str = ""  #: where it was read, ``file:line`` (or ``file[index]`` for a .json list), for messages
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
    if isinstance(obj, _Unreadable):
        raise _fail(path, where, obj.message)
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise _fail(path, where, f"expected a JSON object or string, got {type(obj).__name__}")
    if "prompt_en" in obj:  # VBench
        extra = set(obj) - _VBENCH_KEYS
        if extra:
            raise _fail(path, where, f"unknown VBench keys {sorted(extra)}; accepted: {sorted(_VBENCH_KEYS)}")
        problems = vbench_problems(obj)
        if problems:
            raise _fail(path, where, "; ".join(problems))
        prompt = obj.get("refined_prompt") or obj["prompt_en"]
        return {"prompt": prompt, "name": obj["prompt_en"], "vbench": True}
    unknown = set(obj) - _ITEM_KEYS
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}; accepted: {sorted(_ITEM_KEYS)}")
    if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
        raise _fail(path, where, "needs a non-empty 'prompt' string")
    problems = field_problems(obj)
    if problems:
        raise _fail(path, where, "; ".join(problems))
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


class _Unreadable:
    """A line that could not be read (not UTF-8, not JSON): reported as that item's problem."""

    def __init__(self, message: str) -> None:
        self.message = message


def _records(path: Path) -> list[tuple[str, Any]]:
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".txt"):
        raise ValueError(f"unsupported prompt file {path}; accepted: .jsonl, .json (list or VBench), .txt")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read prompt file {path}: {exc.strerror or exc}") from None
    lines = decode_lines(raw)
    if suffix == ".jsonl":
        out = []
        for i, line, problem in lines:
            if problem is not None:
                out.append((f":{i}", _Unreadable(problem)))
            elif line.strip():
                try:
                    out.append((f":{i}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    out.append((f":{i}", _Unreadable(f"not valid JSON ({exc.msg} at column {exc.colno})")))
        return out
    if suffix == ".txt":
        return [
            (f":{i}", _Unreadable(problem) if problem is not None else line.strip())
            for i, line, problem in lines
            if problem is not None or (line.strip() and not line.lstrip().startswith("#"))
        ]
    problem = utf8_problem(raw, path)
    if problem is not None:
        raise _fail(path, "", problem)
    text = "\n".join(line for _, line, _ in lines)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(path, "", f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise _fail(path, "", "a .json prompt file must hold a list (jsonl items or VBench's prompt list)")
        return [(f"[{i}]", obj) for i, obj in enumerate(data)]
    raise AssertionError(suffix)  # checked above


def read_prompt_file(
    path: str | Path, *, num_samples: int = 1, seed: int = 0, problems: list[str] | None = None
) -> list[PromptItem]:
    """The items of a prompt file; sample k of a prompt uses ``seed + k`` unless the item sets a seed.

    Names: VBench items ``{prompt_en}-{k}``; others the item's ``name`` or ``{index:05d}_{prompt slug}``,
    with ``-{k}`` when ``num_samples > 1``. Two items that would write the same file are an error.
    A bad item (a line that is not UTF-8 or not JSON, a field of the wrong type, a duplicate name) raises a
    ``ValueError`` naming ``file:line``; with a ``problems`` list it is appended there instead (every bad item of the
    file, in order) and the other items are returned. Problems of the whole file (missing, unsupported type, a
    ``.json`` that is not a list) always raise.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file not found: {path}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    items: list[PromptItem] = []
    seen: dict[str, str] = {}
    for n, (where, obj) in enumerate(_records(path)):
        try:
            e = _entry(path, where, obj)
            names = _names(path, where, n, e, num_samples, seen)
        except ValueError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        for k, name in enumerate(names):
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
                    source=f"{path}{where}",
                    lora=e.get("lora"),
                    **media,
                )
            )
    if not items and not problems:
        raise ValueError(f"prompt file {path} holds no prompts")
    return items


def _names(path: Path, where: str, n: int, e: dict, num_samples: int, seen: dict[str, str]) -> list[str]:
    """The output names of one entry's samples, claimed in ``seen`` (a name another entry writes is an error)."""
    names = []
    for k in range(num_samples):
        if e.get("vbench"):
            name = f"{_safe_stem(e['name'])}-{k}"
        else:
            base = _safe_stem(e["name"]) if e.get("name") else f"{n:05d}_{slugify(e['prompt'])}"
            name = base if num_samples == 1 else f"{base}-{k}"
        if name in seen:
            raise _fail(path, where, f"output name {name!r} is also produced by {seen[name]}; give distinct names")
        names.append(name)
    seen.update((name, where) for name in names)
    return names


def shard(items: list[PromptItem], rank: int, world_size: int) -> list[PromptItem]:
    """This rank's share: items ``rank, rank + world_size, ...``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return items[rank::world_size]
