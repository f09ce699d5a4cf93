"""save_checkpoint / load_latest_checkpoint (single process) and the trained-model folder."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from infinitystar.checkpoints import CheckpointError
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.checkpoint import is_model_folder, load_model_folder, save_model_folder
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.train.checkpointing import list_checkpoints, load_latest_checkpoint, save_checkpoint


class Counter:
    """Anything with state_dict / load_state_dict (e.g. a dataset position)."""

    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, s):
        self.n = s["n"]


def _setup(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return model, opt


def _train(model, opt, steps=2):
    for _ in range(steps):
        model(torch.randn(5, 3)).square().sum().backward()
        opt.step()
        opt.zero_grad()


def test_round_trip_restores_everything(tmp_path):
    model, opt = _setup(0)
    _train(model, opt)
    gen = torch.Generator().manual_seed(5)
    gen.manual_seed(5)
    torch.rand(3, generator=gen)
    counter = Counter()
    counter.n = 17
    state = {"model": model, "optimizer": opt, "gen": gen, "data": counter, "trainer": {"step": 4, "tag": "x"}}
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(tmp_path, 4, state)
    assert path.name == "step_00000004" and (path / "meta.json").is_file()
    expect_rand = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(2, generator=gen))
    expect_params = [p.detach().clone() for p in model.parameters()]
    expect_opt = opt.state_dict()

    model2, opt2 = _setup(1)  # different weights, empty optimizer state
    gen2, counter2 = torch.Generator().manual_seed(99), Counter()
    state2 = {"model": model2, "optimizer": opt2, "gen": gen2, "data": counter2, "trainer": None}
    random.seed(7), np.random.seed(7), torch.manual_seed(7)
    assert load_latest_checkpoint(tmp_path, state2) == 4
    assert all(torch.equal(a, b) for a, b in zip(model2.parameters(), expect_params))
    got_opt = opt2.state_dict()
    for k, v in expect_opt["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(got_opt["state"][k][name], v[name])
    assert counter2.n == 17 and state2["trainer"] == {"step": 4, "tag": "x"}
    got_rand = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(2, generator=gen2))
    assert got_rand[:3] == expect_rand[:3] and torch.equal(got_rand[3], expect_rand[3])
    # training continues identically
    torch.manual_seed(11)
    _train(model, opt, 1)
    torch.manual_seed(11)
    _train(model2, opt2, 1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_keep_newest_and_ignore_temporary(tmp_path):
    model, opt = _setup(0)
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"model": model, "optimizer": opt, "s": step}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 2]
    # a run killed while writing step 9 leaves a temporary folder, and a step folder without meta is incomplete
    (tmp_path / ".tmp_step_00000009").mkdir()
    (tmp_path / "step_00000010").mkdir()
    state = {"model": model, "optimizer": opt, "s": None}
    assert load_latest_checkpoint(tmp_path, state) == 3 and state["s"] == 3
    save_checkpoint(tmp_path, 4, {"model": model, "optimizer": opt, "s": 4}, keep=2)
    assert not (tmp_path / ".tmp_step_00000009").exists()  # cleaned by the next save


def test_none_when_empty_and_clear_errors(tmp_path):
    model, opt = _setup(0)
    assert load_latest_checkpoint(tmp_path / "missing", {"model": model}) is None
    save_checkpoint(tmp_path, 1, {"model": model})
    with pytest.raises(CheckpointError, match="no entry for"):
        load_latest_checkpoint(tmp_path, {"model": model, "optimizer": opt})
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path, 2, {"model": model}, keep=0)
    other = nn.Sequential(nn.Linear(3, 5))
    with pytest.raises(CheckpointError, match="sharded state"):
        load_latest_checkpoint(tmp_path, {"model": other})


def test_model_folder_round_trip(tmp_path):
    cfg = TransformerConfig(embed_dim=32, depth=1, num_heads=2, num_kv_heads=1, mlp_hidden=64, block_chunks=1)
    model = InfinityTransformer(cfg)
    save_model_folder(model.state_dict(), cfg, tmp_path / "m", {"step": 3})
    assert is_model_folder(tmp_path / "m") and not is_model_folder(tmp_path)
    loaded = load_model_folder(tmp_path / "m")
    assert loaded.cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="not a trained-model folder"):
        load_model_folder(tmp_path)
