"""An LPIPS-style perceptual distance on VGG16 features, with weights read only from local files.

Distance between two images: each is shifted/scaled per RGB channel (the LPIPS input
normalisation), run through the 13 convolutions of VGG16, and at the outputs of its five
stages (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) the features are unit-normalised over
channels, their squared difference is weighted per channel (the LPIPS "linear" heads, or a plain
channel mean without them), averaged over space and summed over the stages.

Nothing is downloaded. :meth:`PerceptualLoss.from_files` reads
- the VGG16 convolutions from a ``.pth`` / ``.safetensors`` state dict in the common layout
  ``features.{i}.weight|bias`` (i = the position in the conv/ReLU/pool sequence: 0, 2, 5, ...;
  ``classifier.*`` entries of a full classification checkpoint are ignored), and
- optionally the LPIPS heads, ``lin{k}.model.1.weight`` ``[1, C_k, 1, 1]`` (k = 0..4), from the
  same file or from a second one.
Tests and experiments without pretrained files use :meth:`PerceptualLoss.random` (a seeded
random network: a feature-matching loss, not a calibrated LPIPS).

Videos ``[B, 3, T, H, W]`` are compared frame by frame (``frames=`` picks a random subset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from infinitystar.checkpoints import CheckpointError, check_coverage, read_safetensors, shapes_of, torch_load_weights

__all__ = ["VGG16Features", "PerceptualLoss", "VGG16_PLAN"]

#: VGG16's feature extractor: conv widths, "M" = 2x2 max pool.
VGG16_PLAN: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: Widths of the five tapped stages.
STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: LPIPS input normalisation: (x - shift) / scale per RGB channel, for x in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class VGG16Features(nn.Module):
    """The convolutional part of VGG16 (3x3 convs, ReLU, max pools); returns the five stage outputs.

    Layers live in ``features`` at the positions the common checkpoint layout uses, so a
    ``features.*`` state dict loads directly.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        taps: list[int] = []
        c_in = 3
        for item in VGG16_PLAN:
            if item == "M":
                taps.append(len(layers) - 1)  # the ReLU just before a pool ends a stage
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(item), 3, padding=1), nn.ReLU()]
                c_in = int(item)
        taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.taps = tuple(taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
                if len(outs) == len(self.taps):
                    break
        return outs


def _read_state(path: str | os.PathLike) -> dict[str, Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = torch_load_weights(path)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    return dict(obj)


def _lin_key(k: int) -> str:
    return f"lin{k}.model.1.weight"


class PerceptualLoss(nn.Module):
    """LPIPS-style distance ``d(x, y)`` per image, for images or videos in [-1, 1]; frozen.

    ``heads`` are the per-channel, non-negative stage weights ``[1, C_k, 1, 1]``; without
    them every stage uses a plain channel mean.
    """

    def __init__(self, heads: list[Tensor] | None = None) -> None:
        super().__init__()
        self.vgg = VGG16Features()
        if heads is None:
            heads = [torch.full((1, c, 1, 1), 1.0 / c) for c in STAGE_CHANNELS]
        for k, (w, c) in enumerate(zip(heads, STAGE_CHANNELS)):
            if tuple(w.shape) != (1, c, 1, 1):
                raise CheckpointError(f"perceptual head {k}: expected shape (1, {c}, 1, 1), got {tuple(w.shape)}")
            self.register_buffer(f"head{k}", w.detach().float().clone(), persistent=False)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_files(cls, vgg_path: str | os.PathLike, heads_path: str | os.PathLike | None = None) -> PerceptualLoss:
        """Load VGG16 ``features.*`` weights (and LPIPS ``lin{k}.model.1.weight`` heads) from local files.

        The heads are taken from ``heads_path`` if given, else from ``vgg_path`` when it has
        them, else a plain channel mean is used. Keys and shapes are checked strictly.
        """
        state = _read_state(vgg_path)
        head_state = _read_state(heads_path) if heads_path is not None else state
        heads = None
        head_keys = [_lin_key(k) for k in range(len(STAGE_CHANNELS))]
        found_heads = [k for k in head_keys if k in head_state]
        if heads_path is not None or found_heads:
            missing = [k for k in head_keys if k not in head_state]
            if missing:
                src = heads_path if heads_path is not None else vgg_path
                raise CheckpointError(f"{src}: LPIPS heads incomplete, missing {missing}")
            heads = [head_state[k].float() for k in head_keys]
            if any((h < 0).any() for h in heads):
                raise CheckpointError("LPIPS head weights must be non-negative")
        model = cls(heads)
        ours = model.vgg.state_dict()
        vgg = {k: v for k, v in state.items() if k.startswith("features.")}
        ignored = {k for k in state if k.startswith("classifier.") or k in head_keys}
        extra = set(state) - set(vgg) - ignored
        if extra:
            raise CheckpointError(
                f"{vgg_path}: unexpected keys for a VGG16 feature checkpoint: {sorted(extra)[:8]} "
                "(accepted: features.*, classifier.*, lin0..4.model.1.weight)"
            )
        check_coverage(shapes_of(ours), shapes_of(vgg), f"VGG16 weights {vgg_path}")
        model.vgg.load_state_dict({k: v.float() for k, v in vgg.items()}, strict=True)
        return model

    @classmethod
    def random(cls, seed: int = 0) -> PerceptualLoss:
        """A seeded random VGG16 (He-normal convs): for tests and runs without pretrained weights."""
        model = cls()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model.vgg.features:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                    m.bias.zero_()
        return model

    # ---- distance -------------------------------------------------------------------------

    def image_distance(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-image distance of ``x, y [N, 3, H, W]`` in [-1, 1] -> ``[N]``."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"perceptual loss needs two [N, 3, H, W] batches of equal shape, got {x.shape}, {y.shape}")
        n = x.shape[0]
        both = torch.cat([x, y]).float()  # one pass for both: [2N, 3, H, W]
        feats = self.vgg((both - self.shift) / self.scale)
        total = x.new_zeros(n, dtype=torch.float32)
        for k, f in enumerate(feats):
            f = f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)  # unit norm over channels
            diff = (f[:n] - f[n:]).square()  # [N, C, h, w]
            total = total + (diff * getattr(self, f"head{k}")).sum(dim=1).mean(dim=(1, 2))
        return total

    def forward(self, recon: Tensor, target: Tensor, *, frames: int = 0, generator: torch.Generator | None = None):
        """Mean distance over the frames of videos ``[B, 3, T, H, W]`` (or images ``[B, 3, H, W]``).

        ``frames > 0`` compares that many frames per video, drawn with ``generator`` (the same
        frames for every sample); 0 compares all of them.
        """
        if recon.ndim == 4:
            return self.image_distance(recon, target).mean()
        if recon.ndim != 5 or recon.shape != target.shape:
            raise ValueError(f"perceptual loss needs videos [B, 3, T, H, W] of equal shape, got {recon.shape}")
        b, c, t, h, w = recon.shape
        if 0 < frames < t:
            idx = torch.randperm(t, generator=generator)[:frames].sort().values.to(recon.device)
            recon, target = recon.index_select(2, idx), target.index_select(2, idx)
            t = frames
        x = recon.transpose(1, 2).reshape(b * t, c, h, w)  # [B*T, 3, H, W]
        y = target.transpose(1, 2).reshape(b * t, c, h, w)
        return self.image_distance(x, y).mean()

    def train(self, mode: bool = True) -> PerceptualLoss:  # always frozen, always eval
        return super().train(False)
