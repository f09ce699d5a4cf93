"""Load and save the transformer in the original (released) checkpoint format.

The original names its parameters after its module nesting (``block_chunks.{c}.module.{j}``,
``norm_hidden_sates`` (sic), ``semantic_head2``); our model has clean names. This module is the
single explicit adapter between the two, in both directions, and the loader of the released
layout: a single safetensors file, or a folder of shards with ``model.safetensors.index.json``
(``{"metadata": {...}, "weight_map": {key: shard_file}}``).

Loading is checked and lazy: every shard header is read (:mod:`.sources`) and the full key set and
shapes are checked (one :class:`CheckpointError` naming what is missing or mis-shaped; unknown extra
entries are skipped with one warning that lists them) before any tensor is read; the model is built
on the meta device and filled shard by shard, tensor by tensor, directly in the target dtype and
device (no fp32 copy of the whole model is made).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from infinitystar.checkpoints import CheckpointError, check_coverage, read_safetensors, save_safetensors, shapes_of
from infinitystar.files import read_json, write_json
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.models.transformer.quantize import check_saveable
from infinitystar.models.transformer.sources import INDEX_NAME as INDEX_NAME  # re-exported: tests and callers
from infinitystar.models.transformer.sources import SINGLE_NAME as SINGLE_NAME
from infinitystar.models.transformer.sources import WeightSource, open_weights

#: ``config.json`` ``"format"`` of a trained-model folder
MODEL_FORMAT = "infinitystar.transformer"

#: non-block parameters: original name -> our name (in the original's key order)
_TOP_LEVEL: dict[str, str] = {
    "cfg_uncond": "cfg_uncond",
    "sos_token": "sos_token",
    "text_proj.weight": "text_proj.weight",
    "text_proj.bias": "text_proj.bias",
    "word_embed.weight": "word_embed.weight",
    "word_embed.bias": "word_embed.bias",
    "norm_hidden_sates.weight": "norm.weight",
    "head.weight": "detail_head.weight",
    "head.bias": "detail_head.bias",
    "semantic_head2.weight": "semantic_head.weight",
    "semantic_head2.bias": "semantic_head.bias",
}
#: per-block parameters: original suffix -> our suffix (in the original's key order)
_BLOCK: dict[str, str] = {
    "attn.q_proj.weight": "attn.q_proj.weight",
    "attn.k_proj.weight": "attn.k_proj.weight",
    "attn.v_proj.weight": "attn.v_proj.weight",
    "attn.o_proj.weight": "attn.o_proj.weight",
    "attn.q_norm.weight": "attn.q_norm.weight",
    "attn.k_norm.weight": "attn.k_norm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "mlp_norm.weight",
}
_TOP_LEVEL_INV = {v: k for k, v in _TOP_LEVEL.items()}
_BLOCK_INV = {v: k for k, v in _BLOCK.items()}
_ORIG_BLOCK_RE = re.compile(r"^block_chunks\.(\d+)\.module\.(\d+)\.(.+)$")
_OURS_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


# --------------------------------------------------------------------------------------
# Key adapter
# --------------------------------------------------------------------------------------


def _per_chunk(cfg: TransformerConfig) -> int:
    return cfg.depth // cfg.block_chunks


def original_to_ours(key: str, cfg: TransformerConfig) -> str | None:
    """Our name for an original key, or None if the key has no counterpart in this config."""
    if key in _TOP_LEVEL:
        return _TOP_LEVEL[key]
    m = _ORIG_BLOCK_RE.match(key)
    if m is None or m.group(3) not in _BLOCK:
        return None
    c, j, per = int(m.group(1)), int(m.group(2)), _per_chunk(cfg)
    if c >= cfg.block_chunks or j >= per:
        return None
    return f"blocks.{c * per + j}.{_BLOCK[m.group(3)]}"


def ours_to_original(key: str, cfg: TransformerConfig) -> str:
    """The original key of one of our parameter names."""
    if key in _TOP_LEVEL_INV:
        return _TOP_LEVEL_INV[key]
    m = _OURS_BLOCK_RE.match(key)
    if m is None or m.group(2) not in _BLOCK_INV:
        raise KeyError(f"{key!r} is not a parameter of InfinityTransformer")
    c, j = divmod(int(m.group(1)), _per_chunk(cfg))
    return f"block_chunks.{c}.module.{j}.{_BLOCK_INV[m.group(2)]}"


def _meta_model(cfg: TransformerConfig) -> InfinityTransformer:
    with torch.device("meta"):
        return InfinityTransformer(cfg)


def expected_original_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Original key -> shape of every tensor a checkpoint for ``cfg`` must hold, in key order."""
    model = _meta_model(cfg)
    shapes = {ours_to_original(k, cfg): tuple(v.shape) for k, v in model.state_dict().items()}
    return {k: shapes[k] for k in _original_key_order(cfg)}


