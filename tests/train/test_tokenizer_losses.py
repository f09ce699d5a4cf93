"""Tokenizer training pieces: the STE pyramid quantizer, BSQ entropy terms, stochastic depth,
the schedule rule, KL, perceptual distance, discriminator and GAN helpers."""

from __future__ import annotations

import math

import pytest
import torch

from infinitystar.checkpoints import CheckpointError
from infinitystar.models.config import VAEConfig
from infinitystar.models.quantizer import RunningSum, encode_pyramid
from infinitystar.models.vae.model import VideoVAE
from infinitystar.schedule import build_schedule, schedule_from_scales
from infinitystar.train.tokenizer.discriminator import DiscriminatorConfig, PatchDiscriminator
from infinitystar.train.tokenizer.losses import adaptive_gan_weight, hinge_d_loss, hinge_g_loss, kl_divergence
from infinitystar.train.tokenizer.perceptual import PerceptualLoss, VGG16Features
from infinitystar.train.tokenizer.pyramid import (
    BSQLossConfig,
    bsq_entropy,
    draw_quantizer_depth,
    quantize_pyramid_ste,
    tokenizer_schedule,
)

TINY = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)


def two_clip_schedule(reps=(2, 1, 1)):
    """Image pyramid + one 3-frame clip; 16-bit (1x1, 2x2) and 64-bit (4x4) scales."""
    return schedule_from_scales(
        [(1, 1, 1), (1, 2, 2), (1, 4, 4), (3, 1, 1), (3, 2, 2), (3, 4, 4)],
        3,
        image_repetition=list(reps),
        video_repetition=list(reps),
        detail_scale_min_tokens=16,
    )


