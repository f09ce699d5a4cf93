"""The transformer trainer: one process on CPU, or torchrun + FSDP2 (+ Ulysses sequence parallel).

One optimizer step (``grad_accum`` micro-batches, each a ``list`` of samples sharing one latent
shape, hence one schedule):

1. the schedule of the batch's latent shape (the original's template schedule, or a custom
   pyramid), and the subset of its scales this micro-step trains
   (:mod:`~infinitystar.train.transformer.scale_subsets`);
2. per sample, the multi-scale bitwise quantisation of its latent with bitwise self-correction
   (``quantizer.encode_pyramid``), one random repetition per scale (its input, its clean bit
   labels and its global step counter = the RoPE scale position), and condition dropout
   (the sample's text replaced by the learned null text);
3. the packed forward, the per-bit cross-entropy with the original's scale weighting
   (largest volume of the *full* schedule), ``backward`` (bf16 autocast on GPU);
4. clip the gradient norm (5), AdamW (0.9, 0.97) at the scheduled learning rate, EMA.

Randomness is counter-based: every draw of a sample comes from generators seeded by
``(seed, step, sample key)`` and the subset of a micro-step by ``(seed, step, micro-step)``. So
a run resumed from a checkpoint repeats exactly the draws of an uninterrupted run, and the
result does not depend on how a global batch is split over data-parallel ranks.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from infinitystar.models.transformer.checkpoint import save_model_folder
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import Schedule
from infinitystar.train import checkpointing as ckpt
from infinitystar.train.checkpoint_checks import resume_from
from infinitystar.train.distributed import (
    DistEnv,
    all_reduce_sum,
    apply_activation_checkpointing,
    barrier,
    fully_shard_model,
)
from infinitystar.train.metrics_log import MetricsLogger, group_accuracies, group_sums, truncate_metrics
from infinitystar.train.optim import EMA, LRSchedule
from infinitystar.train.transformer import lora

# --------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------
from infinitystar.train.transformer.batch import BatchPreparer, PreparedBatch
from infinitystar.train.transformer.config import TrainConfig
from infinitystar.train.transformer.loss import LossOutput, bit_loss
from infinitystar.train.transformer.module import TrainModule, _strip, load_init_state
from infinitystar.train.transformer.sequence_parallel import enable_sequence_parallel, sp_loss_scale


@dataclass
class TrainResult:
    step: int
    run_dir: Path
    final_model: Path | None
    losses: dict[int, float]


class Trainer:
    """Build everything from a :class:`TrainConfig` and :meth:`train`.

    ``dataset``: any iterable of ``list[TrainSample]`` batches with ``set_epoch``,
    ``state_dict`` and ``load_state_dict`` (default: built from ``cfg.data``, sharded over the
    data-parallel ranks). ``text_encoder``: a ``TextEncoder`` for samples without cached text
    (default: a T5 encoder from ``cfg.data.text_encoder`` when one is needed).
    """

    def __init__(self, cfg: TrainConfig, *, dataset=None, text_encoder=None, env: DistEnv | None = None):
        from infinitystar.train.distributed import init_distributed

        self.cfg = cfg
        if cfg.lora is not None:
            lora.require_peft()  # before anything is written
        self.env = env or init_distributed(cfg.device, cfg.sp_size)
        self.device = self.env.device
        self.tcfg = cfg.model.transformer_config()
        self.run_dir = Path(cfg.out)
        self.autocast_dtype = self._autocast_dtype()
        if cfg.fsdp_param_dtype == "bfloat16" and self.autocast_dtype is None:
            raise ValueError("fsdp_param_dtype 'bfloat16' needs bf16 precision (autocast); use precision 'bf16'")
        existing = ckpt.list_checkpoints(self.run_dir)
        if existing and not cfg.resume:
            raise ValueError(
                f"run folder {self.run_dir} already holds checkpoints (newest: step {existing[0][0]}); "
                "pass --resume to continue it or choose another --out"
            )
        resuming = bool(existing)
        barrier(self.env)  # every rank has looked before rank 0 writes
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / "config.json")

        self.module = self._build_model(from_checkpoint=resuming)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = self._build_optimizer()
        self.lr_schedule = LRSchedule(
            cfg.optim.lr, cfg.optim.lr_schedule, cfg.optim.warmup_steps, cfg.steps, cfg.optim.min_lr_ratio
        )
        self.ema = EMA(self.module, cfg.optim.ema_decay) if cfg.optim.ema_decay else None
        self.dataset = dataset if dataset is not None else self._build_dataset()
        self.batches = BatchPreparer(cfg, self.tcfg, self.device, text_encoder)
        self.step = 0
        self.epoch = 0
        if resuming:
            self._resume()
        else:
            self.dataset.set_epoch(0)
            if self.env.is_main:  # lines of an earlier attempt that died before its first checkpoint
                truncate_metrics(self.run_dir / "metrics.jsonl", 0)
        self._iter = iter(self.dataset)

    # -- setup ---------------------------------------------------------------------------------
    def _autocast_dtype(self) -> torch.dtype | None:
        p = self.cfg.precision
        if p == "bf16" or (p == "auto" and self.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _initial_state(self, transformer: nn.Module) -> dict[str, torch.Tensor]:
        """Full CPU state of the starting weights: ``--init`` or a seeded fresh init; with LoRA, ``--init`` under
        peft's names plus the adapters' first values (``transformer``: the model as built, for its key names)."""
        if self.cfg.model.init:
            state = load_init_state(self.cfg.model.init, self.tcfg, resolution=self.cfg.schedule.resolution)
            return state if self.cfg.lora is None else lora.with_adapters(state, transformer, self.cfg.seed)
        with torch.device("meta"):
            model = InfinityTransformer(self.tcfg)
        model.to_empty(device="cpu")
        model.reset_parameters(generator=torch.Generator().manual_seed(self.cfg.seed))
        return model.state_dict()

    def _build_model(self, from_checkpoint: bool) -> nn.Module:
        """The TrainModule on this rank: sharded with FSDP2 under torchrun; starting weights from
        ``--init`` or a fresh init (not computed when a checkpoint will overwrite them)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        ac = self.cfg.activation_checkpointing
        if ac is None:
            ac = self.device.type == "cuda"
        with torch.device("meta"):
            module = TrainModule(InfinityTransformer(self.tcfg), self.cfg.model.attn_impl)
        if self.cfg.lora is not None:  # adapters on the frozen base; the base is not in checkpoints: always loaded
            lora.add_adapters(module.transformer, self.cfg.lora)
            from_checkpoint = False
        if ac:
            apply_activation_checkpointing(module.transformer.blocks)
        if self.env.distributed:  # a process group, even of one rank (torchrun --nproc_per_node 1): FSDP2
            fully_shard_model(module, module.transformer.blocks, self.cfg.fsdp_param_dtype)
            module.to_empty(device=self.device)
            if not from_checkpoint:
                full = {}
                if self.env.is_main:
                    full = {f"transformer.{k}": v for k, v in self._initial_state(module.transformer).items()}
                opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
                set_model_state_dict(module, full, options=opts)
        else:
            module.to_empty(device=self.device)
            if not from_checkpoint:
                state = {f"transformer.{k}": v for k, v in self._initial_state(module.transformer).items()}
                set_model_state_dict(module, state)
        if self.cfg.sp_size > 1:
            enable_sequence_parallel(module.transformer, self.env.sp_group)
        module.train()
        return module

    def _build_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        decay, no_decay = [], []
        for name, p in self.module.named_parameters():
            if not p.requires_grad:
                continue
            is_matrix = p.ndim >= 2 and "cfg_uncond" not in name and "sos_token" not in name
            (decay if is_matrix else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = o.fused if o.fused is not None else self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, eps=o.eps, fused=fused or None)

    def _build_dataset(self):
        d = self.cfg.data
        if d.synthetic is not None:
            from infinitystar.train.data.synthetic import SyntheticLatentDataset

            s = d.synthetic
            return SyntheticLatentDataset(
                num_samples=s.num_samples,
                latent_frames=s.latent_frames,
                latent_hw=tuple(s.latent_hw),
                text_channels=self.tcfg.text_channels,
                text_len=s.text_len,
                h_div_w=s.h_div_w,
                batch_size=d.batch_size,
                seed=s.seed,
                rank=self.env.dp_rank,
                world_size=self.env.dp_size,
                latent_channels=self.tcfg.latent_channels,
            )
        try:
            from infinitystar.train.data.dataset import LatentDataset
        except ImportError as exc:
            raise ValueError(
                f"data.cache needs the latent cache reader (infinitystar.train.data.dataset), which failed: {exc}"
            ) from exc
        for folder in [d.cache] if isinstance(d.cache, str) else d.cache:
            if not Path(folder).is_dir():
                raise ValueError(f"latent cache folder not found: {folder} (write one with `infinitystar extract`)")
        return LatentDataset(
            d.cache,
            batch_size=d.batch_size,
            seed=self.cfg.seed,
            rank=self.env.dp_rank,
            world_size=self.env.dp_size,
            **d.dataset_options,
        )

    def checkpoint_state(self) -> dict[str, Any]:
        model = self.module if self.cfg.lora is None else ckpt.TrainableState(self.module)
        state: dict[str, Any] = {"model": model, "optimizer": self.optimizer, "dataset": self.dataset}
        if self.ema is not None:
            state["ema"] = self.ema
        state["trainer"] = {"step": self.step, "epoch": self.epoch}
        return state

    def _resume(self) -> None:
        state = self.checkpoint_state()
        step = resume_from(
            self.run_dir, state, self.cfg.resume, is_main=self.env.is_main, barrier=lambda: barrier(self.env)
        )  # the newest checkpoint, the newest intact one or a step: damaged ones are named, never skipped silently
        self.step = int(state["trainer"]["step"])
        self.epoch = int(state["trainer"]["epoch"])
        if step != self.step:
            raise RuntimeError(f"checkpoint step {step} and its trainer state {self.step} disagree")
        if self.env.is_main:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    # -- data ----------------------------------------------------------------------------------
    def _next_batch(self) -> list:
        try:
            return next(self._iter)
        except StopIteration:
            self.epoch += 1
            self.dataset.set_epoch(self.epoch)
            self._iter = iter(self.dataset)
            try:
                return next(self._iter)
            except StopIteration:
                raise ValueError("the dataset yields no batch (too few samples for the batch size?)") from None

    def schedule_for(self, h_div_w: float, t: int, h: int, w: int) -> Schedule:
        """The full schedule of a latent of shape ``[64, t, h, w]`` (see :meth:`BatchPreparer.schedule_for`)."""
        return self.batches.schedule_for(h_div_w, t, h, w)

    @property
    def text_encoder(self):
        """The encoder of captions without cached text features (None until one is needed)."""
        return self.batches.text_encoder

    def prepare(self, batch: list, step: int, micro: int) -> PreparedBatch:
        """Model inputs of one micro-batch (see :meth:`BatchPreparer.prepare`)."""
        return self.batches.prepare(batch, step, micro)

    # -- one step ------------------------------------------------------------------------------
    def forward_loss(self, pb: PreparedBatch) -> tuple[torch.Tensor, LossOutput]:
        """Scale-weighted loss (mean over the micro-batch's samples) and the per-token details."""
        ctx = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else torch.autocast(self.device.type, enabled=False)
        )
        with ctx:
            logits = self.module(pb.codes, pb.texts, pb.schedule, pb.counters, pb.drop)
        out = bit_loss(
            logits.detail,
            logits.semantic,
            pb.labels,
            pb.schedule,
            reweight_by_scale=self.cfg.loss.reweight_by_scale,
            max_reweight=self.cfg.loss.max_reweight,
        )
        loss = (out.scale_loss * pb.weights).sum() / pb.codes.shape[0]
        loss = loss + (logits.detail.sum() + logits.semantic.sum()) * 0.0  # both heads always get a gradient
        return loss, out

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches; returns this step's metrics."""
        cfg = self.cfg
        step = self.step + 1
        t0 = time.perf_counter()
        accum = cfg.optim.grad_accum
        scale = sp_loss_scale(cfg.sp_size) / accum
        loss_sum = torch.zeros((), dtype=torch.float64)
        groups = None
        tokens = 0
        options = []
        for micro in range(accum):
            pb = self.prepare(self._next_batch(), step, micro)
            if self.cfg.lora is not None and self.cfg.lora.dropout > 0:  # peft's dropout draws globally
                torch.manual_seed(lora.dropout_seed(cfg.seed, step, micro, self.env.rank))
            loss, out = self.forward_loss(pb)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"step {step}: the loss is {loss.item()} (samples {pb.keys[:4]})")
            (loss * scale).backward()
            loss_sum += loss.detach().double().cpu()
            g = group_sums(out.token_acc, pb.schedule)
            groups = g if groups is None else groups + g
            tokens += pb.num_tokens
            options.append(pb.option)

        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
        if not torch.isfinite(norm):
            raise FloatingPointError(f"step {step}: the gradient norm is {norm.item()}")
        lr = self.lr_schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.module)
        self.step = step

        # metrics: mean loss over the global batch, token accuracy, global tokens
        world, sp = self.env.world_size, self.env.sp_size
        packed = torch.cat([loss_sum.reshape(1) / accum, torch.tensor([tokens / sp], dtype=torch.float64)])
        packed = all_reduce_sum(torch.cat([packed, groups.flatten()]), self.env)
        loss_mean = float(packed[0] / world)
        gsum = packed[2:].reshape(-1, 2)
        elapsed = time.perf_counter() - t0
        metrics = {
            "loss": loss_mean,
            "acc": float(gsum[:, 0].sum() / gsum[:, 1].sum()),
            "grad_norm": float(norm),
            "lr": lr,
            "tokens": int(round(float(packed[1]))),
            "tokens_per_s": float(packed[1]) / max(elapsed, 1e-9),
            "step_time_s": elapsed,
            "epoch": self.epoch,
            "subset": options[0] if accum == 1 else options,
        }
        metrics.update(group_accuracies(gsum))
        return metrics

    # -- the run -------------------------------------------------------------------------------
    def save(self) -> Path:
        return ckpt.save_checkpoint(self.run_dir, self.step, self.checkpoint_state(), keep=self.cfg.keep)

    def export(self) -> Path | None:
        """Write the final weights (and the EMA's) as trained-model folders; rank 0 writes."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=self.cfg.lora is not None)
        state = _strip(get_model_state_dict(self.module, options=opts))
        ema = _strip(self.ema.full_state()) if self.ema is not None else None
        final = self.run_dir / "final"
        if self.env.is_main:
            extra = {"step": self.step, "seed": self.cfg.seed}
            save = save_model_folder
            if self.cfg.lora is not None:
                extra.update(name=self.cfg.lora.name or self.run_dir.name, base_model=self.cfg.model.init)

                def save(state, tcfg, folder, meta):
                    return lora.write_adapter_folder(folder, state, self.cfg.lora, tcfg, meta)

            save(state, self.tcfg, final, extra)
            if ema is not None:
                save(ema, self.tcfg, self.run_dir / "final_ema", {**extra, "ema_decay": self.ema.decay})
        barrier(self.env)
        return final

    def train(self) -> TrainResult:
        cfg = self.cfg
        logger = MetricsLogger(
            self.run_dir,
            enabled=self.env.is_main,
            total_steps=cfg.steps,
            start_step=self.step,
            progress=cfg.log.progress,
            tensorboard=cfg.log.tensorboard,
            wandb=cfg.log.wandb,
            wandb_project=cfg.log.wandb_project,
            config=cfg.to_dict(),
        )
        losses: dict[int, float] = {}
        try:
            if self.step >= cfg.steps:
                warnings.warn(f"the run is already at step {self.step} of {cfg.steps}; nothing to train", stacklevel=2)
            while self.step < cfg.steps:
                metrics = self.train_step()
                losses[self.step] = metrics["loss"]
                if self.step % cfg.log.every == 0 or self.step == cfg.steps:
                    logger.log(self.step, metrics)
                logger.progress(self.step, metrics)
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.save()
            final = self.export()
        finally:
            logger.close()
        return TrainResult(self.step, self.run_dir, final, losses)
