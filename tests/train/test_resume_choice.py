"""Resuming a run whose newest checkpoint is damaged, from the user's side: the message names the damaged file and
the newest intact checkpoint and how to resume from it (no torch traceback); ``--resume latest-valid`` and
``--resume STEP`` resume from it and set the newer folders aside; recipe values of the wrong type are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infinitystar.cli import main
from infinitystar.recipes import recipe_path
from infinitystar.train.checkpoint_checks import checkpoint_problem, choose_checkpoint
from infinitystar.train.checkpointing import list_checkpoints
from infinitystar.train.metrics_log import read_metrics

RECIPE = recipe_path("tiny_cpu")


def train(out, *args) -> int:
    return main(["train", "--config", str(RECIPE), "--out", str(out), "--save-every", "2", "--no-progress", *args])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run trained to step 4 (checkpoints at steps 2 and 4): copied by each test that damages it."""
    out = tmp_path_factory.mktemp("train") / "run"
    assert train(out, "--steps", "4") == 0
    return out


@pytest.fixture
def run(finished_run, tmp_path):
    import shutil

    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def shard(folder: Path) -> Path:
    return next(folder.glob("*.distcp"))


def test_a_truncated_newest_checkpoint_is_named_with_the_intact_one(run, capsys):
    bad = shard(run / "step_00000004")
    bad.write_bytes(bad.read_bytes()[:20000])
    assert train(run, "--steps", "6", "--resume") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{bad} is truncated (20000 of at least" in err
    assert f"newest intact checkpoint is {run / 'step_00000002'} (step 2)" in err
    assert "--resume latest-valid (or --resume 2)" in err
    assert list_checkpoints(run)[0][0] == 4  # nothing was changed by the refusal


def test_latest_valid_resumes_from_the_intact_one_and_sets_the_damaged_aside(run, capsys):
    (run / "step_00000004" / "rank_00000.pt").write_bytes(b"garbage")
    assert train(run, "--steps", "6", "--resume", "latest-valid") == 0
    err = capsys.readouterr().err
    assert "skipping checkpoint" in err and "rank_00000.pt cannot be read" in err
    assert "resumed from step 2" in err and "step_00000004.damaged" in err
    assert (run / "step_00000004.damaged").is_dir()  # kept for inspection, ignored from now on
    assert [s for s, _ in list_checkpoints(run)] == [6, 4]  # 4 was trained again from 2
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_resume_from_a_step(run, capsys):
    assert train(run, "--steps", "6", "--resume", "9") == 2
    assert "has no checkpoint of step 9; it has steps 4, 2" in capsys.readouterr().err
    assert train(run, "--steps", "4", "--resume", "2") == 0
    assert "the newer checkpoints are kept aside as step_00000004.superseded" in capsys.readouterr().err
    assert [s for s, _ in list_checkpoints(run)] == [4, 2]


def test_damage_the_size_check_cannot_see_is_reported_by_the_load(run, capsys):
    bad = shard(run / "step_00000004")
    data = bytearray(bad.read_bytes())
    data[:4096] = b"\x00" * 4096  # same size, garbage inside
    bad.write_bytes(bytes(data))
    assert checkpoint_problem(run / "step_00000004") is None
    assert train(run, "--steps", "6", "--resume") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "step_00000004 (step 4) is damaged" in err and "(step 2)" in err
    assert choose_checkpoint(run, "latest-valid")[0] == 4  # the cheap check passes; the load is what failed
    assert train(run, "--steps", "6", "--resume", "latest-valid") == 0  # ... and latest-valid goes on to step 2
    err = capsys.readouterr().err
    assert "skipping checkpoint" in err and "resumed from step 2" in err and "step_00000004.damaged" in err


def test_no_intact_checkpoint_says_to_start_again(run, capsys):
    for folder in ("step_00000002", "step_00000004"):
        (run / folder / "meta.json").write_text("{")
    assert train(run, "--steps", "6", "--resume", "latest-valid") == 2
    assert "no intact checkpoint" in capsys.readouterr().err


def test_recipe_values_of_the_wrong_type_are_named(tmp_path, capsys):
    recipe = json.loads(RECIPE.read_text())
    recipe["optim"]["warmup_steps"] = "2"
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "optim.warmup_steps must be an integer, got '2' (a string: write 2 without quotes)" in err
    assert "not supported between" not in err and "Traceback" not in err
    assert main(["train", "--config", str(RECIPE), "--out", str(tmp_path / "r"), "--set", 'resume="sometimes"']) == 2
    assert "unknown resume choice 'sometimes'" in capsys.readouterr().err
