"""The transformer as training sees it: the module FSDP shards (with per-sample condition dropout), and the
starting weights of a run (``--init``: a released checkpoint, a trained-model folder, or a training checkpoint)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from infinitystar.files import read_json
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.checkpoint import is_model_folder, read_model_folder
from infinitystar.models.transformer.model import InfinityTransformer, PackedLogits
from infinitystar.schedule import Schedule
from infinitystar.train import checkpointing as ckpt
from infinitystar.train.distributed import (
    unwrapped_name,
)
from infinitystar.train.transformer.config import BUILTIN_INIT, TrainConfig

# --------------------------------------------------------------------------------------
# The model as trained
# --------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------
# The model as trained
# --------------------------------------------------------------------------------------


class TrainModule(nn.Module):
    """The transformer plus per-sample condition dropout, the unit FSDP shards at its root.

    Dropout needs the learned null text ``cfg_uncond``, which under FSDP is only whole inside
    the root's forward; doing it here (not in the transformer, whose own dropout draws one
    generator for the whole batch) lets each sample's decision come from its own generator.
    """

    def __init__(self, transformer: InfinityTransformer, attn_impl: str = "auto"):
        super().__init__()
        self.transformer = transformer
        self.attn_impl = attn_impl

    def forward(
        self,
        codes: torch.Tensor,
        texts: list[torch.Tensor],
        schedule: Schedule,
        counters: torch.Tensor,
        drop: list[bool],
    ) -> PackedLogits:
        null = self.transformer.cfg_uncond
        texts = [null[: t.shape[0]].to(t.dtype) if d else t for t, d in zip(texts, drop)]
        out = self.transformer(codes, texts, schedule, counters, attn_impl=self.attn_impl)
        # FSDP reduces the same set of gradients on every rank: parameters a step may not use
        # (the null text without dropped samples, the unused sos_token, a head whose kind of
        # scale is absent, see forward_loss) get an exact zero gradient instead of none
        anchor = (null.sum() + self.transformer.sos_token.sum()) * 0.0
        return PackedLogits(out.detail + anchor, out.semantic + anchor)


def _strip(state: dict[str, torch.Tensor], prefix: str = "transformer.") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        name = unwrapped_name(k)
        out[name[len(prefix) :] if k.startswith(prefix) else name] = v
    return out


def load_init_state(path: str | Path, cfg: TransformerConfig, resolution: str | None = None) -> dict[str, torch.Tensor]:
    """Full fp32 CPU state dict (our names) of ``--init``: a released-format checkpoint (a shard folder, a released
    model folder: the weights of ``resolution``, our layout: its ``transformer/``, or the original's training
    checkpoint ``global_step_N.pth``), a trained model folder, a run folder (its newest checkpoint), one ``step_*``
    checkpoint, or ``"builtin"`` (the built-in default model's transformer, wherever the package is installed)."""
    from infinitystar.checkpoints import CheckpointError
    from infinitystar.generation.layouts import BUILTIN_MODEL_DIR
    from infinitystar.models.transformer.checkpoint import load_original_transformer

    builtin = str(path) == BUILTIN_INIT
    p = BUILTIN_MODEL_DIR / "transformer" if builtin else Path(path)
    if builtin:
        found = read_json(p / "config.json", "built-in model config", CheckpointError)
        builtin_cfg = TransformerConfig.from_dict(found)
        if builtin_cfg != cfg:
            diff = {k: v for k, v in builtin_cfg.to_dict().items() if cfg.to_dict()[k] != v}
            raise CheckpointError(f"--init builtin: the built-in transformer has {diff}; set these model.overrides")
    if not p.exists():
        raise CheckpointError(f"--init checkpoint not found: {p}")
    p = _transformer_of_model_folder(p, resolution)
    if is_model_folder(p):
        found_cfg, state = read_model_folder(p)
        if found_cfg != cfg:
            raise CheckpointError(f"--init model {p} was trained with {found_cfg}, the recipe builds {cfg}")
        return {k: v.float() for k, v in state.items()}
    folder = None
    if p.is_dir() and (p / ckpt.META_NAME).is_file():
        folder = p
    elif p.is_dir() and ckpt.list_checkpoints(p):
        folder = ckpt.list_checkpoints(p)[0][1]
    if folder is not None:
        import torch.distributed.checkpoint as dcp

        with torch.device("meta"):
            model = TrainModule(InfinityTransformer(cfg))
        model.to_empty(device="cpu")
        template = {"model": model.state_dict()}
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            with ckpt.quiet_single_process():
                dcp.load(template, checkpoint_id=str(folder), no_dist=True)
        except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
            raise CheckpointError(f"cannot read the model of checkpoint {folder}: {ckpt.short_reason(exc)}") from exc
        return _strip(template["model"])
    return load_original_transformer(p, cfg).state_dict()


def _transformer_of_model_folder(path: Path, resolution: str | None) -> Path:
    """The transformer folder of a whole model folder (our layout, or the released one at ``resolution``); any other
    path as it is."""
    from infinitystar.checkpoints import CheckpointError
    from infinitystar.files import read_json
    from infinitystar.hub import MODEL_INDEX, RELEASED_WEIGHTS, own_components

    if (path / MODEL_INDEX).is_file():
        return path / own_components(read_json(path / MODEL_INDEX, "model index", CheckpointError))["transformer"]
    present = {r: path / name for r, name in RELEASED_WEIGHTS.items() if (path / name).is_dir()}
    if not present:
        return path
    if resolution in present:
        return present[resolution]
    if len(present) == 1 and resolution not in RELEASED_WEIGHTS:
        return next(iter(present.values()))
    raise CheckpointError(
        f"--init {path} holds the released weights for {', '.join(present)}; the recipe's schedule resolution is "
        f"{resolution!r}: set schedule.resolution to one of them or pass the weights folder itself"
    )


def transformer_from_checkpoint(folder: str | Path) -> InfinityTransformer:
    """The transformer of a training checkpoint ``RUN/step_N``: the architecture from the run's saved
    ``config.json`` (written when the run started), the weights from the checkpoint's model state."""
    from infinitystar.checkpoints import CheckpointError

    run_config = Path(folder).parent / "config.json"
    if not run_config.is_file():
        raise CheckpointError(f"{folder} is a training checkpoint but its run has no config.json ({run_config})")
    cfg = TrainConfig.load(run_config).model.transformer_config()
    transformer = InfinityTransformer(cfg)
    transformer.load_state_dict(load_init_state(folder, cfg))
    return transformer.eval()
