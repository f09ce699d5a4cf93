"""Tokenizer (video VAE + BSQ) training, with knowledge inheritance from a continuous VAE.

The original never released its tokenizer trainer; what its code shows (reference section 2.6)
is followed here and every unknown is a documented, configurable choice:

- **Stage 1, ``continuous``**: the VAE alone (posterior sampled, no quantizer), L1
  reconstruction + KL to N(0, 1), optional perceptual and GAN terms.
- **Stage 2, ``quantized``**: the same VAE initialised from stage 1 (``init=``, the paper's
  knowledge inheritance) or from scratch (``from_scratch=True``, for an equal-budget
  comparison), trained with the multi-scale BSQ in the loop
  (:func:`~infinitystar.train.tokenizer.pyramid.quantize_pyramid_ste`, bit-identical codes to
  ``encode_pyramid``), stochastic quantizer depth, and the BSQ commitment / entropy terms.

One step (generator side): ``video -> encode_moments -> sample -> proj_down * scale ->
[STE pyramid] -> decode``; loss = ``l1_w * L1 + perc_w * LPIPS + kl_w * KL + q_w * BSQ_aux +
gan_w * lambda_adaptive * hinge_G`` (GAN from ``gan_start``); AdamW, grad clipping, then the
discriminator's hinge step. The learned latent scale is kept >= 0.01 (the original clamps it).

The recipe is :mod:`~infinitystar.train.tokenizer.config`, the clips come from
:mod:`~infinitystar.train.tokenizer.data`, the loss terms from
:mod:`~infinitystar.train.tokenizer.losses`. Runs resume exactly: batches are a function of the
step, and every random draw comes from generators stored in the checkpoints
(:mod:`infinitystar.train.checkpointing`).

Outputs in the run folder: ``config.json`` (resolved), ``metrics.jsonl`` (one line per step),
``checkpoints/step_*`` (resumable), and at the end the VAE folder ``vae/`` (``model.safetensors`` with the
original key names + ``config.json``: ``VideoVAE.from_original_checkpoint`` loads it, as any model folder's VAE).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infinitystar.devices import resolve_device
from infinitystar.files import append_jsonl, write_json
from infinitystar.models.vae.checkpoint import save_vae_folder
from infinitystar.schedule import Schedule
from infinitystar.train.checkpoint_checks import resume_from
from infinitystar.train.checkpointing import save_checkpoint
from infinitystar.train.metrics_log import truncate_metrics
from infinitystar.train.tokenizer.config import TokenizerTrainConfig
from infinitystar.train.tokenizer.data import ClipStream, build_data_source, check_video
from infinitystar.train.tokenizer.losses import (
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    kl_divergence,
    l1_loss,
    reconstruction_psnr,
)
from infinitystar.train.tokenizer.pyramid import best_latent_scale, draw_quantizer_depth, quantize_pyramid_ste
from infinitystar.train.tokenizer.setup import (
    build_discriminator,
    build_optimizer,
    build_perceptual,
    build_vae,
    resolved_config,
)

__all__ = ["VAE_DIR", "TokenizerTrainer"]

#: the trained tokenizer: a VAE folder (``model.safetensors`` + ``config.json``) inside the run folder
VAE_DIR = "vae"


class TokenizerTrainer:
    """Trains a :class:`~infinitystar.models.vae.model.VideoVAE` as a continuous VAE or as the BSQ tokenizer.

    ``data``: a data source (see :class:`~infinitystar.train.tokenizer.data.ClipStream`; None
    builds the one ``cfg.data`` names).
    ``init``: VAE weights to start from (a file or a run folder); required for the quantized
    stage unless ``from_scratch=True`` (an explicit choice, so that inheritance is never
    skipped by accident). ``run_dir``: where checkpoints, metrics and the final VAE go.
    """

    def __init__(
        self,
        cfg: TokenizerTrainConfig,
        run_dir: str | os.PathLike,
        data: Any = None,
        *,
        init: str | os.PathLike | None = None,
        from_scratch: bool = False,
        progress: bool = True,
    ):
        cfg = resolved_config(cfg, init, from_scratch)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device)
        self.quantized = cfg.stage == "quantized"
        self.progress = progress

        self.vae, self.init_file = build_vae(cfg, self.device, init)
        self.optimizer, self.lr_schedule, self.scheduler = build_optimizer(cfg, self.vae)
        self.perceptual = build_perceptual(cfg, self.device)
        self.disc, self.disc_optimizer = build_discriminator(cfg, self.device)

        self.stream = ClipStream(
            data if data is not None else build_data_source(cfg.data), cfg.data.batch_size, cfg.seed
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)  # control draws (depth, frames), CPU
        self.noise_generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)  # posterior noise
        self.step = 0
        self._schedules: dict[tuple[int, int, int], Schedule] = {}
        self._peeked: tuple[int, Tensor] | None = None
        self.fitted_latent_scale: float | None = None

    # ---- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint holds (``train.checkpointing`` adds the global RNG states)."""
        state: dict[str, Any] = {
            "vae": self.vae,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "generator": self.generator,
            "noise_generator": self.noise_generator,
            "data": self.stream,
        }
        if self.disc is not None:
            state["discriminator"] = self.disc
            state["disc_optimizer"] = self.disc_optimizer
        return state

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def schedule_for(self, t: int, h: int, w: int) -> Schedule:
        """The pyramid for a latent of ``(t, h, w)`` (cached; see ``QuantizerConfig.schedule``)."""
        key = (t, h, w)
        if key not in self._schedules:
            self._schedules[key] = self.cfg.quantizer.schedule(t, h, w)
        return self._schedules[key]

    # ---- one step ---------------------------------------------------------------------------

    def _chunks(self, frames: int) -> tuple[int, int]:
        """(chunk_frames, chunk_latents) for encode / decode: the whole clip unless configured."""
        tf = self.vae.temporal_factor
        if self.cfg.chunk_frames is not None:
            return self.cfg.chunk_frames, max(1, self.cfg.chunk_frames // tf)
        t = self.vae.num_latent_frames(frames)
        return max(tf, frames - 1), max(1, t - 1)

    def forward(self, video: Tensor, *, train: bool = True) -> dict[str, Any]:
        """Encode -> (quantise) -> decode one batch; returns the reconstruction and the loss terms."""
        q = self.cfg.quantizer
        chunk_frames, chunk_latents = self._chunks(video.shape[2])
        mean, std = self.vae.encode_moments(video, chunk_frames=chunk_frames)  # [B, 64, t, h, w] each
        eps = None
        if q.sample_posterior or not self.quantized:
            eps = torch.randn(mean.shape, generator=self.noise_generator, device=mean.device, dtype=mean.dtype)
        z = self.vae.features_from_moments(mean, std, eps)  # raw features [B, 64, t, h, w]
        out: dict[str, Any] = {"mean": mean, "std": std}
        if self.quantized:
            sched = self.schedule_for(*z.shape[2:])
            prob = q.skip_detail_prob if train else 0.0
            keep = draw_quantizer_depth(sched, z.shape[0], prob, self.generator)
            qo = quantize_pyramid_ste(z, sched, keep=keep, config=q.bsq())
            out["quant"] = qo
            z = qo.latent
        out["recon"] = self.vae.decode(z, chunk_latents=chunk_latents)  # [B, 3, T, H, W]
        return out

    def _batch(self) -> Tensor:
        """This step's batch, on the device (a batch peeked by :meth:`fit_latent_scale` is reused)."""
        if self._peeked is not None and self._peeked[0] == self.step:
            video, self._peeked = self._peeked[1], None
        else:
            video = self.stream.batch(self.step)
        return check_video(video).to(self.device)

    @torch.no_grad()
    def fit_latent_scale(self) -> float:
        """Set the learned latent scale to the value the pyramid quantises best, before stage 2 starts.

        A continuous VAE's features have no reason to match the BSQ codes' magnitude, and the
        scale, learned with the rest, would take many steps to move; so it is chosen once (see
        :func:`~infinitystar.train.tokenizer.pyramid.best_latent_scale`) on this step's batch,
        posterior mean, un-scaled features, no random draw. Returns the chosen scale.
        """
        video = self.stream.batch(self.step)
        self._peeked = (self.step, video)  # the first training step uses this very batch
        video = check_video(video).to(self.device)
        was_training = self.vae.training
        self.vae.eval()
        try:
            chunk_frames, _ = self._chunks(video.shape[2])
            base = self.vae.encode(video, sample=False, chunk_frames=chunk_frames) / self.vae.latent_scales[0]
        finally:
            self.vae.train(was_training)
        sched = self.schedule_for(*base.shape[2:])
        self.vae.latent_scales[0] = best_latent_scale(base, sched, self.cfg.quantizer.bsq())
        return self.vae.latent_scales[0].item()

    def train_step(self) -> dict[str, Any]:
        """One optimisation step of the VAE (and of the discriminator once the GAN is on).

        Returns the step's metrics (one ``metrics.jsonl`` line): every loss term, the gradient
        norm before clipping, the learning rate used, the latent scale and the step's seconds.
        """
        t0 = time.perf_counter()
        video = self._batch()
        out = self.forward(video)
        recon = out["recon"]
        m: dict[str, Any] = {"step": self.step + 1}
        rec = self._reconstruction_loss(recon, video, m)
        loss = self._add_regularisers(rec, out, m)
        gan_on = self.disc is not None and self.step >= self.cfg.loss.gan_start
        if gan_on:
            loss = self._add_generator_gan(loss, rec, recon, m)
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"the loss became {loss.item()} at step {self.step + 1}; lower optim.lr or check the data"
            )
        grad_norm = self._update_vae(loss)
        if gan_on:
            m["d_loss"] = self._update_discriminator(video, recon)
        m.update(
            loss=loss.item(),
            psnr=reconstruction_psnr(recon, video),
            grad_norm=float(grad_norm),
            lr=self.optimizer.param_groups[0]["lr"],
            latent_scale=self.vae.latent_scales[0].item(),
            seconds=time.perf_counter() - t0,
        )
        self.step += 1
        return m

    def _reconstruction_loss(self, recon: Tensor, video: Tensor, m: dict[str, Any]) -> Tensor:
        """The weighted pixel terms (L1, L2, perceptual), the part the adaptive GAN weight balances
        against; their values go into ``m``."""
        lc = self.cfg.loss
        l1 = l1_loss(recon, video)
        rec = lc.l1_weight * l1
        m["l1"] = l1.item()
        if lc.l2_weight:
            l2 = (recon.float() - video.float()).pow(2).mean()
            rec = rec + lc.l2_weight * l2
            m["l2"] = l2.item()
        if self.perceptual is not None:
            perc = self.perceptual(recon, video, frames=lc.perceptual_frames, generator=self.generator)
            rec = rec + lc.perceptual_weight * perc
            m["perceptual"] = perc.item()
        return rec

    def _add_regularisers(self, loss: Tensor, out: dict[str, Any], m: dict[str, Any]) -> Tensor:
        """``loss`` plus the latent's terms: KL of the posterior and, in stage 2, the BSQ auxiliary loss."""
        lc = self.cfg.loss
        if lc.kl_weight > 0:
            kl = kl_divergence(out["mean"], out["std"])
            loss = loss + lc.kl_weight * kl
            m["kl"] = kl.item()
        if "quant" in out:
            qo = out["quant"]
            loss = loss + lc.quantizer_weight * qo.loss
            m.update(
                bsq_loss=qo.loss.item(),
                commit=qo.commit,
                sample_entropy=qo.sample_entropy,
                codebook_entropy=qo.codebook_entropy,
                bit_usage=qo.bit_usage,
                kept_steps=float(qo.keep.float().mean()),
            )
        return loss

    def _add_generator_gan(self, loss: Tensor, rec: Tensor, recon: Tensor, m: dict[str, Any]) -> Tensor:
        """``loss`` plus the generator's hinge term, weighted so that its gradient at the decoder's
        last layer matches the reconstruction's (when ``adaptive_gan_weight``). The discriminator
        is frozen here: this term must move the VAE only."""
        lc = self.cfg.loss
        self.disc.requires_grad_(False)
        g_loss = hinge_g_loss(self.disc(recon))
        last = self.vae.decoder.conv_out.weight
        weight = torch.ones(())
        if lc.adaptive_gan_weight and last.requires_grad:
            weight = adaptive_gan_weight(rec, g_loss, last)
        m.update(g_loss=g_loss.item(), gan_weight=float(weight))
        return loss + lc.gan_weight * weight * g_loss

    def _update_vae(self, loss: Tensor) -> Tensor:
        """Backward, clip, AdamW and LR-schedule step; returns the gradient norm before clipping."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        with torch.no_grad():  # the original uses clamp(scale, min=0.01)
            self.vae.latent_scales[0].clamp_(min=0.01)
        return grad_norm

    def _update_discriminator(self, video: Tensor, recon: Tensor) -> float:
        """One hinge step of the discriminator on this batch (real) and its detached reconstruction
        (fake); returns its loss."""
        self.disc.requires_grad_(True)
        fake = recon.detach()
        d_loss = hinge_d_loss(self.disc(video), self.disc(fake))
        self.disc_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.cfg.optim.grad_clip)
        self.disc_optimizer.step()
        return d_loss.item()

    # ---- the loop -----------------------------------------------------------------------------

    def _write_config(self, init: Path | None) -> None:
        record = {"config": self.cfg.to_dict(), "init": str(init) if init is not None else None}
        if self.fitted_latent_scale is not None:
            record["fitted_latent_scale"] = self.fitted_latent_scale
        write_json(self.run_dir / "config.json", record, sort_keys=True)

    def resume(self, which: str | int | bool = "latest") -> int | None:
        """Load a checkpoint of the run folder: the newest ('latest'), the newest intact one ('latest-valid') or a
        step (see :mod:`infinitystar.train.checkpoint_checks`); returns its step (None if the run has none)."""
        step = resume_from(self.checkpoint_dir, self.state(), which)  # DCP's one-process warning silenced there
        if step is not None:
            self.step = int(step)
            self._schedules.clear()
        return step

    def save(self) -> Path:
        return save_checkpoint(self.checkpoint_dir, self.step, self.state(), keep=self.cfg.keep)

    def fit(self, steps: int | None = None, *, resume: bool | str | int = False) -> list[dict[str, Any]]:
        """Train until ``steps`` (default ``cfg.steps``) and export the VAE; returns this call's metrics.

        ``resume=True`` continues from the newest checkpoint in the run folder ('latest-valid': the newest intact one;
        a number: that step); without it a run
        folder that already holds checkpoints is refused (so nothing is silently overwritten).
        """
        steps = self.cfg.steps if steps is None else int(steps)
        if resume:
            start = self.resume("latest" if resume is True else resume)
            # lines written after the checkpoint this run restarts from
            truncate_metrics(self.metrics_path, start if start is not None else 0)
        elif self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.iterdir()):
            raise ValueError(f"{self.run_dir} already holds checkpoints: resume it (--resume) or choose a new --out")
        else:
            self.metrics_path.unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fixed = {"tokens", "decoding"} & set(self.cfg.freeze)
        fit = self.cfg.quantizer.fit_scale and not fixed  # a frozen scale stays as inherited
        if self.quantized and fit and self.init_file is not None and self.step == 0:
            self.fitted_latent_scale = self.fit_latent_scale()
        self._write_config(self.init_file)
        history: list[dict[str, Any]] = []
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=self.step, disable=not self.progress, desc=f"tokenizer ({self.cfg.stage})")
        with self.metrics_path.open("a") as log:
            while self.step < steps:
                m = self.train_step()
                history.append(m)
                append_jsonl(log, m)
                post = {"loss": f"{m['loss']:.4f}", "l1": f"{m['l1']:.4f}", "psnr": f"{m['psnr']:.2f}"}
                if "bit_usage" in m:
                    post["bits"] = f"{m['bit_usage']:.3f}"
                if "d_loss" in m:
                    post["d"] = f"{m['d_loss']:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
                if self.step % self.cfg.save_every == 0 or self.step == steps:
                    self.save()
        bar.close()
        save_vae_folder(self.vae, self.run_dir / VAE_DIR, metadata={"stage": self.cfg.stage, "step": str(self.step)})
        return history

    @torch.no_grad()
    def evaluate(self, video: Tensor) -> dict[str, float]:
        """Reconstruction L1 / PSNR of ``video [B, 3, T, H, W]`` with the posterior mean, no
        depth skipping (and for the quantized stage, the bit usage)."""
        was_training = self.vae.training
        self.vae.eval()
        try:
            video = check_video(video).to(self.device)
            chunk_frames, chunk_latents = self._chunks(video.shape[2])
            z = self.vae.encode(video, sample=False, chunk_frames=chunk_frames)
            res: dict[str, float] = {}
            if self.quantized:
                qo = quantize_pyramid_ste(z, self.schedule_for(*z.shape[2:]), config=self.cfg.quantizer.bsq())
                z = qo.latent
                res["bit_usage"] = qo.bit_usage
            recon = self.vae.decode(z, chunk_latents=chunk_latents)
            res.update(l1=float(l1_loss(recon, video)), psnr=reconstruction_psnr(recon, video))
            return res
        finally:
            self.vae.train(was_training)
