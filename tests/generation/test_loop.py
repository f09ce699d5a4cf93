"""The generation loop on a tiny random model: every mode is the same loop with other inputs."""

import pytest
import torch

from infinitystar.generation.loop import SamplingOptions, generate_latent
from infinitystar.generation.sampling import Guidance
from infinitystar.models.config import get_preset
from infinitystar.models.quantizer import decode_bits, encode_pyramid
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import schedule_from_scales


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = InfinityTransformer(get_preset("tiny").transformer).eval()
    with torch.no_grad():  # larger random weights than the training init, so that outputs depend on inputs
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0, p.shape[1] ** -0.5)
    return m


def two_clip_schedule():
    return schedule_from_scales(
        [(1, 1, 1), (1, 2, 2), (1, 4, 4)] + [(2, 1, 1), (2, 2, 2), (2, 4, 4)] * 2,
        3,
        image_repetition=[2, 1, 1],
        video_repetition=[2, 1, 1],
        detail_scale_min_tokens=16,
    )


def text(n=5):
    return torch.randn(n, 64, generator=torch.Generator().manual_seed(7))


OPTS = SamplingOptions(guidance=Guidance("apg", 3.0), tau_image=1.0, tau_video=0.5)


def gen(model, sched, seed, **kw):
    return generate_latent(model, sched, text(), options=OPTS, generator=torch.Generator().manual_seed(seed), **kw)


def test_text_to_video_over_several_clips(model):
    sched = two_clip_schedule()
    out = gen(model, sched, 0)
    assert out.latent.shape == (1, 64, 5, 4, 4)
    assert len(out.bits) == sched.num_steps
    # the latent is exactly what the bits decode to
    assert torch.equal(decode_bits(out.bits, sched), out.latent)
    # same seed -> same video; another seed -> another video
    assert torch.equal(gen(model, sched, 0).latent, out.latent)
    assert not torch.equal(gen(model, sched, 1).latent, out.latent)


def test_text_to_image_is_the_image_pyramid(model):
    sched = two_clip_schedule().truncate_clips(1)
    out = gen(model, sched, 0)
    assert out.latent.shape == (1, 64, 1, 4, 4)
    # the image steps of a video generation are the image generation (same seed, same draws)
    video = gen(model, two_clip_schedule(), 0)
    assert all(torch.equal(a, b) for a, b in zip(out.bits, video.bits))


@pytest.mark.parametrize("exact", [True, False])
def test_teacher_forcing_conditions_on_a_reference(model, exact):
    sched = two_clip_schedule()
    reference = torch.randn(1, 64, 5, 4, 4, generator=torch.Generator().manual_seed(3))
    tokens = encode_pyramid(reference, sched)
    n_forced = sched.clip_scales(1)[-1].last_step + 1  # image + first clip (continuation)
    records = []
    out = gen(model, sched, 0, forced_bits=tokens.bits[:n_forced], exact_forcing=exact, on_step=records.append)
    assert all(torch.equal(a, b) for a, b in zip(out.bits[:n_forced], tokens.bits[:n_forced]))
    # the forced clips are the reference's quantised latent
    assert torch.equal(out.latent[:, :, :3], tokens.latent[:, :, :3])
    computed = [r.step.index for r in records if r.logits is not None]
    if exact:
        assert computed == list(range(sched.num_steps))
    else:
        # of the forced steps, only the last repetitions of the scales a later clip attends to
        # are computed (the image's last scale feeds clip 1, whose last scale feeds clip 2)
        referenced = [sc.last_step for sc in sched.scales if sched.last_user(sc.index) >= 0]
        assert computed == referenced + list(range(n_forced, sched.num_steps))


def test_fast_forcing_gives_the_same_logits_after_the_forced_part(model):
    sched = two_clip_schedule()
    reference = torch.randn(1, 64, 5, 4, 4, generator=torch.Generator().manual_seed(3))
    forced = encode_pyramid(reference, sched).bits[:4]  # image pyramid
    slow, fast = [], []
    gen(model, sched, 0, forced_bits=forced, exact_forcing=True, on_step=slow.append)
    gen(model, sched, 0, forced_bits=forced, exact_forcing=False, on_step=fast.append)
    # the first free step sees the same inputs and the same cache either way
    assert torch.allclose(slow[4].logits, fast[4].logits, atol=1e-6)


def test_guidance_off_uses_one_row_and_a_negative_prompt_changes_the_output(model):
    sched = two_clip_schedule().truncate_clips(1)
    rows = []
    opts = SamplingOptions(guidance=Guidance("none", 1.0))
    generate_latent(model, sched, text(), options=opts, generator=torch.Generator().manual_seed(0), on_step=rows.append)
    assert rows[0].logits.shape[0] == 1
    base = gen(model, sched, 0)
    neg = gen(model, sched, 0, negative_text=torch.randn(3, 64))
    assert not torch.equal(base.latent, neg.latent)


def test_bad_forcing_is_explained(model):
    sched = two_clip_schedule()
    with pytest.raises(ValueError, match="shape"):
        gen(model, sched, 0, forced_bits=[torch.zeros(1, 1, 1, 1, 64, dtype=torch.long)])
    with pytest.raises(ValueError, match="forced steps"):
        gen(model, sched, 0, forced_bits=[None] * (sched.num_steps + 1))
    with pytest.raises(ValueError, match="one value per scale"):
        generate_latent(model, sched, text(), options=SamplingOptions(temperatures=(1.0,)))