def _latent(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- the quantizer in the loop -------------------------------------------------------------------


@pytest.mark.parametrize("reps", [(1, 1, 1), (2, 1, 3)])
def test_ste_forward_equals_encode_pyramid(reps):
    sched = two_clip_schedule(reps)
    latent = _latent((2, 64, 4, 4, 4)) * 1.7
    ref = encode_pyramid(latent, sched)
    out = quantize_pyramid_ste(latent.clone().requires_grad_(True), sched)
    assert torch.equal(out.latent.detach(), ref.latent)  # bit for bit, not just close
    assert len(out.bits) == sched.num_steps
    assert all(torch.equal(a, b) for a, b in zip(out.bits, ref.bits))
    assert out.latent.requires_grad


def test_ste_gradient_is_identity_through_the_sign():
    """d(quantised latent)/d(latent) is non-zero although sign() has zero gradient everywhere."""
    sched = two_clip_schedule()
    latent = _latent((1, 64, 4, 4, 4)).requires_grad_(True)
    out = quantize_pyramid_ste(latent, sched)
    w = _latent(out.latent.shape, seed=5)
    (out.latent * w).sum().backward()
    assert torch.isfinite(latent.grad).all()
    assert latent.grad.abs().sum() > 0
    # every clip's frames receive gradient
    assert latent.grad[:, :, 0].abs().sum() > 0 and latent.grad[:, :, 1:].abs().sum() > 0


def test_gradients_reach_the_encoder_through_the_quantizer():
    torch.manual_seed(0)
    vae = VideoVAE(TINY).train()
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mean, std = vae.encode_moments(video)
    z = vae.features_from_moments(mean, std, None)  # [1, 64, 2, 2, 2]
    sched = tokenizer_schedule(*z.shape[2:], detail_scale_min_tokens=4)
    out = quantize_pyramid_ste(z, sched)
    recon = vae.decode(out.latent)
    ((recon - video).abs().mean() + out.loss).backward()
    for name in ("encoder.conv_in.weight", "encoder.conv_out.weight", "proj_down.weight", "decoder.conv_in.weight"):
        grad = dict(vae.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert vae.latent_scales.grad[0] != 0  # the learned scale is trained too


def test_entropy_terms_uniform_bits_give_max_codebook_entropy():
    d, n = 16, 512
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (1, d, 1, n, 1), generator=g).float() * 2 - 1  # balanced random bits
    z = signs / math.sqrt(d)  # confident tokens on the sphere
    sample, codebook = bsq_entropy(z, inv_temperature=100.0)
    assert codebook.item() == pytest.approx(d * math.log(2), rel=0.01)  # every bit used half the time
    assert sample.item() < 1e-3  # each token is certain of its bits
    # all tokens equal: no codebook usage
    _, codebook_const = bsq_entropy(torch.ones_like(z) / math.sqrt(d), 100.0)
    assert codebook_const.item() < 1e-3
    # uncertain tokens (z = 0): maximal per-sample entropy
    sample_zero, _ = bsq_entropy(torch.zeros_like(z), 100.0)
    assert sample_zero.item() == pytest.approx(d * math.log(2), rel=1e-5)


def test_entropy_penalty_gradient_spreads_the_bits():
    """Minimising the entropy penalty from a collapsed code (every bit on one side) raises usage."""
    d = 16
    g = torch.Generator().manual_seed(0)
    z = (0.2 + 0.05 * torch.randn(1, d, 1, 64, 1, generator=g)).requires_grad_(True)
    cfg = BSQLossConfig(inv_temperature=10.0)
    opt = torch.optim.SGD([z], lr=1.0)
    _, start = bsq_entropy(z, cfg.inv_temperature)
    for _ in range(50):
        zn = torch.nn.functional.normalize(z, dim=1)
        s, c = bsq_entropy(zn, cfg.inv_temperature)
        opt.zero_grad()
        (cfg.sample_gamma * s - cfg.codebook_gamma * c).backward()
        opt.step()
    _, end = bsq_entropy(torch.nn.functional.normalize(z, dim=1), cfg.inv_temperature)
    assert end.item() > start.item() + 1.0


def test_quantizer_aux_loss_and_bit_usage_are_reported():
    sched = two_clip_schedule()
    out = quantize_pyramid_ste(_latent((2, 64, 4, 4, 4)), sched)
    assert torch.isfinite(out.loss)
    assert 0.0 < out.bit_usage <= 1.0
    assert out.commit > 0 and out.sample_entropy >= 0 and out.codebook_entropy > 0
    zero = quantize_pyramid_ste(_latent((2, 64, 4, 4, 4)), sched, config=BSQLossConfig(0.0, 0.0))
    assert zero.loss.item() == 0.0


# ---- stochastic quantizer depth --------------------------------------------------------------------


def test_quantizer_depth_drops_a_suffix_of_detail_scales():
    sched = tokenizer_schedule(5, 4, 4, detail_scale_min_tokens=4)  # per clip: 1x1 semantic; 2x2, 3x3, 4x4 detail
    semantic_steps = [s.index for s in sched.steps if sched.scales[s.scale].semantic]
    assert draw_quantizer_depth(sched, 3, 0.0, torch.Generator().manual_seed(0)).all()
    keep = draw_quantizer_depth(sched, 64, 1.0, torch.Generator().manual_seed(0))
    assert keep.shape == (64, sched.num_steps)
    assert keep[:, semantic_steps].all()  # semantic scales are never skipped
    assert (~keep).any(dim=1).all()  # prob 1: every sample drops at least one step
    for c in range(sched.num_clips):
        detail = [
            st.index for st in sched.steps if not sched.scales[st.scale].semantic and sched.scales[st.scale].clip == c
        ]
        for row in keep[:, detail].tolist():  # kept steps come first, dropped ones form a suffix
            assert row == sorted(row, reverse=True)
    assert len({tuple(r) for r in keep.tolist()}) > 1  # the suffix length varies
    a = draw_quantizer_depth(sched, 8, 0.5, torch.Generator().manual_seed(3))
    b = draw_quantizer_depth(sched, 8, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_skipped_steps_add_nothing_to_the_sum():
    sched = two_clip_schedule((1, 1, 1))
    latent = _latent((2, 64, 4, 4, 4))
    keep = torch.ones(2, sched.num_steps, dtype=torch.bool)
    keep[1, [2, 5]] = False  # sample 1 drops the detail scale of both clips
    out = quantize_pyramid_ste(latent, sched, keep=keep)
    full = encode_pyramid(latent, sched)
    assert torch.equal(out.latent[0], full.latent[0])  # sample 0 is untouched
    sums = []
    for clip in range(sched.num_clips):  # rebuild sample 1 from its kept steps only
        rs = RunningSum(sched, clip)
        for st in sched.steps:
            if sched.scales[st.scale].clip == clip and keep[1, st.index]:
                rs.add_bits(out.bits[st.index][1:2])
        sums.append(rs.value)
    torch.testing.assert_close(out.latent[1:2], torch.cat(sums, dim=2), rtol=0, atol=1e-6)
    assert not torch.equal(out.latent[1], full.latent[1])


# ---- schedule rule ---------------------------------------------------------------------------------


def test_tokenizer_schedule_rule():
    released = tokenizer_schedule(21, 30, 53)  # the 480p 16:9 full size: the released schedule
    assert released == build_schedule(9 / 16, "480p", 21)
    small = tokenizer_schedule(5, 2, 2, detail_scale_min_tokens=4)
    assert [s.shape for s in small.scales] == [(1, 1, 1), (1, 2, 2), (4, 1, 1), (4, 2, 2)]
    assert [s.semantic for s in small.scales] == [True, False, True, False]
    wide = tokenizer_schedule(1, 6, 10, repetitions=2)
    assert wide.scales[-1].shape == (1, 6, 10) and all(s.repetitions == 2 for s in wide.scales)
    assert all(a.shape[1] <= b.shape[1] and a.shape[2] <= b.shape[2] for a, b in zip(wide.scales, wide.scales[1:]))
    assert tokenizer_schedule(41, 2, 2).num_clips == 3  # 1 + 20 + 20 latent frames
    with pytest.raises(ValueError, match="positive"):
        tokenizer_schedule(0, 2, 2)


def test_wrong_latent_shape_is_rejected():
    with pytest.raises(ValueError, match=r"\[B, 64, 4, 4, 4\]"):
        quantize_pyramid_ste(torch.randn(1, 64, 3, 4, 4), two_clip_schedule())


# ---- KL, GAN, discriminator ------------------------------------------------------------------------


def test_kl_divergence():
    assert kl_divergence(torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(0.0, abs=1e-7)
    mean, std = torch.full((4,), 0.5), torch.full((4,), 2.0)
    expected = 0.5 * (0.25 + 4.0 - 1.0 - math.log(4.0))
    assert kl_divergence(mean, std).item() == pytest.approx(expected, rel=1e-6)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5] -> 0.25; relu(1 + fake) = [0, 1] -> 0.5; halved sum
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_discriminator_shapes_and_gradients(kind):
    disc = PatchDiscriminator(DiscriminatorConfig(kind=kind, channels=8, layers=2), seed=0)
    x = (torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    logits = disc(x)
    assert logits.shape == ((2, 1, 5, 8, 8) if kind == "3d" else (10, 1, 8, 8))
    hinge_g_loss(logits).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    again = PatchDiscriminator(DiscriminatorConfig(kind=kind, channels=8, layers=2), seed=0)
    assert all(torch.equal(a, b) for a, b in zip(disc.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="multiples of 4"):
        disc(torch.zeros(1, 3, 1, 30, 32))
    with pytest.raises(ValueError, match="kind"):
        DiscriminatorConfig(kind="4d")


def test_adaptive_gan_weight_balances_gradients():
    w = torch.randn(4, 4, requires_grad=True)
    x = torch.randn(8, 4)
    rec = (x @ w).abs().mean()
    g = -(x @ w).mean() * 1000.0  # a much larger adversarial gradient gets a small weight
    lam = adaptive_gan_weight(rec, g, w)
    assert 0 < lam.item() < 0.1 and not lam.requires_grad
    (g_grad,) = torch.autograd.grad(g, w, retain_graph=True)
    (r_grad,) = torch.autograd.grad(rec, w)
    assert (lam * g_grad).norm().item() == pytest.approx(r_grad.norm().item(), rel=1e-3)


# ---- perceptual ------------------------------------------------------------------------------------


def _random_lpips_files(tmp_path):
    """Random VGG16 features + LPIPS heads saved the way users' local files are laid out."""
    torch.manual_seed(0)
    vgg = VGG16Features()
    state = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # a full classification checkpoint has these
    torch.save(state, tmp_path / "vgg16.pth")
    g = torch.Generator().manual_seed(1)
    heads = {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate((64, 128, 256, 512, 512))
    }
    torch.save(heads, tmp_path / "lpips_heads.pth")
    return tmp_path / "vgg16.pth", tmp_path / "lpips_heads.pth"


def test_perceptual_loss_from_local_files(tmp_path):
    vgg_path, heads_path = _random_lpips_files(tmp_path)
    loss = PerceptualLoss.from_files(vgg_path, heads_path)
    assert not any(p.requires_grad for p in loss.parameters())
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1).requires_grad_(True)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    d = loss(y, x)
    assert d.item() > 0
    d.backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    # the heads weight the stages: other heads, other distance
    plain = PerceptualLoss.from_files(vgg_path)
    assert plain(y.detach(), x).item() != pytest.approx(d.item())
    # a random subset of frames
    sub = loss(y.detach(), x, frames=2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(sub)


def test_perceptual_loss_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        PerceptualLoss.from_files(tmp_path / "missing.pth")
    vgg_path, _ = _random_lpips_files(tmp_path)
    state = torch.load(vgg_path, weights_only=True)
    del state["features.28.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"features\.28\.weight"):
        PerceptualLoss.from_files(tmp_path / "partial.pth")
    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "heads.pth")
    with pytest.raises(CheckpointError, match="lin1"):
        PerceptualLoss.from_files(vgg_path, tmp_path / "heads.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        PerceptualLoss.from_files(tmp_path / "junk.pth")
