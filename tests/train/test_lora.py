"""LoRA fine-tuning through the transformer trainer (peft): frozen base, adapter-only checkpoints and output, exact
resume, the recipe section and its errors, and loading the result for generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from infinitystar.cli import main
from infinitystar.models.config import get_preset
from infinitystar.models.transformer import lora as runtime
from infinitystar.models.transformer.checkpoint import save_model_folder
from infinitystar.models.transformer.lora_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.train.metrics_log import read_metrics
from infinitystar.train.transformer.config import TrainConfig
from infinitystar.train.transformer.trainer import Trainer

TINY = get_preset("tiny").transformer


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny trained-model folder to adapt (random weights, seeded)."""
    model = InfinityTransformer(TINY)
    model.reset_parameters(torch.Generator().manual_seed(0))
    return save_model_folder(model.state_dict(), TINY, tmp_path_factory.mktemp("base") / "model")


def recipe(base, out, **over) -> dict:
    d = {
        "model": {"preset": "tiny", "attn_impl": "dense", "init": str(base)},
        "schedule": {"scales": [[1, 1], [2, 2], [4, 4]], "image_repetition": [1, 2, 1], "detail_scale_min_tokens": 8},
        "data": {"synthetic": {"num_samples": 6, "latent_frames": [1, 5], "latent_hw": [4, 4], "text_len": 6}},
        "optim": {"lr": 1e-2, "ema_decay": 0.9},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]},
        "out": str(out),
        "steps": 2,
        "save_every": 2,
        "device": "cpu",
        "log": {"progress": False, "tensorboard": False},
    }
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def _base_state(trainer) -> dict[str, torch.Tensor]:
    state = trainer.module.transformer.state_dict()
    return {k.replace(".base_layer.", "."): v.clone() for k, v in state.items() if ".lora_" not in k}


def _logits(transformer, seed=0):
    from infinitystar.schedule import schedule_from_scales

    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2), (1, 4, 4)], 3, detail_scale_min_tokens=8)
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(1, sched.num_visual_tokens(), TINY.latent_channels, generator=g)
    text = torch.randn(6, TINY.text_channels, generator=g)
    with torch.no_grad():
        out = transformer.eval()(codes, text, sched, attn_impl="dense")
    return torch.cat([out.detail.flatten(), out.semantic.flatten()])


def test_a_lora_step_trains_the_adapters_only_and_writes_an_adapter_folder(base, tmp_path):
    from infinitystar.models.transformer.checkpoint import read_model_folder

    trainer = Trainer(TrainConfig.from_dict(recipe(base, tmp_path / "run", steps=1, optim={"ema_decay": None})))
    trainable = {n for n, p in trainer.module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 3 * TINY.depth  # A and B of 3 targets per block
    _, init = read_model_folder(base)
    before = _base_state(trainer)
    assert before.keys() == init.keys() and all(torch.equal(before[k], init[k]) for k in init)  # the base as given
    assert _logits(trainer.module.transformer).equal(_logits(_loaded(base)))  # B = 0: step 0 is the base exactly
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.losses[1]))
    after = _base_state(trainer)
    assert all(torch.equal(after[k], before[k]) for k in before)  # frozen
    b = trainer.module.transformer.blocks[0].attn.q_proj.lora_B["default"].weight
    assert b.abs().sum() > 0  # the adapter moved
    files = sorted(p.name for p in (tmp_path / "run" / "final").iterdir())
    assert files == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert (tmp_path / "run" / "final" / ADAPTER_WEIGHTS).stat().st_size < 200_000  # the base alone is 4 MB
    ad = read_adapter(tmp_path / "run" / "final")
    assert ad.rank == 4 and ad.name == "run" and ad.transformer == TINY.to_dict() and ad.info["step"] == 1
    assert len(ad.weights) == 3 * TINY.depth
    # round trip: the folder loaded onto the base for generation computes what the trained peft model computes
    peft_logits = _logits(trainer.module.transformer)
    model = _loaded(base)
    runtime.attach(model, "run", ad.weights)
    assert torch.allclose(_logits(model), peft_logits, atol=1e-5)
    assert not torch.allclose(_logits(_loaded(base)), peft_logits, atol=1e-4)


def _loaded(base) -> InfinityTransformer:
    from infinitystar.models.transformer.checkpoint import load_model_folder

    return load_model_folder(base)


def test_peft_itself_loads_the_adapter_folder(base, tmp_path):
    from peft import PeftModel

    Trainer(TrainConfig.from_dict(recipe(base, tmp_path / "run", steps=1))).train()
    ours = _loaded(base)
    runtime.attach(ours, "a", read_adapter(tmp_path / "run" / "final").weights)
    theirs = PeftModel.from_pretrained(_loaded(base), str(tmp_path / "run" / "final"))
    assert torch.allclose(_logits(theirs.base_model.model), _logits(ours), atol=1e-5)


