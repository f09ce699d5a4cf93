"""Where a pipeline's pieces live and in which form: weight-only quantization of the transformer blocks and what is
offloaded to the CPU (``--quantize``, ``--offload``).

``offload``: ``'text'`` keeps the text encoder on the CPU between prompts (the 0.1.0 ``--offload``); ``'blocks'``
keeps the transformer blocks in pinned CPU memory and streams each to the GPU for its turn
(:mod:`infinitystar.models.transformer.offload`); ``'all'`` is both. With quantization or block offload the model is
loaded on the CPU first and brought to the device block by block, so a card smaller than the full-precision model
can still load it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infinitystar.models.transformer.offload import enable_block_offload, offload_of
from infinitystar.models.transformer.quantize import check_quantize, quantization_of, quantize_transformer

#: accepted ``offload=`` values (``None`` = ``'none'``)
OFFLOAD_MODES = ("none", "text", "blocks", "all")


class PlacementError(ValueError):
    """An unknown offload mode, or a combination this pipeline cannot run."""


def check_offload(value: str | bool | None) -> str:
    """The offload mode ``value`` names: one of :data:`OFFLOAD_MODES` (``True`` = ``'text'``, ``None`` / ``False`` =
    ``'none'``, as the 0.1.0 ``offload_text_encoder`` flag)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "text"
    if not isinstance(value, str) or value.strip().lower() not in OFFLOAD_MODES:
        raise PlacementError(f"unknown offload {value!r}; accepted: {', '.join(OFFLOAD_MODES)}")
    return value.strip().lower()


@dataclass(frozen=True)
class Placement:
    """Checked settings: the compute ``device``, the quantization mode (None: full precision) and what lives on
    the CPU."""

    device: torch.device
    quantize: str | None = None
    offload_text: bool = False
    offload_blocks: bool = False

    @classmethod
    def of(cls, device: torch.device, quantize: str | None = None, offload: str | bool | None = None) -> Placement:
        mode = check_offload(offload)
        return cls(device, check_quantize(quantize, device), mode in ("text", "all"), mode in ("blocks", "all"))

    @property
    def offload(self) -> str:
        return {(False, False): "none", (True, False): "text", (False, True): "blocks"}.get(
            (self.offload_text, self.offload_blocks), "all"
        )

    @property
    def load_device(self) -> torch.device:
        """Where the weights are read to: the CPU when blocks are quantized or offloaded (the device then receives
        them block by block), else the device itself."""
        return torch.device("cpu") if self.quantize or self.offload_blocks else self.device


def place_transformer(transformer, placement: Placement):
    """Quantize the transformer's blocks (each on the device, then back to the host if offloaded) and set up block
    offload, as ``placement`` says; everything else goes to the device. Returns the transformer."""
    p = placement
    if p.quantize:
        quantize_transformer(transformer, p.quantize, p.device, store="cpu" if p.offload_blocks else None)
    if p.offload_blocks:
        enable_block_offload(transformer, p.device)
    else:
        transformer.to(p.device)
    return transformer


def place_components(parts, placement: Placement):
    """The transformer as :func:`place_transformer` says, the VAE on the device, the text encoder there too unless it
    is offloaded (it then comes to the device for each encoding). Returns ``parts``."""
    place_transformer(parts.transformer, placement)
    parts.vae.to(placement.device)
    parts.text_encoder.to("cpu" if placement.offload_text else placement.device)
    return parts


def checked_placement(device, quantize, offload, offload_text_encoder: bool, parallel: bool) -> Placement:
    """Where the parts live (quantization, offload), checked against the other arguments before anything loads."""
    place = Placement.of(device, quantize, "text" if offload is None and offload_text_encoder else offload)
    if offload_text_encoder and not place.offload_text:
        raise PlacementError(f"offload_text_encoder=True contradicts offload={offload!r}; use offload='all'")
    if parallel and (place.quantize or place.offload_blocks):
        raise PlacementError(
            "quantize / offload='blocks' with a parallel generation is not supported yet: use --fsdp to share "
            "the weights over the processes instead"
        )
    return place


def apply_placement(pipe, placement: Placement) -> None:
    """Bring an already loaded pipeline to ``placement`` (quantize its blocks, offload them, offload the text
    encoder); what is already so is left alone, so loading with a placement and applying it again changes nothing.
    Undoing quantization or block offload is refused: those need the model loaded again."""
    t = pipe.transformer
    have = quantization_of(t)
    if have != placement.quantize and have is not None:
        raise PlacementError(f"the transformer is {have}-quantized; to run it otherwise, load it again")
    if offload_of(t) is not None and not placement.offload_blocks:
        raise PlacementError("the transformer blocks are offloaded; to keep them on the device, load it again")
    if placement.quantize and have is None:
        quantize_transformer(t, placement.quantize, placement.device)
    if placement.offload_blocks and offload_of(t) is None:
        enable_block_offload(t, placement.device)
    pipe.offload_text_encoder = placement.offload_text
    pipe.text_encoder.to("cpu" if placement.offload_text else placement.device)
