"""The parity dump of the original implementation, reproduced on any device and dtype (``gpu_suite.py``'s checks).

A dump (``../shared/parity/README.md``) holds the original's weights, inputs and outputs of a tiny model in fp32.
Here its model is loaded through the same loader users use, on the device, and three things are compared with
the dump: every logit of the teacher-forced run (``tfkv``) and of the sampled run (``ar``, forced with its dumped
bits so that every step sees the dumped input), the training forward's logits (``tf``), and the bits the device's
logits would draw. The draws are replayed on the CPU with the dump's generator: a single-sample
``torch.multinomial`` is ``argmax(p / E)`` with ``E`` exponential draws of the same shape, so the replay gives
the margin of every bit, ``log(p1 / E1) - log(p0 / E0)``, and a bit may differ from the dump only where that
margin is within the logit tolerance (a near-tie).

The pytest parity tests do the same on the CPU with their own helpers (they need pytest, which the GPU machine's
suite must not); this module reads a dump with safetensors and json alone.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from infinitystar.generation.loop import SamplingOptions, generate_latent
from infinitystar.generation.sampling import Guidance, apply_temperature, guide
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.checkpoint import load_original_transformer
from infinitystar.schedule import schedule_from_original_config

REPO = Path(__file__).resolve().parents[1]
#: the parity README's rule: max |a - e| <= REL * max(1, max |e|)
REL = 1e-4


def find_dump(explicit: str | None = None) -> Path | None:
    """A dump folder: ``explicit``, else the first of ``INFINITYSTAR_PARITY_DIRS``, ``shared/parity/*`` inside the
    checkout (what travels to a lent GPU machine) and ``../shared/parity/*`` beside it."""
    if explicit:
        return Path(explicit) if (Path(explicit) / "config.json").is_file() else None
    env = [Path(p) for p in os.environ.get("INFINITYSTAR_PARITY_DIRS", "").split(":") if p]
    roots = [REPO / "shared" / "parity", REPO.parent / "shared" / "parity"]
    found = env + [d for r in roots if r.is_dir() for d in sorted(r.iterdir())]
    return next((d for d in found if (d / "config.json").is_file()), None)


class Dump:
    """One dump folder: config, summary and tensors."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = json.loads((self.path / "config.json").read_text())
        self.summary = json.loads((self.path / "summary.json").read_text())
        self.tensors = load_file(str(self.path / "tensors.safetensors"))

    def has(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]


@contextlib.contextmanager
def exact_fp32():
    """fp32 as fp32: no TF32 in matrix products or convolutions (cuDNN allows TF32 by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max(1, max |e|) (the parity README's measure)."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        raise ValueError(f"shape {tuple(a.shape)} != {tuple(e.shape)}")
    return (a - e).abs().max().item() / max(1.0, e.abs().max().item())


def build(dump: Dump, device: torch.device, dtype: torch.dtype):
    """The dump's transformer on ``device`` (blocks in ``dtype``, the rest fp32, as the pipeline loads), its
    schedule and its sampling options."""
    cfg = dump.config
    shapes = {k: s for k, s, _ in dump.summary["transformer_state_dict"]}
    mlp = next(s[0] for k, s in shapes.items() if k.endswith("mlp.gate_proj.weight"))
    tcfg = TransformerConfig.from_original_kwargs(cfg["transformer_kwargs"], mlp_hidden=mlp)
    path = dump.path / "transformer.safetensors"
    model = load_original_transformer(path, tcfg, device, dtype, outer_dtype=torch.float32).eval()
    g = cfg["guidance"]
    threshold, eta = float(g.get("apg_norm_threshold", 0.0)), float(g.get("apg_eta", 0.0))
    guidance = Guidance(g["method"], float(g["cfg"]), threshold, eta)
    if all(v == 1 for v in cfg["cfg_list"]):
        guidance = Guidance("none", 1.0)
    scales = None if guidance.method == "none" else tuple(cfg["cfg_list"])
    options = SamplingOptions(guidance=guidance, temperatures=tuple(cfg["tau_list"]), guidance_scales=scales)
    return model, schedule_from_original_config(cfg), options


def _forced_run(dump: Dump, model, schedule, options, bits: list[torch.Tensor]) -> list:
    """Every step of a run forced with ``bits`` (still computed, as the original): the step records."""
    records: list = []
    device = model.device
    generate_latent(
        model,
        schedule,
        dump["input.text_kv_compact"].to(device),
        options=options,
        generator=torch.Generator(device=device).manual_seed(int(dump.config["sample_seed"])),
        forced_bits=bits,
        exact_forcing=True,
        on_step=records.append,
    )
    return records


def _replay_bits(dump: Dump, schedule, options, records) -> dict:
    """Draw the ``ar`` run's bits on the CPU from the dumped and from the device's logits with the dump's
    generator; count the bits that differ and the largest reference margin among them."""
    gen = torch.Generator().manual_seed(int(dump.config["sample_seed"]))
    replay_ok, total, flipped, worst_margin, allowed = True, 0, 0, 0.0, 0.0
    for rec in records:
        n, sc = rec.step.index + 1, schedule.scales[rec.step.scale]
        tau, g = options.temperature_of(schedule, sc.index), options.guidance_scale_of(schedule, sc.index)
        z_ref = guide(apply_temperature(dump[f"ar.step{n:03d}.logits"].float(), tau), options.guidance, g)
        z_dev = guide(apply_temperature(rec.logits.float().cpu(), tau), options.guidance, g)
        p_ref, p_dev = (z.reshape(-1, 2).softmax(-1) for z in (z_ref, z_dev))  # [N*d, 2]
        e = torch.empty_like(p_ref).exponential_(1, generator=gen)  # what multinomial draws
        margin = (p_ref / e).log().diff(dim=-1).squeeze(-1)  # log(p1/E1) - log(p0/E0)
        ref_bits, dev_bits = (p_ref / e).argmax(-1), (p_dev / e).argmax(-1)
        replay_ok &= bool(torch.equal(ref_bits, dump[f"ar.step{n:03d}.bits"].reshape(-1).long()))
        diff = ref_bits != dev_bits
        total += diff.numel()
        flipped += int(diff.sum())
        if diff.any():
            worst_margin = max(worst_margin, margin[diff].abs().max().item())
        allowed = max(allowed, 2 * REL * max(1.0, z_ref.abs().max().item()))
    return {
        "bits": total,
        "flipped": flipped,
        "flip_margin": worst_margin,
        "margin_tol": allowed,
        "replay_ok": replay_ok,
    }


def _training_forward(dump: Dump, model, schedule) -> float | None:
    """The dense training forward on the device against the dump's ``tf`` logits (None if absent)."""
    if not (dump.has("tf.x_BLC") and dump.has("tf.logits_detail_head")):
        return None
    reps = dump.summary["meta"]["tf.selected_repeat_idx"]
    counters = [sc.first_step + int(r) for sc, r in zip(schedule.scales, reps)]
    device = model.device
    codes, text = dump["tf.x_BLC"].to(device), dump["input.text_kv_compact"].to(device)
    with torch.no_grad():
        out = model(codes, text, schedule, counters, attn_impl="dense")
    detail = rel_err(out.detail, dump["tf.logits_detail_head"])
    return max(detail, rel_err(out.semantic, dump["tf.logits_semantic_head"]))


def reproduce(dump: Dump, device: torch.device, dtype: torch.dtype) -> dict:
    """Every comparison with the dump for a model in ``dtype`` on ``device``: the worst logit error of the
    forced ``tfkv`` and ``ar`` runs and of the training forward, and the replayed bits of ``ar``."""
    model, schedule, options = build(dump, device, dtype)
    worst, compared = 0.0, 0
    gt = [dump[f"bsq.gt_bits.{n:03d}"] for n in range(schedule.num_steps)]
    for prefix, bits in (("tfkv", gt), ("ar", [dump[f"ar.step{n:03d}.bits"] for n in range(1, len(gt) + 1)])):
        records = _forced_run(dump, model, schedule, options, bits)
        for rec in records:
            name = f"{prefix}.step{rec.step.index + 1:03d}.logits"
            if dump.has(name):
                worst = max(worst, rel_err(rec.logits, dump[name]))
                compared += 1
    out = {"logits_rel_err": worst, "logit_tensors": compared, "tf_rel_err": _training_forward(dump, model, schedule)}
    out.update(_replay_bits(dump, schedule, options, records))
    return out
