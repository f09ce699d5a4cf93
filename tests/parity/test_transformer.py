"""Parity of the transformer with tensors dumped by the original implementation.

Everything is built from the dump (``config.json``, ``summary.json``) and the weights are loaded
from ``transformer.safetensors`` (original key names) through the same loader users call.
Optional tensors that a dump left out are skipped one by one.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from safetensors.torch import load_file

from infinitystar.models.config import TransformerConfig
from infinitystar.models.rope import rope_cos_sin, text_rope
from infinitystar.models.transformer.attention import block_visibility
from infinitystar.models.transformer.checkpoint import load_original_transformer
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import Schedule, schedule_from_original_config
from infinitystar.train.transformer.loss import bit_loss
from tests.helpers.parity import Dump, assert_close_rel, assert_equal_int, dump_params, get_dump

pytestmark = pytest.mark.parity

DUMPS = dump_params()
RUNS = ("tfkv", "ar", "t2i")


@lru_cache(maxsize=4)
def _setup(path: str) -> tuple[Dump, TransformerConfig, Schedule, InfinityTransformer]:
    dump = get_dump(path)
    shapes = {k: shape for k, shape, _ in dump.summary["transformer_state_dict"]}
    gate = next(s for k, s in shapes.items() if k.endswith("mlp.gate_proj.weight"))
    cfg = TransformerConfig.from_original_kwargs(dump.config["transformer_kwargs"], mlp_hidden=int(gate[0]))
    schedule = schedule_from_original_config(dump.config)
    model = load_original_transformer(dump.path / "transformer.safetensors", cfg)
    return dump, cfg, schedule, model


def _get(path):
    if path is None:
        get_dump(path)  # fails under CI, as parity_utils decides
    return _setup(str(path))


def _chosen_steps(dump: Dump, schedule: Schedule) -> list[int]:
    """Global step counter of the repetition packed for training, per scale (the scale-axis RoPE
    position of the pack): ``first_step + meta.tf.selected_repeat_idx[scale]``."""
    reps = dump.meta["tf.selected_repeat_idx"]
    return [sc.first_step + int(r) for sc, r in zip(schedule.scales, reps)]


def _require(dump: Dump, *names: str) -> None:
    absent = [n for n in names if not dump.has(n)]
    if absent:
        pytest.skip(f"not in this dump: {', '.join(absent)}")


@pytest.mark.parametrize("path", DUMPS)
def test_rope_tables(path):
    dump, cfg, _, _ = _get(path)
    file = dump.path / "rope.safetensors"
    if not file.is_file():
        pytest.skip("no rope.safetensors in this dump")
    tables = load_file(str(file))
    hd, n = cfg.head_dim, cfg.head_dim // 8
    if "freqs_text" in tables:
        ref = tables["freqs_text"]  # [2, 1, 1, 1, Lmax, hd/2]
        cos, sin = text_rope(ref.shape[-2], hd, cfg.rope_theta)
        assert_close_rel(torch.stack([cos, sin]), ref.reshape(2, ref.shape[-2], hd // 2), "freqs_text", rel=1e-6)
    for name, axis, offset in [
        ("freqs_scales", 0, cfg.rope_text_offset),
        ("freqs_frames", 1, 0),
        ("freqs_height", 2, 0),
        ("freqs_width", 3, 0),
    ]:
        if name not in tables:
            continue
        ref = tables[name]  # [2, M, hd/8]: row k = position offset + k on this axis
        pos = torch.zeros(ref.shape[1], 4, dtype=torch.int64)
        pos[:, axis] = torch.arange(ref.shape[1]) + offset
        cos, sin = rope_cos_sin(pos, hd, cfg.rope_theta)
        cols = slice(axis * n, (axis + 1) * n)
        assert_close_rel(torch.stack([cos[:, cols], sin[:, cols]]), ref, name, rel=1e-6)


@pytest.mark.parametrize("path", DUMPS)
def test_visual_rope_of_the_training_pack(path):
    dump, cfg, schedule, _ = _get(path)
    _require(dump, "tf.visual_rope_cache")
    from infinitystar.models.rope import packed_visual_rope

    cos, sin = packed_visual_rope(schedule, _chosen_steps(dump, schedule), cfg.head_dim, cfg.rope_theta)
    ref = dump["tf.visual_rope_cache"]  # [2, 1, 1, 1, Nvis, hd/2]
    assert_close_rel(torch.stack([cos, sin]), ref.reshape(2, *cos.shape), "tf.visual_rope_cache", rel=1e-6)


@pytest.mark.parametrize("path", DUMPS)
def test_block_visibility(path):
    dump, _, schedule, _ = _get(path)
    _require(dump, "tf.querysid_refsid")
    ref = dump["tf.querysid_refsid"].to(torch.int64)
    ours = block_visibility(schedule).to(torch.int64)  # [S + 2, S + 2]: scales, text, padding
    n = ours.shape[0]
    assert ref.shape[0] >= n - 1  # without padding the dump has S + 2 blocks incl. the unused one
    k = min(n, ref.shape[0])
    assert_equal_int(ours[:k, :k], ref[:k, :k], "tf.querysid_refsid")
    assert int(ref[k:].sum()) == 0 and int(ref[:, k:].sum()) == 0


def _labels(dump: Dump, schedule: Schedule) -> list[torch.Tensor]:
    chosen = _chosen_steps(dump, schedule)
    out = []
    for sc in schedule.scales:
        name = f"tf.gt.{sc.index:03d}"
        if not dump.has(name):
            name = f"bsq.gt_bits.{chosen[sc.index]:03d}"
        _require(dump, name)
        out.append(dump[name].to(torch.int64).reshape(1, sc.num_tokens, -1))
    return out


@pytest.mark.parametrize("path", DUMPS)
def test_training_forward(path):
    dump, _, schedule, model = _get(path)
    _require(dump, "tf.x_BLC", "input.text_kv_compact")
    with torch.no_grad():
        out = model(dump["tf.x_BLC"], dump["input.text_kv_compact"], schedule, _chosen_steps(dump, schedule))
    for name, ours in [("tf.logits_detail_head", out.detail), ("tf.logits_semantic_head", out.semantic)]:
        if dump.has(name):
            assert_close_rel(ours, dump[name], name)

    if not (dump.has("tf.loss_per_token") or dump.has("tf.acc_per_token")):
        return
    labels = _labels(dump, schedule)
    loss = bit_loss(out.detail, out.semantic, labels, schedule)
    if dump.has("tf.loss_per_token"):
        assert_close_rel(loss.token_loss[0], dump["tf.loss_per_token"], "tf.loss_per_token")
    if dump.has("tf.acc_per_token"):
        _check_accuracy(loss.token_acc[0], dump["tf.acc_per_token"], out, schedule)


def _check_accuracy(ours: torch.Tensor, ref: torch.Tensor, out, schedule: Schedule) -> None:
    """Exact, except that a bit whose two logits are within 1e-4 may go either way."""
    start = 0
    for sc in schedule.scales:
        d = schedule.bits(sc.index)
        sl = slice(start, start + sc.num_tokens)
        logits = (out.semantic if sc.semantic else out.detail)[0, sl].unflatten(-1, (d, 2))  # [N, d, 2]
        ties = ((logits[..., 0] - logits[..., 1]).abs() <= 1e-4).sum(-1)  # [N]
        wrong_bits = ((ours[sl] - ref[sl]).abs() * d).round()
        bad = wrong_bits > ties
        assert not bad.any(), f"tf.acc_per_token: scale {sc.index}, {int(bad.sum())} tokens differ beyond ties"
        start += sc.num_tokens


def _run_schedule(schedule: Schedule, run: str) -> Schedule:
    return schedule.truncate_clips(1) if run == "t2i" else schedule


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("path", DUMPS)
def test_generation_run(path, run):
    """Feed every step the dumped visual input; compare the first block's input and the raw logits."""
    dump, cfg, full, model = _get(path)
    schedule = _run_schedule(full, run)
    if not dump.names(f"{run}.step"):
        pytest.skip(f"no {run} steps in this dump")
    _require(dump, "input.text_kv_compact")
    cfg_list = dump.config.get("cfg_list") or dump.config["guidance"]["cfg_list"]
    guidance = any(float(g) != 1.0 for g in cfg_list)  # R = 2 rows (cond, null text) with guidance
    rows = model.text_rows(dump["input.text_kv_compact"], guidance)  # [R, L, Ct5]
    r = rows.shape[0]

    seen: list[torch.Tensor] = []
    hook = model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    compared, stopped = 0, None
    try:
        cache = model.new_cache(schedule, r)
        model.prefill_text(cache, rows)
        if dump.has(f"{run}.step000.block0_input"):
            assert_close_rel(seen[-1], dump[f"{run}.step000.block0_input"], f"{run}.step000.block0_input")
        for step in schedule.steps:
            tag = f"{run}.step{step.index + 1:03d}"  # dumped steps are 1-based
            if not dump.has(f"{tag}.codes_input"):
                stopped = tag  # the original input of this step is not in the dump
                break
            codes = dump[f"{tag}.codes_input"]  # [1, 64, pt, ph, pw]
            tokens = codes.flatten(2).transpose(1, 2).expand(r, -1, -1)  # [R, N, 64], (t, h, w) row-major
            logits = model.step(cache, tokens, schedule, step)  # [R, N, 2d]
            if dump.has(f"{tag}.block0_input"):
                assert_close_rel(seen[-1], dump[f"{tag}.block0_input"], f"{tag}.block0_input")
            if dump.has(f"{tag}.logits"):
                assert_close_rel(logits, dump[f"{tag}.logits"], f"{tag}.logits")
                compared += 1
    finally:
        hook.remove()
    if compared == 0:
        pytest.skip(f"{run}: no step could be fed (first missing input: {stopped})")
    if stopped is not None:
        pytest.skip(
            f"{run}: compared {compared} steps, then {stopped}.codes_input is not in the dump "
            "(the generation-loop test rebuilds it)"
        )
