"""The model options generate, serve and evaluate share: parsed once, applied to a loaded pipeline by one function."""

from __future__ import annotations

import argparse

import pytest

from infinitystar.cli.model_options import add_model_arguments, apply_runtime_options


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(list(argv))


def test_runtime_options_are_applied_to_a_loaded_pipeline_and_named(pipe):
    applied = apply_runtime_options(pipe, _args("--token-chunk", "64", "--compile", "--offload"))
    assert applied == {"token_chunk", "compile", "offload"}
    assert pipe.transformer.inference.token_chunk == 64 and pipe.transformer.inference.compile is True
    assert pipe.offload_text_encoder is True
    apply_runtime_options(pipe, _args("--token-chunk", "0"))  # back to the defaults, whole scales
    assert pipe.transformer.inference.token_chunk is None and pipe.transformer.inference.compile is False
    assert pipe.offload_text_encoder is False


def test_an_offload_value_it_does_not_know_is_not_claimed(pipe):
    """A value another kind of offload might bring (``blocks``) is left unclaimed, so that no caller believes it was
    applied."""
    args = _args()
    args.offload = "blocks"
    assert "offload" not in apply_runtime_options(pipe, args)


def test_a_negative_token_chunk_is_refused_with_its_value(pipe):
    with pytest.raises(ValueError, match="--token-chunk must be >= 0.*-1"):
        apply_runtime_options(pipe, _args("--token-chunk", "-1"))
