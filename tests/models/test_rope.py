"""4-axis spacetime RoPE: layout, positions and rotation properties."""

from __future__ import annotations

import pytest
import torch

from infinitystar.models.rope import (
    apply_rope,
    axis_pairs,
    inv_frequencies,
    packed_visual_rope,
    rope_cos_sin,
    text_positions,
    text_rope,
    visual_positions,
    visual_rope,
)
from infinitystar.schedule import rope_grid_ids, schedule_from_scales

HD = 32  # 4 axes x 4 pairs


def _schedule():
    shapes = [(1, 1, 1), (1, 2, 3), (1, 3, 5), (2, 1, 1), (2, 2, 3), (2, 3, 5)]
    return schedule_from_scales(
        shapes, 3, image_repetition=[2, 1, 2], video_repetition=[1, 2, 1], detail_scale_min_tokens=6
    )


def _complex_rotate(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Reference rotation through complex multiplication of interleaved pairs."""
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles.double()), angles.double())).flatten(-2)


def test_inverse_frequencies_follow_theta_power():
    for hd in (16, 32, 64, 128):
        n = axis_pairs(hd)
        expected = 10000.0 ** (-torch.arange(n, dtype=torch.float64) / n)
        torch.testing.assert_close(inv_frequencies(hd).double(), expected, rtol=1e-6, atol=0)
    assert inv_frequencies(128).dtype == torch.float32


def test_head_dim_must_split_into_four_axes():
    with pytest.raises(ValueError, match="multiple of 8"):
        axis_pairs(36)


def test_angles_are_float32_products_per_axis():
    pos = torch.tensor([[529, 3, 17, 224], [0, 0, 0, 0]])
    cos, sin = rope_cos_sin(pos, HD)
    inv = inv_frequencies(HD)
    n = axis_pairs(HD)
    for a in range(4):
        ang = pos[:, a].float()[:, None] * inv  # the original's table entry for this axis
        torch.testing.assert_close(cos[:, a * n : (a + 1) * n], ang.cos(), rtol=0, atol=0)
        torch.testing.assert_close(sin[:, a * n : (a + 1) * n], ang.sin(), rtol=0, atol=0)


def test_rotation_preserves_norm_and_matches_complex_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, HD, generator=g)
    pos = torch.randint(0, 600, (7, 4), generator=g)
    cos, sin = rope_cos_sin(pos, HD)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    angles = torch.atan2(sin, cos)
    torch.testing.assert_close(y.double(), _complex_rotate(x, angles), rtol=1e-5, atol=1e-5)


def test_text_positions_only_rotate_the_scale_axis():
    x = torch.randn(1, 2, 9, HD)
    cos, sin = text_rope(9, HD)
    y = apply_rope(x, cos, sin)
    quarter = HD // 4
    assert torch.equal(y[..., quarter:], x[..., quarter:])  # time / height / width untouched
    assert torch.equal(y[:, :, 0], x[:, :, 0])  # position 0 is the identity
    assert not torch.allclose(y[:, :, 1:, :quarter], x[:, :, 1:, :quarter])
    assert text_positions(3).tolist() == [[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]]


def test_scores_depend_on_position_differences_only():
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(2, HD, generator=g), torch.randn(2, HD, generator=g)
    pq, pk = torch.tensor([[520, 3, 10, 4]]), torch.tensor([[100, 1, 2, 40]])
    shift = torch.tensor([[7, 5, 11, 13]])

    def score(a, b):
        cq, sq = rope_cos_sin(a, HD)
        ck, sk = rope_cos_sin(b, HD)
        return (apply_rope(q[:1], cq, sq) * apply_rope(k[:1], ck, sk)).sum()

    torch.testing.assert_close(score(pq, pk), score(pq + shift, pk + shift), rtol=1e-4, atol=1e-4)


def test_visual_positions_layout():
    pos = visual_positions((2, 2, 3), frame_start=5, step_counter=7, final_hw=(3, 5), text_offset=512)
    assert pos.shape == (12, 4)
    assert (pos[:, 0] == 519).all()
    rows, cols = rope_grid_ids(2, 3), rope_grid_ids(3, 5)
    expected = [[519, 5 + t, rows[y], cols[x]] for t in range(2) for y in range(2) for x in range(3)]
    assert pos.tolist() == expected  # (t, h, w) row-major


def test_visual_rope_uses_schedule_frames_and_final_grid():
    sched = _schedule()
    sc = sched.scales[4]  # clip 1: frames 1..2, 2x3 stretched onto the final 3x5 grid
    cos, sin = visual_rope(sched, 4, step_counter=sc.first_step + 1, head_dim=HD)
    expected = rope_cos_sin(visual_positions(sc.shape, 1, sc.first_step + 1, (3, 5)), HD)
    assert torch.equal(cos, expected[0]) and torch.equal(sin, expected[1])
    assert cos.shape == (sc.num_tokens, HD // 2)


def test_packed_visual_rope_concatenates_scales():
    sched = _schedule()
    counters = [sc.last_step for sc in sched.scales]
    cos, sin = packed_visual_rope(sched, counters, HD)
    assert cos.shape == (sched.num_visual_tokens(), HD // 2)
    start = sum(sc.num_tokens for sc in sched.scales[:4])
    n = sched.scales[4].num_tokens
    torch.testing.assert_close(cos[start : start + n], visual_rope(sched, 4, counters[4], HD)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="one step counter per scale"):
        packed_visual_rope(sched, counters[:-1], HD)
