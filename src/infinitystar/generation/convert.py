"""Convert a released model folder (or repo id) to our layout, transformer cast to bf16: 35 GB -> 17.5 GB.

The transformer is streamed: every source header is read first (the whole key set and every shape is checked before
one tensor is read), then each output shard is written tensor by tensor (:func:`~infinitystar.checkpoints.
stream_safetensors`), so memory holds one tensor plus the pages of the source shard being read, never the model.
The blocks are cast to ``dtype``; the rest (null text, embeddings, final norm, heads: 0.1 % of the weights) stays
fp32, as the pipeline loads them, so a converted folder gives exactly the logits of the original folder loaded in the
same dtype. The VAE is written as our VAE folder in fp32 (the original runs it in fp32), the text encoder folder is
hard-linked (copied across file systems). Everything goes to a hidden folder beside ``dst`` that is renamed into
place at the end: an interrupted conversion leaves no half model behind.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from infinitystar.checkpoints import CheckpointError, check_coverage, stream_safetensors
from infinitystar.devices import dtype_name
from infinitystar.files import write_json
from infinitystar.generation.layouts import (
    MODEL_INDEX,
    RELEASED_T5,
    RELEASED_VAE,
    check_released_parts,
    model_folder,
    model_index,
    released_root,
)
from infinitystar.generation.plan import RELEASED_CONFIGS
from infinitystar.hub import HubOptions
from infinitystar.models.transformer.checkpoint import INDEX_NAME, expected_original_shapes, infer_transformer_config
from infinitystar.models.transformer.sources import WeightSource, open_weights

log = logging.getLogger(__name__)

#: output shards are cut at this size (the release's shards are ~5.8 GB in fp32)
MAX_SHARD_BYTES = 5 * 1024**3


@dataclass
class ConvertReport:
    """What a conversion wrote: the folder, the resolution, the transformer's dtype and sizes in bytes."""

    folder: Path
    resolution: str
    dtype: torch.dtype
    transformer_bytes: int
    shards: int
    skipped: list[str]


def convert_released(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    resolution: str | None = None,
    transformer_weights: str | os.PathLike | None = None,
    hub: HubOptions | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    link: bool = True,
) -> ConvertReport:
    """Write our layout at ``dst`` from the released layout at ``src`` (a folder or a repo id: only the chosen
    resolution is fetched). ``transformer_weights`` replaces the transformer (a fine-tuned one, e.g. the original's
    ``global_step_N.pth``). ``link=False`` copies the text encoder instead of hard-linking it."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported dtype {dtype}; accepted: bf16, fp32, fp16")
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst} already exists and is not empty; choose a new folder (nothing was written)")
    root = model_folder(src, resolution, hub, parts=("transformer", "vae", "text_encoder"))
    if (root / MODEL_INDEX).is_file():
        raise ValueError(f"{src} is already in our layout ({MODEL_INDEX}); convert takes the released layout")
    try:
        root, weights, res = released_root(root, resolution)
    except FileNotFoundError:
        raise CheckpointError(f"{src} holds no released weights folder (infinitystar_8b_480p/720p_weights)") from None
    check_released_parts(root)
    tmp = dst.parent / f".{dst.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)  # a conversion interrupted earlier
    try:
        source = open_weights(transformer_weights or weights)
        written, shards, skipped = convert_transformer(source, tmp / "transformer", dtype, max_shard_bytes)
        _convert_vae(root / RELEASED_VAE, tmp / "vae")
        _link_tree(root / RELEASED_T5, tmp / "text_encoder", link)
        origin = {"source": str(src), "resolution": res, "dtype": dtype_name(dtype)}
        write_json(tmp / MODEL_INDEX, model_index(RELEASED_CONFIGS[res], converted_from=origin))
        if dst.exists():
            dst.rmdir()
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ConvertReport(dst, res, dtype, written, shards, skipped)


def _plan_shards(
    source: WeightSource, keep: set[str], sizes: dict[str, int], max_bytes: int
) -> list[tuple[Path, list[str]]]:
    """Output shards as (source group, keys): runs of one source group's keys, cut at ``max_bytes``; never a mix of
    groups, so only one source shard is being read at any time."""
    plan: list[tuple[Path, list[str]]] = []
    for group, shapes in source.groups.items():
        run, size = [], 0
        for key in shapes:
            if key not in keep:
                continue
            if run and size + sizes[key] > max_bytes:
                plan.append((group, run))
                run, size = [], 0
            run.append(key)
            size += sizes[key]
        if run:
            plan.append((group, run))
    return plan


def convert_transformer(
    source: WeightSource, folder: Path, dtype: torch.dtype, max_shard_bytes: int = MAX_SHARD_BYTES
) -> tuple[int, int, list[str]]:
    """Write ``source`` (original key format) as safetensors shards + index + ``config.json`` in ``folder``: blocks in
    ``dtype``, the rest fp32. Returns (tensor bytes written, shards, skipped unknown keys)."""
    cfg = infer_transformer_config(source)
    expected = expected_original_shapes(cfg)
    what = f"transformer checkpoint {source.path}"
    skipped = check_coverage(expected, source.shapes(), what, tolerate_unexpected=True)

    def target(key: str) -> torch.dtype:
        return dtype if key.startswith("block_chunks.") else torch.float32

    item = {k: torch.empty((), dtype=target(k)).element_size() for k in expected}
    sizes = {k: item[k] * torch.Size(s).numel() for k, s in expected.items()}
    plan = _plan_shards(source, set(expected), sizes, max_shard_bytes)
    weight_map, total = {}, 0
    for i, (group, keys) in enumerate(plan, start=1):
        name = f"model-{i:05d}-of-{len(plan):05d}.safetensors"
        specs = {k: (target(k), expected[k]) for k in keys}
        cast = ((k, t.to(target(k))) for k, t in source.tensors(group, keys))
        total += stream_safetensors(folder / name, specs, cast, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, name))
        log.info("transformer shard %d of %d written (%s)", i, len(plan), name)
    write_json(folder / INDEX_NAME, {"metadata": {"total_size": total}, "weight_map": weight_map}, newline=False)
    write_json(folder / "config.json", cfg.to_dict())
    return total, len(plan), skipped


def _convert_vae(pth: Path, folder: Path) -> None:
    """The released ``.pth`` -> our VAE folder (fp32 safetensors + config), through the same checked loader."""
    from infinitystar.models.vae.checkpoint import save_vae_folder
    from infinitystar.models.vae.model import VideoVAE

    save_vae_folder(VideoVAE.from_original_checkpoint(pth), folder, metadata={"format": "pt"})


def _link_tree(src: Path, dst: Path, link: bool) -> None:
    """Hard-link (or copy) every file of ``src`` into ``dst``; symlinks (a hub cache's snapshot) are followed."""
    for file in sorted(src.rglob("*")):
        if not file.is_file():
            continue
        out = dst / file.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        real = file.resolve()
        if link:
            try:
                os.link(real, out)
                continue
            except OSError:  # another file system, or links not allowed: copy
                pass
        shutil.copy2(real, out)
