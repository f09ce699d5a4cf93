"""The suite's correctness checks: each runs on the tiny preset or the parity dump, on the suite's device, and
ends in one line, PASS or FAIL with its figure.

A check is one entry of :data:`CHECKS`: a name, what it shows, whether it needs the parity dump, an estimate of
its seconds per device kind (the budget logic skips a check that cannot finish), and the function. The
thresholds and why:

- ``parity-fp32``: the parity README's rule, max |a - e| <= 1e-4 * max(1, max |e|), on every logit; a sampled
  bit may differ from the dump only at a near-tie (reference margin within twice that tolerance).
- ``parity-bf16``: bf16 blocks as the pipeline runs them on a GPU; 5e-2, three times what bf16 gives on the CPU
  for this dump (1.7e-2, torch 2.13): a wrong kernel gives errors of order 1.
- ``flex-attention``: fp32 without TF32, so FlexAttention and dense attention differ by rounding only: 1e-4 on
  the logits and on the gradients (relative to the largest gradient).
- ``fsdp2-resume``: exact: a run resumed from its step-2 checkpoint gives the losses and the final weights of the
  uninterrupted run bit for bit (a second uninterrupted run shows whether the device itself is deterministic).
- ``vae-bf16``: PSNR of the bf16 decode against the fp32 decode >= 35 dB (the CPU gives about 50 dB on the
  dump); the fp32 decode also reproduces the dump (1e-4 rule) when the dump is there.
"""

from __future__ import annotations

import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from _suite_parity import REL, Dump, exact_fp32, rel_err, reproduce
from infinitystar.evaluation import metrics

BF16_REL = 5e-2
GRAD_REL = 1e-4
PSNR_MIN_DB = 35.0


@dataclass
class CheckContext:
    device: torch.device
    dump: Path | None  #: the parity dump folder, None when none was found
    work: Path  #: a scratch folder of this check

    def load_dump(self) -> Dump:
        return Dump(self.dump)


@dataclass
class CheckResult:
    passed: bool
    figure: str  #: the figure the verdict rests on, one line
    details: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    run: Callable[[CheckContext], CheckResult]
    estimate_s: dict  #: seconds per device kind ('cuda', 'cpu'): compile included, a generous guess
    needs_dump: bool = False


def _parity(ctx: CheckContext, dtype: torch.dtype, tol: float) -> CheckResult:
    with exact_fp32():
        r = reproduce(ctx.load_dump(), ctx.device, dtype)
    worst = max(r["logits_rel_err"], r["tf_rel_err"] or 0.0)
    near_ties = r["flipped"] == 0 or r["flip_margin"] <= r["margin_tol"]
    exact_bits = dtype == torch.float32
    passed = worst <= tol and r["replay_ok"] and (near_ties or not exact_bits)
    figure = (
        f"logits max rel err {worst:.2e} (tolerance {tol:.0e}; {r['logit_tensors']} step logits + training forward); "
        f"sampled bits: {r['flipped']} of {r['bits']} differ"
    )
    if r["flipped"]:
        figure += f" (largest reference margin among them {r['flip_margin']:.1e}, near-tie bound {r['margin_tol']:.1e})"
    if not r["replay_ok"]:
        figure += "; the CPU replay of the dump's own draws did not give its bits"
    return CheckResult(passed, figure, r)


def parity_fp32(ctx: CheckContext) -> CheckResult:
    return _parity(ctx, torch.float32, REL)


def parity_bf16(ctx: CheckContext) -> CheckResult:
    return _parity(ctx, torch.bfloat16, BF16_REL)


def _tiny_training_model(device: torch.device):
    """The tiny preset with weights large enough that every path matters numerically, a two-clip schedule of
    more than one 128-token tile, codes and texts of two samples of different text lengths."""
    from infinitystar.models.config import get_preset
    from infinitystar.models.transformer.model import InfinityTransformer
    from infinitystar.schedule import schedule_from_scales

    cfg = get_preset("tiny").transformer
    g = torch.Generator().manual_seed(0)
    model = InfinityTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]) if p.ndim >= 2 else 1 + 0.1 * p)
    hw = [(1, 1), (2, 2), (4, 4), (8, 8)]
    shapes = [(1, *s) for s in hw] + [(2, *s) for s in hw]
    sched = schedule_from_scales(shapes, 4, image_repetition=[1, 2, 2, 1], detail_scale_min_tokens=16)
    codes = torch.randn(2, sched.num_visual_tokens(), cfg.latent_channels, generator=g)
    texts = [torch.randn(n, cfg.text_channels, generator=g) for n in (5, 9)]
    weights = (
        torch.randn(2, codes.shape[1], 2 * cfg.detail_dim, generator=g),
        torch.randn(2, codes.shape[1], 2 * cfg.semantic_dim, generator=g),
    )
    to = {"device": device}
    return model.to(device).train(), sched, codes.to(**to), [t.to(**to) for t in texts], [w.to(**to) for w in weights]


