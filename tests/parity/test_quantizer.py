"""Parity of the schedule and the multi-scale bitwise tokenisation with the original."""

from __future__ import annotations

import pytest
import torch

from infinitystar.models.quantizer import decode_bits, encode_pyramid
from infinitystar.schedule import schedule_from_original_config, schedule_from_scales
from tests.helpers.parity import assert_close_abs, assert_equal_int, dump_params, get_dump

pytestmark = pytest.mark.parity


def _step_name(run: str, n: int, what: str) -> str:
    return f"{run}.step{n:03d}.{what}"


@pytest.mark.parametrize("dump_dir", dump_params())
def test_schedule_matches_original(dump_dir):
    dump = get_dump(dump_dir)
    cfg = dump.config
    sched = schedule_from_original_config(cfg)
    assert [list(s.shape) for s in sched.scales] == [list(s) for s in cfg["scale_schedule"]]
    # our own frame ranges and references, computed without context_info, equal the original's record
    computed = schedule_from_scales(
        cfg["scale_schedule"],
        sched.scales_per_clip,
        image_repetition=[s.repetitions for s in sched.scales[: sched.scales_per_clip]],
        video_repetition=[s.repetitions for s in sched.scales[sched.scales_per_clip : 2 * sched.scales_per_clip]]
        or None,
        detail_scale_min_tokens=cfg["args"]["detail_scale_min_tokens"],
    )
    for sc in computed.scales:
        info = cfg["context_info"][str(sc.index)]
        assert (sc.frame_start, sc.frame_end) == (info["frame_ss"], info["frame_ee"]), sc
        assert list(sc.ref_scales) == info["ref_sids"], sc
    # steps, heads and quantizer widths as the original ran them
    meta = dump.meta
    assert [[st.scale, st.repetition] for st in sched.steps] == meta["step_scale_rep"]
    semantic = [sched.scales[st.scale].semantic for st in sched.steps]
    for run in ("tfkv", "ar"):
        if f"{run}.is_semantic" in meta:
            assert semantic == meta[f"{run}.is_semantic"]
    k = sched.scales_per_clip
    n_sem = cfg["args"]["semantic_scales"]
    assert [sc.semantic for sc in sched.scales] == [sc.index % k < n_sem for sc in sched.scales]


@pytest.mark.parametrize("dump_dir", dump_params())
def test_gt_bits_and_summed_codes(dump_dir):
    dump = get_dump(dump_dir)
    sched = schedule_from_original_config(dump.config)
    tokens = encode_pyramid(dump["vae.raw_features"], sched)
    assert len(tokens.bits) == sched.num_steps
    for n, bits in enumerate(tokens.bits):
        assert_equal_int(bits, dump[f"bsq.gt_bits.{n:03d}"], f"bsq.gt_bits.{n:03d}")
    # the clip running sums start at zero
    for name in dump.names("bsq.noise_list."):
        assert not dump[name].any(), name
    # the latent rebuilt from the bits is the teacher-forced run's final latent
    for latent in (tokens.latent, decode_bits([dump[f"bsq.gt_bits.{n:03d}"] for n in range(sched.num_steps)], sched)):
        assert_close_abs(latent, dump["tfkv.summed_codes"], "tfkv.summed_codes")
    # the per-step inputs are the teacher-forced run's inputs
    for n, x in enumerate(tokens.inputs, start=1):
        name = _step_name("tfkv", n, "codes_input")
        if dump.has(name):
            assert_close_abs(x, dump[name], name)


@pytest.mark.parametrize("dump_dir", dump_params())
def test_training_pack_inputs(dump_dir):
    """tf.x_BLC packs one repetition per scale: the step inputs at the chosen repetitions."""
    dump = get_dump(dump_dir)
    sched = schedule_from_original_config(dump.config)
    tokens = encode_pyramid(dump["vae.raw_features"], sched)
    chosen = dump.meta["tf.selected_repeat_idx"]
    parts = []
    for sc, rep in zip(sched.scales, chosen):
        x = tokens.inputs[sc.first_step + rep]  # [1, 64, pt, ph, pw]
        parts.append(x.flatten(2).transpose(1, 2))  # [1, pt*ph*pw, 64], tokens (t, h, w) row-major
        gt_name = f"tf.gt.{sc.index:03d}"
        if dump.has(gt_name):
            labels = tokens.bits[sc.first_step + rep].flatten(1, 3)  # [1, N, d]
            assert_equal_int(labels, dump[gt_name], gt_name)
    assert_close_abs(torch.cat(parts, dim=1), dump["tf.x_BLC"], "tf.x_BLC")
