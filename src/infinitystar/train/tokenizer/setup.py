"""What a tokenizer run is built from: the resolved recipe, the VAE (inherited or fresh, parts frozen), its optimizer
and LR schedule, and the optional perceptual loss and discriminator. Separate from the training loop so that each
piece can be built and checked on its own."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.checkpoint import load_vae_weights, vae_config_of
from infinitystar.models.vae.model import VideoVAE
from infinitystar.train.optim import LRSchedule, init_adam_state
from infinitystar.train.tokenizer.config import TokenizerTrainConfig
from infinitystar.train.tokenizer.discriminator import PatchDiscriminator
from infinitystar.train.tokenizer.perceptual import PerceptualLoss


def resolved_config(
    cfg: TokenizerTrainConfig, init: str | os.PathLike | None, from_scratch: bool
) -> TokenizerTrainConfig:
    """``cfg`` with its VAE widths filled in (from ``init`` when the recipe leaves them open), after
    refusing an ambiguous start: stage 2 must say whether it inherits a VAE or starts from scratch."""
    if cfg.stage == "quantized" and init is None and not from_scratch:
        raise ValueError(
            "the quantized stage inherits a continuous VAE: pass init=<stage-1 VAE checkpoint or run folder> "
            "(CLI: --init), or from_scratch=True (CLI: --from-scratch) to train the tokenizer without inheritance"
        )
    if init is not None and from_scratch:
        raise ValueError("init and from_scratch exclude each other: choose one")
    if cfg.vae is None:
        cfg = cfg.replace(vae=vae_config_of(init) if init is not None else VAEConfig())
    return cfg


def _frozen_parts(vae: VideoVAE, part: str) -> list[torch.nn.Module | torch.nn.Parameter]:
    """The modules / parameters ``freeze`` entry ``part`` keeps fixed (see ``TokenizerTrainConfig``)."""
    if part == "tokens":  # features = proj_down(encoder moments) * latent_scales[0]: all three fix the bits
        return [vae.encoder, vae.proj_down, vae.latent_scales]
    if part == "decoding":  # frames = decoder(proj_up(features / latent_scales[0])): all three fix the rendering
        return [vae.decoder, vae.proj_up, vae.latent_scales]
    return [getattr(vae, part)]


def build_vae(
    cfg: TokenizerTrainConfig, device: torch.device, init: str | os.PathLike | None
) -> tuple[VideoVAE, Path | None]:
    """The VAE to train, on ``device`` and in train mode, with ``init``'s weights if given and the
    ``freeze`` parts fixed; returns it and the weight file it was loaded from."""
    with torch.random.fork_rng(devices=[]):  # module init draws from the global generator: seed it, privately
        torch.manual_seed(cfg.seed)
        vae = VideoVAE(cfg.vae)
    vae = vae.to(device)
    init_file = load_vae_weights(vae, init) if init is not None else None
    for part in cfg.freeze:
        for module in _frozen_parts(vae, part):
            module.requires_grad_(False)
    vae.train()
    return vae, init_file


def build_optimizer(
    cfg: TokenizerTrainConfig, vae: VideoVAE
) -> tuple[torch.optim.AdamW, LRSchedule, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the VAE's trainable parameters, its LR schedule and the scheduler that applies it."""
    # the original's optional second branch (proj_*_two) is never used: not trained
    params = [p for n, p in vae.named_parameters() if p.requires_grad and "_two." not in n]
    oc = cfg.optim
    optimizer = torch.optim.AdamW(params, lr=oc.lr, betas=oc.betas, weight_decay=oc.weight_decay)
    init_adam_state(optimizer)
    schedule = LRSchedule(oc.lr, oc.decay, oc.warmup_steps, cfg.steps, oc.min_lr_ratio)
    # LambdaLR counts from 0 (its value at i is the lr of optimizer step i + 1), the schedule from 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule.factor(i + 1))
    return optimizer, schedule, scheduler


def build_perceptual(cfg: TokenizerTrainConfig, device: torch.device) -> PerceptualLoss | None:
    """The perceptual distance when the recipe weights it (local weights only: nothing is downloaded)."""
    lc = cfg.loss
    if lc.perceptual_weight <= 0:
        return None
    if lc.perceptual_vgg is None:
        raise ValueError(
            "loss.perceptual_weight > 0 needs loss.perceptual_vgg: a local VGG16 weight file "
            "(features.* keys; nothing is downloaded) or 'random' for a seeded random network"
        )
    if lc.perceptual_vgg == "random":
        perceptual = PerceptualLoss.random(cfg.seed)
    else:
        perceptual = PerceptualLoss.from_files(lc.perceptual_vgg, lc.perceptual_heads)
    return perceptual.to(device)


def build_discriminator(
    cfg: TokenizerTrainConfig, device: torch.device
) -> tuple[PatchDiscriminator | None, torch.optim.AdamW | None]:
    """The discriminator and its AdamW when the recipe has a GAN term (``gan_weight > 0``), else Nones.
    Built from the start, even before ``gan_start``, so that every checkpoint holds the same state."""
    if cfg.loss.gan_weight <= 0:
        return None, None
    oc = cfg.optim
    disc = PatchDiscriminator(cfg.discriminator, seed=cfg.seed).to(device).train()
    optimizer = torch.optim.AdamW(
        disc.parameters(),
        lr=oc.disc_lr if oc.disc_lr is not None else oc.lr,
        betas=oc.betas,
        weight_decay=oc.weight_decay,
    )
    init_adam_state(optimizer)
    return disc, optimizer
