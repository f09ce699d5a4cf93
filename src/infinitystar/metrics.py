"""Offline video metrics: pure functions over uint8 frames ``[T, H, W, 3]`` (RGB).

No metric here downloads anything:

- ``temporal_flickering`` (VBench's no-model dimension): ``(255 - mean |frame[t+1] - frame[t]|) / 255``, 1.0 for
  a constant video. VBench scores it on static-scene videos only; here it is computed on whatever it is given.
- ``motion_smoothness_proxy``: VBench's motion-smoothness protocol (drop the odd frames, re-create them from their
  even neighbours, score ``(255 - mean error) / 255``) with a trivial interpolator (the mean of the two
  neighbours) instead of the AMT-S network. Cheap and monotone in how linear the motion is; its values are not
  comparable with VBench's.
- ``frechet_distance`` / ``frechet_distance_from_features``: the Fréchet distance between two Gaussians fitted to
  features (FID / FVD math).
- ``I3DFeatureExtractor`` + ``fvd``: FVD from a user-provided I3D network (a TorchScript file such as the
  StyleGAN-V ``i3d_torchscript.pt``, or an ``nn.Module`` with a local state dict).
- ``CLIPScorer`` / ``clip_score``: CLIP score (``100 * max(cos(image, text), 0)``, averaged over frames) with
  ``transformers``' ``CLIPModel`` loaded from a local folder.

torch and transformers are imported only by the model-based metrics.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLIPScorer",
    "psnr",
    "I3DFeatureExtractor",
    "as_frames",
    "clip_score",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "fvd",
    "mean_frame_difference",
    "motion_smoothness_proxy",
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


# --------------------------------------------------------------------------------------------
# FVD with a user-provided I3D
# --------------------------------------------------------------------------------------------

# The StyleGAN-V TorchScript I3D (i3d_torchscript.pt) takes [B, 3, T, H, W] in [-1, 1] and these switches; with
# return_features=True it returns the 400-d logits-layer features that FVD is computed on.
TORCHSCRIPT_I3D_KWARGS = {"rescale": False, "resize": False, "return_features": True}


class I3DFeatureExtractor:
    """Video features for FVD from a local I3D network.

    ``model`` is either a path to a TorchScript file (loaded with ``torch.jit.load``; called with
    ``TORCHSCRIPT_I3D_KWARGS`` unless ``call_kwargs`` is given), or an ``nn.Module`` / callable (called with
    ``call_kwargs`` or nothing). ``weights``: a local state dict (``.pt``/``.pth`` or ``.safetensors``) loaded
    strictly into an ``nn.Module`` ``model`` (e.g. an InceptionI3d implementation with its released weights).

    Preprocessing: uint8 ``[T, H, W, 3]`` -> [0, 1] -> bilinear resize of the shorter side to ``resolution`` ->
    center crop ``resolution x resolution`` -> [-1, 1] -> ``[B, 3, T, r, r]``. All videos of one call must have
    the same number of frames (FVD compares clips of one length; 16 frames is the usual choice).
    """

    def __init__(
        self,
        model: str | os.PathLike | Callable,
        *,
        weights: str | os.PathLike | None = None,
        resolution: int = 224,
        batch_size: int = 8,
        device: str = "cpu",
        call_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import torch

        if resolution < 1 or batch_size < 1:
            raise ValueError(f"resolution and batch_size must be positive; got {resolution}, {batch_size}")
        self.resolution, self.batch_size, self.device = resolution, batch_size, torch.device(device)
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not path.is_file():
                raise ValueError(f"I3D model not found: {path} (a TorchScript file such as i3d_torchscript.pt)")
            try:
                with warnings.catch_warnings():  # torch >= 2.10 flags jit.load as deprecated; the files are TorchScript
                    warnings.simplefilter("ignore", DeprecationWarning)
                    net = torch.jit.load(str(path), map_location=self.device)
            except (RuntimeError, ValueError) as exc:
                raise ValueError(
                    f"cannot load {path} as TorchScript ({exc}); for a plain state dict pass the network module "
                    "as `model` and the file as `weights`"
                ) from exc
            default_kwargs = dict(TORCHSCRIPT_I3D_KWARGS)
        elif callable(model):
            net, default_kwargs = model, {}
        else:
            raise ValueError(f"model must be a TorchScript path or a callable module; got {type(model).__name__}")
        if weights is not None:
            if not isinstance(net, torch.nn.Module):
                raise ValueError("weights= needs an nn.Module model to load them into")
            net.load_state_dict(_read_state_dict(weights), strict=True)
        if isinstance(net, torch.nn.Module):
            net = net.to(self.device).eval()
        self.net = net
        self.call_kwargs = default_kwargs if call_kwargs is None else dict(call_kwargs)

    def preprocess(self, video: Any):
        """uint8 ``[T, H, W, 3]`` -> float ``[3, T, r, r]`` in [-1, 1] (shorter side resized, center crop)."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(as_frames(video, name="video"))).float() / 255
        x = x.permute(0, 3, 1, 2)  # [T, H, W, 3] -> [T, 3, H, W]
        h, w = x.shape[-2:]
        r = self.resolution
        scale = r / min(h, w)
        size = (max(r, round(h * scale)), max(r, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        top, left = (size[0] - r) // 2, (size[1] - r) // 2
        x = x[:, :, top : top + r, left : left + r]
        return (x * 2 - 1).permute(1, 0, 2, 3)  # [T, 3, r, r] -> [3, T, r, r]

    def __call__(self, videos: Sequence[Any]) -> np.ndarray:
        """Features ``[N, D]`` (float64) of N videos, each uint8 ``[T, H, W, 3]`` with one common T."""
        import torch

        videos = list(videos)
        if not videos:
            raise ValueError("no videos given")
        lengths = {as_frames(v, name="video").shape[0] for v in videos}
        if len(lengths) != 1:
            raise ValueError(f"all videos must have the same number of frames for FVD; got {sorted(lengths)}")
        out = []
        with torch.no_grad():
            for i in range(0, len(videos), self.batch_size):
                batch = torch.stack([self.preprocess(v) for v in videos[i : i + self.batch_size]])
                feats = self.net(batch.to(self.device), **self.call_kwargs)  # [B, 3, T, r, r] -> [B, D]
                if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != batch.shape[0]:
                    got = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
                    raise ValueError(f"the I3D network must return features [B, D]; got {got}")
                out.append(feats.detach().double().cpu().numpy())
        return np.concatenate(out)


def _read_state_dict(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights not found: {path}")
    if path.suffix == ".safetensors":
        from .checkpoints import read_safetensors

        return read_safetensors(path)
    from .checkpoints import torch_load_weights

    return torch_load_weights(path)


def fvd(real_videos: Iterable[Any], fake_videos: Iterable[Any], extractor: Callable[[Sequence[Any]], Any]) -> float:
    """Fréchet video distance between two sets of uint8 videos ``[T, H, W, 3]`` with ``extractor``'s features.

    Meaningful only with the real I3D weights and many videos (hundreds or more); with fewer videos than feature
    dimensions the covariances are singular and the value is dominated by noise.
    """
    return frechet_distance_from_features(extractor(list(real_videos)), extractor(list(fake_videos)))


# --------------------------------------------------------------------------------------------
# CLIP score
# --------------------------------------------------------------------------------------------


class CLIPScorer:
    """CLIP score with a local ``CLIPModel`` folder (``config.json``, weights, tokenizer, preprocessor config).

    ``score(frames, text)`` = mean over frames of ``100 * max(cos(image_embedding, text_embedding), 0)``, the
    torchmetrics convention; text longer than the model's context is truncated.
    """

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32") -> None:
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        folder = Path(model_dir)
        if not (folder / "config.json").is_file():
            raise ValueError(f"CLIP model folder not found or without config.json: {folder}")
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True, dtype=getattr(torch, dtype))
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"cannot load a CLIP model from {folder}: {exc}") from exc
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def score(self, frames: Any, text: str) -> float:
        import torch

        x = as_frames(frames)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("CLIP score needs a non-empty text")
        pixels = self.image_processor(images=list(x), return_tensors="pt")["pixel_values"]
        tokens = self.tokenizer([text], truncation=True, max_length=self.max_length, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        with torch.no_grad():
            out = self.model(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
                pixel_values=pixels.to(self.device, dtype),
            )
        image = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)  # [T, D]
        txt = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)  # [1, D]
        cos = (image @ txt.T)[:, 0]  # [T]
        return float((100 * cos.clamp(min=0)).mean())


def clip_score(frames: Any, text: str, scorer: CLIPScorer) -> float:
    """CLIP score of a video (or an image as ``[1, H, W, 3]``) against ``text`` with a loaded ``CLIPScorer``."""
    return scorer.score(frames, text)
