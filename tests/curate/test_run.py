"""End-to-end curation runs: manifest contents, report, corrupt inputs, resume, workers, input manifests, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infinitystar.curate import CurateConfig, parse_scorer_spec, run_curate
from infinitystar.curate.inputs import collect_inputs
from infinitystar.curate.outputs import OutputPaths, load_state
from infinitystar.curate.scorers import DEFAULT_SCORERS, merge_scorer_specs
from tests.helpers.curate import moving, static, texture, write_corrupt, write_image, write_video

# Small media: 48x64 videos, so the shorter-side filter is lowered to 32 px; 16 fps; 1 s minimum clips.
CFG = CurateConfig(min_short_edge=32, min_duration=1.0, motion="diff")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    write_video(root / "moving.mp4", moving(32, seed=0), fps=16)  # kept (uncaptioned)
    write_video(root / "static.mp4", static(32, seed=1), fps=16)  # motion
    cut = np.concatenate([moving(24, seed=2, palette=(255, 70, 40)), moving(24, seed=3, palette=(40, 90, 255))])
    write_video(root / "sub" / "cut.mp4", cut, fps=16)  # two clips, captioned by sidecar
    (root / "sub" / "cut.txt").write_text("Two scenes.  A red one, then a blue one.\n")
    write_video(root / "slow.mp4", moving(20, seed=4), fps=10)  # fps
    write_video(root / "tiny.mp4", moving(32, 16, 16, seed=5), fps=16)  # short_edge
    write_video(root / "blip.mp4", moving(10, seed=6), fps=16)  # duration (0.6 s)
    write_image(root / "photo.png", texture(48, 64, 7))  # kept, sidecar caption
    (root / "photo.txt").write_text("A grey mosaic. Seen from above.")
    write_image(root / "bare.jpg", texture(40, 40, 8))  # kept, uncaptioned
    write_corrupt(root / "broken.mp4")  # failed
    write_corrupt(root / "broken.webp", seed=1)  # failed
    (root / "readme.md").write_text("not media")  # ignored
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "skip.mp4", moving(32), fps=16)  # ignored (hidden)
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _comparable_report(path: Path) -> dict:
    report = json.loads(path.read_text())
    for key in ("manifest", "uncaptioned_manifest"):
        report.pop(key)
    return report


def test_folder_run_manifest_report_and_corrupt_inputs(media, tmp_path):
    out = tmp_path / "train.jsonl"
    report = run_curate(media, out, CFG)
    paths = OutputPaths.for_manifest(out)

    entries = _lines(out)
    videos = [e for e in entries if "video_path" in e]
    images = [e for e in entries if "image_path" in e]
    assert [(Path(e["video_path"]).name, e["begin_frame_id"], e["end_frame_id"]) for e in videos] == [
        ("cut.mp4", 0, 24),
        ("cut.mp4", 24, 48),
    ]
    assert all(e["tarsier2_caption"] == "Two scenes. A red one, then a blue one." and e["fps"] == 16.0 for e in videos)
    assert images == [
        {
            "image_path": str(media / "photo.png"),
            "text": "A grey mosaic.",
            "long_caption": "A grey mosaic. Seen from above.",
            "width": 64,
            "height": 48,
        }
    ]
    uncaptioned = _lines(paths.uncaptioned)
    assert sorted(Path(e.get("video_path") or e["image_path"]).name for e in uncaptioned) == ["bare.jpg", "moving.mp4"]
    assert all(e["uncaptioned"] is True for e in uncaptioned)

    assert json.loads(paths.report.read_text()) == report
    assert report["complete"] and report["inputs"] == report["processed"] == 10
    assert report["entries"] == 3 and report["uncaptioned"] == 2
    assert report["videos"] == {"inputs": 7, "clips_found": 4, "clips_kept": 3}
    assert report["images"] == {"inputs": 3, "kept": 2}
    dropped = {name: (slot["inputs"], slot["clips"]) for name, slot in report["dropped"].items()}
    assert dropped == {"duration": (1, 0), "fps": (1, 0), "motion": (0, 1), "short_edge": (1, 0)}
    assert "static.mp4 [0:32): motion" in report["dropped"]["motion"]["examples"][0]
    assert sorted(Path(f["path"]).name for f in report["failed"]) == ["broken.mp4", "broken.webp"]
    assert all("corrupt" in f["error"] for f in report["failed"])
    assert report["captions"] == {"none": 2, "sidecar": 3}


def test_truncated_video_keeps_what_decodes_and_warns(tmp_path):
    full = write_video(tmp_path / "full.mkv", moving(40), fps=16)
    data = full.read_bytes()
    src = tmp_path / "src"
    src.mkdir()
    (src / "cut_short.mkv").write_bytes(data[: len(data) * 3 // 4])
    report = run_curate(src, tmp_path / "m.jsonl", CFG)
    assert len(report["warnings"]) == 1 and "truncated" in report["warnings"][0]["warning"]
    assert not report["failed"]
    (entry,) = _lines(tmp_path / "m.uncaptioned.jsonl")
    decoded = int(report["warnings"][0]["warning"].split()[1])
    assert entry["begin_frame_id"] == 0 and entry["end_frame_id"] == decoded < 40


def test_scene_fragments_and_long_scenes_inside_a_run(tmp_path):
    src = tmp_path / "src"
    write_video(src / "long.mp4", moving(56, seed=0), fps=16)  # 3.5 s, one scene -> 1.5 s windows + 0.5 s rest
    frames = np.concatenate([moving(10, seed=1, palette=(255, 60, 40)), moving(30, seed=2, palette=(40, 90, 255))])
    write_video(src / "fragment.mp4", frames, fps=16)  # a 10-frame scene (0.625 s), then 30 frames
    config = CurateConfig(min_short_edge=32, min_duration=1.0, max_clip_duration=1.5, motion="diff")
    report = run_curate(src, tmp_path / "m.jsonl", config)
    kept = [
        (Path(e["video_path"]).name, e["begin_frame_id"], e["end_frame_id"])
        for e in _lines(tmp_path / "m.uncaptioned.jsonl")
    ]
    assert kept == [("fragment.mp4", 10, 34), ("long.mp4", 0, 24), ("long.mp4", 24, 48)]
    assert report["videos"] == {"inputs": 2, "clips_found": 6, "clips_kept": 3}
    assert report["dropped"]["scene_duration"]["clips"] == 3  # (0, 10), (34, 40), (48, 56)


def test_resume_after_interruption_gives_the_uninterrupted_result(media, tmp_path):
    full = tmp_path / "full" / "m.jsonl"
    run_curate(media, full, CFG)

    part = tmp_path / "part" / "m.jsonl"
    first = run_curate(media, part, CFG, max_items=4)
    assert not first["complete"] and first["processed"] == 4 and first["remaining"] == 6
    header, records = load_state(OutputPaths.for_manifest(part).state)
    assert header["curate_state"] == 1 and len(records) == 4

    with pytest.raises(ValueError, match="pass --resume to continue it or --overwrite"):
        run_curate(media, part, CFG)
    second = run_curate(media, part, CFG, resume=True, max_items=3)
    assert second["processed"] == 7
    final = run_curate(media, part, CFG, resume=True)
    assert final["complete"]

    state_lines = _lines(OutputPaths.for_manifest(part).state)
    keys = [r["key"] for r in state_lines[1:]]
    assert len(keys) == len(set(keys)) == 10  # every input processed exactly once
    for name in ("m.jsonl", "m.uncaptioned.jsonl"):
        assert (part.parent / name).read_text() == (full.parent / name).read_text()
    assert _comparable_report(part.parent / "m.report.json") == _comparable_report(full.parent / "m.report.json")
    entries = (part.parent / "m.jsonl").read_text().splitlines()
    assert len(entries) == len(set(entries))


@pytest.mark.slow
def test_resume_after_the_process_is_killed(media, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["curate", str(media), "--min-short-edge", "32", "--min-duration", "1", "--motion", "diff", "--quiet"]
    args += ["--scorer", "tests.helpers.curate:SlowScorer,seconds=0.3"]
    full, part = tmp_path / "full" / "m.jsonl", tmp_path / "part" / "m.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path])}
    code = "import sys; from infinitystar.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--out", str(part)], env=env)
    state = OutputPaths.for_manifest(part).state
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if state.exists() and len(state.read_text().splitlines()) >= 4:  # header + 3 inputs done
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not part.exists()  # killed before writing the manifest: only the state log holds the progress
    done_before = len(load_state(state)[1])
    assert 3 <= done_before < 10

    from infinitystar.cli import main

    assert main([*args, "--out", str(part), "--resume"]) == 0
    assert main([*args[:-1], "tests.helpers.curate:SlowScorer,seconds=0", "--out", str(full)]) == 0  # same decisions
    keys = [r["key"] for r in _lines(state)[1:]]
    assert len(keys) == len(set(keys)) == 10
    for name in ("m.jsonl", "m.uncaptioned.jsonl"):
        assert (part.parent / name).read_text() == (full.parent / name).read_text()


def test_resume_after_a_torn_state_write(media, tmp_path):
    out = tmp_path / "m.jsonl"
    run_curate(media, out, CFG)
    expected = out.read_text()
    state = OutputPaths.for_manifest(out).state
    data = state.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n")
    state.write_bytes(data[: last + 1 + (len(data) - last) // 2])  # the kill hit in the middle of the last record
    report = run_curate(media, out, CFG, resume=True)
    assert report["complete"] and out.read_text() == expected
    assert len(state.read_text().splitlines()) == 11  # header + 10, the torn line replaced


def test_resume_refuses_other_settings_and_overwrite_starts_over(media, tmp_path):
    out = tmp_path / "m.jsonl"
    run_curate(media, out, CFG, max_items=2)
    other = CurateConfig(min_short_edge=32, min_duration=1.5, motion="diff")
    with pytest.raises(ValueError, match=r"settings differ from the run being resumed \(min_duration\)"):
        run_curate(media, out, other, resume=True)
    report = run_curate(media, out, other, overwrite=True)
    assert report["complete"] and report["settings"]["min_duration"] == 1.5


def test_retry_failed(media, tmp_path):
    out = tmp_path / "m.jsonl"
    first = run_curate(media, out, CFG)
    state = OutputPaths.for_manifest(out).state
    before = len(state.read_text().splitlines())
    again = run_curate(media, out, CFG, resume=True, retry_failed=True)
    assert len(state.read_text().splitlines()) == before + len(first["failed"])
    assert again["failed"] == first["failed"]


def test_two_workers_give_the_single_worker_output(media, tmp_path):
    one, two = tmp_path / "one" / "m.jsonl", tmp_path / "two" / "m.jsonl"
    run_curate(media, one, CFG)
    run_curate(media, two, CFG, workers=2)
    for name in ("m.jsonl", "m.uncaptioned.jsonl"):
        assert (one.parent / name).read_text() == (two.parent / name).read_text()
    assert _comparable_report(one.parent / "m.report.json") == _comparable_report(two.parent / "m.report.json")


def test_a_worker_crash_fails_only_its_input(tmp_path):
    src = tmp_path / "src"
    for i in range(3):
        write_video(src / f"ok{i}.mp4", moving(20, seed=i, palette=(60, 120, 200)), fps=16)
    write_video(src / "poison.mp4", moving(20, seed=9, palette=(255, 30, 20)), fps=16)  # the scorer kills its worker
    scorers = merge_scorer_specs(DEFAULT_SCORERS, [parse_scorer_spec("tests.helpers.curate:CrashOnRedScorer")])
    config = CurateConfig(min_short_edge=32, min_duration=1.0, motion="diff", scorers=scorers)
    report = run_curate(src, tmp_path / "m.jsonl", config, workers=2)
    assert report["complete"]
    assert [(Path(f["path"]).name, "worker process died" in f["error"]) for f in report["failed"]] == [
        ("poison.mp4", True)
    ]
    assert report["videos"]["clips_kept"] == 3


def test_input_manifest_with_ranges_captions_and_relative_paths(media, tmp_path):
    listing = tmp_path / "list" / "inputs.jsonl"
    listing.parent.mkdir()
    lines = [
        {
            "video_path": str(media / "sub" / "cut.mp4"),
            "begin_frame_id": 24,
            "end_frame_id": 48,
            "tarsier2_caption": "A blue scene.",
            "quality_prompt": "high quality",
        },
        {"path": str(media / "moving.mp4"), "caption": "A texture slides to the right."},
        {"image_path": str(media / "bare.jpg"), "text": "Mosaic.", "long_caption": "A mosaic of grey squares."},
        str(media / "photo.png"),
        {"path": str(media / "gone.mp4")},
    ]
    listing.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert collect_inputs(listing)[0].key == f"{media / 'sub' / 'cut.mp4'}#24-48"
    report = run_curate(listing, tmp_path / "m.jsonl", CFG)
    entries = {
        (Path(e.get("video_path") or e.get("image_path")).name, e.get("begin_frame_id")): e
        for e in _lines(tmp_path / "m.jsonl")
    }
    assert set(entries) == {("cut.mp4", 24), ("moving.mp4", 0), ("bare.jpg", None), ("photo.png", None)}
    cut = entries[("cut.mp4", 24)]
    assert (cut["end_frame_id"], cut["tarsier2_caption"], cut["quality_prompt"]) == (
        48,
        "A blue scene.",
        "high quality",
    )
    assert entries[("moving.mp4", 0)]["tarsier2_caption"] == "A texture slides to the right."
    assert (entries[("bare.jpg", None)]["text"], entries[("bare.jpg", None)]["long_caption"]) == (
        "Mosaic.",
        "A mosaic of grey squares.",
    )
    assert entries[("photo.png", None)]["long_caption"] == "A grey mosaic. Seen from above."  # sidecar
    assert [Path(f["path"]).name for f in report["failed"]] == ["gone.mp4"]
    assert "file not found" in report["failed"][0]["error"]


def test_input_manifest_relative_paths_and_errors(media, tmp_path):
    listing = media / "sub" / "list.jsonl"
    listing.write_text(json.dumps({"path": "cut.mp4"}) + "\n" + json.dumps("../moving.mp4") + "\n")
    try:
        assert [i.path for i in collect_inputs(listing)] == [str(media / "sub" / "cut.mp4"), str(media / "moving.mp4")]
    finally:
        listing.unlink()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.mp4"}\n{"path": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        collect_inputs(bad)
    bad.write_text('{"caption": "no path"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: no media path; give one of path, video_path"):
        collect_inputs(bad)
    bad.write_text('{"path": "a.mp4", "begin_frame_id": 10, "end_frame_id": 5}\n')
    with pytest.raises(ValueError, match="must be greater than begin_frame_id"):
        collect_inputs(bad)
    with pytest.raises(ValueError, match="input not found"):
        collect_inputs(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"must be a .jsonl file"):
        run_curate(media, tmp_path / "out.txt", CFG)


def test_output_is_readable_by_the_training_manifest_reader(media, tmp_path):
    manifest = pytest.importorskip("infinitystar.train.data.manifest")
    out = tmp_path / "m.jsonl"
    run_curate(media, out, CFG)
    items = manifest.read_manifest(out).items
    assert sorted((Path(i.path).name, i.begin_frame, i.end_frame) for i in items if i.kind == "video") == [
        ("cut.mp4", 0, 24),
        ("cut.mp4", 24, 48),
    ]
    assert [i.caption for i in items if i.kind == "image"] == ["A grey mosaic."]


def test_cli_curate(media, tmp_path, capsys):
    from infinitystar.cli import main

    out = tmp_path / "cli.jsonl"
    args = [
        "curate",
        str(media),
        "--out",
        str(out),
        "--min-short-edge",
        "32",
        "--min-duration",
        "1",
        "--motion",
        "diff",
    ]
    args += ["--scorer", "blur,threshold=none"]
    assert main([*args, "--workers", "1", "--max-items", "3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    report = json.loads(out.with_suffix(".report.json").read_text())
    blur = next(s for s in report["settings"]["scorers"] if s["target"] == "blur")
    assert blur["threshold"] is None and report["processed"] == 3
    assert main([*args[:-2], "--resume"]) == 2  # without the --scorer of the first run
    assert "settings differ from the run being resumed (scorers)" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "curated 10/10 inputs" in capsys.readouterr().out
    assert main([*args, "--overwrite", "--scorer", "no.such:Scorer"]) == 2
    assert "cannot import 'no.such'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["curate", str(media), "--out", str(out), "--motion", "raft"])


def test_cli_defaults_are_the_config_defaults():
    import argparse

    from infinitystar.cli.curate import add_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["curate", "in", "--out", "o.jsonl"])) == CurateConfig()
    args = parser.parse_args(["curate", "in", "--out", "o.jsonl", "--min-fps", "24", "--no-default-scorers"])
    assert config_from_args(args) == CurateConfig(min_fps=24, scorers=())
