"""LoRA adapters on a loaded transformer: several at once, each with its own scale, applied on the fly or fused.

An adapter adds a low-rank update to some of the transformer's linear layers (its blocks' ``q_proj``, ``k_proj``,
``v_proj``, ``o_proj``, ``gate_proj``, ``up_proj``, ``down_proj``)::

    y = W x + sum over adapters a of  scale_a * (alpha_a / r_a) * B_a (A_a x)        A_a [r, in], B_a [out, r]

Why this module and not peft at inference: training uses peft (``infinitystar.train.transformer.lora``), but loading
an adapter to generate should not cost a 10-second import of peft and transformers, nor change the model's state
dict. A target layer's class is swapped in place for :class:`LoraLinear`, a subclass of ``nn.Linear`` that keeps
its ``weight`` (same tensor, same name), so ``save_pretrained``, ``torch.compile`` of the blocks and everything that
reads the weights keep working; the adapters' tensors are non-persistent buffers (they move with ``.to()`` and never
enter a state dict). Removing the last adapter of a layer swaps the class back.

- A scale of 0 skips the adapter: the output is the base model's, bit for bit.
- :func:`fuse` adds ``scale * alpha / r * B A`` into ``W`` (computed in fp32, rounded once to the weight's dtype), so
  generation runs at the base model's speed; :func:`unfuse` subtracts the same product (the base weights come back
  up to one rounding of the weight's dtype). Scales cannot change while fused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from infinitystar.models.transformer.offload import offload_of
from infinitystar.models.transformer.quantize import quantization_of

__all__ = [
    "ADAPTER_NAME",
    "BLOCK_TARGETS",
    "LoraError",
    "LoraLinear",
    "LoraWeights",
    "attach",
    "detach",
    "fuse",
    "is_fused",
    "loaded_adapters",
    "set_scale",
    "unfuse",
]

#: the linear layers of a block LoRA targets (every projection of attention and of the MLP)
BLOCK_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: what an adapter may be called: it names buffers and appears in CLI flags, so letters, digits, '_' and '-'
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


class LoraError(ValueError):
    """An adapter that cannot be loaded or used as asked; the message says why and what is accepted."""


@dataclass(frozen=True)
class LoraWeights:
    """One adapter's update of one linear layer: ``scaling * up @ down`` (``scaling`` = alpha / r, or alpha / sqrt(r)
    for rank-stabilised LoRA)."""

    down: torch.Tensor  #: A, ``[r, in_features]``
    up: torch.Tensor  #: B, ``[out_features, r]``
    scaling: float


class _Adapter(nn.Module):
    """One adapter's tensors on one layer (non-persistent buffers: they follow ``.to()`` but stay out of state
    dicts), its user scale, and the scale fused into the weight (None when not fused)."""

    def __init__(self, weights: LoraWeights, scale: float, like: torch.Tensor):
        super().__init__()
        self.register_buffer("down", weights.down.to(device=like.device, dtype=like.dtype), persistent=False)
        self.register_buffer("up", weights.up.to(device=like.device, dtype=like.dtype), persistent=False)
        self.scaling = float(weights.scaling)
        self.scale = float(scale)
        self.fused_scale: float | None = None

    def delta(self, scale: float) -> torch.Tensor:
        """``scale * scaling * up @ down`` in fp32: ``[out, in]``."""
        return (self.up.float() @ self.down.float()) * (scale * self.scaling)


class LoraLinear(nn.Linear):
    """An ``nn.Linear`` with LoRA adapters (see the module docstring); built by :func:`attach`, never directly."""

    adapters: nn.ModuleDict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        for a in self.adapters.values():
            if a.scale != 0.0 and a.fused_scale is None:
                y = y + F.linear(F.linear(x, a.down), a.up) * (a.scale * a.scaling)  # [..., r] -> [..., out]
        return y


def _lora_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield name, module


def loaded_adapters(model: nn.Module) -> dict[str, float]:
    """``{name: scale}`` of the adapters attached to ``model``, in the order they were attached."""
    out: dict[str, float] = {}
    for _, layer in _lora_layers(model):
        for name, a in layer.adapters.items():
            out.setdefault(name, a.scale)
    return out


def is_fused(model: nn.Module) -> bool:
    """Whether any adapter of ``model`` is fused into its weights."""
    return any(a.fused_scale is not None for _, layer in _lora_layers(model) for a in layer.adapters.values())


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not ADAPTER_NAME.match(name):
        raise LoraError(
            f"adapter name {name!r} is not accepted: use 1-64 letters, digits, '_' or '-' (not starting with '-')"
        )
    return name


def _check_scale(scale: float, what: str = "LoRA scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise LoraError(f"{what} must be a number, got {type(scale).__name__} {scale!r}")
    scale = float(scale)
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise LoraError(f"{what} must be a finite number, got {scale}")
    return scale


def attach(model: nn.Module, name: str, weights: Mapping[str, LoraWeights], scale: float = 1.0) -> None:
    """Attach adapter ``name`` to ``model``: ``weights`` maps module names (``blocks.0.attn.q_proj``) to their
    update. Every module must be an ``nn.Linear`` of ``model`` with matching shapes; nothing is changed unless all
    are. Fails if ``name`` is attached already or an adapter is fused (unfuse first)."""
    _check_name(name)
    scale = _check_scale(scale)
    if name in loaded_adapters(model):
        raise LoraError(f"an adapter named {name!r} is loaded already; unload it first or choose another name")
    if is_fused(model):
        raise LoraError("adapters are fused into the weights: call unfuse_lora() before loading another one")
    modules = dict(model.named_modules())
    problems = []
    for key, w in weights.items():
        layer = modules.get(key)
        if not isinstance(layer, nn.Linear):
            problems.append(f"{key}: {'no such layer' if layer is None else type(layer).__name__ + ' is not Linear'}")
            continue
        want_down, want_up = (w.down.shape[0], layer.in_features), (layer.out_features, w.down.shape[0])
        if tuple(w.down.shape) != want_down or tuple(w.up.shape) != want_up:
            problems.append(
                f"{key}: A {tuple(w.down.shape)} / B {tuple(w.up.shape)}, the layer needs {want_down} / {want_up}"
            )
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... ({len(problems) - 6} more)" if len(problems) > 6 else "")
        raise LoraError(f"adapter {name!r} does not fit this transformer: {shown}")
    for key, w in weights.items():
        layer = modules[key]
        if not isinstance(layer, LoraLinear):
            layer.__class__ = LoraLinear  # same object, same weight: only the forward changes
            layer.adapters = nn.ModuleDict()
        layer.adapters[name] = _Adapter(w, scale, layer.weight)
    _refresh_offload(model)


def _refresh_offload(model: nn.Module) -> None:
    """Block offload keeps a list of each block's tensors: adapters added or removed must enter or leave it."""
    offload = offload_of(model)
    if offload is not None:
        offload.refresh()


