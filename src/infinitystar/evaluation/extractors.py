"""Model-based evaluation features: FVD from a local I3D network and CLIP score from a local CLIP folder.

Separate from :mod:`infinitystar.evaluation.metrics` (the pure pixel metrics, PSNR and the Fréchet distance) because
these need torch, and CLIP needs ``transformers``, and model weights the user provides: nothing here downloads
anything. torch and transformers are imported inside the functions, so importing this module is cheap.

- ``I3DFeatureExtractor`` + ``fvd``: FVD from a user-provided I3D network (a TorchScript file such as the
  StyleGAN-V ``i3d_torchscript.pt``, or an ``nn.Module`` with a local state dict).
- ``CLIPScorer`` / ``clip_score``: CLIP score (``100 * max(cos(image, text), 0)``, averaged over frames) with
  ``transformers``' ``CLIPModel`` loaded from a local folder.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from infinitystar.evaluation.metrics import as_frames, frechet_distance_from_features

__all__ = [
    "TORCHSCRIPT_I3D_KWARGS",
    "CLIPScorer",
    "I3DFeatureExtractor",
    "clip_score",
    "fvd",
]


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
        from infinitystar.checkpoints import read_safetensors

        return read_safetensors(path)
    from infinitystar.checkpoints import torch_load_weights

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
