"""Curation building blocks: probing, scene cuts, each filter's decision on crafted media, scorers and plug-ins."""

from __future__ import annotations

import math

import numpy as np
import pytest

from infinitystar.curate import filters, scenes, scorers
from infinitystar.curate.filters import CurateConfig, check_media, check_motion
from infinitystar.media import decode as probe_decode
from infinitystar.media import probe
from tests.helpers.curate import flat, make_tiny_clip, moving, static, texture, write_corrupt, write_image, write_video

# --------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------


def test_probe_video_and_image(tmp_path):
    info = probe.probe_media(write_video(tmp_path / "a.mp4", moving(36, 48, 64), fps=24))
    assert (info.kind, info.width, info.height, info.num_frames) == ("video", 64, 48, 36)
    assert info.fps == pytest.approx(24.0)
    assert info.duration == pytest.approx(1.5, abs=0.05)
    assert info.short_edge == 48
    img = probe.probe_media(write_image(tmp_path / "b.png", texture(40, 30, 0)))
    assert (img.kind, img.width, img.height, img.fps, img.num_frames) == ("image", 30, 40, None, 1)


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mkv", "libx264"), (".avi", "mpeg4"), (".mov", "libx264"), (".webm", "libvpx-vp9")]
)
def test_other_containers(tmp_path, suffix, codec):
    path = write_video(tmp_path / f"clip{suffix.upper()}", moving(24, 48, 64), fps=24, codec=codec)
    info = probe.probe_media(path)
    assert (info.kind, info.width, info.height, info.num_frames, info.fps) == ("video", 64, 48, 24, 24.0)
    assert scenes.analyze_video(path, info.fps).end == 24


