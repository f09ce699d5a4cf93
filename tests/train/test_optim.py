"""The one warmup + decay learning-rate schedule, as both trainers apply it."""

from __future__ import annotations

import pytest

from infinitystar.models.config import VAEConfig
from infinitystar.train.optim import LRSchedule
from infinitystar.train.tokenizer.config import DataConfig, OptimConfig, TokenizerTrainConfig
from infinitystar.train.tokenizer.trainer import TokenizerTrainer
from infinitystar.train.transformer.config import TrainConfig
from infinitystar.train.transformer.trainer import Trainer


def test_schedule_factor_and_value():
    s = LRSchedule(2e-3, "cosine", warmup_steps=2, total_steps=6, min_lr_ratio=0.25)
    assert [s.factor(n) for n in (1, 2)] == [0.5, 1.0]
    assert s.factor(4) == pytest.approx(0.25 + 0.75 * 0.5)  # half way through the decay
    assert s.factor(6) == pytest.approx(0.25) and s.factor(9) == pytest.approx(0.25)
    assert all(s(n) == pytest.approx(2e-3 * s.factor(n), rel=1e-15) for n in range(1, 10))
    with pytest.raises(ValueError, match="constant"):
        LRSchedule(1e-3, "linear")


def test_the_transformer_trainer_follows_the_schedule(tmp_path):
    cfg = TrainConfig.from_dict(
        {
            "model": {"preset": "tiny", "attn_impl": "dense"},
            "schedule": {"scales": [[1, 1], [2, 2]]},
            "data": {"synthetic": {"latent_hw": [2, 2], "num_samples": 2}},
            "optim": {"lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 2, "min_lr_ratio": 0.1},
            "loss": {"var_len": False},
            "out": str(tmp_path / "run"),
            "steps": 5,
            "device": "cpu",
            "log": {"progress": False, "tensorboard": False},
        }
    )
    schedule = LRSchedule(1e-3, "cosine", warmup_steps=2, total_steps=5, min_lr_ratio=0.1)
    trainer = Trainer(cfg)
    lrs = [trainer.train_step()["lr"] for _ in range(5)]
    assert lrs == [schedule(n) for n in range(1, 6)]
    assert trainer.optimizer.param_groups[0]["lr"] == schedule(5)


def test_the_tokenizer_trainer_follows_the_schedule(tmp_path):
    cfg = TokenizerTrainConfig(
        vae=VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1),
        steps=5,
        optim=OptimConfig(lr=1e-3, warmup_steps=2, decay="cosine", min_lr_ratio=0.1),
        data=DataConfig(frames=5, height=16, width=16),
    )
    schedule = LRSchedule(1e-3, "cosine", warmup_steps=2, total_steps=5, min_lr_ratio=0.1)
    trainer = TokenizerTrainer(cfg, tmp_path / "run", progress=False)
    used = []
    for _ in range(5):  # the lr optimizer step n runs with
        used.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.train_step()
    assert used == pytest.approx([schedule(n) for n in range(1, 6)], rel=1e-12)
    assert used[-1] == pytest.approx(1e-4)  # the cosine ends at min_lr_ratio * lr on the last step
