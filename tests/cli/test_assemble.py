"""`infinitystar assemble`: a trained transformer folder + a tokenizer VAE + the built-in text encoder -> a model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from infinitystar.cli import main
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.models.transformer.checkpoint import save_model_folder
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.vae.checkpoint import save_vae_folder
from infinitystar.text.builtin import BuiltinTextEncoder
from tests.helpers.pipeline import TINY_PIPELINE, tiny_models


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_assemble_makes_a_loadable_model(tmp_path, dtype):
    transformer, vae = tiny_models()
    cfg = dataclasses.replace(transformer.cfg, text_channels=64)
    transformer = InfinityTransformer(cfg)
    transformer.reset_parameters(torch.Generator().manual_seed(0))
    save_model_folder(transformer.state_dict(), cfg, tmp_path / "run" / "final")
    save_vae_folder(vae, tmp_path / "tok" / "vae")  # what a tokenizer run exports
    (tmp_path / "pipe.json").write_text(json.dumps(TINY_PIPELINE.to_dict()))
    args = [
        "assemble",
        "--transformer",
        str(tmp_path / "run" / "final"),
        "--vae",
        str(tmp_path / "tok"),
        "--text-encoder",
        "builtin",
        "--pipeline-config",
        str(tmp_path / "pipe.json"),
        "--out",
        str(tmp_path / "model"),
        "--dtype",
        dtype,
    ]
    assert main(args) == 0
    pipe = InfinityStarPipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert isinstance(pipe.text_encoder, BuiltinTextEncoder) and pipe.config == TINY_PIPELINE
    out = pipe("a red circle moving right on a black background", seed=0, progress=False)
    assert out.frames.shape == (17, 128, 128, 3)
    reference = InfinityStarPipeline(transformer, vae, BuiltinTextEncoder.for_config(cfg), TINY_PIPELINE)
    same = reference("a red circle moving right on a black background", seed=0, progress=False)
    if dtype == "fp32":  # stored exactly: the same video
        np.testing.assert_array_equal(out.frames, same.frames)
    files = sorted(p.name for p in (tmp_path / "model").rglob("*.safetensors"))
    assert files and all(p.stat().st_size > 0 for p in (tmp_path / "model").rglob("*.safetensors"))


def test_assemble_rejects_a_bad_pipeline_config(tmp_path, capsys):
    (tmp_path / "pipe.json").write_text('{"resolution": "8k"}')
    args = [
        "assemble",
        "--transformer",
        str(tmp_path),
        "--vae",
        str(tmp_path),
        "--text-encoder",
        "builtin",
        "--pipeline-config",
        str(tmp_path / "pipe.json"),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main(args) == 2
    assert "unknown resolution" in capsys.readouterr().err


def test_a_training_checkpoint_gives_the_weights_of_its_step(tmp_path, capsys):
    """``assemble --transformer RUN/step_N`` (evaluating a run midway): the architecture comes from the run's
    config.json, the weights from the checkpoint; at the last step they are the exported final weights."""
    from infinitystar.models.transformer.checkpoint import load_model_folder
    from infinitystar.train.transformer.module import transformer_from_checkpoint

    recipe = {
        "model": {"preset": "tiny", "attn_impl": "dense"},
        "schedule": {"scales": [[1, 1], [2, 2], [4, 4]], "image_repetition": [1, 1, 1], "video_repetition": [1, 1, 1]},
        "data": {"synthetic": {"num_samples": 4, "latent_frames": [1], "latent_hw": [4, 4], "text_len": 4}},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "steps": 2,
        "save_every": 1,
        "device": "cpu",
        "log": {"progress": False, "tensorboard": False},
    }
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "recipe.json"), "--out", str(run)]) == 0
    final = load_model_folder(run / "final").state_dict()
    last, first = transformer_from_checkpoint(run / "step_00000002"), transformer_from_checkpoint(run / "step_00000001")
    assert all(torch.equal(last.state_dict()[k], v) for k, v in final.items())
    assert not all(torch.equal(first.state_dict()[k], v) for k, v in final.items())  # one step earlier differs

    (run / "config.json").unlink()
    (tmp_path / "pipe.json").write_text(json.dumps(TINY_PIPELINE.to_dict()))
    args = ["assemble", "--transformer", str(run / "step_00000001"), "--vae", str(tmp_path), "--text-encoder"]
    args += ["builtin", "--pipeline-config", str(tmp_path / "pipe.json"), "--out", str(tmp_path / "m")]
    assert main(args) == 2
    assert "has no config.json" in capsys.readouterr().err
