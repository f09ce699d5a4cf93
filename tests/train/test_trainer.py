"""The trainer in one process on CPU: batches, LR schedule, EMA, accumulation, init, text, export, errors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from infinitystar.checkpoints import CheckpointError
from infinitystar.models.quantizer import SelfCorrection, encode_pyramid
from infinitystar.models.transformer.checkpoint import load_model_folder, save_original_transformer
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.train.metrics_log import read_metrics
from infinitystar.train.optim import EMA, LRSchedule
from infinitystar.train.seeds import make_generator
from infinitystar.train.transformer.config import TrainConfig
from infinitystar.train.transformer.trainer import Trainer

TEXT_C = 64  # the tiny preset's text width


@dataclass
class Sample:
    key: str
    latent: torch.Tensor
    caption: str
    text: torch.Tensor | None
    h_div_w: float = 1.0
    duration: int = 0


def sample(i, t=1, hw=(4, 4), text=True, channels=TEXT_C):
    g = torch.Generator().manual_seed(100 + i)
    lat = torch.randn(64, t, *hw, generator=g)
    feats = torch.randn(3 + i % 3, channels, generator=g) if text else None
    return Sample(f"s{i}", lat, f"a small red fox {i}", feats, duration=(t - 1) // 4)


class ListDataset:
    """Fixed batches, the LatentDataset interface."""

    def __init__(self, batches):
        self.batches = batches
        self.epoch = 0
        self.index = 0

    def set_epoch(self, e):
        self.epoch, self.index = e, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        while self.index < len(self.batches):
            self.index += 1
            yield self.batches[self.index - 1]

    def state_dict(self):
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, s):
        self.epoch, self.index = s["epoch"], s["index"]


def config(tmp_path, **over) -> TrainConfig:
    d = {
        "model": {"preset": "tiny", "attn_impl": "dense"},
        "schedule": {"scales": [[1, 1], [2, 2], [4, 4]], "image_repetition": [1, 3, 2], "detail_scale_min_tokens": 8},
        "data": {"synthetic": {"latent_hw": [4, 4]}},
        "optim": {"lr": 1e-3},
        "out": str(tmp_path / "run"),
        "steps": 2,
        "device": "cpu",
        "log": {"progress": False, "tensorboard": False},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return TrainConfig.from_dict(d)


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.module.transformer.state_dict().items()}


# --------------------------------------------------------------------------------------


def test_lr_schedule():
    const = LRSchedule(1e-3)
    assert [const(s) for s in (1, 50, 1000)] == [1e-3] * 3
    warm = LRSchedule(1e-3, "constant", warmup_steps=4, total_steps=10)
    assert [warm(s) for s in (1, 2, 4, 5, 10)] == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3])
    cos = LRSchedule(1e-3, "cosine", warmup_steps=2, total_steps=12, min_lr_ratio=0.1)
    assert cos(2) == pytest.approx(1e-3)
    assert cos(7) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way through the decay
    assert cos(12) == pytest.approx(1e-4) and cos(20) == pytest.approx(1e-4)
    assert all(cos(s) >= cos(s + 1) for s in range(2, 12))


def test_ema_update_and_state():
    lin = nn.Linear(2, 2)
    p0 = lin.weight.detach().clone()
    ema = EMA(lin, 0.9)
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    assert torch.allclose(ema.shadow["weight"], 0.9 * p0 + 0.1 * (p0 + 1))
    other = EMA(nn.Linear(2, 2), 0.9)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError):
        EMA(lin, 1.0)


def test_prepare_builds_what_the_quantizer_gives(tmp_path):
    batch = [sample(0, t=5), sample(1, t=5)]
    tr = Trainer(config(tmp_path), dataset=ListDataset([batch]))
    pb = tr.prepare(batch, step=3, micro=0)
    full = tr.schedule_for(1.0, 5, 4, 4)
    assert len(full.scales) == 6 and pb.schedule.kept == tuple(pb.schedule.kept)
    kept = pb.schedule.kept
    assert pb.codes.shape == (2, sum(full.scales[i].num_tokens for i in kept), 64)
    for b, s in enumerate(batch):  # labels and inputs are those of the chosen repetition
        g = make_generator("cpu", tr.cfg.seed, "bsc", 3, s.key)
        tokens = encode_pyramid(s.latent[None], full, self_correction=SelfCorrection(0.3), generator=g)
        start = 0
        for j, i in enumerate(kept):
            n = int(pb.counters[b, j])
            sc = full.scales[i]
            assert sc.first_step <= n <= sc.last_step
            assert torch.equal(pb.labels[j][b], tokens.bits[n][0])
            assert torch.equal(pb.codes[b, start : start + sc.num_tokens], tokens.inputs[n][0].flatten(1).T)
            start += sc.num_tokens
    again = tr.prepare(batch, step=3, micro=0)
    assert torch.equal(again.codes, pb.codes) and torch.equal(again.counters, pb.counters)
    other = tr.prepare(batch, step=4, micro=0)
    assert other.counters.tolist() != pb.counters.tolist() or not torch.equal(other.codes, pb.codes)


def test_grad_accumulation_equals_a_bigger_batch(tmp_path):
    batch = [sample(i, t=5) for i in range(4)]
    common = {"loss": {"var_len": False, "cond_drop_prob": 0.5}, "optim": {"lr": 1e-3, "ema_decay": 0.9}}
    big = Trainer(config(tmp_path / "a", **common), dataset=ListDataset([batch]))
    small = Trainer(
        config(tmp_path / "b", optim={"lr": 1e-3, "ema_decay": 0.9, "grad_accum": 2}, loss=common["loss"]),
        dataset=ListDataset([batch[:2], batch[2:]]),
    )
    for _ in range(2):
        ma, mb = big.train_step(), small.train_step()
        assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-6)
        assert ma["grad_norm"] == pytest.approx(mb["grad_norm"], rel=1e-5)
    # Adam divides by sqrt(v): where a gradient is near zero, fp32 summation-order noise (which differs
    # between CPUs' kernels) moves an update by a visible fraction of lr (2.4e-6 seen on an AVX2 EPYC).
    # 1% of one step's lr (1e-3) still fails for any real accumulation error (those move whole steps).
    pa, pb = params(big), params(small)
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) < 1e-5
    ea, eb = big.ema.full_state(), small.ema.full_state()
    assert max((ea[k] - eb[k]).abs().max().item() for k in ea) < 1e-5


def test_training_reduces_the_loss(tmp_path):
    batch = [sample(0), sample(1)]
    tr = Trainer(
        config(tmp_path, optim={"lr": 3e-3}, loss={"self_correction": 0.0, "cond_drop_prob": 0.0}),
        dataset=ListDataset([batch]),
    )
    losses = [tr.train_step()["loss"] for _ in range(15)]
    assert losses[-1] < losses[0] - 0.05


def test_train_logs_exports_and_checkpoints(tmp_path):
    cfg = config(tmp_path, optim={"lr": 1e-3, "ema_decay": 0.5}, save_every=1, keep=1)
    tr = Trainer(cfg, dataset=ListDataset([[sample(0), sample(1)], [sample(2), sample(3)]]))
    result = tr.train()
    assert result.step == 2 and set(result.losses) == {1, 2}
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert 0 < r["acc"] < 1 and r["tokens"] > 0 and r["tokens_per_s"] > 0 and math.isfinite(r["grad_norm"])
        assert {"acc/image/semantic", "acc/image/detail"} <= set(r)
    final = load_model_folder(result.final_model)
    assert all(torch.equal(v, params(tr)[k]) for k, v in final.state_dict().items())
    ema = load_model_folder(tmp_path / "run" / "final_ema")
    assert not torch.equal(ema.word_embed.weight, final.word_embed.weight)
    assert (tmp_path / "run" / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "run").glob("step_*")) == ["step_00000002"]


def test_init_from_released_format_and_from_our_own(tmp_path):
    cfg = config(tmp_path).model.transformer_config()
    torch.manual_seed(3)
    ref = InfinityTransformer(cfg)
    save_original_transformer(ref, tmp_path / "released")
    tr = Trainer(config(tmp_path, model={"init": str(tmp_path / "released")}), dataset=ListDataset([[sample(0)]]))
    got = params(tr)
    assert all(torch.equal(v, got[k]) for k, v in ref.state_dict().items())
    tr.train()
    trained = params(tr)
    for init in (tmp_path / "run" / "final", tmp_path / "run"):  # a trained-model folder, a run folder
        again = Trainer(config(tmp_path / "b", model={"init": str(init)}), dataset=ListDataset([[sample(0)]]))
        assert all(torch.equal(v, params(again)[k]) for k, v in trained.items())
    with pytest.raises(CheckpointError, match="not found"):
        Trainer(config(tmp_path / "c", model={"init": str(tmp_path / "nope")}), dataset=ListDataset([[sample(0)]]))
    bigger = config(tmp_path / "d", model={"init": str(tmp_path / "run" / "final"), "overrides": {"depth": 2}})
    with pytest.raises(CheckpointError, match="trained with"):
        Trainer(bigger, dataset=ListDataset([[sample(0)]]))


def test_online_text_encoder(tmp_path):
    from tests.helpers.t5 import TINY_T5_CHANNELS, make_tiny_t5

    t5 = make_tiny_t5(tmp_path / "t5")
    over = {"model": {"preset": "tiny", "attn_impl": "dense", "overrides": {"text_channels": TINY_T5_CHANNELS}}}
    batch = [sample(0, text=False), sample(1, text=True, channels=TINY_T5_CHANNELS)]
    tr = Trainer(config(tmp_path, data={"text_encoder": str(t5)}, **over), dataset=ListDataset([batch]))
    pb = tr.prepare(batch, 1, 0)
    expect = tr.text_encoder.encode([batch[0].caption])[0]
    assert torch.equal(pb.texts[0], expect) and torch.equal(pb.texts[1], batch[1].text)
    assert math.isfinite(tr.train_step()["loss"])
    no_encoder = Trainer(config(tmp_path / "b", **over), dataset=ListDataset([batch]))
    with pytest.raises(ValueError, match="no cached text features"):
        no_encoder.prepare(batch, 1, 0)


def test_template_schedule(tmp_path):
    cfg = config(
        tmp_path,
        schedule={"scales": None, "resolution": "0.06M", "image_repetition": None, "detail_scale_min_tokens": 50},
    )
    tr = Trainer(cfg, dataset=ListDataset([[sample(0, hw=(16, 16))]]))
    sched = tr.schedule_for(1.0, 1, 16, 16)
    assert len(sched.scales) == 11 and sched.final_hw == (16, 16)
    assert math.isfinite(tr.train_step()["loss"])
    with pytest.raises(ValueError, match="does not match the 0.06M schedule"):
        tr.prepare([sample(0, hw=(12, 12))], 1, 0)


@pytest.mark.parametrize(
    "batch, message",
    [
        ([], "non-empty list"),
        ([Sample("bad", torch.zeros(3, 1, 4, 4), "cap", None)], r"latent must be \[64, t, h, w\]"),
        ([sample(0), sample(1, hw=(2, 2))], "share one latent shape"),
        ([sample(0, hw=(2, 2))], "does not match schedule.scales"),
        ([Sample("nan", torch.full((64, 1, 4, 4), float("nan")), "cap", torch.zeros(2, TEXT_C))], "nan: latent"),
        ([Sample("txt", torch.zeros(64, 1, 4, 4), "cap", torch.zeros(2, 7))], r"text features must be \[L >= 1, 64\]"),
        ([Sample("empty", torch.zeros(64, 1, 4, 4), "  ", None)], "empty caption"),
    ],
)
def test_bad_batches_are_clear_errors(tmp_path, batch, message):
    tr = Trainer(config(tmp_path), dataset=ListDataset([[sample(0)]]))
    with pytest.raises(ValueError, match=message):
        tr.prepare(batch, 1, 0)


def test_trains_from_a_latent_cache(tmp_path):
    """End to end with the cache ``infinitystar extract`` writes (LatentDataset), resumed once."""
    import json

    from infinitystar.media import write_video
    from infinitystar.models.config import VAEConfig
    from infinitystar.models.vae.model import VideoVAE
    from infinitystar.text.encoders import TextEncoder
    from infinitystar.train.data.extract import extract_latents

    class CharEncoder(TextEncoder):
        channels, max_length = 4, 512

        def _encode(self, prompts):
            return [torch.tensor([[ord(c) / 128, len(p) / 64, 0, 1] for c in p]) for p in prompts]

        @property
        def device(self):
            return torch.device("cpu")

        def to(self, device):
            return self

    lines = []
    for i in range(2):
        frames = torch.full((20, 32, 32, 3), 60 * i, dtype=torch.uint8)
        frames[:, :16, :, 1] = torch.arange(20, dtype=torch.uint8)[:, None, None] * 8
        write_video(tmp_path / f"v{i}.mp4", frames, fps=16)
        lines.append({"path": f"v{i}.mp4", "caption": f"clip {i}"})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    torch.manual_seed(0)
    vae = VideoVAE(VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)).eval()
    summary = extract_latents(
        tmp_path / "train.jsonl",
        tmp_path / "cache",
        vae,
        resolution="scales:3",
        max_frames=17,
        text_encoder=CharEncoder(),
        progress=False,
        workers=0,
    )
    assert summary.cached == 2
    over = {
        "model": {"preset": "tiny", "attn_impl": "dense", "overrides": {"text_channels": 4}},
        "schedule": {"scales": None, "resolution": "scales:3", "image_repetition": None},
        "data": {
            "synthetic": None,
            "cache": str(tmp_path / "cache"),
            "batch_size": 1,
            "dataset_options": {"captions": {"dynamic_length": False}, "prefetch": 0},
        },
        "steps": 3,
    }
    result = Trainer(config(tmp_path, **over)).train()
    assert result.step == 3 and all(math.isfinite(v) for v in result.losses.values())
    resumed = Trainer(config(tmp_path, **{**over, "steps": 4, "resume": True}))
    assert resumed.step == 3
    assert resumed.train().step == 4
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3, 4]


def test_activation_checkpointing_changes_nothing_but_memory(tmp_path):
    batch = [sample(0, t=5), sample(1, t=5)]
    plain = Trainer(config(tmp_path / "a", activation_checkpointing=False), dataset=ListDataset([batch]))
    ac = Trainer(config(tmp_path / "b", activation_checkpointing=True), dataset=ListDataset([batch]))
    assert type(ac.module.transformer.blocks[0]).__name__ == "CheckpointWrapper"
    assert plain.train_step()["loss"] == ac.train_step()["loss"]
    pa, pb = params(plain), params(ac)  # the wrapper's prefix is not in the state dict
    assert pa.keys() == pb.keys() and all(torch.equal(v, pb[k]) for k, v in pa.items())
    final = load_model_folder(ac.export())  # exported under the plain names
    assert torch.equal(final.blocks[0].attn.q_proj.weight, ac.module.transformer.blocks[0].attn.q_proj.weight)


def test_bf16_autocast_step(tmp_path):
    batch = [sample(0), sample(1)]
    fp32 = Trainer(config(tmp_path / "a"), dataset=ListDataset([batch]))
    bf16 = Trainer(config(tmp_path / "b", precision="bf16"), dataset=ListDataset([batch]))
    assert bf16.autocast_dtype == torch.bfloat16 and fp32.autocast_dtype is None
    la, lb = fp32.train_step()["loss"], bf16.train_step()["loss"]
    assert la != lb and lb == pytest.approx(la, abs=0.02)
    assert all(p.dtype == torch.float32 for p in bf16.module.parameters())  # fp32 master weights


def test_tensorboard_scalars_match_the_metrics_file(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs the optional 'tensorboard' package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(tmp_path, log={"progress": True, "tensorboard": True})
    Trainer(cfg, dataset=ListDataset([[sample(0)], [sample(1)]])).train()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("loss")]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [s for s, _ in logged] == [1, 2]
    assert [v for _, v in logged] == pytest.approx([r["loss"] for r in records])
    assert "acc/image/detail" in acc.Tags()["scalars"]


def test_tiny_recipe_through_the_cli(tmp_path):
    from pathlib import Path

    from infinitystar.cli import main

    recipe = Path(__file__).resolve().parents[2] / "src" / "infinitystar" / "recipes" / "tiny_cpu.json"
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--out", str(out), "--steps", "2", "--no-progress"]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    saved = TrainConfig.load(out / "config.json")
    assert saved.steps == 2 and saved.out == str(out)
    assert load_model_folder(out / "final").cfg == saved.model.transformer_config()
    assert main(["train", "--config", str(recipe), "--out", str(out), "--steps", "3", "--no-progress"]) == 2


def test_synthetic_dataset_global_batches_do_not_depend_on_the_rank_count():
    from infinitystar.train.data.synthetic import SyntheticLatentDataset

    kw = dict(num_samples=10, latent_frames=[1, 5], latent_hw=(2, 2), text_channels=3, seed=4)
    one = SyntheticLatentDataset(batch_size=4, **kw)
    ranks = [SyntheticLatentDataset(batch_size=2, rank=r, world_size=2, **kw) for r in range(2)]
    for ds in (one, *ranks):
        ds.set_epoch(1)
    a = [[s.key for s in b] for b in one]
    b = [[s.key for s in x + y] for x, y in zip(*ranks)]
    assert a == b and len(a) == len(one) == 2  # 5 items per bucket -> one global batch of 4 each
    assert {s.latent.shape[1] for s in next(iter(SyntheticLatentDataset(batch_size=4, **kw)))} <= {1, 5}
    one.set_epoch(1)
    it = iter(one)
    next(it)
    state = one.state_dict()
    rest = [[s.key for s in x] for x in it]
    again = SyntheticLatentDataset(batch_size=4, **kw)
    again.load_state_dict(state)
    assert [[s.key for s in x] for x in again] == rest
    first = one.sample(3)
    assert torch.equal(first.latent, again.sample(3).latent) and first.caption.startswith("<<<t=1s>>>")
    with pytest.raises(ValueError, match="no global batch"):
        SyntheticLatentDataset(batch_size=8, **kw)


def test_a_process_group_of_one_rank_shards_with_fsdp2(tmp_path):
    """Under ``torchrun --nproc_per_node 1`` (a process group of one rank) the model is sharded with FSDP2 as on
    several ranks, so that one GPU runs the sharded code path; its losses are those of the plain one-process run."""
    import torch.distributed as dist

    from infinitystar.train.distributed import DistEnv

    plain = Trainer(config(tmp_path / "plain"))
    assert not type(plain.module.transformer.blocks[0]).__name__.startswith("FSDP")
    plain_losses = plain.train().losses
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        sharded = Trainer(config(tmp_path / "sharded"), env=DistEnv())
        assert type(sharded.module.transformer.blocks[0]).__name__ == "FSDPBlock"
        losses = sharded.train().losses
    finally:
        dist.destroy_process_group()
    assert losses.keys() == plain_losses.keys()
    for step, loss in plain_losses.items():
        assert losses[step] == pytest.approx(loss, rel=1e-5)