def test_probe_errors_name_the_problem(tmp_path):
    with pytest.raises(probe.MediaError, match="file not found"):
        probe.probe_media(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(probe.MediaError, match="empty file"):
        probe.probe_media(tmp_path / "empty.mp4")
    with pytest.raises(probe.MediaError, match="corrupt"):
        probe.probe_media(write_corrupt(tmp_path / "bad.mp4"))
    with pytest.raises(probe.MediaError, match="corrupt or not an image"):
        probe.probe_media(write_corrupt(tmp_path / "bad.jpg"))
    (tmp_path / "notes.doc").write_text("x")
    with pytest.raises(probe.MediaError, match=r"unsupported file type '.doc'; accepted: .mp4"):
        probe.probe_media(tmp_path / "notes.doc")


def test_read_video_frames_returns_requested_sizes(tmp_path):
    path = write_video(tmp_path / "a.mp4", moving(10, 48, 64), fps=16)
    got = probe_decode.read_video_frames(path, {2: {24, 48}, 7: {24}})
    assert set(got) == {(2, 24), (2, 48), (7, 24)}
    assert got[(2, 24)].shape == (24, 32, 3) and got[(2, 48)].shape == (48, 64, 3)
    with pytest.raises(probe.MediaError, match="ended early"):
        probe_decode.read_video_frames(path, {12: {24}})


# --------------------------------------------------------------------------------------------
# Metadata filters
# --------------------------------------------------------------------------------------------

CFG = CurateConfig(min_short_edge=32, min_duration=1.0, motion="diff")


def test_fps_filter_drops_a_10fps_video(tmp_path):
    slow = probe.probe_media(write_video(tmp_path / "slow.mp4", moving(20), fps=10))
    drop = check_media(slow, CFG)
    assert drop is not None and drop.filter == "fps" and "10 fps < 16 fps" in drop.reason
    ok = probe.probe_media(write_video(tmp_path / "ok.mp4", moving(24), fps=24))
    assert check_media(ok, CFG) is None
    assert check_media(ok, CurateConfig(min_short_edge=32, min_duration=1.0, max_fps=20)).filter == "fps"


def test_short_edge_filter_drops_a_tiny_video_and_image(tmp_path):
    tiny = probe.probe_media(write_video(tmp_path / "tiny.mp4", moving(20, 16, 64), fps=16))
    drop = check_media(tiny, CFG)
    assert drop.filter == "short_edge" and "16 px < 32 px" in drop.reason
    img = probe.probe_media(write_image(tmp_path / "tiny.png", texture(20, 100, 1)))
    assert check_media(img, CFG).filter == "short_edge"
    assert check_media(probe.probe_media(write_image(tmp_path / "ok.png", texture(40, 40, 1))), CFG) is None


def test_duration_filter(tmp_path):
    short = probe.probe_media(write_video(tmp_path / "short.mp4", moving(12), fps=16))  # 0.75 s
    assert check_media(short, CFG).filter == "duration"
    assert check_media(short, CFG, duration=2.0) is None  # the measured duration wins when given


def test_config_rejects_bad_settings():
    with pytest.raises(ValueError, match="min_duration must be a positive number"):
        CurateConfig(min_duration=-1)
    with pytest.raises(ValueError, match="motion must be one of"):
        CurateConfig(motion="raft")
    with pytest.raises(ValueError, match="max_clip_duration"):
        CurateConfig(min_duration=5, max_clip_duration=2)
    with pytest.raises(ValueError, match="min_motion"):
        CurateConfig(min_motion=math.nan)


# --------------------------------------------------------------------------------------------
# Scene cuts and clips
# --------------------------------------------------------------------------------------------


def test_scene_cut_found_where_two_clips_are_concatenated(tmp_path):
    a = moving(24, seed=1, palette=(255, 70, 40))
    b = moving(20, seed=2, palette=(40, 90, 255))
    path = write_video(tmp_path / "cut.mp4", np.concatenate([a, b]), fps=16)
    analysis = scenes.analyze_video(path, 16.0)
    assert analysis.end == 44 and analysis.cut_scores.shape == (44,)
    assert scenes.detect_cuts(analysis, 16.0, threshold=0.3, min_scene_duration=0.5) == [24]
    assert analysis.cut_scores[24] > 0.4 and np.delete(analysis.cut_scores, 24).max() < 0.2
    # a cut too close to the start is ignored (flash suppression)
    assert scenes.detect_cuts(analysis, 16.0, threshold=0.3, min_scene_duration=2.0) == []


def test_no_cut_inside_one_moving_shot(tmp_path):
    path = write_video(tmp_path / "one.mp4", moving(40, speed=3), fps=16)
    assert scenes.detect_cuts(scenes.analyze_video(path, 16.0), 16.0, 0.3, 0.5) == []


def test_analysis_of_a_frame_range(tmp_path):
    frames = np.concatenate([moving(16, seed=1, palette=(255, 70, 40)), moving(16, seed=2, palette=(40, 90, 255))])
    path = write_video(tmp_path / "cut.mp4", frames, fps=16)
    analysis = scenes.analyze_video(path, 16.0, begin=4, end=28)
    assert (analysis.begin, analysis.end, len(analysis.cut_scores)) == (4, 28, 24)
    assert scenes.detect_cuts(analysis, 16.0, 0.3, 0.5) == [16]


def test_split_limit_and_sample():
    assert scenes.split_scenes(0, 100, [30, 70]) == [(0, 30), (30, 70), (70, 100)]
    assert scenes.split_scenes(10, 50, [5, 10, 60]) == [(10, 50)]
    assert scenes.limit_length([(0, 25), (25, 30)], 10) == [(0, 10), (10, 20), (20, 25), (25, 30)]
    assert scenes.limit_length([(0, 25)], None) == [(0, 25)]
    assert scenes.sample_indices(10, 20, 5) == [11, 13, 15, 17, 19]
    assert scenes.sample_indices(0, 3, 8) == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------


def _clip_motion(path, method):
    analysis = scenes.analyze_video(path, 16.0, motion=filters.motion_measure(method))
    return analysis.clip_motion(0, analysis.end)


def test_static_video_fails_motion_with_frame_differences(tmp_path):
    config = CurateConfig(motion="diff").resolved()
    still = _clip_motion(write_video(tmp_path / "still.mp4", static(32), fps=16), "diff")
    moves = _clip_motion(write_video(tmp_path / "moves.mp4", moving(32, speed=1), fps=16), "diff")
    assert still < 0.001 < config.min_motion < moves
    assert check_motion(still, config).filter == "motion"
    assert check_motion(moves, config) is None
    assert check_motion(moves, CurateConfig(motion="diff", max_motion=moves / 2).resolved()).filter == "motion"
    assert check_motion(math.nan, config).filter == "motion"


def test_motion_pairs_are_on_a_fixed_time_grid(tmp_path):
    analysis = scenes.analyze_video(
        write_video(tmp_path / "a.mp4", moving(48), fps=24), 24.0, motion=filters.frame_difference_motion
    )
    gaps = np.diff(analysis.motion_pairs, axis=1)[:, 0]
    assert set(gaps.tolist()) == {3}  # 24 fps sampled at 8 per second
    assert analysis.clip_motion(0, 12) == pytest.approx(analysis.motion_values[:3].mean())
    assert math.isnan(analysis.clip_motion(0, 2))


@pytest.mark.skipif(not filters.opencv_available(), reason="opencv-python-headless (extra 'curate') not installed")
def test_static_video_fails_motion_with_optical_flow(tmp_path):
    config = CurateConfig(motion="flow").resolved()
    assert config.motion == "flow" and config.min_motion == filters.DEFAULT_MIN_MOTION["flow"]
    still = _clip_motion(write_video(tmp_path / "still.mp4", static(32), fps=16), "flow")
    moves = _clip_motion(write_video(tmp_path / "moves.mp4", moving(32, speed=2), fps=16), "flow")
    assert check_motion(still, config).filter == "motion"
    assert check_motion(moves, config) is None
    # 2 px per frame at 16 fps, measured 1/8 s apart on 48-px-high frames: about 4 / 48 of the shorter side
    assert moves == pytest.approx(4 / 48, rel=0.3)


def test_motion_method_resolution(monkeypatch):
    monkeypatch.setattr(filters, "opencv_available", lambda: False)
    assert filters.resolve_motion_method("auto") == "diff"
    assert CurateConfig().resolved().min_motion == filters.DEFAULT_MIN_MOTION["diff"]
    with pytest.raises(ValueError, match=r"pip install 'infinitystar\[curate\]'"):
        filters.resolve_motion_method("flow")
    monkeypatch.setattr(filters, "opencv_available", lambda: True)
    assert filters.resolve_motion_method("auto") == "flow"
    assert CurateConfig(motion="off").resolved().min_motion is None


# --------------------------------------------------------------------------------------------
# Built-in scorers
# --------------------------------------------------------------------------------------------


def _decide(name, frames, **options):
    return scorers.build_scorer(scorers.ScorerSpec(name, tuple(options.items()))).evaluate(frames)


def test_blur_scorer_drops_flat_frames_and_keeps_texture():
    blurred_value, keep = _decide("blur", flat(4, value=120))
    assert blurred_value == 0.0 and not keep
    sharp_value, keep = _decide("blur", moving(4))
    assert keep and sharp_value > 100
    gray = texture(32, 32, 0)[..., 0].astype(np.float32)
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]
    assert scorers.laplacian_variance(gray) == pytest.approx(float(lap.var()))


