"""LoRA fine-tuning in the transformer trainer: peft puts adapters on the blocks' linear layers, only they train,
and only they are saved.

The run is the trainer's usual one (FSDP2, activation checkpointing, bitwise self-correction, exact resume,
metrics); what changes:

- the model: peft's ``inject_adapter_in_model`` replaces every targeted ``nn.Linear`` of the blocks (on the meta
  device, before sharding) with a LoRA layer and freezes every other parameter;
- the starting weights: the base from ``model.init`` (renamed to peft's ``...base_layer.weight``), each adapter's
  A drawn like an ``nn.Linear`` weight from a generator seeded by the run's seed and the layer's name, B zero (so
  step 0 is the base model exactly). The base is read again on resume: checkpoints do not hold it;
- checkpoints hold the adapters, their optimizer state and the EMA of the adapters (a few MB), not the base;
- the final output (``RUN/final``, ``RUN/final_ema``) is an adapter folder
  (:mod:`infinitystar.models.transformer.lora_files`): peft's format, with the architecture recorded.

LoRA dropout draws from the global generator (peft's ``nn.Dropout``); the trainer seeds it per step, micro-step and
rank, so a resumed run repeats the same masks (they depend on how the batch is split over ranks, unlike every
other draw of a run).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from infinitystar.models.transformer.lora_files import write_adapter
from infinitystar.train.seeds import derive_seed, make_generator

__all__ = [
    "PEFT_ADAPTER",
    "add_adapters",
    "adapter_tensors",
    "peft_config",
    "require_peft",
    "with_adapters",
    "write_adapter_folder",
]

#: the adapter name peft uses inside the model during training
PEFT_ADAPTER = "default"
LORA_EXTRA_HINT = "pip install 'infinitystar[lora]'"


def require_peft() -> None:
    """Fail early, with the extra to install, when peft is missing."""
    from infinitystar.models.transformer.quantize import quiet_torchao

    try:
        with quiet_torchao():  # peft imports torchao when present: its CPU-build warnings are noise here
            import peft  # noqa: F401
    except ImportError:
        raise ValueError(f"the recipe's lora section trains LoRA adapters with peft: {LORA_EXTRA_HINT}") from None


def peft_config(section, base_model: str | None = None):
    """peft's ``LoraConfig`` of a recipe's ``lora`` section."""
    from peft import LoraConfig

    return LoraConfig(
        r=section.rank,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=list(section.target_modules),
        base_model_name_or_path=base_model,
        bias="none",
    )


def add_adapters(transformer: nn.Module, section) -> None:
    """Put peft LoRA layers on the targeted linears of every block of ``transformer`` (any device, meta included)
    and freeze everything else. Only modules inside ``blocks`` are targeted."""
    import warnings

    require_peft()
    from peft import inject_adapter_in_model

    cfg = peft_config(section)
    cfg.target_modules = _block_pattern(section.target_modules)
    with warnings.catch_warnings():  # peft warns about models that are not transformers' PreTrainedModel
        warnings.simplefilter("ignore")
        inject_adapter_in_model(cfg, transformer, adapter_name=PEFT_ADAPTER, low_cpu_mem_usage=True)
    trainable = [n for n, p in transformer.named_parameters() if p.requires_grad]
    if not trainable:  # cannot happen with the section's checks; guards against a peft change
        raise RuntimeError(f"peft put no adapter on {section.target_modules}")


def _block_pattern(targets) -> str:
    """A peft regex matching the targeted linears inside ``blocks`` only (not the heads or embeddings)."""
    return r"blocks\.\d+\.(attn|mlp)\.(" + "|".join(sorted(targets)) + ")"


def with_adapters(base: dict[str, torch.Tensor], model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The full starting state of an adapted ``model`` (its own key names, no wrapper prefixes): the base weights
    under peft's names, A of every adapter drawn like an ``nn.Linear`` weight (seeded by ``seed`` and the layer's
    name), B zero."""
    from infinitystar.train.distributed import unwrapped_name

    out: dict[str, torch.Tensor] = {}
    for key, p in model.state_dict(keep_vars=True).items():
        key = unwrapped_name(key)
        if ".lora_A." in key:
            a = torch.empty(p.shape, dtype=torch.float32)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=make_generator("cpu", seed, "lora-A", key))
            out[key] = a
        elif ".lora_B." in key:
            out[key] = torch.zeros(p.shape, dtype=torch.float32)
        else:
            out[key] = base[key.replace(".base_layer.", ".")]
    return out


def dropout_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The global-generator seed of one micro-step's LoRA dropout masks."""
    return derive_seed(seed, "lora-dropout", step, micro, rank)


def adapter_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """peft's in-model names (``{module}.lora_A.default.weight``) -> the file's (``{module}.lora_A.weight``)."""
    suffix = f".{PEFT_ADAPTER}.weight"
    return {k.replace(suffix, ".weight"): v for k, v in state.items() if ".lora_A." in k or ".lora_B." in k}


def write_adapter_folder(folder: Path, state: dict[str, torch.Tensor], section, tcfg, meta: dict[str, Any]) -> Path:
    """Write the adapters of ``state`` (in-model names) as an adapter folder with peft's config."""
    cfg = peft_config(section, base_model=meta.get("base_model"))
    cfg.inference_mode = True
    config = _jsonable(cfg.to_dict())
    full_meta = {"transformer": tcfg.to_dict(), **meta}
    return write_adapter(folder, adapter_tensors(state), config, full_meta)


def _jsonable(obj: Any) -> Any:
    """peft's config as plain JSON (enums as their value, sets as sorted lists)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        items = [_jsonable(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, set) else items
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj.value if hasattr(obj, "value") and isinstance(obj, str) else obj
    return getattr(obj, "value", str(obj))
