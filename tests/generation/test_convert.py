"""``infinitystar convert``: the parity dump, laid out as the release (sharded transformer + index, VAE .pth, T5
folder), converted to our layout. fp32 reproduces the original's logits; bf16 gives exactly the logits of the
released folder loaded in bf16; the original's training checkpoint converts through the same adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from infinitystar.cli import main
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.checkpoint import load_original_transformer
from tests.helpers.parity import dump_params, get_dump
from tests.helpers.t5 import make_tiny_t5
from tests.parity.test_generate import build, check_steps, run

DUMPS = dump_params()
WEIGHTS = "infinitystar_8b_480p_weights"


def released_from_dump(dump, root: Path, shards: int = 3) -> Path:
    """The dump's weights in the released layout: shards + index as huggingface_hub's splitter writes them."""
    state = load_file(str(dump.path / "transformer.safetensors"))
    keys = list(state)
    per = -(-len(keys) // shards)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k].contiguous() for k in keys[i * per : (i + 1) * per]}
        (root / WEIGHTS).mkdir(parents=True, exist_ok=True)
        save_file(part, str(root / WEIGHTS / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / WEIGHTS / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    torch.save({"vae": load_file(str(dump.path / "vae.safetensors"))}, root / "infinitystar_videovae.pth")
    make_tiny_t5(root / "text_encoder" / "flan-t5-xl-official")
    return root


def tfkv_logits(dump, model) -> list[torch.Tensor]:
    _, schedule, options = build(dump)
    forced = [dump[f"bsq.gt_bits.{n:03d}"] for n in range(schedule.num_steps)]
    _, records = run(dump, model, schedule, options, forced=forced)
    return records


@pytest.fixture(scope="module")
def released(request, tmp_path_factory):
    dump = get_dump(request.param)
    return dump, released_from_dump(dump, tmp_path_factory.mktemp("released"))


@pytest.mark.parity
@pytest.mark.parametrize("released", DUMPS, indirect=True)
def test_fp32_conversion_reproduces_the_original_logits(released, tmp_path, capsys):
    dump, root = released
    assert main(["convert", str(root), str(tmp_path / "ours"), "--dtype", "fp32", "--resolution", "480p"]) == 0
    assert "(480p) ->" in capsys.readouterr().out
    folder = tmp_path / "ours"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["converted_from"]["dtype"] == "fp32" and index["pipeline"]["resolution"] == "480p"
    cfg = TransformerConfig.from_dict(json.loads((folder / "transformer" / "config.json").read_text()))
    model = load_original_transformer(folder / "transformer", cfg)
    _, schedule, _ = build(dump)
    assert check_steps(dump, "tfkv", tfkv_logits(dump, model), check_sampled=False) == schedule.num_steps
    vae = load_file(str(folder / "vae" / "model.safetensors"))
    ref = load_file(str(dump.path / "vae.safetensors"))
    assert all(torch.equal(vae[k], v) for k, v in ref.items())
    assert (folder / "text_encoder" / "config.json").is_file() and not any(
        p.name.startswith(".") for p in tmp_path.iterdir()
    )


@pytest.mark.parity
@pytest.mark.parametrize("released", DUMPS, indirect=True)
def test_bf16_conversion_gives_exactly_the_logits_of_the_released_folder_in_bf16(released, tmp_path):
    dump, root = released
    assert main(["convert", str(root), str(tmp_path / "bf16"), "--resolution", "480p"]) == 0
    folder = tmp_path / "bf16" / "transformer"
    fp32_bytes = sum(p.stat().st_size for p in (root / WEIGHTS).glob("*.safetensors"))
    bf16_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert bf16_bytes < 0.6 * fp32_bytes  # blocks halved; embeddings and heads stay fp32
    cfg = TransformerConfig.from_dict(json.loads((folder / "config.json").read_text()))
    kw = dict(dtype=torch.bfloat16, outer_dtype=torch.float32)
    converted = tfkv_logits(dump, load_original_transformer(folder, cfg, **kw))
    original = tfkv_logits(dump, load_original_transformer(root / WEIGHTS, cfg, **kw))
    assert len(converted) == len(original) > 0
    for a, b in zip(converted, original):
        assert torch.equal(a.logits, b.logits), a.step


@pytest.mark.parity
@pytest.mark.parametrize("released", DUMPS, indirect=True)
def test_the_original_training_checkpoint_converts_and_loads(released, tmp_path):
    """``global_step_N.pth``: weights under ['trainer']['gpt_fsdp'] (FSDP wrapper names on some keys), beside the
    optimizer state and the VAE; read with weights_only=True, the same adapter and checks."""
    dump, root = released
    state = load_file(str(dump.path / "transformer.safetensors"))
    fsdp = {
        (k.replace("block_chunks.0.", "block_chunks.0._fsdp_wrapped_module.") if "module.0" in k else k): v
        for k, v in state.items()
    }
    trainer = {"gpt_fsdp": fsdp, "gpt_fsdp_opt": {"state": {0: {"exp_avg": torch.ones(3)}}}, "vae_local": {}}
    pth = tmp_path / "global_step_7.pth"
    torch.save({"args": {"lr": 1e-4}, "epoch": 0, "g_it": 7, "trainer": trainer}, pth)
    dst = tmp_path / "tuned"
    assert main(["convert", str(root), str(dst), "--dtype", "fp32", "--transformer", str(pth)]) == 0
    cfg = TransformerConfig.from_dict(json.loads((dst / "transformer" / "config.json").read_text()))
    _, schedule, _ = build(dump)
    for model in (load_original_transformer(dst / "transformer", cfg), load_original_transformer(pth, cfg)):
        assert check_steps(dump, "tfkv", tfkv_logits(dump, model), check_sampled=False) == schedule.num_steps


def test_bad_conversions_are_refused_before_writing(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert main(["convert", str(tmp_path), str(tmp_path / "taken")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "taken"), str(tmp_path / "out")]) == 2
    assert "holds no released weights folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
