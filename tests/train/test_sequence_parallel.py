"""Ulysses sequence parallelism: 2 ranks (gloo, CPU) give the 1-rank logits, loss and gradients.

The test launches this file under ``torch.distributed.run`` with 2 processes. Every rank first
computes the reference without sequence parallelism, then the same forward/backward split over
the 2 ranks; the per-rank gradient parts summed over the group must equal the reference
gradient. Rank 0 writes the largest differences to a JSON file that the test checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()


def _setup():
    import math

    import torch

    from infinitystar.models.config import TransformerConfig
    from infinitystar.models.transformer.model import InfinityTransformer
    from infinitystar.schedule import schedule_from_scales

    cfg = TransformerConfig(
        embed_dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, block_chunks=1, text_channels=24
    )
    torch.manual_seed(0)
    model = InfinityTransformer(cfg)
    with torch.no_grad():  # larger than the training init so that every path matters numerically
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
            else:
                p.add_(0.1 * torch.randn_like(p))
    hw = [(1, 1), (2, 3), (3, 4)]
    shapes = [(1, *s) for s in hw] + [(2, *s) for s in hw] * 2
    sched = schedule_from_scales(
        shapes, 3, image_repetition=[2, 1, 2], video_repetition=[1, 2, 2], detail_scale_min_tokens=6
    )
    g = torch.Generator().manual_seed(1)
    codes = torch.randn(2, sched.num_visual_tokens(), 64, generator=g)
    texts = [torch.randn(6, 24, generator=g), torch.randn(3, 24, generator=g)]  # 63 + 6 = 69 positions: padded
    labels = [torch.randint(0, 2, (2, *sc.shape, sched.bits(sc.index)), generator=g) for sc in sched.scales]
    counters = [sc.first_step + (sc.repetitions - 1) // 2 for sc in sched.scales]
    return model, sched, codes, texts, labels, counters


def _run(model, sched, codes, texts, labels, counters):
    from infinitystar.train.transformer.loss import bit_loss

    model.zero_grad(set_to_none=True)
    out = model(codes, texts, sched, counters, attn_impl="dense")
    loss = bit_loss(out.detail, out.semantic, labels, sched).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, loss.detach(), grads


def worker(out_file: str) -> None:
    import torch
    import torch.distributed as dist

    from infinitystar.train.transformer.sequence_parallel import enable_sequence_parallel

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    model, sched, codes, texts, labels, counters = _setup()
    ref_out, ref_loss, ref_grads = _run(model, sched, codes, texts, labels, counters)
    sp = enable_sequence_parallel(model)
    sp_out, sp_loss, sp_grads = _run(model, sched, codes, texts, labels, counters)
    for g in sp_grads.values():  # each rank holds the gradient of its positions
        dist.all_reduce(g)
    diffs = {
        "sp_size": sp.size,
        "detail": (sp_out.detail - ref_out.detail).abs().max().item(),
        "semantic": (sp_out.semantic - ref_out.semantic).abs().max().item(),
        "loss": abs(sp_loss.item() - ref_loss.item()),
        "grad_keys_equal": sorted(sp_grads) == sorted(ref_grads),
        "grad": max((sp_grads[k] - ref_grads[k]).abs().max().item() for k in ref_grads),
        "grad_scale": max(v.abs().max().item() for v in ref_grads.values()),
        "loss_value": ref_loss.item(),
    }
    if dist.get_rank() == 0:
        Path(out_file).write_text(json.dumps(diffs))
    dist.destroy_process_group()


@pytest.mark.slow
def test_sequence_parallel_two_ranks_match_one(tmp_path):
    out = tmp_path / "diffs.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(HERE), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["sp_size"] == 2
    assert d["grad_keys_equal"]
    assert d["loss_value"] > 0.1
    assert d["detail"] < 1e-5 and d["semantic"] < 1e-5
    assert d["loss"] < 1e-6
    assert d["grad"] < 1e-5 * max(1.0, d["grad_scale"])


def test_sequence_parallel_rejects_indivisible_heads(monkeypatch):
    import torch

    import infinitystar.train.transformer.sequence_parallel as spm
    from infinitystar.models.config import TransformerConfig
    from infinitystar.models.transformer.model import InfinityTransformer

    class FakeSP:  # a 3-rank group, without a process group
        size = 3

    monkeypatch.setattr(spm, "UlyssesSP", lambda group=None: FakeSP())
    cfg = TransformerConfig(embed_dim=64, depth=1, num_heads=4, num_kv_heads=2, mlp_hidden=64, block_chunks=1)
    with torch.device("meta"):
        model = InfinityTransformer(cfg)
    with pytest.raises(ValueError, match="divisible by 3"):
        spm.enable_sequence_parallel(model)
    assert getattr(model, "sequence_parallel", None) is None


if __name__ == "__main__":
    worker(sys.argv[1])
