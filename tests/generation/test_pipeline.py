"""The user pipeline end to end on a tiny random model in the released layout (CPU)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from infinitystar.checkpoints import CheckpointError
from infinitystar.generation.layouts import MODEL_INDEX, BuiltinModelMissing
from infinitystar.generation.naming import default_filename
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.plan import PipelineConfig, Window, plan_windows, resolve_duration
from infinitystar.generation.settings import read_settings
from infinitystar.media import read_video, write_video
from tests.helpers.pipeline import TINY_PIPELINE
from tests.helpers.round_trip import psnr, round_trip


def smooth_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 [t, h, w, 3]: moving colour gradients (content a VAE can represent)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    frames = []
    for i in range(t):
        phase = rng.uniform(0, 0.2) + 0.05 * i
        rgb = [np.sin(2 * np.pi * (x * f + y * g + phase)) for f, g in ((1, 0.5), (0.3, 1.2), (0.8, 0.8))]
        frames.append(((np.stack(rgb, -1) + 1) * 127.5).astype(np.uint8))
    return np.stack(frames)


# ---- planning ----------------------------------------------------------------------------------


def test_plan_windows_released_480p_and_720p():
    from infinitystar.generation.plan import RELEASED_CONFIGS

    c480, c720 = RELEASED_CONFIGS["480p"], RELEASED_CONFIGS["720p"]
    assert plan_windows(0, 81, c480) == [Window(0, 81)]
    assert plan_windows(0, 161, c480) == [Window(0, 161)]
    assert plan_windows(1, 81, c480) == [Window(1, 80)]  # image-to-video
    assert plan_windows(81, 161, c480) == [Window(81, 80)]  # the original's V2V: 5 s given, 5 s new
    # 20 s at 480p: one 10 s window, then windows forced with the last 5 s
    assert plan_windows(0, 321, c480) == [Window(0, 161), Window(81, 80), Window(81, 80)]
    # the 720p model has one clip per window: continuation is forced with the last frame
    assert plan_windows(0, 161, c720) == [Window(0, 81), Window(1, 80)]
    assert plan_windows(0, 1, c720) == [Window(0, 1)]


def test_plan_windows_partial_last_clip_and_errors():
    assert plan_windows(0, 49, TINY_PIPELINE) == [Window(0, 17), Window(9, 8), Window(9, 8), Window(9, 8), Window(9, 8)]
    assert plan_windows(9, 13, TINY_PIPELINE) == [Window(9, 4)]
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        plan_windows(0, 10, TINY_PIPELINE)
    with pytest.raises(ValueError, match="nothing to generate"):
        plan_windows(17, 17, TINY_PIPELINE)


def test_resolve_duration_snaps_and_rejects():
    assert resolve_duration(None, TINY_PIPELINE) == 1
    assert resolve_duration(0, TINY_PIPELINE) == 0
    with pytest.warns(UserWarning, match="snapped to 5 s"):
        assert resolve_duration(4.6, TINY_PIPELINE) == 5
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="duration"):
            resolve_duration(bad, TINY_PIPELINE)
    with pytest.raises(TypeError, match="duration"):
        resolve_duration("5", TINY_PIPELINE)


def test_pipeline_config_validation_and_round_trip():
    assert PipelineConfig.from_dict(TINY_PIPELINE.to_dict()) == TINY_PIPELINE
    with pytest.raises(ValueError, match="unknown resolution"):
        PipelineConfig(resolution="1080p")
    with pytest.raises(ValueError, match="whole number of clips"):
        PipelineConfig(max_duration=3, frames_per_clip=20)
    with pytest.raises(ValueError, match=r"unknown PipelineConfig key\(s\) \['bogus'\]"):
        PipelineConfig.from_dict({"resolution": "480p", "bogus": 1})


def test_default_filename_has_the_seed():
    assert default_filename("A red circle, moving!", 42, image=False) == "a_red_circle_moving_seed42.mp4"
    assert default_filename("x", 7, image=True, index=2) == "x_seed7_2.png"


# ---- modes -------------------------------------------------------------------------------------


def test_text_to_video_shapes_and_seed_reproducibility(pipe):
    a = pipe("a red cat runs", seed=3)
    b = pipe("a red cat runs", seed=3)
    c = pipe("a red cat runs", seed=4)
    assert a.frames.shape == (17, 128, 128, 3) and a.frames.dtype == np.uint8
    assert a.mode == "text-to-video" and a.seed == 3
    assert a.prompts_used == ["<<<t=1s>>>a red cat runs"]
    np.testing.assert_array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert set(a.timings) >= {"text", "transformer", "decode", "total"}


def test_random_seed_is_reported_and_reproduces(pipe):
    a = pipe("a dog", progress=False)
    b = pipe("a dog", seed=a.seed)
    np.testing.assert_array_equal(a.frames, b.frames)


def test_generator_argument(pipe):
    a = pipe("a dog", generator=torch.Generator().manual_seed(11))
    b = pipe("a dog", seed=11)
    assert a.seed == 11
    np.testing.assert_array_equal(a.frames, b.frames)


def test_text_to_image_and_aspect_ratio(pipe, tmp_path):
    out = pipe("a red flower", duration=0, seed=0)
    assert out.frames.shape == (1, 128, 128, 3) and out.mode == "text-to-image"
    assert out.prompts_used == ["a red flower"]  # no duration tag for images
    wide = pipe("a red flower", duration=0, seed=0, aspect_ratio="16:9")
    assert wide.frames.shape == (1, 96, 176, 3)
    path = out.save(tmp_path / default_filename(out.prompt, out.seed, out.is_image))
    from PIL import Image

    with Image.open(path) as im:
        assert im.size == (128, 128)
    record = read_settings(path)  # the generation settings, once, as JSON
    assert record["seed"] == 0 and record["prompt"] == "a red flower" and record["mode"] == "text-to-image"


def test_output_types_and_callback(pipe):
    calls = []
    out = pipe("a cat", seed=0, output_type="pt", callback=lambda done, total, rec: calls.append((done, total)))
    assert isinstance(out.frames, torch.Tensor) and out.frames.dtype == torch.uint8
    sched = pipe.schedule(1.0, 5)
    assert calls[-1] == (sched.num_steps, sched.num_steps) and len(calls) == sched.num_steps
    lat = pipe("a cat", seed=0, output_type="latent")
    assert lat.frames is None and lat.latents[0].shape == (1, 64, 5, 8, 8)
    with pytest.raises(ValueError, match="latents only"):
        lat.save("x.mp4")


def test_image_to_video_keeps_the_reference_frame(pipe, tmp_path):
    from PIL import Image

    ref = smooth_frames(1, 128, 128, seed=1)
    path = tmp_path / "ref.png"
    Image.fromarray(ref[0]).save(path)
    out = pipe("a cat walks", image=path, seed=5)
    assert out.mode == "image-to-video" and out.frames.shape == (17, 128, 128, 3)
    achieved = psnr(out.frames[0], ref[0])
    tokenizer_only = psnr(round_trip(pipe, ref)[0], ref[0])
    assert achieved >= tokenizer_only - 1e-6
    # the generated frames depend on the image: another image gives another video
    other = pipe("a cat walks", image=smooth_frames(1, 128, 128, seed=9)[0], seed=5)
    assert not np.array_equal(out.frames[1:], other.frames[1:])


def test_image_input_is_cover_resized_to_the_template(pipe):
    img = smooth_frames(1, 90, 200, seed=2)[0]  # about 9:20 landscape -> nearest template
    out = pipe("a cat", image=img, seed=0)
    assert out.frames.shape[1:3] == pipe.pixel_size(90 / 200)
    square = pipe("a cat", image=img, seed=0, aspect_ratio="1:1")
    assert square.frames.shape[1:3] == (128, 128)


def test_video_continuation_starts_with_the_given_frames(pipe, tmp_path):
    given = smooth_frames(9, 128, 128, seed=3)
    out = pipe("a cat walks", video=given, seed=1)
    assert out.mode == "continuation" and out.frames.shape == (17, 128, 128, 3)
    achieved = psnr(out.frames[:9], given)
    assert achieved >= psnr(round_trip(pipe, given), given) - 1e-6
    # from a file: resampled to 16 fps, same shape
    path = write_video(tmp_path / "given.mp4", torch.from_numpy(given), fps=16)
    from_file = pipe("a cat walks", video=path, seed=1)
    assert from_file.frames.shape == (17, 128, 128, 3)
    decoded = read_frames(path)
    assert psnr(from_file.frames[:9], decoded) >= psnr(round_trip(pipe, decoded), decoded) - 1e-6


def read_frames(path) -> np.ndarray:
    x = read_video(path)
    return ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()


def test_long_video_has_the_requested_length(pipe):
    out = pipe(window_prompts=["a cat walks", "a dog runs"], duration=3, seed=0)
    assert out.mode == "long video" and out.frames.shape == (49, 128, 128, 3)
    assert len(out.latents) == 5
    assert out.prompts_used == ["<<<t=1s>>>a cat walks"] + ["<<<t=1s>>>a dog runs"] * 4
    again = pipe(window_prompts=["a cat walks", "a dog runs"], duration=3, seed=0)
    np.testing.assert_array_equal(out.frames, again.frames)
    # the first window is the 1 s text-to-video of the same seed
    np.testing.assert_array_equal(out.frames[:17], pipe("a cat walks", duration=1, seed=0).frames)


def test_negative_prompt_changes_the_output(pipe):
    a = pipe("a cat", seed=0)
    b = pipe("a cat", seed=0, negative_prompt="a dog")
    assert not np.array_equal(a.frames, b.frames)
    with pytest.raises(ValueError, match="needs guidance"):
        pipe("a cat", seed=0, negative_prompt="a dog", guidance="none")


def test_guidance_and_temperature_options(pipe):
    a = pipe("a cat", seed=0, guidance="none")
    b = pipe("a cat", seed=0, guidance="cfg", guidance_scale=4.0, temperatures=(0.5, 0.5))
    assert a.frames.shape == b.frames.shape and not np.array_equal(a.frames, b.frames)
    with pytest.raises(ValueError, match="unknown guidance"):
        pipe("a cat", guidance="magic")
    with pytest.raises(ValueError, match="temperatures"):
        pipe("a cat", temperatures=(0.0, 1.0))


# ---- loading and saving ------------------------------------------------------------------------


def test_save_pretrained_round_trip(pipe, tmp_path):
    folder = pipe.save_pretrained(tmp_path / "model")
    index = json.loads((folder / MODEL_INDEX).read_text())
    assert index["format"] == "infinitystar" and index["pipeline"]["resolution"] == "0.016M"
    assert (folder / "transformer" / "config.json").is_file() and (folder / "vae" / "model.safetensors").is_file()
    again = InfinityStarPipeline.from_pretrained(folder, device="cpu")
    assert again.config == TINY_PIPELINE
    np.testing.assert_array_equal(pipe("a cat", seed=2).frames, again("a cat", seed=2, progress=False).frames)


def test_released_weights_folder_itself_and_resolution_choice(released):
    p = InfinityStarPipeline.from_pretrained(released / "infinitystar_8b_480p_weights", config=TINY_PIPELINE)
    assert p.transformer.cfg.embed_dim == 64
    default = InfinityStarPipeline.from_pretrained(released)  # the released 480p settings
    assert default.config.resolution == "480p" and default.config.max_duration == 10
    with pytest.raises(ValueError, match="no infinitystar_8b_720p_weights"):
        InfinityStarPipeline.from_pretrained(released, resolution="720p")
    with pytest.raises(ValueError, match="generates 480p"):
        default("a cat", resolution="720p")


def test_offload_text_encoder(released):
    p = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE, offload_text_encoder=True)
    out = p("a cat", seed=0, progress=False)
    assert out.frames.shape[0] == 17 and p.text_encoder.device.type == "cpu"


# ---- bad input ---------------------------------------------------------------------------------


def test_missing_and_broken_checkpoints(released, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        InfinityStarPipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a model folder"):
        InfinityStarPipeline.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    (broken / "infinitystar_8b_480p_weights").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="infinitystar_videovae.pth is missing"):
        InfinityStarPipeline.from_pretrained(broken)
    bad_index = tmp_path / "bad"
    bad_index.mkdir()
    (bad_index / MODEL_INDEX).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        InfinityStarPipeline.from_pretrained(bad_index)


def test_builtin_model_missing_is_explained(monkeypatch, tmp_path):
    import infinitystar.generation.layouts as pl

    monkeypatch.setattr(pl, "BUILTIN_MODEL_DIR", tmp_path / "none")
    with pytest.raises(BuiltinModelMissing, match="no built-in default model"):
        InfinityStarPipeline.from_pretrained()


def test_bad_inputs_give_one_clear_error(pipe, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    bad_video = tmp_path / "corrupt.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    cases = [
        (dict(prompt=""), ValueError, "prompt is empty"),
        (dict(prompt=[]), ValueError, "prompt is empty"),
        (dict(prompt="a", image=tmp_path / "missing.png"), ValueError, "not found"),
        (dict(prompt="a", image=corrupt), ValueError, "corrupt or not an image"),
        (dict(prompt="a", video=bad_video), ValueError, "corrupt"),
        (dict(prompt="a", video=smooth_frames(5, 128, 128)), ValueError, "too short to continue"),
        (dict(prompt="a", video=smooth_frames(17, 128, 128)), ValueError, "already has 17 frames"),
        (dict(prompt="a", image=np.zeros((8, 8), np.uint8)), ValueError, "uint8"),
        (dict(prompt="a", image=torch.full((3, 8, 8), float("nan"))), ValueError, "NaN"),
        (dict(prompt="a", image=smooth_frames(1, 32, 32)[0], video=smooth_frames(9, 32, 32)), ValueError, "not both"),
        (dict(prompt="a", image=smooth_frames(1, 32, 32)[0], duration=0), ValueError, "duration=0"),
        (dict(prompt="a", aspect_ratio="wide"), ValueError, "aspect ratio"),
        (dict(prompt="a", output_type="gif"), ValueError, "output_type"),
        (dict(prompt="a", duration=-2), ValueError, "duration"),
        (dict(prompt="a", resolution="4k"), ValueError, "generates 0.016M"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            pipe(**kwargs)


def test_text_encoder_width_must_match(pipe):
    narrow = dataclasses.replace(pipe.transformer.cfg, text_channels=16)
    from infinitystar.models.transformer.model import InfinityTransformer

    with pytest.raises(ValueError, match="32-channel features"):
        InfinityStarPipeline(InfinityTransformer(narrow), pipe.vae, pipe.text_encoder)


def test_vae_dtype_is_fp32_by_default_as_the_original(released):
    """The original runs the VAE in fp32 (``vae.float()``) whatever the transformer's dtype; bf16 is opt-in."""
    p = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE, dtype="bf16")
    assert p.vae.proj_up.weight.dtype == torch.float32
    assert p.transformer.blocks[0].attn.q_proj.weight.dtype == torch.bfloat16
    half = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE, vae_dtype="bf16")
    assert half.vae.proj_up.weight.dtype == torch.bfloat16
    assert half("a cat", seed=0, progress=False).frames.shape == (17, 128, 128, 3)
    with pytest.raises(ValueError, match="unsupported VAE dtype 'fp16'; accepted: fp32, bf16"):
        InfinityStarPipeline.from_pretrained(released, vae_dtype="fp16")


def test_a_transformer_file_is_not_a_model_folder(released, tmp_path):
    from infinitystar.models.transformer.checkpoint import to_original_state_dict

    pth = tmp_path / "global_step_3.pth"
    p = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE)
    torch.save({"trainer": {"gpt_fsdp": to_original_state_dict(p.transformer)}}, pth)
    with pytest.raises(CheckpointError, match="holds only the transformer: pass the model folder"):
        InfinityStarPipeline.from_pretrained(pth)
    tuned = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE, transformer_weights=pth)
    np.testing.assert_array_equal(
        tuned("a cat", seed=4, progress=False).frames, p("a cat", seed=4, progress=False).frames
    )
