"""`infinitystar assemble`: a trained transformer folder + a tokenizer VAE + the built-in text encoder -> a model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from infinitystar.builtin_text import BuiltinTextEncoder
from infinitystar.cli import main
from infinitystar.pipeline import InfinityStarPipeline
from infinitystar.train.checkpointing import save_model_folder
from infinitystar.train.tokenizer_train import export_vae
from infinitystar.transformer import InfinityTransformer
from pipeline_fixture import TINY_PIPELINE, tiny_models


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_assemble_makes_a_loadable_model(tmp_path, dtype):
    transformer, vae = tiny_models()
    cfg = dataclasses.replace(transformer.cfg, text_channels=64)
    transformer = InfinityTransformer(cfg)
    transformer.reset_parameters(torch.Generator().manual_seed(0))
    save_model_folder(transformer.state_dict(), cfg, tmp_path / "run" / "final")
    export_vae(vae, tmp_path / "tok")
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
