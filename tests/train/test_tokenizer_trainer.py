"""Tokenizer trainer: overfitting, knowledge inheritance, exact resume, GAN / perceptual steps,
data sources, config errors and the ``train-tokenizer`` CLI (tiny VAE, 9 frames, 32x32)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch

from infinitystar.cli import main
from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.checkpoint import load_original_vae_state_dict, read_original_vae_state
from infinitystar.models.vae.model import VideoVAE
from infinitystar.train.tokenizer.config import (
    DataConfig,
    LossConfig,
    OptimConfig,
    QuantizerConfig,
    TokenizerTrainConfig,
)
from infinitystar.train.tokenizer.data import ClipStream, SmoothClips, build_data_source
from infinitystar.train.tokenizer.discriminator import DiscriminatorConfig
from infinitystar.train.tokenizer.trainer import TokenizerTrainer
from infinitystar.world.scenes import WorldSpec

TINY = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)


def tiny_config(stage: str = "continuous", **changes) -> TokenizerTrainConfig:
    cfg = TokenizerTrainConfig(
        vae=TINY,
        stage=stage,
        steps=4,
        save_every=2,
        optim=OptimConfig(lr=3e-3),
        data=DataConfig(frames=9, height=32, width=32, batch_size=1),
        quantizer=QuantizerConfig(detail_scale_min_tokens=4),
    )
    return replace(cfg, **changes)


def _losses(history):
    """Per-step metrics without wall-clock timings."""
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


# ---- learning ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["continuous", "quantized"])
def test_overfitting_one_clip_reduces_l1(tmp_path, stage):
    cfg = tiny_config(
        stage,
        steps=30,
        save_every=100,
        data=DataConfig(frames=5, height=32, width=32, num_clips=1),
        quantizer=QuantizerConfig(detail_scale_min_tokens=4, skip_detail_prob=0.0),
    )
    trainer = TokenizerTrainer(cfg, tmp_path / "run", from_scratch=True, progress=False)
    history = trainer.fit()
    l1 = [m["l1"] for m in history]
    assert len(l1) == 30
    assert sum(l1[-5:]) / 5 < 0.6 * l1[0], l1  # a clear margin
    assert history[-1]["psnr"] > history[0]["psnr"] + 3
    if stage == "quantized":
        assert 0 < history[-1]["bit_usage"] <= 1 and "commit" in history[-1]
    else:
        assert "kl" in history[-1] and "bit_usage" not in history[-1]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 31))


def test_stochastic_depth_skips_steps_during_training_only(tmp_path):
    cfg = tiny_config("quantized", quantizer=QuantizerConfig(detail_scale_min_tokens=4, skip_detail_prob=1.0))
    trainer = TokenizerTrainer(cfg, tmp_path / "run", from_scratch=True, progress=False)
    m = trainer.train_step()
    assert m["kept_steps"] < 1.0  # the 2x2 detail scale of each clip was dropped
    clip = SmoothClips(9, 32, 32)(0)[None]
    ev = trainer.evaluate(clip)  # evaluation quantises at full depth
    assert set(ev) == {"l1", "psnr", "bit_usage"} and ev["bit_usage"] > 0


# ---- knowledge inheritance ------------------------------------------------------------------------------


def test_quantized_stage_inherits_the_continuous_vae(tmp_path):
    stage1 = TokenizerTrainer(tiny_config(steps=2), tmp_path / "vae", progress=False)
    stage1.fit()
    trained = {k: v.clone() for k, v in stage1.vae.state_dict().items()}
    # the quantized stage takes its widths and weights from the stage-1 run folder
    cfg2 = replace(tiny_config("quantized", seed=7), vae=None)
    stage2 = TokenizerTrainer(cfg2, tmp_path / "tok", init=tmp_path / "vae", progress=False)
    assert stage2.cfg.vae == TINY
    assert all(torch.equal(v, trained[k]) for k, v in stage2.vae.state_dict().items())
    scratch = TokenizerTrainer(tiny_config("quantized", seed=7), tmp_path / "tok0", from_scratch=True, progress=False)
    assert not torch.equal(scratch.vae.encoder.conv_in.weight, trained["encoder.conv_in.weight"])
    stage2.fit(steps=1)
    record = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert record["init"].endswith("vae/model.safetensors") and record["config"]["stage"] == "quantized"
    assert record["fitted_latent_scale"] == stage2.fitted_latent_scale


def test_fitted_latent_scale_quantises_better(tmp_path):
    from infinitystar.train.tokenizer.pyramid import quantize_pyramid_ste

    trainer = TokenizerTrainer(tiny_config("quantized"), tmp_path, from_scratch=True, progress=False)
    video = trainer.stream.batch(0)
    with torch.no_grad():
        base = trainer.vae.encode(video, sample=False) / trainer.vae.latent_scales[0]
        sched = trainer.schedule_for(*base.shape[2:])

        def error(s):
            return float((quantize_pyramid_ste(base * s, sched).latent / s - base).norm())

        s = trainer.fit_latent_scale()
    assert trainer.vae.latent_scales[0].item() == s
    assert error(s) <= min(error(1.0), error(0.25), error(2.0))
    assert torch.equal(trainer._batch(), video)  # the peeked batch is the first training batch


def test_freezing_the_tokens_trains_the_decoder_on_the_cached_bits(tmp_path):
    """freeze=["tokens"]: the encoder, the projection before the quantizer and the latent scale stay as inherited
    (no scale fit either), so the bits of every clip are those of the inherited tokenizer; the decoder moves."""
    from infinitystar.models.quantizer import encode_pyramid

    TokenizerTrainer(tiny_config("quantized", steps=2), tmp_path / "tok", from_scratch=True, progress=False).fit()
    inherited = VideoVAE(TINY)
    load_original_vae_state_dict(inherited, read_original_vae_state(tmp_path / "tok" / "vae" / "model.safetensors"))
    quantizer = QuantizerConfig(detail_scale_min_tokens=4, skip_detail_prob=0.0, sample_posterior=False)
    cfg = replace(tiny_config("quantized", steps=3, freeze=("tokens",), quantizer=quantizer), vae=None)
    trainer = TokenizerTrainer(cfg, tmp_path / "dec", init=tmp_path / "tok", progress=False)
    trainer.fit()
    assert trainer.fitted_latent_scale is None
    tuned = trainer.vae.eval()
    before, after = inherited.state_dict(), tuned.state_dict()
    token_side = [k for k in before if k.startswith(("encoder.", "proj_down.", "scale_learnable"))]
    assert token_side and all(torch.equal(before[k], after[k]) for k in token_side)
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    clip = SmoothClips(9, 32, 32)(5)[None]
    with torch.no_grad():
        latents = [v.encode(clip, sample=False) for v in (inherited.eval(), tuned)]  # [1, 64, 3, 2, 2] each
        sched = trainer.schedule_for(*latents[0].shape[2:])
        bits = [encode_pyramid(z, sched).bits for z in latents]
    assert all(torch.equal(a, b) for a, b in zip(*bits))
    with pytest.raises(ValueError, match="freeze accepts 'encoder', 'decoder', 'tokens'"):
        tiny_config(freeze=("quantizer",))


def test_quantized_stage_needs_init_or_from_scratch(tmp_path):
    with pytest.raises(ValueError, match="--from-scratch"):
        TokenizerTrainer(tiny_config("quantized"), tmp_path, progress=False)
    with pytest.raises(ValueError, match="exclude each other"):
        TokenizerTrainer(tiny_config("quantized"), tmp_path, init=tmp_path, from_scratch=True, progress=False)
    with pytest.raises(ValueError, match="not found"):
        TokenizerTrainer(tiny_config("quantized"), tmp_path, init=tmp_path / "nothing", progress=False)


def test_init_with_other_widths_is_refused(tmp_path):
    TokenizerTrainer(tiny_config(steps=1), tmp_path / "vae", progress=False).fit()
    wider = replace(TINY, block_out_channels=(8, 8, 8, 8, 8))
    with pytest.raises(ValueError, match="does not match the model"):
        TokenizerTrainer(tiny_config("quantized", vae=wider), tmp_path / "tok", init=tmp_path / "vae", progress=False)


# ---- exact resume ---------------------------------------------------------------------------------------


def _resume_config():
    return tiny_config(
        "quantized",
        steps=4,
        save_every=2,
        # the GAN starts at step 3: the step-2 checkpoint holds a discriminator optimizer never stepped
        loss=LossConfig(
            perceptual_weight=0.1, perceptual_vgg="random", perceptual_frames=2, gan_weight=0.5, gan_start=2
        ),
        quantizer=QuantizerConfig(detail_scale_min_tokens=4, skip_detail_prob=0.5),
        discriminator=DiscriminatorConfig(channels=4, layers=2),
        data=DataConfig(frames=9, height=32, width=32, batch_size=2),
    )


@pytest.mark.slow
def test_resume_after_interruption_is_exact(tmp_path):
    cfg = _resume_config()
    full = TokenizerTrainer(cfg, tmp_path / "full", from_scratch=True, progress=False)
    expected = _losses(full.fit())

    crashing = TokenizerTrainer(cfg, tmp_path / "cut", from_scratch=True, progress=False)
    real_step = crashing.train_step

    def step_then_crash():
        if crashing.step == 3:  # killed during step 4, after step 3 was logged but not checkpointed
            raise KeyboardInterrupt
        return real_step()

    crashing.train_step = step_then_crash
    with pytest.raises(KeyboardInterrupt):
        crashing.fit()
    logged = [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]
    with (tmp_path / "cut" / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "l1"')  # a run killed mid-write leaves a partial last line: dropped on resume

    resumed = TokenizerTrainer(cfg, tmp_path / "cut", from_scratch=True, progress=False)
    with pytest.warns(UserWarning, match="unreadable metrics line"):
        got = _losses(resumed.fit(resume=True))
    assert [m["step"] for m in got] == [3, 4]
    assert got == expected[2:]  # identical losses, entropies, PSNR, GAN terms
    assert "d_loss" in got[-1] and "d_loss" not in expected[1]
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]  # the stale step-3 line was replaced
    assert _losses(lines) == expected
    for (k, a), b in zip(full.vae.state_dict().items(), resumed.vae.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(torch.equal(a, b) for a, b in zip(full.disc.state_dict().values(), resumed.disc.state_dict().values()))
    with pytest.raises(ValueError, match="--resume"):  # an existing run is never overwritten silently
        TokenizerTrainer(cfg, tmp_path / "cut", from_scratch=True, progress=False).fit()


# ---- perceptual and GAN -------------------------------------------------------------------------------


def test_prefilled_adam_state_equals_lazy_initialisation():
    from infinitystar.train.optim import init_adam_state

    torch.manual_seed(0)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.AdamW(a.parameters(), lr=0.1, betas=(0.9, 0.95), weight_decay=0.01)
    opt_b = torch.optim.AdamW(b.parameters(), lr=0.1, betas=(0.9, 0.95), weight_decay=0.01)
    init_adam_state(opt_b)
    x = torch.randn(5, 4)
    for i in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x + i).square().sum().backward()
            opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_perceptual_and_gan_terms_give_finite_gradients(tmp_path):
    cfg = replace(_resume_config(), loss=replace(_resume_config().loss, gan_start=1))
    trainer = TokenizerTrainer(cfg, tmp_path / "run", from_scratch=True, progress=False)
    before = {k: v.clone() for k, v in trainer.disc.state_dict().items()}
    m1 = trainer.train_step()
    assert "g_loss" not in m1 and "d_loss" not in m1  # the GAN starts at gan_start
    assert all(torch.equal(v, before[k]) for k, v in trainer.disc.state_dict().items())
    m2 = trainer.train_step()
    for key in ("perceptual", "g_loss", "d_loss", "gan_weight", "loss", "grad_norm"):
        assert key in m2 and torch.isfinite(torch.tensor(m2[key])), key
    assert m2["perceptual"] > 0 and m2["gan_weight"] > 0
    grads = [p.grad for p in trainer.vae.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert trainer.vae.decoder.conv_out.weight.grad.abs().sum() > 0
    disc_grads = [p.grad for p in trainer.disc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in disc_grads)
    assert any(not torch.equal(v, before[k]) for k, v in trainer.disc.state_dict().items())


def test_perceptual_needs_a_local_weight_file(tmp_path):
    cfg = tiny_config(loss=LossConfig(perceptual_weight=1.0))
    with pytest.raises(ValueError, match="perceptual_vgg"):
        TokenizerTrainer(cfg, tmp_path, progress=False)


# ---- data -------------------------------------------------------------------------------------------------


def test_clip_streams_are_functions_of_the_step():
    clips = SmoothClips(5, 16, 16, seed=3)
    a = ClipStream(clips, batch_size=2)
    assert a.batch(1).shape == (2, 3, 5, 16, 16)
    assert torch.equal(a.batch(1)[0], clips(2))
    assert not torch.equal(a.batch(0), a.batch(1))
    assert clips(0).abs().max() <= 1
    # map-style: every item once per epoch, shuffled from the seed
    items = [clips(i) for i in range(4)]
    m = ClipStream(items, batch_size=2, seed=0)
    epoch = torch.cat([m.batch(0), m.batch(1)])
    assert sorted(float(x.sum()) for x in epoch) == sorted(float(x.sum()) for x in items)
    # iterables: replayed on resume
    it = ClipStream(iter_source(clips), batch_size=1)
    first = [it.batch(s) for s in range(3)]
    state = it.state_dict()
    fourth = it.batch(3)
    again = ClipStream(iter_source(clips), batch_size=1)
    again.load_state_dict(state)
    assert torch.equal(again.batch(3), fourth) and not torch.equal(fourth, first[0])


class iter_source:  # noqa: N801 - a tiny iterable data source
    def __init__(self, clips):
        self.clips = clips

    def __iter__(self):
        return (self.clips(i) for i in range(10))


def test_bad_clips_are_rejected(tmp_path):
    def bright(i):
        return torch.full((3, 9, 32, 32), 2.0)

    trainer = TokenizerTrainer(tiny_config(), tmp_path, data=bright, progress=False)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        trainer.train_step()
    mixed = ClipStream(lambda i: torch.zeros(3, 5 if i else 9, 16, 16), batch_size=2)
    with pytest.raises(ValueError, match="one shape"):
        mixed.batch(0)
    with pytest.raises(ValueError, match="video tensor"):
        ClipStream(lambda i: "clip.mp4", batch_size=1).batch(0)


# ---- config ------------------------------------------------------------------------------------------------


def test_config_round_trips_and_rejects_bad_values():
    cfg = tiny_config("quantized")
    assert TokenizerTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TokenizerTrainConfig.from_dict({"vae": "tiny"}).vae.block_out_channels == (8, 16, 16, 16, 16)
    with pytest.raises(ValueError, match=r"unknown tokenizer training config key\(s\) \['loss\.l3_weight'\]"):
        TokenizerTrainConfig.from_dict({"loss": {"l3_weight": 1.0}})
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        TokenizerTrainConfig.from_dict({"data": {"frames": 8}})
    with pytest.raises(ValueError, match="stage"):
        TokenizerTrainConfig.from_dict({"stage": "discrete"})
    with pytest.raises(ValueError, match="unknown VAE preset"):
        TokenizerTrainConfig.from_dict({"vae": "huge"})
    with pytest.raises(ValueError, match="optim.lr must be a number, got 'fast'"):
        TokenizerTrainConfig.from_dict({"optim": {"lr": "fast"}})


# ---- CLI ---------------------------------------------------------------------------------------------------


def _recipe(tmp_path):
    cfg = tiny_config(steps=2)
    d = asdict(cfg)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(d))
    return path


def test_cli_runs_both_stages_and_writes_a_loadable_vae(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    vae_dir, tok_dir = tmp_path / "vae", tmp_path / "tok"
    base = ["train-tokenizer", "--config", str(recipe), "--no-progress"]
    assert main(base + ["--stage", "continuous", "--out", str(vae_dir)]) == 0
    assert main(base + ["--stage", "quantized", "--init", str(vae_dir), "--out", str(tok_dir)]) == 0
    assert "bit usage" in capsys.readouterr().out
    assert (
        main(base + ["--stage", "quantized", "--init", str(vae_dir), "--out", str(tok_dir), "--steps", "3", "--resume"])
        == 0
    )
    steps = [json.loads(x)["step"] for x in (tok_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]

    vae = VideoVAE.from_original_checkpoint(tok_dir)  # what users load: the run folder names its VAE folder
    assert vae.cfg == VAEConfig.from_dict(json.loads((tok_dir / "vae" / "config.json").read_text())) == TINY
    reference = VideoVAE(TINY)
    load_original_vae_state_dict(reference, read_original_vae_state(tok_dir / "vae" / "model.safetensors"))
    video = SmoothClips(9, 32, 32)(0)[None]
    with torch.inference_mode():
        out = vae.decode(vae.encode(video, sample=False))
    assert out.shape == video.shape and torch.isfinite(out).all()


def test_cli_errors(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    base = ["train-tokenizer", "--config", str(recipe), "--no-progress", "--out", str(tmp_path / "x")]
    assert main(base + ["--stage", "quantized"]) == 2
    assert "--from-scratch" in capsys.readouterr().err
    assert main(["train-tokenizer", "--config", str(tmp_path / "none.json"), "--out", str(tmp_path / "y")]) == 2
    assert "recipe file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"optim": {"learning_rate": 1.0}}))
    assert main(["train-tokenizer", "--config", str(bad), "--out", str(tmp_path / "z")]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(base + ["--from-scratch", "--set", "optim.learning_rate=1.0"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(base + ["--from-scratch", "--set", "optim.lr"]) == 2
    assert "key.path=value" in capsys.readouterr().err


def test_cli_set_overrides_any_recipe_value(tmp_path):
    recipe = _recipe(tmp_path)
    out = tmp_path / "run"
    sets = ["--set", "optim.lr=5e-4", "--set", "data.frames=5", "--set", 'freeze=["decoder"]', "--set", "steps=1"]
    assert main(["train-tokenizer", "--config", str(recipe), "--no-progress", "--out", str(out)] + sets) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["optim"]["lr"], cfg["data"]["frames"], cfg["freeze"], cfg["steps"]) == (5e-4, 5, ["decoder"], 1)
    assert cfg["data"]["height"] == 32  # the rest of the section is the recipe's


# ---- wired data sources: the procedural world and raw media from a manifest ------------------------------------


def test_world_source_trains(tmp_path):
    cfg = tiny_config(data=DataConfig(source="world", frames=9, height=32, width=32, num_clips=8))
    trainer = TokenizerTrainer(cfg, tmp_path, progress=False)
    batch = trainer.stream.batch(0)
    assert batch.shape == (1, 3, 9, 32, 32) and batch.min() >= -1 and batch.max() <= 1
    m = trainer.train_step()
    assert torch.isfinite(torch.tensor(m["loss"]))
    ranges = {"size_range": [0.2, 0.22], "travel_range": [0.3, 0.35]}
    pinned = TokenizerTrainConfig.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], **ranges}})
    spec = build_data_source(pinned.data).spec
    assert spec.size_range == (0.2, 0.22) and spec.travel_range == (0.3, 0.35)
    assert build_data_source(cfg.data).spec.size_range == WorldSpec().size_range


def test_media_manifest_source_through_the_cli(tmp_path):
    from infinitystar.media import write_video

    lines = []
    for i in range(2):
        frames = (SmoothClips(25, 32, 48, seed=i)(0).permute(1, 2, 3, 0) + 1) * 127.5  # [T, H, W, 3]
        write_video(tmp_path / f"clip{i}.mp4", frames.round().clamp(0, 255).to(torch.uint8), fps=16)
        lines.append(json.dumps({"video_path": f"clip{i}.mp4", "tarsier2_caption": f"clip {i}"}))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    recipe = _recipe(tmp_path)
    out = tmp_path / "run"
    args = ["train-tokenizer", "--config", str(recipe), "--stage", "continuous", "--no-progress"]
    assert main(args + ["--out", str(out), "--data", str(manifest)]) == 0  # fixed 32x32 crops, 9 frames
    record = json.loads((out / "config.json").read_text())["config"]
    assert record["data"]["source"] == "media" and record["data"]["manifest"] == str(manifest)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    # the stream resumes at the same batch
    cfg = TokenizerTrainConfig.from_dict(record)
    a = TokenizerTrainer(replace(cfg, vae=TINY), tmp_path / "a", progress=False).stream
    first = a.batch(0)
    assert first.shape == (1, 3, 9, 32, 32)
    state = a.state_dict()
    second = a.batch(1)
    b = TokenizerTrainer(replace(cfg, vae=TINY), tmp_path / "b", progress=False).stream
    b.load_state_dict(state)
    assert torch.equal(b.batch(1), second)


def test_l2_term_is_added_to_the_reconstruction_loss(tmp_path):
    base = tiny_config(steps=1)
    plain = TokenizerTrainer(base, tmp_path / "a", from_scratch=True, progress=False).train_step()
    cfg = replace(base, loss=replace(base.loss, l1_weight=0.0, l2_weight=2.0))
    m = TokenizerTrainer(cfg, tmp_path / "b", from_scratch=True, progress=False).train_step()
    assert "l2" not in plain and m["l2"] > 0
    assert m["l1"] == pytest.approx(plain["l1"])  # same data, same initial weights
    assert m["loss"] == pytest.approx(2.0 * m["l2"] + cfg.loss.kl_weight * m["kl"], rel=1e-5)
