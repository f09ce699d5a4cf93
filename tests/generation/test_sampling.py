import math

import pytest
import torch

from infinitystar.generation.sampling import Guidance, apg_guidance, apply_temperature, cfg_guidance, guide, sample_bits


def test_temperature_multiplies_by_reciprocal():
    x = torch.randn(2, 5, 8)
    assert torch.equal(apply_temperature(x, 0.4), x * (1 / 0.4))
    with pytest.raises(ValueError, match="> 0"):
        apply_temperature(x, 0.0)


def test_cfg_formula():
    c, u = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    assert torch.allclose(cfg_guidance(c, u, 3.0), 3 * c - 2 * u)
    out = guide(torch.cat([c, u]), Guidance("cfg", 3.0))
    assert torch.allclose(out, 3 * c - 2 * u)


def test_apg_keeps_only_the_orthogonal_part_and_clips_its_rms():
    torch.manual_seed(0)
    c, u = torch.randn(1, 6, 8), torch.randn(1, 6, 8)
    g = 5.0
    # no threshold, eta 0: the update is orthogonal to cond
    out = apg_guidance(c, u, g, norm_threshold=0.0, eta=0.0)
    update = (out - c) / (g - 1)
    assert abs((update * c).sum().item()) < 1e-4
    # eta 1 and no threshold: plain CFG
    assert torch.allclose(apg_guidance(c, u, g, 0.0, 1.0), cfg_guidance(c, u, g), atol=1e-5)
    # the threshold bounds the RMS of the difference
    out = apg_guidance(c, u, g, norm_threshold=0.05, eta=1.0)
    rms = ((out - c) / (g - 1)).norm() / math.sqrt(c.numel())
    assert rms.item() == pytest.approx(0.05, rel=1e-5)


def test_no_guidance_returns_the_conditional_row():
    x = torch.randn(2, 3, 4)
    assert torch.equal(guide(x, Guidance("apg", 1.0)), x[:1])
    assert torch.equal(guide(x, Guidance("none", 5.0)), x[:1])
    assert not Guidance("apg", 1.0).active
    with pytest.raises(ValueError, match="accepted: apg, cfg, none"):
        Guidance("pag", 2.0)


def test_multinomial_sampler_reproduces_torch_multinomial_draws():
    logits = torch.randn(1, 10, 32)
    bits = sample_bits(logits, torch.Generator().manual_seed(41))
    p = logits.reshape(1, 160, 2).softmax(-1).view(-1, 2)
    ref = torch.multinomial(p, 1, True, generator=torch.Generator().manual_seed(41)).view(1, 10, 16)
    assert torch.equal(bits, ref)
    # the draw count depends only on the shape: the generator stays in step whatever p is
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    sample_bits(logits, g1)
    sample_bits(torch.zeros_like(logits), g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


@pytest.mark.parametrize("sampler", ["multinomial", "bernoulli"])
def test_samplers_follow_the_bit_probabilities(sampler):
    n = 20000
    l0 = torch.zeros(1, n, 1)
    l1 = torch.full((1, n, 1), math.log(3.0))  # p(bit = 1) = 0.75
    bits = sample_bits(torch.cat([l0, l1], -1), torch.Generator().manual_seed(0), sampler)
    assert bits.shape == (1, n, 1)
    assert bits.float().mean().item() == pytest.approx(0.75, abs=0.015)


def test_unknown_sampler():
    with pytest.raises(ValueError, match="accepted: multinomial, bernoulli"):
        sample_bits(torch.zeros(1, 1, 2), None, "gumbel")
