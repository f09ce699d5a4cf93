import pytest

from infinitystar.schedule import build_schedule, rope_grid_ids, schedule_from_scales
from infinitystar.sizes import (
    aspect_templates,
    latent_frames,
    nearest_template,
    parse_aspect_ratio,
    pixel_size,
    spatial_scales,
    video_frames_for_duration,
)


def test_fifteen_templates_and_the_16_9_pyramid():
    keys = list(aspect_templates())
    assert keys == [0.336, 0.4, 0.494, 0.562, 0.671, 0.753, 0.861, 1.0, 1.16, 1.326, 1.489, 1.777, 2.023, 2.5, 2.971]
    assert spatial_scales(9 / 16, "0.90M") == [
        (1, 1), (2, 3), (2, 4), (3, 5), (4, 7), (4, 8), (5, 9), (6, 11), (8, 13), (9, 16),
        (12, 21), (18, 32), (24, 43), (30, 53), (45, 80),
    ]  # fmt: skip
    # portrait templates are the transposes
    assert spatial_scales(16 / 9, "480p") == [(w, h) for h, w in spatial_scales(9 / 16, "480p")]


@pytest.mark.parametrize(
    "ratio, p480, p720",
    [
        (1.0, (640, 640), (960, 960)),
        (0.861, (592, 688), (896, 1040)),
        (0.753, (560, 736), (832, 1104)),
        (0.671, (528, 784), (784, 1168)),
        (0.562, (480, 848), (720, 1280)),
        (0.494, (448, 912), (672, 1360)),
        (0.4, (400, 1008), (608, 1520)),
        (0.336, (368, 1104), (560, 1664)),
    ],
)
def test_pixel_sizes(ratio, p480, p720):
    assert pixel_size(ratio, "480p") == p480
    assert pixel_size(ratio, "0.90M") == p720


@pytest.mark.parametrize(
    "res, frames, n_scales, n_steps, tokens, step_tokens",
    [
        ("480p", 81, 28, 81, 81879, 161397),
        ("720p", 81, 30, 85, 157479, 244197),
        ("480p", 161, 42, 120, 159859, 311097),
    ],
)
def test_released_schedules(res, frames, n_scales, n_steps, tokens, step_tokens):
    s = build_schedule(9 / 16, res, latent_frames(frames))
    assert len(s.scales) == n_scales
    assert s.num_steps == n_steps
    assert s.num_visual_tokens() == tokens
    assert s.num_step_tokens() == step_tokens
    assert s.num_frames == frames
    k = s.scales_per_clip
    # clip c >= 1 attends to the last scale of clip c - 1; the image pyramid to nothing
    for sc in s.scales:
        assert sc.ref_scales == (() if sc.clip == 0 else (sc.clip * k - 1,))
    # the step counter runs over every repetition
    assert [st.index for st in s.steps] == list(range(n_steps))
    assert all(s.steps[sc.last_step].is_last_repetition for sc in s.scales)


def test_semantic_rule_matches_released_settings():
    s480 = build_schedule(9 / 16, "480p", 21)
    assert [sc.semantic for sc in s480.scales[:14]] == [True] * 11 + [False] * 3
    s720 = build_schedule(9 / 16, "720p", 21)
    assert [sc.semantic for sc in s720.scales[:15]] == [True] * 12 + [False] * 3


def test_partial_last_clip_and_frame_ranges():
    s = build_schedule(1.0, "480p", 1 + 20 + 8)
    assert s.num_clips == 3
    assert [s.clip_shape(c)[0] for c in range(3)] == [1, 20, 8]
    assert [(sc.frame_start, sc.frame_end) for sc in s.scales if sc.index_in_clip == 0] == [(0, 1), (1, 21), (21, 29)]
    assert s.last_user(s.scales_per_clip - 1) == 2 * s.scales_per_clip - 1
    assert s.last_user(0) == -1
    t2i = s.truncate_clips(1)
    assert t2i.num_latent_frames == 1 and t2i.num_steps == 42


def test_custom_schedule_as_data():
    s = schedule_from_scales(
        [(1, 1, 1), (1, 2, 2), (2, 1, 1), (2, 2, 2)],
        2,
        image_repetition=[2, 1],
        video_repetition="[1]*2",
        detail_scale_min_tokens=4,
    )
    assert [(st.scale, st.repetition) for st in s.steps] == [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0)]
    assert [sc.semantic for sc in s.scales] == [True, False, True, False]
    assert s.bits(0) == 16 and s.bits(1) == 64


def test_rope_grid_ids_round_half_to_even():
    assert rope_grid_ids(2, 45) == [0, 22]
    assert rope_grid_ids(4, 8) == [0, 2, 4, 6]
    assert rope_grid_ids(3, 3) == [0, 1, 2]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: spatial_scales(1.0, "1080p"), "unknown resolution preset"),
        (lambda: latent_frames(80), "1 \\+ 4k frames"),
        (lambda: video_frames_for_duration(0.1), "multiple of 0.25"),
        (lambda: parse_aspect_ratio("wide"), "W:H"),
        (lambda: nearest_template(float("nan")), "positive finite"),
        (lambda: schedule_from_scales([(1, 1, 1), (1, 2, 2), (2, 1, 1)], 2), "do not split"),
        (lambda: schedule_from_scales([(2, 1, 1)], 1), "pt = 1"),
        (lambda: schedule_from_scales([(1, 1, 1), (1, 2, 2)], 2, image_repetition=[0, 1]), "positive integers"),
    ],
)
def test_bad_input_is_explained(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_aspect_ratio_parsing():
    assert parse_aspect_ratio("16:9") == pytest.approx(9 / 16)
    assert nearest_template(parse_aspect_ratio("16:9")) == 0.562
    assert nearest_template(parse_aspect_ratio("9:16")) == 1.777
    assert parse_aspect_ratio(0.5) == 0.5