def flex_vs_dense(ctx: CheckContext) -> CheckResult:
    """Training forward and backward with FlexAttention (compiled on CUDA) against the dense masked path. PyTorch
    has no FlexAttention backward on the CPU: there (the smoke run) the forward alone is compared."""
    model, sched, codes, texts, weights = _tiny_training_model(ctx.device)
    backward = ctx.device.type != "cpu"
    outs, grads = {}, {}
    with exact_fp32(), warnings.catch_warnings(), torch.set_grad_enabled(backward):
        warnings.simplefilter("ignore")  # eager (CPU) flex attention warns that it is not compiled
        for impl in ("dense", "flex"):
            model.zero_grad(set_to_none=True)
            out = model(codes, texts, sched, attn_impl=impl)
            outs[impl] = torch.cat([out.detail.detach().flatten(), out.semantic.detach().flatten()])
            if backward:
                ((out.detail * weights[0]).sum() + (out.semantic * weights[1]).sum()).backward()
                grads[impl] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    logit_err = rel_err(outs["flex"], outs["dense"])
    figure = f"logits max rel err {logit_err:.2e}"
    grad_err = None
    if backward:
        scale = grads["dense"].abs().max().item()
        grad_err = (grads["flex"] - grads["dense"]).abs().max().item() / max(scale, 1e-30)
        figure += f", gradients max err / max gradient {grad_err:.2e} ({len(grads['dense'])} gradients)"
    else:
        figure += ", forward only (PyTorch has no FlexAttention backward on the CPU)"
    figure += f" (tolerance {REL:.0e}; {codes.shape[1]} visual tokens x 2 samples)"
    passed = logit_err <= REL and (grad_err is None or grad_err <= GRAD_REL)
    return CheckResult(passed, figure, {"logits_rel_err": logit_err, "grad_rel_err": grad_err})


def vae_bf16(ctx: CheckContext) -> CheckResult:
    """The VAE decode in bf16 (the pipeline's on a GPU) against fp32: PSNR; with the dump, fp32 parity too."""
    from infinitystar.models.config import get_preset
    from infinitystar.models.vae.model import VideoVAE

    dump = ctx.load_dump() if ctx.dump else None
    if dump is not None:
        vae = VideoVAE.from_original_checkpoint(dump.path / "vae.safetensors", device=ctx.device).eval()
        latent = dump["ar.summed_codes"]
    else:
        torch.manual_seed(0)
        vae = VideoVAE(get_preset("tiny").vae).to(ctx.device).eval()
        latent = torch.randn(1, vae.cfg.token_channels, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = dump["ar.decoded_float"] if dump is not None and dump.has("ar.decoded_float") else None
    if ctx.device.type == "cpu":  # the first latent frame (the first video frame: the decoder is causal) only:
        latent = latent[:, :, :1]  # CPUs without AVX-512 run bf16 convolutions through a slow reference path
        expected = expected[:, :, :1] if expected is not None else None
    with torch.no_grad(), exact_fp32():
        ref = vae.decode(latent.to(ctx.device)).float()
        parity = rel_err(ref, expected) if expected is not None else None
        low = vae.to(torch.bfloat16).decode(latent.to(ctx.device)).float()
    psnr = metrics.psnr(low.clamp(-1, 1), ref.clamp(-1, 1), data_range=2.0)
    passed = psnr >= PSNR_MIN_DB and (parity is None or parity <= REL)
    source = "the parity dump's VAE and ar latent" if dump is not None else "the tiny preset's VAE, a random latent"
    figure = f"PSNR bf16 vs fp32 {psnr:.1f} dB (>= {PSNR_MIN_DB:.0f}; {source}, {tuple(ref.shape)})"
    if parity is not None:
        figure += f"; fp32 decode vs the dump: max rel err {parity:.2e} (tolerance {REL:.0e})"
    return CheckResult(passed, figure, {"psnr_db": psnr, "fp32_parity_rel_err": parity})


def fsdp_resume(ctx: CheckContext) -> CheckResult:
    """FSDP2 over a one-rank process group (NCCL on CUDA, gloo on the CPU): a training run of 4 steps with a DCP
    checkpoint every 2, the same run resumed from its step-2 checkpoint, and a second uninterrupted run."""
    from _suite_train import fsdp_runs

    full, again, resumed = fsdp_runs(ctx.device, ctx.work)
    tail = sorted(resumed["losses"])
    exact_losses = [full["losses"][s] for s in tail] == [resumed["losses"][s] for s in tail]
    exact_weights = full["weights"].keys() == resumed["weights"].keys() and all(
        torch.equal(full["weights"][k], resumed["weights"][k]) for k in full["weights"]
    )

    def worst(a: dict, b: dict) -> float:
        return max((a[k].double() - b[k].double()).abs().max().item() for k in a)

    deterministic = full["losses"] == again["losses"] and worst(full["weights"], again["weights"]) == 0
    weights = "bit-identical" if exact_weights else f"differ by up to {worst(full['weights'], resumed['weights']):.1e}"
    figure = (
        f"resumed at step 2 of 4: losses of steps {tail} {'equal' if exact_losses else 'DIFFER'}, final weights "
        f"{weights}; {full['sharded']}; a second run from scratch is "
        f"{'identical' if deterministic else 'NOT identical (the device is not deterministic)'}"
    )
    details = {"losses": full["losses"], "resumed_losses": resumed["losses"], "deterministic": deterministic}
    return CheckResult(exact_losses and exact_weights, figure, details)


CHECKS: tuple[Check, ...] = (
    Check("parity-fp32", "the parity dump reproduced in fp32", parity_fp32, {"cuda": 10, "cpu": 15}, True),
    Check("parity-bf16", "the parity dump in bf16 (error reported)", parity_bf16, {"cuda": 10, "cpu": 15}, True),
    Check(
        "flex-attention", "FlexAttention training, forward + backward vs dense", flex_vs_dense, {"cuda": 45, "cpu": 20}
    ),
    Check("fsdp2-resume", "FSDP2 training step, DCP save, exact resume", fsdp_resume, {"cuda": 30, "cpu": 40}),
    Check("vae-bf16", "VAE decode bf16 vs fp32 (PSNR)", vae_bf16, {"cuda": 10, "cpu": 15}),
)


def scratch(root: Path, name: str) -> Path:
    """An empty scratch folder for a check."""
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
