"""A synthetic latent dataset: random latents and text features, with the cache dataset's interface.

For smoke tests, benchmarks and the tiny CPU recipe: no media, no VAE, no text encoder needed.
It yields ``list`` batches of samples with the fields of ``train.dataset.TrainSample`` (key,
latent ``[64, t, h, w]``, caption, text ``[L, C]``, h_div_w, duration), one latent shape per
batch, and has ``set_epoch`` / ``state_dict`` / ``load_state_dict`` like ``LatentDataset``.

Sharding keeps the *global* batch independent of the number of data-parallel ranks: an epoch
is cut into global batches of ``batch_size * world_size`` samples (per-shape buckets shuffled
by ``(seed, epoch)``) and rank r takes the r-th slice of each. One process with batch 4 and two
processes with batch 2 therefore train on exactly the same samples at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SyntheticSample:
    """Same fields as ``train.dataset.TrainSample``."""

    key: str
    latent: torch.Tensor  #: [64, t, h, w] float32
    caption: str
    text: torch.Tensor | None  #: [L, C] float32
    h_div_w: float
    duration: int  #: seconds, 0 = image


class SyntheticLatentDataset:
    """``num_samples`` random items spread over the latent lengths ``latent_frames`` (one bucket each)."""

    def __init__(
        self,
        *,
        num_samples: int,
        latent_frames: list[int],
        latent_hw: tuple[int, int],
        text_channels: int,
        text_len: int = 8,
        h_div_w: float = 1.0,
        batch_size: int = 1,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        latent_channels: int = 64,
    ):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"invalid batch_size {batch_size} / rank {rank} / world_size {world_size}")
        for t in latent_frames:
            if t < 1 or (t > 1 and (t - 1) % 4):
                raise ValueError(f"latent_frames must be 1 (an image) or 1 + 4 * seconds, got {t}")
        self.num_samples = num_samples
        self.latent_frames = list(latent_frames)
        self.latent_hw = tuple(latent_hw)
        self.text_channels = text_channels
        self.text_len = text_len
        self.h_div_w = h_div_w
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.latent_channels = latent_channels
        self.epoch = 0
        self.batch_index = 0  #: batches of this epoch already handed out
        if len(self) == 0:
            raise ValueError(
                f"{num_samples} synthetic samples make no global batch of {batch_size} x {world_size} ranks "
                "in any latent-length bucket"
            )

    def _global_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        per_global = self.batch_size * self.world_size
        batches = []
        for b, _ in enumerate(self.latent_frames):
            items = [i for i in range(self.num_samples) if i % len(self.latent_frames) == b]
            order = [items[j] for j in torch.randperm(len(items), generator=g).tolist()]
            batches += [order[k : k + per_global] for k in range(0, len(order) - per_global + 1, per_global)]
        return [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]

    def sample(self, i: int) -> SyntheticSample:
        """Item ``i`` (deterministic in ``seed`` and ``i``)."""
        g = torch.Generator().manual_seed(self.seed * 7919 + i)
        t = self.latent_frames[i % len(self.latent_frames)]
        h, w = self.latent_hw
        latent = torch.randn(self.latent_channels, t, h, w, generator=g)
        length = int(torch.randint(max(1, self.text_len // 2), self.text_len + 1, (1,), generator=g))
        text = torch.randn(length, self.text_channels, generator=g)
        duration = (t - 1) // 4
        prefix = f"<<<t={duration}s>>>" if duration else ""
        return SyntheticSample(
            f"synthetic{i:06d}", latent, f"{prefix}synthetic sample {i}", text, self.h_div_w, duration
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.batch_index = 0

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return len(self._global_batches(0))

    def __iter__(self):
        batches = self._global_batches(self.epoch)
        while self.batch_index < len(batches):
            ids = batches[self.batch_index][self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            self.batch_index += 1
            yield [self.sample(i) for i in ids]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])
