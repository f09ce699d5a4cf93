"""The analytic evaluator: ~100 % on ground truth (clean and degraded), and failures reported as failures."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infinitystar.world.analysis import EvalConfig, analyze, psnr, to_frames
from infinitystar.world.captions import caption, prompts
from infinitystar.world.evaluate import evaluate, evaluate_video
from infinitystar.world.render import render
from infinitystar.world.scenes import ALL_COMBOS, BACKGROUNDS, Scene, WorldSpec, sample_scene
from tests.helpers.world import scene_for

SIZE = 64
BG_CYCLE = tuple(BACKGROUNDS)


def degrade(video: torch.Tensor, generator: torch.Generator, noise: float = 10.0, blur: int = 3) -> torch.Tensor:
    """Box blur (``blur`` x ``blur``) then gaussian noise of std ``noise`` (0-255 scale), back to uint8."""
    x = video.float().permute(0, 3, 1, 2)  # [T, H, W, 3] -> [T, 3, H, W]
    if blur > 1:
        x = F.avg_pool2d(F.pad(x, (blur // 2,) * 4, mode="replicate"), blur, stride=1)
    x = x + noise * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # -> [T, H, W, 3]


def jpeg(video: torch.Tensor, quality: int = 50) -> torch.Tensor:
    """Every frame through a JPEG encode / decode (4:2:0 chroma, block artefacts)."""
    from PIL import Image

    out = []
    for frame in video.numpy():
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out))


def all_combination_videos(seed: int):
    for i, combo in enumerate(ALL_COMBOS):
        scene = scene_for(combo, seed * 1000 + i, BG_CYCLE[(i + seed) % 3])
        yield scene, render(scene, 17, SIZE)


# ----------------------------------------------------------------------------------------------------------------------
# Ground truth


@pytest.mark.parametrize("seed", [0, 1])
def test_ground_truth_is_fully_correct(seed):
    videos, texts = [], []
    for scene, video in all_combination_videos(seed):
        videos.append(video)
        texts.append(caption(scene))
    summary = evaluate(videos, texts)
    wrong = [r.prompt for r in summary.reports if not r.all_correct or not r.background_correct]
    assert not wrong, wrong
    assert summary.n == 120 and summary.color == summary.shape == summary.motion == summary.all == 1.0
    assert all(r.color_found for r in summary.reports)


def test_ground_truth_of_small_objects_is_correct():
    """The evaluator does not depend on the default object size: the small-object world of the built-in recipe's
    first stage (sides 18-30 % of the frame, travel 30-50 %) scores 100 % too."""
    spec = WorldSpec(size_range=(0.18, 0.30), travel_range=(0.30, 0.50))
    g = torch.Generator().manual_seed(3)
    videos, texts = [], []
    for i in range(60):
        scene = sample_scene(g, "heldout" if i % 2 else "train", spec=spec)
        videos.append(render(scene, 17, SIZE))
        texts.append(caption(scene))
    summary = evaluate(videos, texts)
    assert summary.all == 1.0, [r.prompt for r in summary.reports if not r.all_correct]
    assert min(s.size for s in (sample_scene(g, spec=spec) for _ in range(50))) < 0.30


def test_ground_truth_under_noise_and_blur():
    g = torch.Generator().manual_seed(0)
    videos, texts = [], []
    for scene, video in all_combination_videos(2):
        videos.append(degrade(video, g, noise=12.0, blur=3))
        texts.append(caption(scene))
    summary = evaluate(videos, texts)
    assert summary.all >= 0.99, [r.prompt for r in summary.reports if not r.all_correct]
    assert summary.background == 1.0


def test_ground_truth_under_jpeg_and_float_input():
    g = torch.Generator().manual_seed(1)
    videos, texts = [], []
    for i, (scene, video) in enumerate(all_combination_videos(3)):
        if i % 4:
            continue  # 30 combinations, a quarter of each colour / shape / motion
        degraded = jpeg(degrade(video, g, noise=5.0, blur=1), quality=40)
        videos.append(degraded.float().permute(3, 0, 1, 2) / 127.5 - 1)  # float [3, T, H, W] in [-1, 1]
        texts.append(f"<<<t=1s>>>{caption(scene)}")
    summary = evaluate(videos, texts)
    assert summary.all >= 0.96, [r.prompt for r in summary.reports if not r.all_correct]


def test_ground_truth_under_heavy_noise():
    """Noise of std 30 scatters pixels of every palette colour over the background; they must not outvote the object."""
    g = torch.Generator().manual_seed(3)
    videos, texts = [], []
    for i, (scene, video) in enumerate(all_combination_videos(4)):
        if i % 3 == 0:
            videos.append(degrade(video, g, noise=30.0, blur=3))
            texts.append(caption(scene))
    summary = evaluate(videos, texts)
    assert summary.color == 1.0 and summary.all >= 0.97, [r.prompt for r in summary.reports if not r.all_correct]


def test_ground_truth_through_mp4(tmp_path):
    from infinitystar.media import read_video, write_video

    videos, texts = [], []
    for i, (scene, video) in enumerate(all_combination_videos(5)):
        if i % 10 == 0:
            videos.append(read_video(write_video(tmp_path / f"{i}.mp4", video)))  # H.264 yuv420p round trip
            texts.append(caption(scene))
    summary = evaluate(videos, texts)
    assert summary.all == 1.0, [r.prompt for r in summary.reports if not r.all_correct]


def test_images_are_evaluated_without_motion():
    g = torch.Generator().manual_seed(2)
    texts = prompts("train", 24, seed=0, image=True)
    scenes = [sample_scene(g, image=True) for _ in range(24)]
    videos = [render(s, size=SIZE)[0] for s in scenes]  # [H, W, 3] images
    summary = evaluate(videos, [caption(s) for s in scenes])
    assert summary.motion is None and summary.all == 1.0 and summary.shape == 1.0
    assert all(r.motion_correct is None for r in summary.reports)
    assert len(texts) == 24


# ----------------------------------------------------------------------------------------------------------------------
# Failures are reported


def test_wrong_color_is_reported():
    scene = Scene("red", "circle", "moving right", "black", 0.25, (0.3, 0.5), 0.4)
    report = evaluate_video(render(scene, 17, SIZE), "a blue circle moving right on a black background")
    assert not report.color_found and not report.color_correct and not report.all_correct
    assert report.analysis.color == "red"
    # shape and motion are still measured on the object that is there
    assert report.shape_correct and report.motion_correct


def test_wrong_motion_and_shape_are_reported():
    scene = Scene("green", "triangle", "moving right", "gray", 0.25, (0.3, 0.5), 0.4)
    video = render(scene, 17, SIZE)
    report = evaluate_video(video, "a green triangle moving left on a gray background")
    assert report.color_correct and report.shape_correct and report.motion_correct is False and not report.all_correct
    assert report.analysis.motion == "moving right"
    assert report.analysis.displacement[0] == pytest.approx(0.4, abs=0.03)
    reversed_video = video.flip(0)
    assert evaluate_video(reversed_video, "a green triangle moving left on a gray background").all_correct
    assert evaluate_video(video, "a green square moving right on a gray background").shape_correct is False
    assert evaluate_video(video, "a green triangle moving right on a black background").background_correct is False
    still = render(Scene("green", "triangle", "staying still", "gray", 0.25, (0.5, 0.5)), 17, SIZE)
    assert evaluate_video(still, "a green triangle moving right on a gray background").analysis.motion == (
        "staying still"
    )


def test_empty_and_single_frame_videos_fail():
    empty = torch.zeros(17, SIZE, SIZE, 3, dtype=torch.uint8)
    report = evaluate_video(empty, "a red circle moving right on a black background")
    assert not report.color_found and not report.all_correct
    assert report.analysis.color is None and report.analysis.shape is None and report.analysis.motion is None
    assert report.analysis.present_frames == 0
    # a video prompt cannot be satisfied by an image
    image = render(Scene("red", "circle", None, "black", 0.3, (0.5, 0.5)), 1, SIZE)
    single = evaluate_video(image, "a red circle moving right on a black background")
    assert single.color_correct and single.shape_correct and single.motion_correct is False
    # the object vanishing after the first frames: not found often enough, no motion
    scene = Scene("cyan", "square", "moving down", "navy", 0.25, (0.5, 0.3), 0.4)
    video = render(scene, 17, SIZE).clone()
    video[4:] = torch.tensor(BACKGROUNDS["navy"], dtype=torch.uint8)
    vanishing = evaluate_video(video, caption(scene))
    assert not vanishing.color_found and vanishing.motion_correct is False


def test_speckles_and_a_distractor_do_not_fool_it():
    g = torch.Generator().manual_seed(5)
    scene = Scene("yellow", "square", "moving up", "black", 0.22, (0.5, 0.7), 0.4)
    video = render(scene, 17, SIZE).clone()
    # isolated yellow speckles everywhere (0.5 % of pixels)
    speckles = torch.rand(video.shape[:3], generator=g) < 0.005
    video[speckles] = torch.tensor((250, 240, 40), dtype=torch.uint8)
    # and a smaller white square that stays still in the corner
    video[:, 4:10, 4:10] = 255
    report = evaluate_video(video, caption(scene))
    assert report.all_correct, report.analysis


def test_aggregate_accuracy_counts():
    scene = Scene("purple", "circle", "moving left", "black", 0.25, (0.7, 0.5), 0.4)
    video = render(scene, 17, SIZE)
    texts = [
        caption(scene),  # all right
        "a purple square moving left on a black background",  # wrong shape
        "a purple circle moving up on a black background",  # wrong motion
        "a red circle moving left on a black background",  # wrong colour
    ]
    summary = evaluate([video] * 4, texts)
    assert summary.n == 4
    assert summary.color == 0.75 and summary.shape == 0.75 and summary.motion == 0.75 and summary.all == 0.25
    assert [r.all_correct for r in summary.reports] == [True, False, False, False]
    d = summary.to_dict(with_reports=True)
    assert d["all"] == 0.25 and len(d["reports"]) == 4 and "track" not in d["reports"][0]["analysis"]
    assert "4 videos" in str(summary) and "25.0%" in str(summary)


# ----------------------------------------------------------------------------------------------------------------------
# Image-to-video PSNR


def test_first_frame_psnr():
    scene = Scene("white", "square", "moving down", "navy", 0.25, (0.5, 0.3), 0.4)
    video = render(scene, 17, SIZE)
    reference = video[0]
    report = evaluate_video(video, caption(scene), reference=reference)
    assert report.first_frame_psnr == math.inf
    noisy = video.clone()
    noisy[0] = (noisy[0].int() + 10).clamp(0, 255).to(torch.uint8)  # +10 on every unsaturated value
    changed = (video[0] < 255).float().mean().item()
    expected = 10 * math.log10(255**2 / (100 * changed))
    assert evaluate_video(noisy, caption(scene), reference=reference).first_frame_psnr == pytest.approx(expected)
    summary = evaluate([video, noisy], [caption(scene)] * 2, references=[reference, reference])
    assert summary.first_frame_psnr == math.inf
    assert psnr(video[1], reference) < 40
    with pytest.raises(ValueError, match="differ in size"):
        psnr(video[0], video[0, :32])


# ----------------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (torch.zeros(17, 64, 64), "no axis of 3 colour channels|shape"),
        (torch.zeros(2, 17, 64, 64, 3), "shape"),
        (torch.full((1, 64, 64, 3), float("nan")), "NaN"),
        (torch.full((1, 64, 64, 3), 200.0), r"\[-1, 1\] scale"),
        (np.full((1, 64, 64, 3), 300, dtype=np.int64), "0-255"),
        (torch.zeros(0, 64, 64, 3, dtype=torch.uint8), "empty"),
        ([[0, 0, 0]], "numpy array or a torch tensor"),
    ],
)
def test_bad_videos_are_rejected(video, message):
    with pytest.raises((ValueError, TypeError), match=message):
        evaluate_video(video, "a red circle moving right on a black background")


def test_bad_prompts_and_lists_are_rejected():
    video = torch.zeros(1, 64, 64, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="grammar"):
        evaluate_video(video, "a cat playing piano")
    with pytest.raises(ValueError, match="one prompt per video"):
        evaluate([video, video], ["a red circle on a black background"])
    with pytest.raises(TypeError, match="list of str"):
        evaluate([video], "a red circle on a black background")
    with pytest.raises(ValueError, match="empty"):
        evaluate([], [])
    with pytest.raises(ValueError, match="unknown color"):
        analyze(video, "teal")
    with pytest.raises(ValueError, match="still_threshold"):
        EvalConfig(still_threshold=2.0)


def test_layouts_are_equivalent():
    video = render(sample_scene(11), 5, SIZE)
    a = to_frames(video)
    assert np.array_equal(a, to_frames(video.numpy()))
    assert np.array_equal(a, to_frames(video.permute(3, 0, 1, 2)))  # [3, T, H, W]
    assert np.allclose(a, to_frames(video.float() / 127.5 - 1), atol=1e-3)
    assert np.array_equal(to_frames(video[0]), a[:1]) and np.array_equal(to_frames(video[0].permute(2, 0, 1)), a[:1])
