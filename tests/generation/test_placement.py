"""The pipeline's ``quantize=`` and ``offload=``: loading, generating, saving, and the combinations it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.placement import Placement, PlacementError, check_offload
from infinitystar.models.transformer.offload import offload_of
from infinitystar.models.transformer.quantize import QuantizeError, quantized_layers
from tests.helpers.pipeline import TINY_PIPELINE

PROMPT = "a red cat"


def load(released, **kwargs) -> InfinityStarPipeline:
    p = InfinityStarPipeline.from_pretrained(released, device="cpu", config=TINY_PIPELINE, **kwargs)
    p.set_progress_bar_config(disable=True)
    return p


def test_offload_blocks_gives_the_same_video(released, pipe):
    plain = pipe(PROMPT, seed=5)
    for mode in ("blocks", "all"):
        off = load(released, offload=mode)
        offload = offload_of(off.transformer)
        assert offload is not None and off.offload_text_encoder == (mode == "all")
        out = off(PROMPT, seed=5)
        assert np.array_equal(out.frames, plain.frames), mode
        assert offload.resident == [] and len(offload.loads) > 0
    with pytest.raises(PlacementError, match="streams its transformer blocks to cpu; .* load it again"):
        off.to("cpu")


def test_quantized_pipeline_generates_and_refuses_to_save(released, pipe, tmp_path):
    q = load(released, quantize="int8")
    assert q.transformer.quantization == "int8"
    assert {type(m.weight).__name__ for m in quantized_layers(q.transformer).values()} == {"Int8Tensor"}
    out, ref = q(PROMPT, seed=5), pipe(PROMPT, seed=5)
    assert out.frames.shape == ref.frames.shape
    with pytest.raises(QuantizeError, match=r"quantized \(int8\); saving writes full-precision"):
        q.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()  # refused before anything is written
    both = load(released, quantize="int8", offload="blocks")
    assert both.transformer.quantization == "int8" and offload_of(both.transformer) is not None
    np.testing.assert_array_equal(both(PROMPT, seed=5).frames, out.frames)


def test_offload_values_and_the_old_flag():
    assert [check_offload(v) for v in (None, False, True, "text", "Blocks", "all", "none")] == [
        "none",
        "none",
        "text",
        "text",
        "blocks",
        "all",
        "none",
    ]
    p = Placement.of(__import__("torch").device("cpu"), "int8", "all")
    assert (p.offload, p.offload_text, p.offload_blocks, p.load_device.type) == ("all", True, True, "cpu")
    with pytest.raises(PlacementError, match="unknown offload 'gpu'; accepted: none, text, blocks, all"):
        check_offload("gpu")


def test_refused_combinations(released):
    with pytest.raises(
        PlacementError, match="offload_text_encoder=True contradicts offload='blocks'; use offload='all'"
    ):
        load(released, offload="blocks", offload_text_encoder=True)
    with pytest.raises(QuantizeError, match="'fp8' needs a CUDA GPU"):
        load(released, quantize="fp8")
    with pytest.raises(QuantizeError, match="unknown quantize 'int4'"):
        load(released, quantize="int4")
    assert load(released, offload_text_encoder=True).offload_text_encoder  # the 0.1.0 flag still works
