"""The one dict -> dataclass builder (infinitystar.config_dicts) and the configs built through it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from infinitystar.cli import main
from infinitystar.config_dicts import ConfigError, describe, from_dict
from infinitystar.generation.plan import PipelineConfig
from infinitystar.models.config import TransformerConfig, VAEConfig
from infinitystar.train.tokenizer.config import TokenizerTrainConfig
from infinitystar.train.transformer.config import TrainConfig

BASE = {"schedule": {"scales": [[1, 1], [2, 2]]}, "data": {"synthetic": {"latent_hw": [2, 2]}}}


def recipe(**sections) -> dict:
    d = json.loads(json.dumps(BASE))
    for k, v in sections.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


@dataclass(frozen=True)
class Inner:
    size: int = 1
    scale: float = 1.0


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    extra: Inner | None = None
    shape: tuple[int, int] = (1, 1)
    widths: tuple[int, ...] = ()
    mode: Literal["fast", "slow"] = "fast"
    flag: bool = False


# ---- the builder --------------------------------------------------------------------------------------------


def test_unknown_key_at_depth_two_names_the_dotted_path_and_the_accepted_keys():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(recipe(data={"synthetic": {"latent_hw": [2, 2], "bogus": 1}}))
    msg = str(info.value)
    assert "['data.synthetic.bogus']" in msg and "accepted in data.synthetic" in msg
    assert "'latent_hw'" in msg and "'num_samples'" in msg
    accepted = r"accepted in inner: \['scale', 'size'\]"
    with pytest.raises(ConfigError, match=r"unknown Outer key\(s\) \['inner\.sise'\]; " + accepted):
        from_dict(Outer, {"inner": {"sise": 2}})


@pytest.mark.parametrize(
    "d, message",
    [
        (recipe(optim={"lr": "fast"}), "training config: optim.lr must be a number, got 'fast'"),
        (recipe(steps="100"), "steps must be an integer, got '100' (a string: write 100 without quotes)"),
        (recipe(optim={"betas": [0.9, "x"]}), "optim.betas[1] must be a number, got 'x'"),
        (recipe(optim={"betas": [0.9]}), "optim.betas must be a list of 2 numbers, got [0.9]"),
        (recipe(model={"preset": 7}), "model.preset must be a string, got 7"),
        (recipe(log={"progress": "yes"}), "log.progress must be a boolean (true or false), got 'yes'"),
        (recipe(optim={"ema_decay": "0.9"}), "optim.ema_decay must be a number or null, got '0.9'"),
        (recipe(model={"overrides": {"depth": "2"}}), "model.overrides.depth must be an integer, got '2'"),
        (recipe(data={"synthetic": {"latent_frames": [1, "2"]}}), "data.synthetic.latent_frames[1] must be an integer"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_the_value_and_the_type(d, message):
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict(d)
    assert message in str(info.value)


def test_wrong_types_in_the_other_configs():
    with pytest.raises(ValueError, match=r"tokenizer training config: data\.frames must be an integer, got 9\.5"):
        TokenizerTrainConfig.from_dict({"data": {"frames": 9.5}})
    with pytest.raises(ValueError, match=r"TransformerConfig: depth must be an integer, got '4'"):
        TransformerConfig.from_dict({**TransformerConfig().to_dict(), "depth": "4"})
    with pytest.raises(ValueError, match=r"VAEConfig: block_out_channels\[0\] must be an integer, got 'a'"):
        VAEConfig.from_dict({"block_out_channels": ["a", 2]})
    with pytest.raises(ValueError, match=r"PipelineConfig: guidance_scale must be a number, got None"):
        PipelineConfig.from_dict({"guidance_scale": None})
    with pytest.raises(ValueError, match=r"mode must be one of \"fast\", \"slow\", got 'medium'"):
        from_dict(Outer, {"mode": "medium"})


def test_int_is_accepted_for_a_float_field():
    cfg = TrainConfig.from_dict(recipe(optim={"lr": 1, "betas": [0, 0.5]}, loss={"max_reweight": 40}))
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float
    assert type(cfg.loss.max_reweight) is float and cfg.optim.betas == (0.0, 0.5)
    assert type(from_dict(Outer, {"inner": {"scale": 3}}).inner.scale) is float


def test_bool_is_rejected_for_an_int_field():
    with pytest.raises(ValueError, match="steps must be an integer, got True"):
        TrainConfig.from_dict(recipe(steps=True))
    with pytest.raises(ValueError, match="inner.scale must be a number, got False"):
        from_dict(Outer, {"inner": {"scale": False}})
    with pytest.raises(ValueError, match="flag must be a boolean"):
        from_dict(Outer, {"flag": 1})


def test_tuples_from_lists():
    out = from_dict(Outer, {"shape": [2, 3], "widths": [4, 5, 6]})
    assert out.shape == (2, 3) and out.widths == (4, 5, 6)
    assert TrainConfig.from_dict(recipe(optim={"betas": [0.9, 0.99]})).optim.betas == (0.9, 0.99)
    assert VAEConfig.from_dict({"block_out_channels": [8, 16, 16, 16, 16]}).block_out_channels == (8, 16, 16, 16, 16)
    assert TokenizerTrainConfig.from_dict({"freeze": ["decoder"]}).freeze == ("decoder",)


def test_null_is_accepted_for_an_optional_section_only():
    assert from_dict(Outer, {"extra": None}).extra is None
    assert from_dict(Outer, {"extra": {"size": 3}}).extra == Inner(size=3)
    assert TokenizerTrainConfig.from_dict({"vae": None}).vae is None
    cfg = TrainConfig.from_dict(recipe(data={"synthetic": None, "cache": "some/cache"}))
    assert cfg.data.synthetic is None
    with pytest.raises(ValueError, match=r"inner must be an object of Inner fields, got None"):
        from_dict(Outer, {"inner": None})
    with pytest.raises(ValueError, match=r"training config: optim must be an object of OptimSection fields, got None"):
        TrainConfig.from_dict(recipe(optim=None))


def test_sections_already_built_and_missing_required_keys():
    assert from_dict(Outer, {"inner": Inner(size=5)}).inner == Inner(size=5)

    @dataclass
    class Needs:
        path: str

    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['where\.path'\]"):
        from_dict(Needs, {}, where="where")
    with pytest.raises(ConfigError, match="the config must be an object of Outer fields, got"):
        from_dict(Outer, [1, 2])


def test_describe():
    assert describe(float | None) == "a number or null"
    assert describe(tuple[int, ...]) == "a list of integers"
    assert describe(list[list[int]] | str | None) == "a list of lists of integers, a string or null"


# ---- through the recipe loaders and the CLIs -------------------------------------------------------------------


def test_a_recipe_file_with_a_wrong_type_through_the_train_cli(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe(optim={"lr": "fast"}, out=str(tmp_path / "run"))))
    with pytest.raises(ValueError, match="optim.lr must be a number, got 'fast'"):
        TrainConfig.load(path)
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "training config: optim.lr must be a number, got 'fast'" in err and "not supported" not in err
    good = tmp_path / "good.json"
    good.write_text(json.dumps(recipe(out=str(tmp_path / "run"))))
    assert main(["train", "--config", str(good), "--set", "steps=many", "--print-config"]) == 2
    assert "steps must be an integer, got 'many'" in capsys.readouterr().err


def test_a_wrong_type_through_the_tokenizer_cli(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"steps": "100"}))
    assert main(["train-tokenizer", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "tokenizer training config: steps must be an integer, got '100' (a string: write 100 without quotes)" in err
    assert not (tmp_path / "run").exists()
