"""Parity of the whole KV-cached generation loop with the original's three runs (tfkv, ar, t2i).

Model, schedule and sampling settings are rebuilt from the dump's config.json; the weights go
through the same original-key loader users use. Inputs of every step come from our own running
sums (not from the dump), so these tests cover the loop end to end.
"""

from __future__ import annotations

import pytest
import torch

from infinitystar.generation.loop import SamplingOptions, generate_latent
from infinitystar.generation.sampling import Guidance
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.checkpoint import load_original_transformer
from infinitystar.schedule import schedule_from_original_config
from tests.helpers.parity import assert_close_abs, assert_close_rel, assert_equal_int, dump_params, get_dump

pytestmark = pytest.mark.parity


def build(dump):
    cfg = dump.config
    shapes = {k: s for k, s, _ in dump.summary["transformer_state_dict"]}
    mlp = next(s[0] for k, s in shapes.items() if k.endswith("mlp.gate_proj.weight"))
    tcfg = TransformerConfig.from_original_kwargs(cfg["transformer_kwargs"], mlp_hidden=mlp)
    model = load_original_transformer(dump.path / "transformer.safetensors", tcfg).eval()
    g = cfg["guidance"]
    options = SamplingOptions(
        guidance=Guidance(
            g["method"], float(g["cfg"]), float(g.get("apg_norm_threshold", 0.0)), float(g.get("apg_eta", 0.0))
        ),
        temperatures=tuple(cfg["tau_list"]),
        guidance_scales=tuple(cfg["cfg_list"]),
    )
    if all(v == 1 for v in cfg["cfg_list"]):
        options = SamplingOptions(guidance=Guidance("none", 1.0), temperatures=tuple(cfg["tau_list"]))
    return model, schedule_from_original_config(cfg), options


def run(dump, model, schedule, options, forced=None, exact=True):
    records = []
    out = generate_latent(
        model,
        schedule,
        dump["input.text_kv_compact"],
        options=options,
        generator=torch.Generator().manual_seed(int(dump.config["sample_seed"])),
        forced_bits=forced,
        exact_forcing=exact,
        on_step=records.append,
    )
    return out, records


def check_steps(dump, prefix, records, check_sampled):
    checked = 0
    for rec in records:
        n = rec.step.index + 1
        name = f"{prefix}.step{n:03d}"
        if dump.has(f"{name}.codes_input"):
            assert_close_abs(rec.codes_input, dump[f"{name}.codes_input"], f"{name}.codes_input")
        if dump.has(f"{name}.logits"):
            assert_close_rel(rec.logits, dump[f"{name}.logits"], f"{name}.logits")
            checked += 1
        if check_sampled and dump.has(f"{name}.bits"):
            assert_equal_int(rec.sampled, dump[f"{name}.bits"], f"{name}.bits (sampled)")
    return checked


@pytest.mark.parametrize("dump_dir", dump_params())
def test_teacher_forced_run(dump_dir):
    dump = get_dump(dump_dir)
    model, schedule, options = build(dump)
    gt = [dump[f"bsq.gt_bits.{n:03d}"] for n in range(schedule.num_steps)]
    out, records = run(dump, model, schedule, options, forced=gt)
    assert check_steps(dump, "tfkv", records, check_sampled=False) == schedule.num_steps
    assert_close_abs(out.latent, dump["tfkv.summed_codes"], "tfkv.summed_codes")
    # skipping the forward of forced steps nobody attends to changes nothing downstream
    fast, fast_records = run(dump, model, schedule, options, forced=gt, exact=False)
    assert torch.equal(fast.latent, out.latent)
    computed = [r.step.index for r in fast_records if r.logits is not None]
    assert len(computed) < schedule.num_steps
    for r in fast_records:
        if r.logits is not None:
            assert torch.equal(r.logits, records[r.step.index].logits)


@pytest.mark.parametrize("prefix", ["ar", "t2i"])
@pytest.mark.parametrize("dump_dir", dump_params())
def test_sampled_runs(dump_dir, prefix):
    dump = get_dump(dump_dir)
    model, schedule, options = build(dump)
    if prefix == "t2i":
        schedule = schedule.truncate_clips(1)
    if not dump.has(f"{prefix}.summed_codes"):
        pytest.skip(f"{prefix} run not in this dump")
    steps = range(1, schedule.num_steps + 1)
    dumped_bits = [dump[f"{prefix}.step{n:03d}.bits"] for n in steps if dump.has(f"{prefix}.step{n:03d}.bits")]
    if len(dumped_bits) == schedule.num_steps:
        # forced with the dumped bits while still sampling: every drawn bit must equal the dumped one
        _, records = run(dump, model, schedule, options, forced=dumped_bits)
        check_steps(dump, prefix, records, check_sampled=True)
    # free running reproduces everything too
    out, records = run(dump, model, schedule, options)
    check_steps(dump, prefix, records, check_sampled=True)
    assert_close_abs(out.latent, dump[f"{prefix}.summed_codes"], f"{prefix}.summed_codes")


@pytest.mark.parametrize("dump_dir", dump_params())
def test_text_to_video_end_to_end_decoded(dump_dir):
    """Free-running generation, then the VAE decode and the original's uint8 post-processing."""
    from infinitystar.media import frames_to_uint8
    from infinitystar.models.vae.model import VideoVAE

    dump = get_dump(dump_dir)
    model, schedule, options = build(dump)
    vae = VideoVAE.from_original_checkpoint(dump.path / "vae.safetensors").eval()
    out, _ = run(dump, model, schedule, options)
    with torch.no_grad():
        video = vae.decode(out.latent)
    if dump.has("ar.decoded_float"):
        assert_close_rel(video, dump["ar.decoded_float"], "ar.decoded_float")
    if dump.has("ar.video_uint8"):
        frames = frames_to_uint8(video, original_quirks=True)
        diff = (frames.long() - dump["ar.video_uint8"].long()).abs()
        assert diff.max().item() <= 1
        assert (diff > 0).float().mean().item() <= 1e-3