def _original_key_order(cfg: TransformerConfig) -> list[str]:
    keys = list(_TOP_LEVEL)
    for i in range(cfg.depth):
        c, j = divmod(i, _per_chunk(cfg))
        keys += [f"block_chunks.{c}.module.{j}.{s}" for s in _BLOCK]
    return keys


def to_original_state_dict(model: InfinityTransformer) -> dict[str, torch.Tensor]:
    """Our state dict under the original names, in the original key order."""
    ours = model.state_dict()
    by_orig = {ours_to_original(k, model.cfg): v for k, v in ours.items()}
    return {k: by_orig[k] for k in _original_key_order(model.cfg)}


def from_original_state_dict(state: Mapping[str, torch.Tensor], cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """An original state dict renamed to our names, after a strict coverage check."""
    check_coverage(expected_original_shapes(cfg), {k: tuple(v.shape) for k, v in state.items()}, "transformer")
    return {original_to_ours(k, cfg): v for k, v in state.items()}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _iter_tensors(source: WeightSource, group: Path, keys) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, CPU tensor) of one group, one at a time (tests replace it to prove nothing is read early)."""
    return source.tensors(group, keys)


def infer_transformer_config(path: str | os.PathLike | WeightSource, **overrides) -> TransformerConfig:
    """The :class:`TransformerConfig` a checkpoint in the original format was saved from, read
    from the tensor shapes in its headers (no tensor is loaded). ``path``: anything
    :func:`~infinitystar.models.transformer.sources.open_weights` opens, or an opened source.

    Widths, depth, heads (from the q/k norm width = head_dim), the MLP width, the text width and
    length and the chunking of the key names all follow from the shapes; what shapes cannot tell
    (``norm_eps``, ``rope_theta``, ...) keeps the released defaults unless given in ``overrides``.
    """
    source = path if isinstance(path, WeightSource) else open_weights(path)
    path, found = source.path, source.shapes()

    def shape(key: str) -> tuple[int, ...]:
        if key not in found:
            raise CheckpointError(f"{path} is not an InfinityStar transformer checkpoint: no {key!r} tensor")
        return found[key]

    blocks = sorted({(int(m.group(1)), int(m.group(2))) for m in map(_ORIG_BLOCK_RE.match, found) if m})
    if not blocks:
        raise CheckpointError(f"{path} holds no transformer block (block_chunks.*.module.*) tensors")
    chunks = 1 + max(c for c, _ in blocks)
    per_chunk = 1 + max(j for _, j in blocks)
    first = "block_chunks.0.module.0."
    embed_dim = shape("word_embed.weight")[0]
    head_dim = shape(first + "attn.q_norm.weight")[0]
    text_maxlen, text_channels = shape("cfg_uncond")
    kw = dict(
        embed_dim=embed_dim,
        depth=chunks * per_chunk,
        num_heads=shape(first + "attn.q_proj.weight")[0] // head_dim,
        num_kv_heads=shape(first + "attn.k_proj.weight")[0] // head_dim,
        mlp_hidden=shape(first + "mlp.gate_proj.weight")[0],
        block_chunks=chunks,
        text_channels=text_channels,
        text_maxlen=text_maxlen,
        latent_channels=shape("word_embed.weight")[1],
        semantic_dim=shape("semantic_head2.weight")[0] // 2,
        detail_dim=shape("head.weight")[0] // 2,
    )
    kw.update(overrides)
    return TransformerConfig(**kw)


def load_original_transformer(
    path: str | os.PathLike | WeightSource,
    cfg: TransformerConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    outer_dtype: torch.dtype | None = None,
) -> InfinityTransformer:
    """Build an :class:`InfinityTransformer` from a checkpoint in the original format.

    ``path``: a ``.safetensors`` file, or a folder with ``model.safetensors.index.json`` and its
    shards (the released layout), or a folder with ``model.safetensors``, or a ``torch.save`` file
    (the original's training checkpoint ``global_step_N.pth``). Block parameters end
    up in ``dtype`` on ``device``; the others (null text, embeddings, final norm, heads: ~0.1 %
    of the weights) in ``outer_dtype`` (default ``dtype``). The original runs bf16 blocks with
    fp32 outer parameters: ``dtype=torch.bfloat16, outer_dtype=torch.float32``.

    Every tensor the model needs must be there with its shape (one :class:`CheckpointError` naming
    the keys otherwise, before any tensor is read); entries the model does not know are skipped with
    one warning that lists them (the original loads with ``strict=False``; we say what we skip).
    """
    source = path if isinstance(path, WeightSource) else open_weights(path)
    expected = expected_original_shapes(cfg)
    check_coverage(expected, source.shapes(), f"transformer checkpoint {source.path}", tolerate_unexpected=True)

    outer_dtype = outer_dtype or dtype
    model = _meta_model(cfg)
    for group, shapes in source.groups.items():
        part = {}
        for key, tensor in _iter_tensors(source, group, [k for k in shapes if k in expected]):
            name = original_to_ours(key, cfg)
            target = dtype if name.startswith("blocks.") else outer_dtype
            part[name] = tensor.to(device=device, dtype=target)  # one tensor at a time, cast on the way
            del tensor
        model.load_state_dict(part, strict=False, assign=True)
    left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left:  # cannot happen after check_coverage; guards against a future adapter bug
        raise CheckpointError(f"parameters not loaded: {left[:8]}")
    return model.eval()


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


def save_original_transformer(
    model: InfinityTransformer,
    folder: str | os.PathLike,
    max_shard_bytes: int = 5 * 1024**3,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the released layout: ``model-0000k-of-0000n.safetensors`` shards of at most
    ``max_shard_bytes`` (a larger single tensor gets its own shard) plus
    ``model.safetensors.index.json``. Every file is written atomically. Returns the index path.
    """
    check_saveable(model)
    folder = Path(folder)
    state = to_original_state_dict(model)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    n = len(shards)
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_safetensors(shard, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    path = folder / INDEX_NAME
    write_json(path, index, newline=False)  # the shard splitter's format: no final newline
    return path


# --------------------------------------------------------------------------------------
# The trained-model folder: our parameter names, one file (what training writes)
# --------------------------------------------------------------------------------------


def save_model_folder(
    state: Mapping[str, torch.Tensor], cfg: TransformerConfig, folder: str | os.PathLike, extra: dict | None = None
) -> Path:
    """Write ``folder/model.safetensors`` (our parameter names) and ``folder/config.json``.

    ``config.json`` = ``{"format": "infinitystar.transformer", "transformer": {...}, **extra}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, folder / "model.safetensors", metadata={"format": MODEL_FORMAT})
    info = {"format": MODEL_FORMAT, "transformer": cfg.to_dict(), **(extra or {})}
    write_json(folder / "config.json", info)
    return folder


def is_model_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder :func:`save_model_folder` wrote."""
    p = Path(path)
    if not (p / "config.json").is_file() or not (p / "model.safetensors").is_file():
        return False
    try:
        info = read_json(p / "config.json")
    except ValueError:
        return False
    return isinstance(info, dict) and info.get("format") == MODEL_FORMAT


def read_model_folder(folder: str | os.PathLike) -> tuple[TransformerConfig, dict[str, torch.Tensor]]:
    """``(config, state dict)`` of a folder written by :func:`save_model_folder`."""
    folder = Path(folder)
    if not is_model_folder(folder):
        raise CheckpointError(
            f"{folder} is not a trained-model folder (expected config.json with format {MODEL_FORMAT!r} "
            "and model.safetensors)"
        )
    info = read_json(folder / "config.json", "trained-model config", CheckpointError)
    return TransformerConfig.from_dict(info["transformer"]), read_safetensors(folder / "model.safetensors")


def load_model_folder(folder: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.float32):
    """An :class:`~infinitystar.models.transformer.model.InfinityTransformer` from a trained-model folder (strict)."""
    cfg, state = read_model_folder(folder)
    with torch.device("meta"):
        model = InfinityTransformer(cfg)
    check_coverage(shapes_of(model.state_dict()), shapes_of(state), f"trained model {folder}")
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, assign=True)
    return model
