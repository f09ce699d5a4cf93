"""A 2-process torchrun run (gloo, FSDP2), data parallel or sequence parallel, equals a 1-process run with the
same global batch.

Both runs go through the real command line (``infinitystar train``); the synthetic dataset cuts
each epoch into the same global batches whatever the number of ranks, and every random draw is
seeded per sample, so the per-step losses and the final weights must agree to fp32 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from infinitystar.checkpoints import read_safetensors
from infinitystar.train.metrics_log import read_metrics


def recipe(tmp_path, **over) -> str:
    r = {
        "model": {"preset": "tiny", "attn_impl": "dense"},
        "schedule": {"scales": [[1, 1], [2, 2], [4, 4]], "image_repetition": [1, 2, 1], "detail_scale_min_tokens": 8},
        "data": {"synthetic": {"num_samples": 8, "latent_frames": [1, 5], "latent_hw": [4, 4], "text_len": 6}},
        "optim": {"lr": 1e-3, "ema_decay": 0.9},
        "loss": {"cond_drop_prob": 0.3},
        "steps": 3,
        "save_every": 2,
        "device": "cpu",
        "log": {"progress": False, "tensorboard": False},
    }
    r.update(over)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(r))
    return str(path)


def _run(cmd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process(tmp_path):
    cfg = recipe(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    cli = ["-m", "infinitystar.cli", "train", "--config", cfg]
    _run([sys.executable, *cli, "--out", str(one), "--batch-size", "4"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*torchrun, *cli, "--out", str(two), "--batch-size", "2"])

    m1, m2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in m1] == [1, 2, 3] == [r["step"] for r in m2]
    assert {r["subset"] for r in m1} | {r["subset"] for r in m2}  # the same subsets were drawn
    assert [r["subset"] for r in m1] == [r["subset"] for r in m2]
    for a, b in zip(m1, m2):
        assert a["tokens"] == b["tokens"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["acc"] == pytest.approx(b["acc"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert m1[0]["loss"] != m1[-1]["loss"]
    for folder in ("final", "final_ema"):
        w1 = read_safetensors(one / folder / "model.safetensors")
        w2 = read_safetensors(two / folder / "model.safetensors")
        assert w1.keys() == w2.keys()
        worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
        assert worst < 2e-5, folder
    # 2 ranks sequence-parallel (one data-parallel group, the whole batch split along the sequence)
    sp = tmp_path / "sp"
    _run([*torchrun, *cli, "--out", str(sp), "--batch-size", "4", "--sp-size", "2"])
    m3 = read_metrics(sp / "metrics.jsonl")
    for a, b in zip(m1, m3):
        assert a["tokens"] == b["tokens"] and a["subset"] == b["subset"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    w1, w3 = read_safetensors(one / "final" / "model.safetensors"), read_safetensors(sp / "final" / "model.safetensors")
    assert max((w1[k] - w3[k]).abs().max().item() for k in w1) < 5e-5  # Adam amplifies near-zero gradients' noise
    # the sharded checkpoint was written by both ranks and holds both ranks' states
    step = two / "step_00000003"
    assert (step / "rank_00000.pt").is_file() and (step / "rank_00001.pt").is_file()
    assert json.loads((step / "meta.json").read_text())["world_size"] == 2
    # the 2-rank checkpoint resumes on 1 rank (DCP reshards)
    _run([sys.executable, *cli, "--out", str(two), "--batch-size", "4", "--resume", "--steps", "4"])
    m2 = read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in m2] == [1, 2, 3, 4]
    assert torch.isfinite(torch.tensor(m2[-1]["loss"]))
