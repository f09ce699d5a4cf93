"""Exact resume: a run killed with SIGKILL after its first checkpoint and resumed with ``--resume``
logs exactly the losses of an uninterrupted run and ends with bit-identical weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from infinitystar.checkpoints import read_safetensors
from infinitystar.train.metrics_log import read_metrics

RECIPE = {
    "model": {"preset": "tiny", "attn_impl": "dense"},
    "schedule": {
        "scales": [[1, 1], [2, 2], [4, 4], [8, 8]],
        "image_repetition": [1, 2, 2, 1],
        "video_repetition": [1, 2, 1, 1],
        "detail_scale_min_tokens": 16,
    },
    "data": {"synthetic": {"num_samples": 6, "latent_frames": [1, 5], "latent_hw": [8, 8], "text_len": 6}},
    "optim": {"lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 2, "ema_decay": 0.95, "grad_accum": 2},
    "steps": 10,
    "save_every": 2,
    "keep": 2,
    "device": "cpu",
    "log": {"progress": False, "tensorboard": False},
}


def _cmd(recipe, out, *extra):
    return [sys.executable, "-m", "infinitystar.cli", "train", "--config", str(recipe), "--out", str(out), *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(RECIPE))
    full, killed = tmp_path / "full", tmp_path / "killed"

    proc = subprocess.run(_cmd(recipe, full), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    log = open(tmp_path / "killed.log", "w")  # noqa: SIM115 - closed below
    victim = subprocess.Popen(_cmd(recipe, killed), env=_env(), stdout=log, stderr=subprocess.STDOUT)
    first = killed / "step_00000002" / "meta.json"
    deadline = time.monotonic() + 240
    while not first.exists():
        assert victim.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    assert victim.poll() is None, "the run ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    log.close()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed / "final").exists()
    logged = [r["step"] for r in read_metrics(killed / "metrics.jsonl")]
    assert 2 <= max(logged) < RECIPE["steps"]

    proc = subprocess.run(_cmd(recipe, killed, "--resume"), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in b] == list(range(1, RECIPE["steps"] + 1))  # no step twice, none missing
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exactly
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    for folder in ("final", "final_ema"):
        wa = read_safetensors(full / folder / "model.safetensors")
        wb = read_safetensors(killed / folder / "model.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa), folder
    # starting again without --resume would overwrite the run: refused
    proc = subprocess.run(_cmd(recipe, killed), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--resume" in proc.stderr
    # keep=2: only the newest two checkpoints are left, no temporary folder
    names = sorted(p.name for p in killed.iterdir() if p.name.startswith(("step_", ".tmp")))
    assert names == ["step_00000008", "step_00000010"]


def test_a_checkpoint_of_version_0_1_0_resumes_to_the_losses_it_would_have_had(tmp_path):
    """A run written by 0.1.0 (the flat package layout, before the move into subpackages), stopped after its step-2
    checkpoint (``tests/data/run_0.1.0``: its ``step_00000002`` and the first two metric lines), continues with
    this code; steps 3 and 4 give the losses, gradient norms and learning rates the 0.1.0 code computed when its
    run went on (``tests/data/run_0.1.0_expected_steps_3_4.jsonl``)."""
    import shutil
    from pathlib import Path

    from infinitystar.cli import main

    data = Path(__file__).resolve().parents[1] / "data"
    run = tmp_path / "run"
    shutil.copytree(data / "run_0.1.0", run)
    recipe = data / "run_0.1.0_recipe.json"
    assert main(["train", "--config", str(recipe), "--out", str(run), "--resume", "--no-progress"]) == 0
    got = [r for r in read_metrics(run / "metrics.jsonl") if r["step"] > 2]
    expected = [json.loads(line) for line in (data / "run_0.1.0_expected_steps_3_4.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [3, 4]
    for g, e in zip(got, expected):
        for key in ("loss", "acc", "grad_norm", "lr"):
            assert g[key] == pytest.approx(e[key], rel=1e-6, abs=1e-9), (g["step"], key)
