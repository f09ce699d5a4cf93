"""What one pipeline call does with several prompts, several videos per prompt, seeds and out-of-range numbers:
a list is a batch of independent outputs, long-video windows take window_prompts=, nothing is dropped silently,
and every argument is checked before the first output is generated."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from infinitystar.generation.output import GenerationResult
from infinitystar.generation.ranges import SEED_MAX, RangeError


def test_a_list_of_prompts_is_a_batch_of_independent_videos(pipe):
    outs = pipe(["a cat walks", "a dog runs"], seed=5)
    assert isinstance(outs, list) and [o.prompt for o in outs] == ["a cat walks", "a dog runs"]
    assert [o.seed for o in outs] == [5, 5]  # each reproducible alone: pipe(p, seed=5)
    np.testing.assert_array_equal(outs[1].frames, pipe("a dog runs", seed=5).frames)
    assert isinstance(pipe("a cat", seed=1), GenerationResult)  # a str is one result


def test_num_videos_per_prompt(pipe):
    outs = pipe(["a cat", "a dog"], num_videos_per_prompt=2, seed=7)
    assert [(o.prompt, o.seed) for o in outs] == [("a cat", 7), ("a cat", 8), ("a dog", 7), ("a dog", 8)]
    np.testing.assert_array_equal(outs[3].frames, pipe("a dog", seed=8).frames)
    assert not np.array_equal(outs[0].frames, outs[1].frames)
    single = pipe("a cat", num_videos_per_prompt=2, seed=7)
    assert isinstance(single, list) and [o.seed for o in single] == [7, 8]
    random = pipe("a cat", num_videos_per_prompt=2)
    assert random[1].seed == random[0].seed + 1 and random[0].settings["seed"] == random[0].seed


def test_window_prompts_and_left_over_prompts_are_reported(pipe):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as many prompts as windows: no warning
        out = pipe(window_prompts=["a cat walks", "a dog runs", "a fox sits"], duration=2, seed=0)  # 3 windows
    assert out.prompts_used == ["<<<t=1s>>>a cat walks", "<<<t=1s>>>a dog runs", "<<<t=1s>>>a fox sits"]
    assert out.settings["window_prompts"] == ["a cat walks", "a dog runs", "a fox sits"]
    with pytest.warns(UserWarning, match="5 window prompts were given but this video has 3 window.* last 2 prompt"):
        pipe(window_prompts=["a", "b", "c", "d", "e"], duration=2, seed=0)
    with pytest.warns(UserWarning, match="window_prompts="):  # a list meant as windows (0.1.0 code) is told
        outs = pipe(["a cat walks", "a dog runs"], duration=2, seed=0)
    assert len(outs) == 2 and all(o.mode == "long video" for o in outs)
    with pytest.raises(ValueError, match="not both"):
        pipe("a cat", window_prompts=["a dog"])


def test_every_output_is_checked_before_the_first_is_generated(pipe):
    steps = []
    with pytest.raises(ValueError, match="prompt is empty"):
        pipe(["a cat", "  "], callback=lambda done, total, record: steps.append(done))
    with pytest.raises(TypeError, match=r"prompt\[1\] must be a str"):
        pipe(["a cat", 5], callback=lambda done, total, record: steps.append(done))
    assert steps == []  # the good first prompt was not generated


def test_seed_policy(pipe):
    assert pipe("a cat", seed=-1).seed >= 0  # -1 = random, as None
    np.testing.assert_array_equal(pipe("a cat", seed=SEED_MAX).frames, pipe("a cat", seed=SEED_MAX).frames)
    for bad, error in ((2**64, RangeError), (-2, RangeError), (1.5, RangeError), ("x", RangeError), (True, TypeError)):
        with pytest.raises(error, match="0 to 2\\*\\*63-1"):
            pipe("a cat", seed=bad)
    with pytest.raises(RangeError, match="beyond the largest seed"):
        pipe("a cat", seed=SEED_MAX, num_videos_per_prompt=2)
    with pytest.raises(ValueError, match="generator= serves one output"):
        pipe(["a", "b"], generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match="num_videos_per_prompt"):
        pipe("a cat", num_videos_per_prompt=1.5)


def test_guidance_and_temperature_ranges(pipe):
    with pytest.raises(RangeError, match="negative"):
        pipe("a cat", guidance_scale=-1)
    with pytest.raises(RangeError, match="finite"):
        pipe("a cat", guidance_scale=float("nan"))
    with pytest.raises(RangeError, match=">= 0.001"):
        pipe("a cat", temperatures=(1e-9, 1))
    with pytest.warns(UserWarning, match="far above"):
        pipe("a cat", guidance_scale=250, seed=0)
    with pytest.warns(UserWarning, match="coin flips"):
        pipe("a cat", temperatures=(1, 50), seed=0)


def test_settings_record_of_a_result(pipe, tmp_path):
    out = pipe("a cat " * 1000, seed=3, guidance="cfg", guidance_scale=2.5, temperatures=(0.9, 0.3), duration=0)
    record = out.settings
    assert record["seed"] == 3 and record["guidance"] == "cfg" and record["guidance_scale"] == 2.5
    assert record["temperatures"] == [0.9, 0.3] and record["mode"] == "text-to-image" and record["frames"] == 1
    assert record["prompt_chars"] == 6000 and len(record["prompt"]) == 2000
    assert record["device"] == "cpu" and record["dtype"] == "fp32" and record["software"].startswith("infinitystar")
