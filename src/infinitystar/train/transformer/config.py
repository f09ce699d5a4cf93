"""The transformer trainer's configuration: nested dataclasses read from a JSON recipe.

A recipe is a JSON object whose sections mirror :class:`TrainConfig` (``model``, ``schedule``,
``loss``, ``data``, ``optim``, ``log``, plus top-level run settings). Missing keys keep the
defaults below, which are the original's training defaults (section 6.7 of the reference:
AdamW (0.9, 0.97), lr 4e-5 constant, weight decay 0, grad clip 5, condition dropout 0.1,
bitwise self-correction 0.3, variable-length scale subsets, scale-reweighted loss). Unknown keys
and values of the wrong type are errors naming the dotted key (:mod:`infinitystar.config_dicts`).
Command-line overrides use dotted paths (``optim.lr=1e-4``) through
:func:`~infinitystar.config_dicts.apply_overrides`. The resolved config is written into the run
folder (``config.json``) so that a run can be reproduced and resumed.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infinitystar import config_dicts
from infinitystar.config_dicts import apply_overrides
from infinitystar.models.config import TransformerConfig, get_preset
from infinitystar.models.transformer.lora import ADAPTER_NAME, BLOCK_TARGETS
from infinitystar.sizes import BASE_SCALES, PN_NUM_SCALES, RESOLUTIONS
from infinitystar.train.checkpoint_checks import parse_resume
from infinitystar.train.optim import LR_SCHEDULES
from infinitystar.train.recipe import read_recipe

#: The original's ``video_var_len_prob`` for 480p ('[40,30,20,6,3,1,60,40,12,6,2]').
ORIGINAL_VAR_LEN_PROBS: tuple[float, ...] = (40, 30, 20, 6, 3, 1, 60, 40, 12, 6, 2)

PRECISIONS = ("auto", "bf16", "fp32")
PARAM_DTYPES = ("float32", "bfloat16")


def template_scale_count(resolution: str) -> int | None:
    """Scales per pyramid of a resolution name ('480p' -> 14, 'scales:3' -> 3), None if unknown."""
    pn = RESOLUTIONS.get(resolution, resolution)
    if pn in PN_NUM_SCALES:
        return PN_NUM_SCALES[pn]
    m = re.fullmatch(r"scales:(\d+)", resolution)
    if m and 1 <= int(m.group(1)) <= len(BASE_SCALES):
        return int(m.group(1))
    return None


#: how errors of the dict -> dataclass builder name this config
WHAT = "training config"


def _fail(section: str, msg: str) -> None:
    raise ValueError(f"invalid {WHAT} [{section}]: {msg}")


#: ``model.init`` naming the built-in default model's transformer (wherever the package is installed)
BUILTIN_INIT = "builtin"


def resolve_init(init: str | None, resolution: str | None, options=None) -> str | None:
    """``model.init`` as a local path: a Hugging Face repo id fetched into the hub cache (its transformer at
    ``resolution`` only; ``options``: :class:`~infinitystar.hub.HubOptions`); None and :data:`BUILTIN_INIT` as
    they are. A name that is neither a path nor a repo id fails with the accepted forms."""
    if init is None or init == BUILTIN_INIT:
        return init
    from infinitystar.hub import resolve

    return str(resolve(init, ("transformer",), resolution, options))


@dataclass
class ModelSection:
    """Which transformer to train and where its first weights come from."""

    preset: str = "tiny"  #: a name of ``infinitystar.models.config.PRESETS``
    #: fields of :class:`~infinitystar.models.config.TransformerConfig` replacing the preset's
    overrides: dict[str, Any] = field(default_factory=dict)
    #: initial weights: a released-format checkpoint (folder with ``model.safetensors.index.json``
    #: or a ``.safetensors`` file with the original key names), a model folder written by this
    #: trainer (``config.json`` + ``model.safetensors``), a run folder / ``step_*`` checkpoint, or
    #: ``"builtin"``: the built-in default model's transformer
    init: str | None = None
    attn_impl: str = "auto"  #: 'auto' (FlexAttention on CUDA), 'dense' or 'flex'

    def __post_init__(self) -> None:
        get_preset(self.preset)  # raises with the accepted names
        if not isinstance(self.overrides, dict):
            _fail("model", f"overrides must be an object of TransformerConfig fields, got {self.overrides!r}")
        if self.attn_impl not in ("auto", "dense", "flex"):
            _fail("model", f"attn_impl must be 'auto', 'dense' or 'flex', got {self.attn_impl!r}")

    def transformer_config(self) -> TransformerConfig:
        base = get_preset(self.preset).transformer.to_dict()
        base.update(self.overrides)
        # errors name the key as the recipe spells it: model.overrides.<field>
        return config_dicts.from_dict(TransformerConfig, base, what=WHAT, where="model.overrides")


@dataclass
class ScheduleSection:
    """How a batch's latent shape becomes a scale schedule.

    With ``resolution`` ('480p', '720p' or a budget such as '0.40M') the original's template
    schedule for the sample's aspect ratio is used, and the latent's (h, w) must equal its
    largest scale; ``'scales:K'`` keeps the template's first K sizes (the small multi-aspect
    caches ``infinitystar extract --resolution scales:K`` writes). With ``scales`` (a list of
    ``[h, w]``, smallest first, the last equal to the latent's (h, w)) a custom pyramid is used
    for every clip: one fixed small size for tests and experiments.
    """

    resolution: str | None = None
    scales: list[list[int]] | None = None
    image_repetition: list[int] | str | None = None  #: per pyramid scale; default 1 (or the release's)
    video_repetition: list[int] | str | None = None
    detail_scale_min_tokens: int | None = None  #: h*w below this is semantic; default 350 for custom
    frames_per_clip: int = 20  #: latent frames per video clip (20 = 5 s)

    def __post_init__(self) -> None:
        if self.resolution is not None and self.scales is not None:
            _fail("schedule", "give either 'resolution' (e.g. '480p') or 'scales' (a list of [h, w]), not both")
        if self.resolution is not None:
            self.resolution = str(self.resolution).strip()
            if template_scale_count(self.resolution) is None:
                accepted = list(RESOLUTIONS) + list(PN_NUM_SCALES) + ["scales:K (K = 1..15)"]
                _fail("schedule", f"unknown resolution {self.resolution!r}; accepted: {', '.join(accepted)}")
        if self.scales is not None:
            ok = isinstance(self.scales, list) and self.scales
            ok = ok and all(isinstance(s, (list, tuple)) and len(s) == 2 and min(s) >= 1 for s in self.scales)
            if not ok:
                _fail("schedule", f"scales must be a non-empty list of [h, w] with positive sizes, got {self.scales!r}")
            self.scales = [[int(h), int(w)] for h, w in self.scales]
        if self.frames_per_clip < 1:
            _fail("schedule", f"frames_per_clip must be >= 1, got {self.frames_per_clip}")


@dataclass
class LossSection:
    """What one training sequence holds and how it is scored (the original's defaults)."""

    self_correction: float = 0.3  #: bitwise self-correction strength (max flip probability); 0 = off
    var_len: bool = True  #: train a random subset of scales per step (``train_with_var_seq_len``)
    #: weights of the subset options (the original's table), truncated to the options and normalised
    var_len_probs: list[float] = field(default_factory=lambda: list(ORIGINAL_VAR_LEN_PROBS))
    #: the original's ``drop_720p_last_scale``: the 5 s table never keeps a 15th (720p) scale
    drop_last_scale: bool = True
    reweight_by_scale: float = 4.0  #: ``w_s = min(max_reweight, (V_max / V_s)^(1/(1+r))) * V_s``; 0 = token mean
    max_reweight: float = 40.0
    cond_drop_prob: float = 0.1  #: probability to train a sample with the null text (guidance)

    def __post_init__(self) -> None:
        if not 0 <= self.self_correction <= 1:
            _fail("loss", f"self_correction must be in [0, 1], got {self.self_correction}")
        if not 0 <= self.cond_drop_prob <= 1:
            _fail("loss", f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        probs = self.var_len_probs
        if not probs or any(not isinstance(p, (int, float)) or p < 0 or not math.isfinite(p) for p in probs):
            _fail("loss", f"var_len_probs must be non-negative numbers, got {probs!r}")
        if self.reweight_by_scale < 0 or self.max_reweight <= 0:
            _fail("loss", "reweight_by_scale must be >= 0 and max_reweight > 0")


@dataclass
class SyntheticSection:
    """Random latents and text features (smoke tests, benchmarks, the tiny recipe)."""

    num_samples: int = 8
    latent_frames: list[int] = field(default_factory=lambda: [1])  #: one bucket per latent length t
    latent_hw: list[int] = field(default_factory=lambda: [8, 8])
    h_div_w: float = 1.0
    text_len: int = 8  #: longest caption in tokens (lengths vary between half and this)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.text_len < 1:
            _fail("data.synthetic", "num_samples and text_len must be >= 1")
        if not self.latent_frames or any(t < 1 for t in self.latent_frames):
            _fail("data.synthetic", f"latent_frames must be positive lengths, got {self.latent_frames}")
        if len(self.latent_hw) != 2 or min(self.latent_hw) < 1:
            _fail("data.synthetic", f"latent_hw must be [h, w], got {self.latent_hw}")


@dataclass
class DataSection:
    """Where batches come from: a latent cache (``infinitystar extract``) or synthetic data."""

    #: folder written by ``infinitystar extract``, or a list of them read as one (new data + replayed data)
    cache: str | list[str] | None = None
    synthetic: SyntheticSection | None = None
    batch_size: int = 1  #: samples per data-parallel rank and micro-step
    #: folder of a T5 encoder for samples without cached text features (encoded online, no grad)
    text_encoder: str | None = None
    #: extra keyword arguments for ``LatentDataset`` (caption options, max duration, ...)
    dataset_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            _fail("data", f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class OptimSection:
    """AdamW with optional warmup + cosine decay, clipping, EMA and gradient accumulation."""

    lr: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.97)
    eps: float = 1e-8
    weight_decay: float = 0.0  #: applied to weight matrices only (norms, biases, null text: none)
    grad_clip: float = 5.0  #: max global gradient norm; 0 = no clipping (the norm is still logged)
    lr_schedule: str = "constant"  #: 'constant' (the original) or 'cosine'
    warmup_steps: int = 0  #: linear warmup from 0 (both schedules)
    min_lr_ratio: float = 0.0  #: cosine floor as a fraction of ``lr``
    grad_accum: int = 1  #: micro-batches per optimizer step
    ema_decay: float | None = None  #: keep an exponential moving average of the weights (0.9999 in the original)
    fused: bool | None = None  #: ``torch.optim.AdamW(fused=...)``; default: fused on CUDA

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            _fail("optim", f"lr must be a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            _fail("optim", f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            _fail("optim", "weight_decay and grad_clip must be >= 0 and eps > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            _fail("optim", f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            _fail("optim", "warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if self.grad_accum < 1:
            _fail("optim", f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            _fail("optim", f"ema_decay must be in (0, 1) or null, got {self.ema_decay}")


@dataclass
class LogSection:
    """Progress bar, metrics jsonl (always), TensorBoard and wandb (optional); rank 0 only."""

    progress: bool = True
    tensorboard: bool = True  #: used when the ``tensorboard`` package is installed
    wandb: bool = False
    wandb_project: str = "infinitystar"
    every: int = 1  #: write metrics every this many steps

    def __post_init__(self) -> None:
        if self.every < 1:
            _fail("log", f"every must be >= 1, got {self.every}")


@dataclass
class LoraSection:
    """LoRA fine-tuning (``pip install 'infinitystar[lora]'``): peft adapters on the blocks' linear layers train, the
    base weights (``model.init``) stay frozen, and checkpoints and the final output hold the adapters only.
    ``--set lora.rank=16`` on a recipe without this section adds it."""

    rank: int = 16
    alpha: float = 16.0  #: the update is scaled by alpha / rank
    dropout: float = 0.0  #: dropout on the adapters' input
    #: which linears of every block get an adapter (a subset of BLOCK_TARGETS)
    target_modules: list[str] = field(default_factory=lambda: list(BLOCK_TARGETS))
    name: str | None = None  #: the adapter's name when loaded (default: the run folder's name)

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or self.rank < 1:
            _fail("lora", f"rank must be a positive int, got {self.rank!r}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            _fail("lora", f"alpha must be a positive number, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            _fail("lora", f"dropout must be in [0, 1), got {self.dropout!r}")
        unknown = [t for t in self.target_modules if t not in BLOCK_TARGETS]
        if not self.target_modules or unknown or len(set(self.target_modules)) != len(self.target_modules):
            _fail(
                "lora",
                f"target_modules must be distinct names among {', '.join(BLOCK_TARGETS)}; got {self.target_modules!r}",
            )
        if self.name is not None and not ADAPTER_NAME.match(self.name):
            _fail("lora", f"name {self.name!r} must be 1-64 letters, digits, '_' or '-'")


@dataclass
class TrainConfig:
    """A whole training run. ``TrainConfig.load(path, overrides)`` reads a recipe."""

    model: ModelSection = field(default_factory=ModelSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    loss: LossSection = field(default_factory=LossSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    log: LogSection = field(default_factory=LogSection)
    lora: LoraSection | None = None  #: train LoRA adapters instead of every weight
    out: str = "runs/train"  #: run folder: config, checkpoints, metrics, final model
    steps: int = 100  #: optimizer steps in total (a resumed run continues up to this)
    seed: int = 0  #: model init and every random draw of the data path
    #: continue the run in ``out``: true or 'latest' (the newest checkpoint), 'latest-valid' (the newest intact one)
    #: or a step number
    resume: bool | int | str = False
    device: str = "auto"  #: 'auto' (cuda if available), 'cpu', 'cuda'
    precision: str = "auto"  #: 'auto' (bf16 autocast on CUDA, fp32 on CPU), 'bf16', 'fp32'
    sp_size: int = 1  #: sequence-parallel ranks per data-parallel group (Ulysses)
    activation_checkpointing: bool | None = None  #: per block; default on for CUDA
    fsdp_param_dtype: str = "float32"  #: dtype of FSDP all-gathers ('bfloat16' halves the traffic)
    save_every: int = 200  #: checkpoint every this many steps (and at the end)
    keep: int = 2  #: newest checkpoints kept

    def __post_init__(self) -> None:
        if self.steps < 1:
            _fail("run", f"steps must be >= 1, got {self.steps}")
        if self.precision not in PRECISIONS:
            _fail("run", f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            _fail("run", f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.sp_size < 1:
            _fail("run", f"sp_size must be >= 1, got {self.sp_size}")
        if self.fsdp_param_dtype not in PARAM_DTYPES:
            _fail("run", f"fsdp_param_dtype must be one of {PARAM_DTYPES}, got {self.fsdp_param_dtype!r}")
        try:
            self.resume = parse_resume(self.resume)
        except ValueError as exc:
            _fail("run", str(exc))
        if self.save_every < 1 or self.keep < 1:
            _fail("run", "save_every and keep must be >= 1")
        if not self.out:
            _fail("run", "out (the run folder) must be given")
        if self.schedule.resolution is None and self.schedule.scales is None:
            _fail("schedule", "set 'resolution' ('480p', '720p', '0.40M', ...) or 'scales' (a list of [h, w])")
        if self.data.cache is None and self.data.synthetic is None:
            _fail("data", "give a latent cache folder (data.cache / --cache) or a 'synthetic' data section")
        if self.data.cache is not None and self.data.synthetic is not None:
            _fail("data", "give either data.cache or data.synthetic, not both")
        if self.lora is not None and not self.model.init:
            _fail("lora", "a LoRA run adapts existing weights: set model.init (--init) to the base model")
        tcfg = self.model.transformer_config()
        if self.sp_size > 1 and (tcfg.num_heads % self.sp_size or tcfg.num_kv_heads % self.sp_size):
            _fail(
                "run",
                f"sp_size {self.sp_size} must divide the heads ({tcfg.num_heads}) and key/value heads "
                f"({tcfg.num_kv_heads}) of the model",
            )

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a recipe dict: sections built, unknown keys and values of the wrong type named by dotted path."""
        return config_dicts.from_dict(cls, d, what=WHAT)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """A recipe file (or the defaults when ``path`` is None) with dotted ``overrides``."""
        d = {} if path is None else read_recipe(path, "training recipe")
        return cls.from_dict(apply_overrides(d, overrides or {}))

    def save(self, path: str | Path) -> None:
        from infinitystar.files import write_json

        write_json(path, self.to_dict())