def _named(model: nn.Module, name: str | None) -> list[str]:
    names = list(loaded_adapters(model))
    if name is None:
        return names
    if name not in names:
        raise LoraError(f"no adapter named {name!r} is loaded; loaded: {', '.join(names) or 'none'}")
    return [name]


def set_scale(model: nn.Module, scale: float, name: str | None = None) -> None:
    """Set the scale of adapter ``name`` (every adapter when None). 0 turns it off exactly."""
    scale = _check_scale(scale)
    names = _named(model, name)
    if is_fused(model):
        raise LoraError("adapters are fused into the weights: call unfuse_lora() before changing their scales")
    for _, layer in _lora_layers(model):
        for n in names:
            if n in layer.adapters:
                layer.adapters[n].scale = scale


def detach(model: nn.Module, name: str | None = None) -> list[str]:
    """Remove adapter ``name`` (every adapter when None); returns the names removed. What was fused stays in the
    weights (fuse, then detach, bakes an adapter into the model)."""
    names = _named(model, name)
    for _, layer in list(_lora_layers(model)):
        for n in names:
            if n in layer.adapters:
                del layer.adapters[n]
        if not len(layer.adapters):
            del layer.adapters
            layer.__class__ = nn.Linear
    _refresh_offload(model)
    return names


@torch.no_grad()
def fuse(model: nn.Module) -> list[str]:
    """Add every active (scale != 0) adapter not fused yet into its layers' weights; returns their names. Quantized
    weights are refused: adding a float product to int8/fp8 codes would re-quantize them (the adapters then keep
    working on the fly, unfused)."""
    mode = quantization_of(model)
    if mode is not None and any(True for _ in _lora_layers(model)):
        raise LoraError(
            f"cannot fuse adapters into {mode}-quantized weights (it would round the product to {mode} codes); they "
            "work unfused (the same output, a little slower), or load the model without quantize= to fuse"
        )
    done: dict[str, None] = {}
    for _, layer in _lora_layers(model):
        for n, a in layer.adapters.items():
            if a.fused_scale is None and a.scale != 0.0:
                layer.weight.copy_((layer.weight.float() + a.delta(a.scale)).to(layer.weight.dtype))
                a.fused_scale = a.scale
                done[n] = None
    return list(done)


@torch.no_grad()
def unfuse(model: nn.Module) -> list[str]:
    """Subtract every fused adapter from its layers' weights; returns their names."""
    done: dict[str, None] = {}
    for _, layer in _lora_layers(model):
        for n, a in layer.adapters.items():
            if a.fused_scale is not None:
                layer.weight.copy_((layer.weight.float() - a.delta(a.fused_scale)).to(layer.weight.dtype))
                a.fused_scale = None
                done[n] = None
    return list(done)
