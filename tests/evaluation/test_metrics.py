"""Offline video metrics: pixel metrics on crafted videos, Fréchet math, CLIP score and FVD plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinitystar.evaluation import metrics
from infinitystar.evaluation.extractors import CLIPScorer, I3DFeatureExtractor, clip_score, fvd
from tests.helpers.curate import make_tiny_clip, moving, static


def test_flicker_of_a_constant_video_is_one():
    assert metrics.temporal_flickering(static(5)) == 1.0
    assert metrics.mean_frame_difference(static(5)) == 0.0


def test_flicker_matches_vbench_formula_on_alternating_frames():
    frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    frames[1::2] = 51  # every pair differs by 51 everywhere
    assert metrics.mean_frame_difference(frames) == pytest.approx(51.0)
    assert metrics.temporal_flickering(frames) == pytest.approx((255 - 51) / 255)
    frames[:, :4] = 0  # half the pixels now never change
    assert metrics.temporal_flickering(frames) == pytest.approx((255 - 25.5) / 255)


def test_flicker_accepts_torch_tensors_and_orders_videos_by_change():
    calm, busy = moving(6, speed=1), moving(6, speed=6)
    assert metrics.temporal_flickering(torch.from_numpy(calm)) == metrics.temporal_flickering(calm)
    assert 0 < metrics.temporal_flickering(busy) < metrics.temporal_flickering(calm) < 1


def test_motion_smoothness_proxy():
    ramp = np.stack([np.full((4, 4, 3), 10 * t, dtype=np.uint8) for t in range(7)])  # linear in time
    assert metrics.motion_smoothness_proxy(ramp) == 1.0
    jerky = ramp.copy()
    jerky[1::2] = 0  # odd frames far from the mean of their neighbours
    assert metrics.motion_smoothness_proxy(jerky) < metrics.motion_smoothness_proxy(ramp)
    expected = (255 - np.mean([abs(0 - (10 * (t - 1) + 10 * (t + 1)) / 2) for t in (1, 3, 5)])) / 255
    assert metrics.motion_smoothness_proxy(jerky) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((4, 8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 3, 8, 8), dtype=np.uint8), r"\[T, H, W, 3\]"),
        (np.zeros((1, 8, 8, 3), dtype=np.uint8), "at least 2 frames"),
        ([[1, 2, 3]], "uint8 array"),
    ],
)
def test_pixel_metrics_reject_bad_input(frames, message):
    with pytest.raises(ValueError, match=message):
        metrics.temporal_flickering(frames)


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------


def _random_cov(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_zero_for_identical_and_mean_shift_only():
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(6), _random_cov(rng, 6)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    shift = rng.standard_normal(6)
    assert metrics.frechet_distance(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-7)


def test_frechet_distance_closed_form_for_diagonal_covariances():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum()) + 3.0  # + |(1,1,1)|^2
    got = metrics.frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_eigenvalues_of_the_covariance_product():
    rng = np.random.default_rng(1)
    s1, s2 = _random_cov(rng, 8), _random_cov(rng, 8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    # independent route: tr sqrt(s1 s2) = sum of square roots of the (real, positive) eigenvalues of s1 s2
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_from_features():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((200, 4))
    fake = real + np.array([2.0, 0, 0, 0])  # same covariance, mean moved by 2: FD = 4 exactly
    assert metrics.frechet_distance_from_features(real, real) == pytest.approx(0.0, abs=1e-8)
    assert metrics.frechet_distance_from_features(real, fake) == pytest.approx(4.0, rel=1e-8)
    scaled = (real - real.mean(0)) * 3 + real.mean(0)  # covariance x9: FD = tr(S) + 9 tr(S) - 2 * 3 tr(S)
    assert metrics.frechet_distance_from_features(real, scaled) == pytest.approx(
        4 * np.trace(np.cov(real, rowvar=False)), rel=1e-8
    )
    with pytest.raises(ValueError, match="feature sizes differ"):
        metrics.frechet_distance_from_features(real, fake[:, :3])
    with pytest.raises(ValueError, match="at least 2"):
        metrics.frechet_distance_from_features(real[:1], fake)
    bad = real.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance_from_features(bad, fake)


# --------------------------------------------------------------------------------------------
# FVD plumbing with a tiny TorchScript network
# --------------------------------------------------------------------------------------------


class TinyI3D(torch.nn.Module):
    """Stands in for the I3D: same call convention as the StyleGAN-V TorchScript detector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True):
        # x [B, 3, T, H, W] -> features [B, 6]
        return torch.relu(self.conv(x)).mean(dim=(2, 3, 4))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_fvd_with_a_torchscript_extractor(tmp_path):
    torch.manual_seed(0)
    net = TinyI3D()
    path = tmp_path / "i3d_tiny.pt"
    torch.jit.script(net).save(str(path))
    extractor = I3DFeatureExtractor(path, resolution=16, batch_size=3)
    real = [moving(4, 24, 32, seed=s) for s in range(6)]
    fake = [static(4, 24, 32, seed=s) // 3 for s in range(6)]
    feats = extractor(real)
    assert feats.shape == (6, 6) and np.isfinite(feats).all()
    assert fvd(real, real, extractor) == pytest.approx(0.0, abs=1e-6)
    value = fvd(real, fake, extractor)
    assert value > 0
    assert value == pytest.approx(metrics.frechet_distance_from_features(feats, extractor(fake)))
    # the same network through the state-dict route gives the same features
    state_path = tmp_path / "i3d_tiny_state.pt"
    torch.save(net.state_dict(), state_path)
    plain = I3DFeatureExtractor(TinyI3D(), weights=state_path, resolution=16)
    np.testing.assert_allclose(plain(real), feats, rtol=1e-5, atol=1e-6)


def test_fvd_preprocessing_and_errors(tmp_path):
    extractor = I3DFeatureExtractor(TinyI3D(), resolution=16)
    x = extractor.preprocess(moving(3, 24, 40))
    assert tuple(x.shape) == (3, 3, 16, 16)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    with pytest.raises(ValueError, match="same number of frames"):
        extractor([moving(4), moving(5)])
    with pytest.raises(ValueError, match="not found"):
        I3DFeatureExtractor(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="TorchScript"):
        I3DFeatureExtractor(tmp_path / "junk.pt")


# --------------------------------------------------------------------------------------------
# CLIP score with a tiny random CLIP
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("transformers")
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_score_matches_the_definition(tiny_clip):
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    scorer = CLIPScorer(tiny_clip)
    frames = moving(3, 32, 32, seed=4)
    text = "a red cat runs on the sea"
    got = clip_score(frames, text, scorer)
    assert 0.0 <= got <= 100.0
    assert clip_score(frames, text, scorer) == got  # deterministic

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    tok, proc = AutoTokenizer.from_pretrained(tiny_clip), AutoImageProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        out = model(
            **tok([text], return_tensors="pt"),
            pixel_values=proc(images=list(frames), return_tensors="pt")["pixel_values"],
        )
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)  # [3]
    assert got == pytest.approx(float((100 * cos.clamp(min=0)).mean()), rel=1e-5, abs=1e-4)


def test_clip_score_errors(tiny_clip, tmp_path):
    scorer = CLIPScorer(tiny_clip)
    with pytest.raises(ValueError, match="non-empty text"):
        scorer.score(static(1, 32, 32), "   ")
    with pytest.raises(ValueError, match="config.json"):
        CLIPScorer(tmp_path / "nothing")
