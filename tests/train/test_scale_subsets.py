"""Variable-length scale subsets: the original's table, the general rule, sub-schedules, loss weights."""

from __future__ import annotations

import pytest
import torch

from infinitystar.models.rope import packed_visual_rope
from infinitystar.schedule import build_schedule, schedule_from_scales
from infinitystar.train.transformer.scale_subsets import (
    ScaleSubsetSampler,
    general_options,
    original_options,
    sub_schedule,
    subset_loss_weights,
    with_references,
)


def _tokens(sched, option):
    return sum(sched.scales[i].num_tokens for i in option)


@pytest.mark.parametrize(
    "pn, frames, expected",
    [  # visual tokens per option (reference section 6.6, 9:16)
        ("480p", 21, [3899, 7919, 17919, 29439, 38559, 39719]),
        ("720p", 21, [7499, 11519, 21519, 33039, 42159, 43319]),
    ],
)
def test_five_second_table_token_counts(pn, frames, expected):
    sched = build_schedule(9 / 16, pn, frames)
    assert [_tokens(sched, o) for o in original_options(sched)] == expected


def test_ten_second_table_and_probabilities():
    sched = build_schedule(9 / 16, "480p", 41)
    opts, probs = ScaleSubsetSampler().options(sched)
    assert len(opts) == 11
    assert [_tokens(sched, o) for o in opts[6:]] == [47410, 47410, 44910, 54030, 65190]
    assert probs == pytest.approx([p / 220 for p in (40, 30, 20, 6, 3, 1, 60, 40, 12, 6, 2)])


def test_720p_probabilities_and_last_scale_drop():
    sched = build_schedule(9 / 16, "720p", 21)
    _, probs = ScaleSubsetSampler(probs=(60, 20, 10, 6, 2, 1, 1)).options(sched)
    assert probs == pytest.approx([0.606, 0.202, 0.101, 0.061, 0.020, 0.010], abs=1e-3)
    last = len(sched.scales) - 1
    assert all(last not in o for o in original_options(sched, drop_last_scale=True))
    undropped = original_options(sched, drop_last_scale=False)
    assert len(undropped) == 7 and undropped[-1] == (14, 29) and undropped[-2] == (14, 28)


def test_every_option_keeps_the_scales_it_attends_to():
    for sched in (build_schedule(9 / 16, "480p", 41), build_schedule(1.0, "720p", 21)):
        for opt in original_options(sched):
            for i in opt:
                assert set(sched.scales[i].ref_scales) <= set(opt)


def _tiny(num_clips, k=3):
    hw = [(1, 1), (2, 2), (4, 4)][:k]
    shapes = [(1, *s) for s in hw] + [(2, *s) for s in hw] * (num_clips - 1)
    return schedule_from_scales(shapes, k, detail_scale_min_tokens=8)


def test_general_rule():
    assert general_options(_tiny(1)) == [(0, 1, 2)]  # an image trains every scale
    assert original_options(_tiny(2)) is None
    assert general_options(_tiny(2)) == [(0, 1, 2), (0, 1, 2, 3, 4), (0, 1, 2, 5)]
    assert general_options(_tiny(3)) == [(0, 1, 2), (0, 1, 2, 3, 4), (0, 1, 2, 5), (2, 5, 6, 7), (2, 5, 8)]
    opts, probs = ScaleSubsetSampler().options(_tiny(3))
    assert probs == [0.2] * 5
    assert ScaleSubsetSampler(enabled=False).options(_tiny(3)) == ([tuple(range(9))], [1.0])


def test_with_references_closes_the_chain():
    sched = _tiny(3)
    assert with_references(sched, [8]) == (2, 5, 8)
    with pytest.raises(ValueError, match="outside"):
        with_references(sched, [9])


def test_sampler_is_deterministic_and_follows_the_probabilities():
    sched = build_schedule(9 / 16, "480p", 21)
    sampler = ScaleSubsetSampler()
    draws = [sampler.sample(sched, torch.Generator().manual_seed(s))[0] for s in range(2000)]
    again = [sampler.sample(sched, torch.Generator().manual_seed(s))[0] for s in range(2000)]
    assert draws == again
    freq = torch.bincount(torch.tensor(draws), minlength=6).float() / len(draws)
    assert freq.tolist() == pytest.approx([0.4, 0.3, 0.2, 0.06, 0.03, 0.01], abs=0.035)


def test_too_few_probabilities_is_an_error():
    with pytest.raises(ValueError, match="subset options"):
        ScaleSubsetSampler(probs=(1, 1)).options(build_schedule(9 / 16, "480p", 21))


def test_sub_schedule_renumbers_and_keeps_positions():
    full = build_schedule(9 / 16, "480p", 21)
    kept = (13, 27)
    sub = sub_schedule(full, kept)
    assert [s.index for s in sub.scales] == [0, 1]
    assert sub.scales[1].ref_scales == (0,)
    assert sub.final_hw == full.final_hw and sub.kept == kept
    assert sub.scales[1].first_step == full.scales[27].first_step
    counters = [full.scales[i].last_step for i in kept]
    cos_sub, _ = packed_visual_rope(sub, counters, 128)
    cos_full, _ = packed_visual_rope(full, [s.last_step for s in full.scales], 128)
    offsets = torch.cumsum(torch.tensor([0] + [s.num_tokens for s in full.scales]), 0)
    expect = torch.cat([cos_full[offsets[i] : offsets[i + 1]] for i in kept])
    assert torch.equal(cos_sub, expect)  # the same RoPE positions as in the full schedule
    # a prefix that ends before the full size still uses the full grid for RoPE
    prefix = sub_schedule(full, range(14 + 8))
    assert prefix.final_hw == full.final_hw != prefix.scales[-1].shape[1:]
    with pytest.raises(ValueError, match="misses"):
        sub_schedule(full, [27])


def test_subset_loss_weights_use_the_full_schedule_volume():
    full = build_schedule(9 / 16, "480p", 21)
    kept = list(range(14))  # the image pyramid alone
    w = subset_loss_weights(full, kept)
    vmax = 20 * 30 * 53
    raw = torch.tensor([min(40.0, (vmax / full.scales[i].num_tokens) ** 0.2) * full.scales[i].num_tokens for i in kept])
    assert torch.allclose(w, (raw / raw.sum()).float())
    assert w.sum().item() == pytest.approx(1.0)
    plain = subset_loss_weights(full, kept, reweight_by_scale=0)
    vol = torch.tensor([float(full.scales[i].num_tokens) for i in kept])
    assert torch.allclose(plain, vol / vol.sum())