def test_resume_of_a_lora_run_is_exact_and_checkpoints_hold_no_base_weights(base, tmp_path):
    from torch.distributed.checkpoint import FileSystemReader

    over = {"steps": 4, "optim": {"grad_accum": 2}}
    full = Trainer(TrainConfig.from_dict(recipe(base, tmp_path / "full", **over))).train()
    Trainer(TrainConfig.from_dict(recipe(base, tmp_path / "cut", **{**over, "steps": 2}))).train()
    resumed = Trainer(TrainConfig.from_dict(recipe(base, tmp_path / "cut", **over, resume=True))).train()
    a, b = read_metrics(tmp_path / "full" / "metrics.jsonl"), read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4] and set(resumed.losses) == {3, 4}
    for key in ("loss", "grad_norm", "acc"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert a[0]["loss"] != a[-1]["loss"]
    for folder in ("final", "final_ema"):
        wa = read_adapter(tmp_path / "full" / folder).weights
        wb = read_adapter(tmp_path / "cut" / folder).weights
        assert all(torch.equal(wa[k].down, wb[k].down) and torch.equal(wa[k].up, wb[k].up) for k in wa), folder
    assert full.losses == {s: r["loss"] for s, r in zip(range(1, 5), a)}
    keys = list(FileSystemReader(str(tmp_path / "full" / "step_00000004")).read_metadata().state_dict_metadata)
    model_keys = [k for k in keys if k.startswith("model.")]
    assert model_keys and all(".lora_A." in k or ".lora_B." in k for k in model_keys)
    assert not any("base_layer" in k or "embed" in k for k in keys)


def test_the_lora_section_from_the_command_line_and_its_errors(base, tmp_path, capsys):
    path = tmp_path / "recipe.json"
    r = recipe(base, tmp_path / "run")
    del r["lora"]
    path.write_text(json.dumps(r))
    assert main(["train", "--config", str(path), "--set", "lora.rank=16", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)["lora"]
    assert printed["rank"] == 16 and printed["alpha"] == 16.0 and len(printed["target_modules"]) == 7
    assert main(["train", "--config", str(path), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["lora"] is None
    for setting, message in [
        ('lora.target_modules=["qkv"]', "target_modules must be distinct names among q_proj"),
        ("lora.rank=0", "rank must be a positive int"),
        ("lora.dropout=1.5", "dropout must be in"),
        ('lora.name="a b"', "name 'a b'"),
    ]:
        assert main(["train", "--config", str(path), "--set", setting, "--print-config"]) == 2
        assert message in capsys.readouterr().err, setting
    r["model"]["init"] = None
    path.write_text(json.dumps(r))
    assert main(["train", "--config", str(path), "--set", "lora.rank=4", "--print-config"]) == 2
    assert "a LoRA run adapts existing weights: set model.init (--init)" in capsys.readouterr().err


def test_init_builtin_adapts_the_built_in_model(tmp_path, capsys):
    """``--init builtin`` names the packaged model's transformer; its architecture must be the recipe's."""
    from infinitystar.generation.layouts import BUILTIN_MODEL_DIR
    from infinitystar.train.transformer.module import load_init_state

    cfg = TrainConfig.load(None, {**_BUILTIN, "model.init": "builtin"}).model.transformer_config()
    state = load_init_state("builtin", cfg)
    assert state["blocks.3.mlp.down_proj.weight"].shape == (192, 768)
    from infinitystar.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match=r"the built-in transformer has \{'embed_dim': 192"):
        load_init_state("builtin", TINY)
    assert (BUILTIN_MODEL_DIR / "transformer" / "config.json").is_file()
    # the command line keeps the name (it is not a path nor a hub repo id to fetch)
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "lora_pink" / "lora.json"
    assert main(["train", "--config", str(recipe), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["init"] == "builtin"


_BUILTIN = {
    "model.preset": "small",
    "model.overrides": {
        "embed_dim": 192, "depth": 4, "num_heads": 4, "num_kv_heads": 2, "mlp_hidden": 768, "block_chunks": 2,
        "text_channels": 128,
    },
    "schedule.resolution": "0.016M",
    "data.synthetic": {},
}  # fmt: skip


def test_without_peft_a_lora_recipe_names_the_extra(base, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'infinitystar\[lora\]'"):
        Trainer(TrainConfig.from_dict(recipe(base, tmp_path / "run")))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_process_fsdp_lora_matches_one_process(base, tmp_path):
    """FSDP2 over 2 gloo ranks (frozen base and trainable adapters in the same sharded blocks) gives the losses and
    the adapter of one process with the same global batch (no dropout: its masks depend on the rank layout)."""
    import os
    import subprocess
    import sys

    r = recipe(base, tmp_path / "unused", steps=3, lora={"dropout": 0.0}, loss={"cond_drop_prob": 0.3})
    r["data"]["synthetic"]["num_samples"] = 8
    r["optim"]["lr"] = 1e-3  # as the full-weight test: Adam amplifies the reduction order's rounding with the rate
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(r))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = ["-m", "infinitystar.cli", "train", "--config", str(path)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for cmd in ([sys.executable, *cli, "--out", str(tmp_path / "one"), "--batch-size", "4"],
                [*torchrun, *cli, "--out", str(tmp_path / "two"), "--batch-size", "2"]):  # fmt: skip
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m1, m2 = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in m1] == [1, 2, 3] == [r["step"] for r in m2]
    for a, b in zip(m1, m2):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    w1, w2 = (read_adapter(tmp_path / run / "final").weights for run in ("one", "two"))
    assert w1.keys() == w2.keys()
    worst = max(max((w1[k].down - w2[k].down).abs().max(), (w1[k].up - w2[k].up).abs().max()).item() for k in w1)
    assert worst < 2e-5
    step = tmp_path / "two" / "step_00000002"
    assert (step / "rank_00000.pt").is_file() and (step / "rank_00001.pt").is_file()