def test_brightness_and_black_frames():
    value, keep = _decide("brightness", flat(3, value=10))
    assert value == pytest.approx(10 / 255, rel=1e-4) and not keep
    assert _decide("brightness", flat(3, value=128))[1]
    half_black = np.concatenate([flat(3, value=0), moving(3)])
    value, keep = _decide("black_frames", half_black)
    assert value == 0.5 and keep  # threshold 0.5 is inclusive
    value, keep = _decide("black_frames", np.concatenate([flat(3, value=200), moving(1)]))  # flat grey counts too
    assert value == 0.75 and not keep


# --------------------------------------------------------------------------------------------
# Plug-in interface: specs, dotted paths, entry points, model-based scorer
# --------------------------------------------------------------------------------------------


def test_parse_scorer_spec():
    spec = scorers.parse_scorer_spec("pkg.mod:Cls, weights=/m/w.pt, scale=2.5, flag=true, threshold=0.3")
    assert spec.target == "pkg.mod:Cls"
    assert dict(spec.options) == {"weights": "/m/w.pt", "scale": 2.5, "flag": True}
    assert spec.threshold == 0.3 and spec.direction is None
    assert scorers.parse_scorer_spec("blur,threshold=none").threshold is None
    assert scorers.parse_scorer_spec("blur,direction=max").direction == "max"
    for bad, message in (
        ("", "no name"),
        ("blur,40", "not key=value"),
        ("blur,threshold=high", "threshold must be a number"),
        ("blur,direction=up", "direction must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            scorers.parse_scorer_spec(bad)


def test_dotted_path_scorer_and_overrides():
    frames = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    frames[..., 0] = 200
    frames[..., 2] = 100  # red share 2/3
    built = scorers.build_scorer(scorers.parse_scorer_spec("tests.helpers.curate:RedShareScorer,threshold=0.5"))
    assert built.name == "red_share" and built.direction == "max"
    value, keep = built.evaluate(frames)
    assert value == pytest.approx(2 / 3) and not keep
    assert built.describe(value) == "red_share 0.6667 > 0.5"
    spec = "tests.helpers.curate.RedShareScorer,scale=0.5,threshold=0.5"  # module.Class works as well as module:Class
    also = scorers.build_scorer(scorers.parse_scorer_spec(spec))
    assert also.evaluate(frames) == (pytest.approx(1 / 3), True)
    record_only = scorers.build_scorer(scorers.parse_scorer_spec("tests.helpers.curate:RedShareScorer"))
    assert record_only.threshold is None and record_only.evaluate(frames)[1]


def test_unknown_or_broken_scorers_fail_clearly():
    with pytest.raises(ValueError, match="unknown scorer 'sharpness'; built-in: aesthetic, black_frames"):
        scorers.build_scorer(scorers.ScorerSpec("sharpness"))
    with pytest.raises(ValueError, match="cannot import 'no_such_module'"):
        scorers.build_scorer(scorers.ScorerSpec("no_such_module:Scorer"))
    with pytest.raises(ValueError, match="cannot build scorer 'blur' with options"):
        scorers.build_scorer(scorers.ScorerSpec("blur", (("radius", 3),)))
    with pytest.raises(ValueError, match="given twice"):
        scorers.check_scorer_specs((scorers.ScorerSpec("blur"), scorers.ScorerSpec("blur")))

    class NaNScorer:
        name, threshold, direction = "nan", 1.0, "min"

        def score(self, frames):
            return float("nan")

    with pytest.raises(ValueError, match="scorer 'nan' returned nan"):
        scorers.ScoreFilter(NaNScorer(), "nan", 1.0, "min").evaluate(flat(1))


def test_scorer_registered_by_entry_point(tmp_path, monkeypatch):
    (tmp_path / "my_curate_plugin.py").write_text(
        "class Bright:\n"
        "    name = 'bright'\n    direction = 'min'\n"
        "    def __init__(self, threshold=0.5):\n        self.threshold = threshold\n"
        "    def score(self, frames):\n        return float(frames.mean()) / 255\n"
    )
    dist = tmp_path / "my_curate_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-curate-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[infinitystar.curate_scorers]\nbright = my_curate_plugin:Bright\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    built = scorers.build_scorer(scorers.parse_scorer_spec("bright,threshold=0.25"))
    assert built.name == "bright" and built.threshold == 0.25
    assert built.evaluate(flat(1, value=51)) == (pytest.approx(0.2), False)


def test_merge_scorer_specs():
    merged = scorers.merge_scorer_specs(scorers.DEFAULT_SCORERS, [scorers.parse_scorer_spec("blur,threshold=40")])
    assert [s.target for s in merged] == ["brightness", "black_frames", "blur"]
    assert merged[-1].threshold == 40.0


def test_clip_aesthetic_scorer_with_tiny_random_models(tmp_path):
    pytest.importorskip("transformers")
    import torch
    from safetensors.torch import save_file

    clip = make_tiny_clip(tmp_path / "clip")
    g = torch.Generator().manual_seed(0)
    head = {
        "layers.0.weight": torch.randn(4, 8, generator=g),
        "layers.0.bias": torch.randn(4, generator=g),
        "layers.2.weight": torch.randn(1, 4, generator=g),
        "layers.2.bias": torch.randn(1, generator=g),
    }
    save_file(head, str(tmp_path / "head.safetensors"))
    built = scorers.build_scorer(
        scorers.parse_scorer_spec(f"aesthetic,clip={clip},head={tmp_path / 'head.safetensors'},threshold=none")
    )
    frames = moving(3, 32, 32)
    value, keep = built.evaluate(frames)
    emb = built.scorer.embed(frames)  # [3, 8], unit norm
    assert emb.shape == (3, 8) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    expected = (emb @ head["layers.0.weight"].T + head["layers.0.bias"]) @ head["layers.2.weight"].T + head[
        "layers.2.bias"
    ]
    assert keep and value == pytest.approx(float(expected[:, 0].mean()), rel=1e-5)
    save_file({"weight": torch.zeros(1, 5)}, str(tmp_path / "bad_head.safetensors"))
    with pytest.raises(ValueError, match="must map 8 -> 1"):
        scorers.ClipAestheticScorer(str(clip), str(tmp_path / "bad_head.safetensors"))
