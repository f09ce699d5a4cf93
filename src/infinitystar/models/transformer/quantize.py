"""Weight-only quantization of the transformer blocks (``--quantize int8|fp8``) through torchao.

Only the blocks' linear layers are quantized (q/k/v/o projections and the SwiGLU's three matrices: 99.9% of the 8B
model's weights). Their weights are stored in 8 bits with one scale per output row and dequantized inside the matrix
product; activations stay in the pipeline dtype. Everything whose precision the output depends on most stays as it is:
the embeddings (``text_proj``, ``word_embed``), the learned null text ``cfg_uncond``, every RMSNorm and both fp32
heads. torchao (``pip install 'infinitystar[quant]'``) provides the quantized tensor types; they are plain
``torch.Tensor`` subclasses, so the block runner's token chunks and ``torch.compile`` run them unchanged.

Blocks are quantized one at a time on the target device, so quantizing the released 8B never holds more than one
full-precision block there: a 16 GB card can load it in int8.
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import torch
import torch.nn as nn

from infinitystar.models.transformer.offload import offload_of
from infinitystar.models.transformer.tensors import map_tensor, tensor_bytes

#: accepted ``quantize=`` values (``None``: full precision)
QUANTIZE_MODES = ("int8", "fp8")
QUANT_EXTRA_HINT = "pip install 'infinitystar[quant]' (torchao)"
#: fp8 weight-only needs hardware fp8 (Ada Lovelace, Hopper and later)
FP8_MIN_CAPABILITY = (8, 9)


class QuantizeError(ValueError):
    """An unknown quantization mode, one this device cannot run, or torchao missing."""


def check_quantize(mode: str | None, device: torch.device | str | None = None) -> str | None:
    """The mode ``mode`` names (``None`` / ``'none'``: full precision), checked against ``device`` and torchao.

    ``int8`` runs on the CPU and CUDA; ``fp8`` needs a CUDA GPU of compute capability 8.9 or more.
    """
    if mode is None or (isinstance(mode, str) and mode.strip().lower() in ("", "none")):
        return None
    if not isinstance(mode, str):
        raise QuantizeError(f"quantize must be a string ({', '.join(QUANTIZE_MODES)}) or None, got {mode!r}")
    mode = mode.strip().lower()
    if mode not in QUANTIZE_MODES:
        raise QuantizeError(f"unknown quantize {mode!r}; accepted: {', '.join(QUANTIZE_MODES)} (or none)")
    if device is not None and torch.device(device).type not in ("cpu", "cuda"):
        raise QuantizeError(f"quantize {mode!r} runs on cpu and cuda devices, not {torch.device(device).type}")
    if mode == "fp8" and device is not None:
        _check_fp8_device(torch.device(device))
    _torchao_quantization()
    return mode


def _check_fp8_device(device: torch.device) -> None:
    if device.type != "cuda":
        raise QuantizeError(
            f"quantize 'fp8' needs a CUDA GPU with fp8 support (compute capability >= 8.9: L4, RTX 40xx, H100 ...); "
            f"the device is {device.type}: use quantize 'int8'"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise QuantizeError(
            f"quantize 'fp8' needs compute capability >= 8.9; {torch.cuda.get_device_name(device)} has "
            f"{capability[0]}.{capability[1]}: use quantize 'int8'"
        )


@contextlib.contextmanager
def quiet_torchao():
    """torchao logs a warning for each optional CUDA extension it cannot load (CPU builds of torch) and torch warns
    about a deprecated registration it makes; neither concerns the weight-only kernels used here (nor peft, which
    imports torchao when it is installed)."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _torchao_quantization():
    """``torchao.quantization``, imported lazily and quietly; a clear error naming the extra when it is missing."""
    try:
        with quiet_torchao():
            import torchao.quantization as tq
    except ImportError as exc:
        raise QuantizeError(f"weight-only quantization needs torchao ({exc}): {QUANT_EXTRA_HINT}") from None
    return tq


def _config(mode: str):
    tq = _torchao_quantization()
    return tq.Int8WeightOnlyConfig() if mode == "int8" else tq.Float8WeightOnlyConfig()


def quantized_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers quantization applies to: those inside ``model.blocks``, by qualified name."""
    return {
        f"blocks.{i}.{name}": m
        for i, blk in enumerate(model.blocks)
        for name, m in blk.named_modules()
        if isinstance(m, nn.Linear)
    }


def quantize_transformer(
    model: nn.Module,
    mode: str | None,
    device: torch.device | str | None = None,
    store: torch.device | str | None = None,
) -> nn.Module:
    """Quantize the blocks' linear layers of ``model`` (in place) to ``mode``; returns ``model``.

    Each block is moved to ``device`` (default: where it is), quantized there, and moved to ``store`` (default: left
    on ``device``; the CPU for block offload); the rest of the model is not touched. ``model.quantization`` records
    the mode (``save_pretrained`` refuses quantized weights).
    """
    mode = check_quantize(mode, device if device is not None else model.blocks[0].attn.q_proj.weight.device)
    if mode is None:
        return model
    if quantization_of(model) is not None:
        raise QuantizeError(f"the transformer is already quantized ({quantization_of(model)})")
    if offload_of(model) is not None:
        raise QuantizeError("quantize the transformer before enabling block offload (offload copies the host weights)")
    tq = _torchao_quantization()
    config = _config(mode)
    with quiet_torchao():
        for blk in model.blocks:
            if device is not None:
                blk.to(device)
            tq.quantize_(blk, config, filter_fn=lambda m, _fqn: isinstance(m, nn.Linear))
            if store is not None:  # through the inner tensors: no reliance on the subclass's own .to()
                for m in blk.modules():
                    for name, p in m._parameters.items():
                        if p is not None:
                            m._parameters[name] = nn.Parameter(map_tensor(p.detach(), lambda t: t.to(store)), False)
    model.quantization = mode
    # torch.compile of torchao's tensors warns once that AOT autograd's cache cannot hash them: not actionable
    warnings.filterwarnings("ignore", message=r".*does not implement _stable_hash_for_caching.*")
    return model


def quantization_of(model: nn.Module) -> str | None:
    """``'int8'`` / ``'fp8'`` for a transformer quantized by :func:`quantize_transformer`, else None."""
    return getattr(model, "quantization", None)


def check_saveable(model: nn.Module) -> None:
    """Saving writes full-precision weights in the original's key names: a quantized transformer is refused."""
    mode = quantization_of(model)
    if mode is not None:
        raise QuantizeError(
            f"the transformer's blocks are quantized ({mode}); saving writes full-precision weights only: save the "
            f"model loaded without quantization and pass quantize={mode!r} when loading it"
        )


def block_weight_bytes(model: nn.Module) -> int:
    """Bytes of every block's parameters (what quantization shrinks and block offload streams)."""
    return sum(tensor_bytes(p) for p in model.blocks.parameters())
