"""What a curation run leaves behind: the output paths, the resume state log, the manifests and the report.

Output files, for ``--out data/train.jsonl``:

- ``data/train.jsonl``: the training manifest in the original's jsonl format, one line per kept clip or image,
  sorted by file and first frame (so the same inputs give the same file, whatever the number of workers):

  - video clip: ``video_path``, ``begin_frame_id``, ``end_frame_id`` (source frames, end exclusive: the clip
    is ``end - begin`` frames long), ``fps`` (source), ``width``, ``height``, ``tarsier2_caption``, plus
    ``MiniCPM_V_2_6_caption`` / ``quality_prompt`` when the input manifest had them;
  - image: ``image_path``, ``text`` (short caption), ``long_caption``, ``width``, ``height``.

- ``data/train.uncaptioned.jsonl``: kept items that have no caption (no captioner, no sidecar ``.txt``, none in
  the input manifest), in the same format with empty captions and ``"uncaptioned": true``. Curating this file
  again with ``--captioner`` captions them (frame ranges from an input manifest are honoured).
- ``data/train.report.json``: counts per filter (what was dropped and why, with examples), failures, captions.
- ``data/train.state.jsonl``: the progress log. Its first line holds the settings; then one line per finished
  input (its clips, scores and decisions), appended and fsynced as soon as the input is done, so an interrupted
  run loses nothing: ``--resume`` skips every input already in it and rebuilds the outputs. The manifest and
  report are rewritten atomically (through :mod:`infinitystar.files`) from the log at the end of every run.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from infinitystar.curate.filters import CurateConfig
from infinitystar.curate.inputs import InputItem
from infinitystar.files import append_jsonl, write_json, write_jsonl

STATE_VERSION = 1


@dataclass(frozen=True)
class OutputPaths:
    """The four files of a run, all named after the output manifest."""

    manifest: Path
    uncaptioned: Path
    report: Path
    state: Path

    @classmethod
    def for_manifest(cls, out: str | Path) -> OutputPaths:
        out = Path(out)
        if out.suffix.lower() != ".jsonl":
            raise ValueError(f"the output manifest must be a .jsonl file; got {out}")
        stem = out.with_suffix("")
        return cls(
            out,
            stem.with_name(stem.name + ".uncaptioned.jsonl"),
            stem.with_name(stem.name + ".report.json"),
            stem.with_name(stem.name + ".state.jsonl"),
        )


def load_state(path: Path) -> tuple[dict | None, dict[str, dict]]:
    """``(header, {key: last record})`` of a state file. A torn last line (the run was killed while writing it)
    is cut off the file; a bad line elsewhere is an error."""
    if not path.exists():
        return None, {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    header, records, offset = None, {}, 0
    for n, raw in enumerate(lines):
        end = offset + len(raw) + 1
        if raw.strip():
            try:
                obj = json.loads(raw)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError:
                if all(not rest.strip() for rest in lines[n + 1 :]):
                    with open(path, "r+b") as f:  # torn final write: drop it, that input is redone
                        f.truncate(offset)
                    break
                raise ValueError(
                    f"{path}:{n + 1}: corrupt state line; remove the file (or run with --overwrite) to start over"
                ) from None
            if header is None:
                if obj.get("curate_state") != STATE_VERSION:
                    raise ValueError(f"{path} is not an infinitystar curate state file (version {STATE_VERSION})")
                header = obj
            else:
                records[obj["key"]] = obj
        offset = end
    return header, records


class StateLog:
    """Append-only progress log: each record is written, flushed and fsynced before the next input counts."""

    def __init__(self, path: Path, header: dict | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run; close() ends it)
        if header is not None:
            self.append(header)

    def append(self, record: dict) -> None:
        append_jsonl(self.file, record)
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _entry_sort_key(entry: dict) -> tuple:
    return (entry.get("video_path") or entry.get("image_path"), entry.get("begin_frame_id", 0))


EXAMPLES_PER_FILTER = 5


class _Tally:
    """Running counts over state records, gathered in one pass for the report."""

    def __init__(self) -> None:
        self.dropped: dict[str, dict] = {}
        self.kinds: Counter = Counter()
        self.clips_found = self.clips_kept = self.entries = self.uncaptioned = 0
        self.captions: Counter = Counter()
        self.failed: list[dict] = []
        self.warnings: list[dict] = []

    def drop(self, drop: dict, unit: str, where: str) -> None:
        slot = self.dropped.setdefault(drop["filter"], {"inputs": 0, "clips": 0, "examples": []})
        slot[unit] += 1
        if len(slot["examples"]) < EXAMPLES_PER_FILTER:
            slot["examples"].append(f"{where}: {drop['reason']}")

    def add(self, r: dict) -> None:
        if r.get("warning"):
            self.warnings.append({"path": r["key"], "warning": r["warning"]})
        self.kinds[(r["kind"], r["status"])] += 1
        if r["status"] == "failed":
            self.failed.append({"path": r["key"], "error": r["error"]})
            return
        if r.get("drop"):
            self.drop(r["drop"], "inputs", r["key"])
        for c in r.get("clips", []):
            if r["kind"] == "video":
                self.clips_found += 1
            if c.get("drop"):
                where = f"{r['path']} [{c['begin']}:{c['end']})" if r["kind"] == "video" else r["path"]
                self.drop(c["drop"], "clips" if r["kind"] == "video" else "inputs", where)
            else:
                self.clips_kept += r["kind"] == "video"
                self.captions[c.get("caption_source", "none")] += 1
        self.entries += len(r["entries"])
        self.uncaptioned += len(r["uncaptioned"])

    def inputs(self, kind: str) -> int:
        return sum(v for (k, _), v in self.kinds.items() if k == kind)


def build_report(items: list[InputItem], records: dict[str, dict], config: CurateConfig, paths: OutputPaths) -> dict:
    """Counts of everything that happened to the current inputs, from their state records."""
    done = [records[i.key] for i in items if i.key in records]
    tally = _Tally()
    for r in done:
        tally.add(r)
    return {
        "manifest": str(paths.manifest),
        "complete": len(done) == len(items),
        "inputs": len(items),
        "processed": len(done),
        "remaining": len(items) - len(done),
        "videos": {"inputs": tally.inputs("video"), "clips_found": tally.clips_found, "clips_kept": tally.clips_kept},
        "images": {
            "inputs": tally.inputs("image"),
            "kept": sum(1 for r in done if r["kind"] == "image" and r["status"] == "ok"),
        },
        "entries": tally.entries,
        "uncaptioned": tally.uncaptioned,
        "uncaptioned_manifest": str(paths.uncaptioned) if tally.uncaptioned else None,
        "captions": dict(sorted(tally.captions.items())),
        "dropped": dict(sorted(tally.dropped.items())),
        "failed": tally.failed,
        "warnings": tally.warnings,
        "settings": config.to_json(),
    }


def format_report(report: dict) -> str:
    """A short human-readable summary of a report."""
    lines = [
        f"curated {report['processed']}/{report['inputs']} inputs"
        + ("" if report["complete"] else f" ({report['remaining']} left: rerun with --resume)"),
        f"  videos: {report['videos']['inputs']} inputs, {report['videos']['clips_found']} clips found, "
        f"{report['videos']['clips_kept']} kept; images: {report['images']['inputs']} inputs, "
        f"{report['images']['kept']} kept",
        f"  manifest: {report['entries']} entries -> {report['manifest']}",
    ]
    if report["uncaptioned"]:
        lines.append(f"  uncaptioned: {report['uncaptioned']} -> {report['uncaptioned_manifest']}")
    if report["captions"]:
        lines.append("  captions: " + ", ".join(f"{k} {v}" for k, v in report["captions"].items()))
    if report["dropped"]:
        lines.append("  dropped:")
        for name, slot in report["dropped"].items():
            what = ", ".join(f"{slot[u]} {u}" for u in ("inputs", "clips") if slot[u])
            lines.append(f"    {name:<14} {what:<22} e.g. {slot['examples'][0]}")
    if report["warnings"]:
        lines.append(f"  warnings: {len(report['warnings'])}")
        lines.extend(f"    {w['path']}: {w['warning']}" for w in report["warnings"][:10])
    if report["failed"]:
        lines.append(f"  failed: {len(report['failed'])}")
        for f in report["failed"][:10]:
            lines.append(
                f"    {f['error']}" if f["path"].split("#")[0] in f["error"] else f"    {f['path']}: {f['error']}"
            )
        if len(report["failed"]) > 10:
            lines.append(f"    ... ({len(report['failed']) - 10} more in the report)")
    return "\n".join(lines)


def remove_outputs(paths: OutputPaths) -> None:
    """Delete an earlier run's state and outputs (``--overwrite``)."""
    for p in (paths.state, paths.manifest, paths.uncaptioned, paths.report):
        if p.exists():
            p.unlink()


def write_outputs(items: list[InputItem], records: dict[str, dict], config: CurateConfig, paths: OutputPaths) -> dict:
    """(Re)write the manifest, the uncaptioned manifest and the report from the state records; return the report."""
    done = [records[i.key] for i in items if i.key in records]
    entries = sorted((e for r in done for e in r["entries"]), key=_entry_sort_key)
    uncaptioned = sorted((e for r in done for e in r["uncaptioned"]), key=_entry_sort_key)
    write_jsonl(paths.manifest, entries)
    if uncaptioned:
        write_jsonl(paths.uncaptioned, uncaptioned)
    elif paths.uncaptioned.exists():
        paths.uncaptioned.unlink()  # stale from an earlier run
    report = build_report(items, records, config, paths)
    write_json(paths.report, report)
    return report
