"""The model options generate, serve and evaluate share: parsed once, applied to a loaded pipeline by one function."""

from __future__ import annotations

import argparse

import pytest
import torch

from infinitystar.cli.model_options import add_model_arguments, apply_runtime_options
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.placement import PlacementError
from infinitystar.models.transformer.offload import offload_of
from infinitystar.models.transformer.quantize import quantization_of
from tests.helpers.pipeline import TINY_PIPELINE


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(list(argv))


def test_runtime_options_are_applied_to_a_loaded_pipeline_and_named(pipe):
    applied = apply_runtime_options(pipe, _args("--token-chunk", "64", "--compile", "--offload"))
    assert applied == {"quantize", "offload", "vae_dtype", "token_chunk", "compile"}
    assert pipe.transformer.inference.token_chunk == 64 and pipe.transformer.inference.compile is True
    assert pipe.offload_text_encoder is True
    apply_runtime_options(pipe, _args("--token-chunk", "0"))  # back to the defaults, whole scales
    assert pipe.transformer.inference.token_chunk is None and pipe.transformer.inference.compile is False
    assert pipe.offload_text_encoder is False


def test_quantize_offload_and_vae_dtype_are_applied_once_and_not_undone(released):
    """What ``load_pipeline`` loads with, applying the same options again leaves as it is; undoing quantization or
    block offload is refused (that needs a new model)."""
    pytest.importorskip("torchao")
    fresh = InfinityStarPipeline.from_pretrained(released, device="cpu", config=TINY_PIPELINE)
    args = _args("--quantize", "int8", "--offload", "all", "--vae-dtype", "bf16")
    apply_runtime_options(fresh, args)
    offload = offload_of(fresh.transformer)
    assert quantization_of(fresh.transformer) == "int8" and offload is not None and fresh.offload_text_encoder
    assert next(fresh.vae.parameters()).dtype == torch.bfloat16
    apply_runtime_options(fresh, args)
    assert offload_of(fresh.transformer) is offload  # the same offload: nothing done twice
    with pytest.raises(PlacementError, match="offloaded; to keep them on the device, load it again"):
        apply_runtime_options(fresh, _args("--quantize", "int8"))
    with pytest.raises(PlacementError, match="int8-quantized; to run it otherwise, load it again"):
        apply_runtime_options(fresh, _args("--offload", "blocks"))


def test_a_negative_token_chunk_is_refused_with_its_value(pipe):
    with pytest.raises(ValueError, match="--token-chunk must be >= 0.*-1"):
        apply_runtime_options(pipe, _args("--token-chunk", "-1"))
