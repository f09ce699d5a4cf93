"""TrainConfig: JSON recipes, dotted overrides, validation, the CLI's flag mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infinitystar.cli import build_parser
from infinitystar.cli.train import resolve_config
from infinitystar.config_dicts import apply_overrides, parse_override
from infinitystar.train.transformer.config import TrainConfig

RECIPES = Path(__file__).resolve().parents[2] / "src" / "infinitystar" / "recipes"

BASE = {"schedule": {"scales": [[1, 1], [2, 2]]}, "data": {"synthetic": {"latent_hw": [2, 2]}}}


def test_original_defaults():
    cfg = TrainConfig.from_dict(BASE)
    assert cfg.optim.betas == (0.9, 0.97) and cfg.optim.lr == 4e-5 and cfg.optim.weight_decay == 0
    assert cfg.optim.grad_clip == 5 and cfg.optim.lr_schedule == "constant" and cfg.optim.ema_decay is None
    assert cfg.loss.cond_drop_prob == 0.1 and cfg.loss.self_correction == 0.3 and cfg.loss.var_len
    assert cfg.loss.reweight_by_scale == 4 and cfg.loss.max_reweight == 40
    assert cfg.data.synthetic.latent_hw == [2, 2]


def test_recipe_file_round_trip(tmp_path):
    cfg = TrainConfig.load(RECIPES / "tiny_cpu.json")
    assert cfg.model.preset == "tiny" and cfg.data.synthetic is not None
    cfg.save(tmp_path / "c.json")
    again = TrainConfig.load(tmp_path / "c.json")
    assert again == cfg


def test_the_8b_recipe_keeps_the_original_settings():
    cfg = TrainConfig.load(RECIPES / "finetune_8b_480p.json")
    t = cfg.model.transformer_config()
    assert (t.depth, t.embed_dim, t.num_heads, t.num_kv_heads) == (36, 4096, 32, 8)
    assert cfg.schedule.resolution == "480p" and cfg.optim.lr == 4e-5 and cfg.optim.betas == (0.9, 0.97)
    assert cfg.precision == "bf16" and cfg.activation_checkpointing and cfg.save_every == 200
    defaults = TrainConfig.from_dict(BASE)
    assert cfg.loss == defaults.loss  # the recipe spells out the defaults, which are the original's


def test_overrides():
    d = apply_overrides(BASE, {"optim.lr": 1e-3, "loss.var_len": False, "model.overrides": {"depth": 2}})
    cfg = TrainConfig.from_dict(d)
    assert cfg.optim.lr == 1e-3 and not cfg.loss.var_len and cfg.model.transformer_config().depth == 2
    assert BASE["schedule"] == {"scales": [[1, 1], [2, 2]]}  # the recipe itself is not modified
    assert parse_override("optim.ema_decay=0.999") == ("optim.ema_decay", 0.999)
    assert parse_override("model.preset=small") == ("model.preset", "small")
    with pytest.raises(ValueError, match="key.path=value"):
        parse_override("lr")


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"optim": {"lrr": 1}}, "unknown training config key"),
        ({"bogus": 1}, "unknown training config key"),
        ({"optim": {"lr": -1}}, "lr must be a positive"),
        ({"precision": "fp8"}, "precision must be one of"),
        ({"model": {"preset": "huge"}}, "unknown model preset"),
        ({"schedule": {"scales": [[1, 1]], "resolution": "480p"}}, "not both"),
        ({"schedule": {"scales": [[0, 1]]}}, "positive sizes"),
        ({"data": {"synthetic": None}}, "latent cache folder"),
        ({"sp_size": 3}, "must divide the heads"),
        ({"optim": {"lr_schedule": "linear"}}, "lr_schedule must be one of"),
        ({"loss": {"var_len_probs": [1, -1]}}, "non-negative"),
        ({"optim": "fast"}, "must be an object"),
        ({"schedule": {"scales": None, "resolution": "999p"}}, "unknown resolution"),
    ],
)
def test_bad_values_are_clear_errors(patch, message):
    d = json.loads(json.dumps(BASE))
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k].update(v)
        else:
            d[k] = v
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(d)


def test_missing_or_broken_recipe(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        TrainConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.load(bad)


def test_cli_flags_map_to_the_config(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(RECIPES / "tiny_cpu.json"),
            "--steps",
            "7",
            "--lr",
            "0.01",
            "--out",
            str(tmp_path / "run"),
            "--resume",
            "--cache",
            str(tmp_path / "cache"),
            "--device",
            "cpu",
            "--set",
            "optim.ema_decay=0.99",
        ]
    )
    cfg = resolve_config(args)
    assert cfg.steps == 7 and cfg.optim.lr == 0.01 and cfg.resume and cfg.out == str(tmp_path / "run")
    assert cfg.data.cache == str(tmp_path / "cache") and cfg.data.synthetic is None
    assert cfg.optim.ema_decay == 0.99 and cfg.device == "cpu"


def test_cli_print_config(capsys):
    from infinitystar.cli import main

    assert main(["train", "--config", str(RECIPES / "tiny_cpu.json"), "--print-config", "--steps", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["steps"] == 3 and printed["model"]["preset"] == "tiny"
    assert main(["train", "--config", str(RECIPES / "tiny_cpu.json"), "--set", "optim.nope=1"]) == 2
    assert main(["train", "--recipe", "tiny_cpu", "--print-config", "--steps", "3"]) == 0  # the packaged copy
    assert json.loads(capsys.readouterr().out) == printed
    assert main(["train", "--recipe", "nope", "--print-config"]) == 2  # a packaged recipe by name, or a clear error
    assert "unknown recipe 'nope'; packaged recipes: finetune_8b_480p, tiny_cpu" in capsys.readouterr().err
