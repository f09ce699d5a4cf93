"""Batch files from the user's side: every bad item is reported at once with its file and line before anything runs,
the good items are generated and the exit status says some failed; a file with no good item loads no model; an
existing output counts as done only when it decodes; Ctrl-C stops a batch cleanly and a rerun resumes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import infinitystar.cli.generate as generate_cli
from infinitystar.cli import main
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.settings import read_settings
from infinitystar.media import read_video


def gen(model_dir, *args) -> int:
    return main(["generate", "--checkpoint", str(model_dir), "--quiet", *args])


def write_lines(path, lines: list) -> None:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")


def test_bad_items_are_all_reported_first_and_the_good_ones_generated(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    write_lines(
        prompts,
        [
            {"prompt": "a red cat", "duration": "1"},  # 1: a string duration
            {"prompt": "a blue dog", "negative_prompt": 5},  # 2: a number as negative prompt
            {"prompt": "a green fox", "image": 7},  # 3: a number as image path
            {"prompt": "a white owl", "seed": "abc"},  # 4: a seed that is not a number
            '{"prompt": "a broken line"',  # 5: not JSON
            {"prompt": "a yellow bee", "image": "missing.png"},  # 6: a file that is not there
            {"prompt": "a black bat", "duration": -3},  # 7: a negative duration
            {"prompt": "a grey rat", "seed": 4},  # 8: good
            {"prompt": "a pink pig"},  # 9: good
        ],
    )
    with open(prompts, "ab") as f:
        f.write(b'{"prompt": "caf\xe9"}\n')  # 10: not UTF-8
    out = tmp_path / "out"
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out)) == 1  # some failed
    err = capsys.readouterr()
    assert "Traceback" not in err.err
    expected = {
        1: "'duration' must be a number of seconds (0 for an image), got \"1\" (write 1 without quotes)",
        2: "'negative_prompt' must be a string, got 5",
        3: "'image' must be a file path (a string), got 7",
        4: "'seed' must be a whole number from 0 to 2**63-1",
        5: "not valid JSON",
        6: "missing.png: file not found",
        7: "duration must be 0 (an image) or a positive number of seconds, got -3",
        10: "not UTF-8 text (byte 0xe9",
    }
    for line, message in expected.items():
        assert f"{prompts}:{line}: " in err.err and message in err.err, (line, err.err)
    head = err.err.index("8 bad item(s)")
    assert all(err.err.index(f"{prompts}:{line}:") > head for line in expected)  # all at once, before generating
    assert sorted(p.name for p in out.glob("*.mp4")) == ["00007_a_grey_rat.mp4", "00008_a_pink_pig.mp4"]
    assert read_settings(out / "00007_a_grey_rat.mp4")["seed"] == 4
    assert "2 generated, 0 already done, 8 failed" in err.out


def test_a_file_with_no_good_item_loads_no_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for a batch that has nothing to generate")

    monkeypatch.setattr(generate_cli, "load_pipeline", refuse)
    prompts = tmp_path / "bad.jsonl"
    write_lines(prompts, [{"prompt": 3}, {"prompt": "a cat", "duration": "2"}])
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert "nothing to generate: every item" in err and f"{prompts}:1:" in err and f"{prompts}:2:" in err
    assert "Traceback" not in err


def test_a_finished_batch_loads_no_model_and_a_corrupt_output_is_generated_again(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    out = tmp_path / "out"
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out), "--seed", "5") == 0
    cat, dog = out / "00000_a_cat.mp4", out / "00001_a_dog.mp4"
    good_dog = dog.stat().st_mtime_ns
    with monkeypatch.context() as m:  # everything is done: the model is not even loaded
        m.setattr(generate_cli, "load_pipeline", lambda *a, **k: pytest.fail("model loaded for a finished batch"))
        assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out), "--seed", "5") == 0
    assert "0 generated, 2 already done" in capsys.readouterr().out
    cat.write_bytes(cat.read_bytes()[:500])  # cut short (a copy interrupted, a disk error)
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out), "--seed", "5") == 0
    captured = capsys.readouterr()
    assert "1 generated, 1 already done" in captured.out
    assert read_video(cat).shape[1] == 17 and dog.stat().st_mtime_ns == good_dog
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out), "--seed", "5", "--overwrite") == 0
    assert "2 generated, 0 already done" in capsys.readouterr().out


def test_ctrl_c_in_a_batch_then_a_rerun_resumes(tiny_model_dir, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\na fox\n")
    out = tmp_path / "out"
    real_run = InfinityStarPipeline._run_windows
    calls = []

    def second_is_interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(InfinityStarPipeline, "_run_windows", second_is_interrupted)
        assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out)) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerun the same command to continue" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["00000_a_cat.mp4", "generations.rank0.jsonl"]  # nothing partial
    first = (out / "00000_a_cat.mp4").stat().st_mtime_ns
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(out)) == 0
    assert "2 generated, 1 already done, 0 failed" in capsys.readouterr().out
    assert (out / "00000_a_cat.mp4").stat().st_mtime_ns == first


def test_sigint_to_a_running_batch(tiny_model_dir, tmp_path):
    """The real thing: SIGINT (Ctrl-C) to a batch running in its own process."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"a cat number {i}\n" for i in range(40)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "infinitystar.cli", "generate", "--checkpoint", str(tiny_model_dir)]
    cmd += ["--prompts", str(prompts), "--out-dir", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 180
    while not list(out.glob("*.mp4")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "infinitystar: interrupted" in stderr
    done = sorted(p.name for p in out.iterdir())
    assert all(name.endswith(".mp4") or name == "generations.rank0.jsonl" for name in done), done  # no temp files
    for name in done:
        if name.endswith(".mp4"):
            assert read_video(out / name).shape[1] == 17  # every file on disk is whole
