import pytest
import torch

from infinitystar.models.quantizer import (
    SelfCorrection,
    bits_to_codes,
    decode_bits,
    encode_pyramid,
    quantize_bits,
    resize_latent,
)
from infinitystar.schedule import schedule_from_scales


def small_schedule(reps=(2, 1, 1)):
    return schedule_from_scales(
        [(1, 1, 1), (1, 2, 2), (1, 4, 4), (3, 1, 1), (3, 2, 2), (3, 4, 4)],
        3,
        image_repetition=list(reps),
        video_repetition=list(reps),
        detail_scale_min_tokens=16,
    )


def test_codes_lie_on_the_sphere_and_round_trip():
    bits = torch.randint(0, 2, (2, 3, 4, 5, 16))
    codes = bits_to_codes(bits)
    assert codes.shape == (2, 16, 3, 4, 5)
    assert set(codes.unique().tolist()) <= {-0.25, 0.25}
    assert torch.allclose(codes.norm(dim=1), torch.ones(2, 3, 4, 5))
    assert torch.equal(quantize_bits(codes), bits)


def test_zero_maps_to_bit_zero():
    x = torch.zeros(1, 4, 1, 1, 1)
    assert quantize_bits(x).sum() == 0


def test_channel_resampling_is_group_mean_and_interpolation():
    x = torch.randn(1, 64, 2, 4, 4)
    down = resize_latent(x, 16, (4, 4), "area")
    assert torch.allclose(down, x.view(1, 16, 4, 2, 4, 4).mean(2), atol=1e-6)
    up = resize_latent(down, 64, (8, 8), "trilinear")
    assert up.shape == (1, 64, 2, 8, 8)
    # time is never resampled: frames are processed independently
    assert torch.allclose(
        resize_latent(x[:, :, :1], 16, (2, 2), "area"), resize_latent(x, 16, (2, 2), "area")[:, :, :1]
    )


def test_encode_then_decode_rebuilds_the_latent():
    sched = small_schedule()
    latent = torch.randn(1, 64, 4, 4, 4)
    tokens = encode_pyramid(latent, sched)
    assert len(tokens.bits) == len(tokens.inputs) == sched.num_steps == 8
    assert tokens.inputs[0].abs().sum() == 0  # every clip starts from zeros
    assert tokens.inputs[4].abs().sum() == 0
    assert torch.equal(decode_bits(tokens.bits, sched), tokens.latent)
    # quantising the residual over more steps brings the sum closer to the target
    assert (tokens.latent - latent).norm() < latent.norm()
    assert tokens.bits[1].shape == (1, 1, 1, 1, 16) and tokens.bits[-1].shape == (1, 3, 4, 4, 64)


def test_self_correction_flips_inputs_but_keeps_labels_clean():
    sched = small_schedule()
    latent = torch.randn(1, 64, 4, 4, 4)
    clean = encode_pyramid(latent, sched)
    same = encode_pyramid(
        latent, sched, self_correction=SelfCorrection(0.0), generator=torch.Generator().manual_seed(0)
    )
    assert all(torch.equal(a, b) for a, b in zip(clean.bits, same.bits))
    a = encode_pyramid(latent, sched, self_correction=SelfCorrection(1.0), generator=torch.Generator().manual_seed(3))
    b = encode_pyramid(latent, sched, self_correction=SelfCorrection(1.0), generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a.bits, b.bits))  # seeded: reproducible
    assert not all(torch.equal(x, y) for x, y in zip(a.inputs, clean.inputs))  # corrupted sums feed later inputs
    # the first step's label does not depend on any flip
    assert torch.equal(a.bits[0], clean.bits[0])


def test_bad_latents_are_rejected():
    sched = small_schedule()
    with pytest.raises(ValueError, match="does not fit the schedule"):
        encode_pyramid(torch.randn(1, 64, 3, 4, 4), sched)
    with pytest.raises(ValueError, match=r"\[B, 64, t, h, w\]"):
        encode_pyramid(torch.randn(1, 16, 4, 4, 4), sched)
    bad = torch.randn(1, 64, 4, 4, 4)
    bad[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encode_pyramid(bad, sched)
    with pytest.raises(ValueError, match="all 8 steps"):
        decode_bits([], sched)
