"""Offline video metrics: pure functions over uint8 frames ``[T, H, W, 3]`` (RGB), and the Fréchet distance.

No metric here needs a model or downloads anything:

- ``temporal_flickering`` (VBench's no-model dimension): ``(255 - mean |frame[t+1] - frame[t]|) / 255``, 1.0 for
  a constant video. VBench scores it on static-scene videos only; here it is computed on whatever it is given.
- ``motion_smoothness_proxy``: VBench's motion-smoothness protocol (drop the odd frames, re-create them from their
  even neighbours, score ``(255 - mean error) / 255``) with a trivial interpolator (the mean of the two
  neighbours) instead of the AMT-S network. Cheap and monotone in how linear the motion is; its values are not
  comparable with VBench's.
- ``psnr``: the project's one PSNR.
- ``frechet_distance`` / ``frechet_distance_from_features``: the Fréchet distance between two Gaussians fitted to
  features (FID / FVD math).

The metrics that run a network (FVD with a local I3D, CLIP score with a local CLIP) are in
:mod:`infinitystar.evaluation.extractors`. torch is imported only when a torch tensor is given, so this module imports
with numpy alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "as_frames",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "mean_frame_difference",
    "motion_smoothness_proxy",
    "psnr",
    "temporal_flickering",
]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def as_frames(frames: Any, *, min_frames: int = 1, name: str = "frames") -> np.ndarray:
    """Check and return ``frames`` as a uint8 numpy array ``[T, H, W, 3]``.

    Accepts a numpy array or a CPU/GPU torch tensor of that layout. Anything else (float data, a channel-first
    layout, too few frames) is an error that says what is accepted: metrics on silently converted data are wrong
    in ways nobody notices.
    """
    if type(frames).__module__.startswith("torch"):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"{name} must be a uint8 array [T, H, W, 3]; got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (0..255) [T, H, W, 3]; got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [T, H, W, 3] (RGB, channels last); got {tuple(frames.shape)}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} frames; got {frames.shape[0]}")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"{name} has an empty frame size {tuple(frames.shape[1:3])}")
    return frames


# --------------------------------------------------------------------------------------------
# Pixel metrics
# --------------------------------------------------------------------------------------------


def psnr(a: Any, b: Any, *, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two arrays or tensors of the same shape: ``10 log10(range^2 / MSE)``;
    ``inf`` when they are equal. ``data_range`` is the span of the values: 255 for uint8 frames, 2 for [-1, 1].

    The one PSNR of the project (tokenizer training, the world evaluator and the tests use it). The squared error
    is accumulated in float64, so a long video's mean is not rounded away.
    """
    if type(a).__module__.startswith("torch") or type(b).__module__.startswith("torch"):
        import torch

        x, y = torch.as_tensor(a).detach(), torch.as_tensor(b).detach()
        if x.shape != y.shape:
            raise ValueError(f"psnr needs two inputs of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        mse = float((x.double() - y.to(x.device).double()).square().mean())
    else:
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            raise ValueError(f"psnr needs two inputs of the same shape, got {x.shape} and {y.shape}")
        mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(data_range**2 / mse))


def mean_frame_difference(frames: Any) -> float:
    """Mean absolute difference between consecutive frames, in 0..255 (averaged over pixels, channels and pairs)."""
    x = as_frames(frames, min_frames=2)
    total = 0.0
    for t in range(x.shape[0] - 1):  # one pair at a time: no [T, H, W, 3] int16 copy of a long video
        total += float(np.abs(x[t + 1].astype(np.int16) - x[t].astype(np.int16)).mean())
    return total / (x.shape[0] - 1)


def temporal_flickering(frames: Any) -> float:
    """VBench temporal flickering: ``(255 - mean_frame_difference) / 255`` in [0, 1]; 1.0 means no change at all."""
    return (255.0 - mean_frame_difference(frames)) / 255.0


def motion_smoothness_proxy(frames: Any) -> float:
    """How well each odd frame is predicted by the mean of its two even neighbours, as ``(255 - error) / 255``.

    VBench drops the odd frames, re-creates them with a frame-interpolation network and compares; this does the
    same with linear blending, so smooth (slow, linear) motion scores near 1 and jerky or flickering motion lower.
    Needs at least 3 frames.
    """
    x = as_frames(frames, min_frames=3)
    errors = []
    for t in range(1, x.shape[0] - 1, 2):
        predicted = (x[t - 1].astype(np.float32) + x[t + 1].astype(np.float32)) / 2
        errors.append(float(np.abs(x[t].astype(np.float32) - predicted).mean()))
    return (255.0 - float(np.mean(errors))) / 255.0


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------


def _check_features(features: Any, name: str) -> np.ndarray:
    if type(features).__module__.startswith("torch"):
        features = features.detach().cpu().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D] of feature vectors; got shape {tuple(f.shape)}")
    if f.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 feature vectors to estimate a covariance; got {f.shape[0]}")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return f


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]``."""
    f = _check_features(features, "features")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding noise clipped)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^1/2)``.

    The trace term is computed as ``tr((s1^1/2 sigma2 s1^1/2)^1/2)`` (``s1^1/2`` the symmetric root of sigma1):
    the same eigenvalues as ``sigma1 sigma2``, but of a symmetric matrix, so there are no complex parts to drop
    and no ill-conditioned ``sqrtm``. In float64; a tiny negative result from rounding is clipped to 0.
    """
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != mu1.shape or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "frechet_distance needs means [D] and covariances [D, D] of one size D; got "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(features1: Any, features2: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[N1, D]`` and ``[N2, D]``."""
    f1, f2 = _check_features(features1, "features1"), _check_features(features2, "features2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
