"""``infinitystar assemble``: build a model folder (our layout) from separately trained parts.

Training writes a transformer (``infinitystar train``: ``RUN/final``) and a VAE
(``infinitystar train-tokenizer``: the VAE folder ``RUN/vae/``) in different runs; this puts them
together with a text encoder and the generation settings into the folder
``InfinityStarPipeline.from_pretrained`` and ``infinitystar generate --checkpoint`` load. The
built-in default model is made this way (``recipes/builtin/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("assemble", help="put a trained transformer, VAE and text encoder into one model folder")
    p.add_argument(
        "--transformer",
        required=True,
        help="trained-model folder (RUN/final), a training checkpoint (RUN/step_N: evaluate a run midway) "
        "or a released-format checkpoint",
    )
    p.add_argument("--vae", required=True, help="VAE weights: .safetensors / released .pth, or a tokenizer run folder")
    p.add_argument("--text-encoder", required=True, help="'builtin' or a text-encoder folder (T5 or saved encoder)")
    p.add_argument("--pipeline-config", required=True, help="JSON file with PipelineConfig fields (resolution, ...)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="storage dtype of the weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from infinitystar.devices import parse_dtype
    from infinitystar.generation.pipeline import InfinityStarPipeline
    from infinitystar.generation.plan import PipelineConfig
    from infinitystar.models.transformer.checkpoint import is_model_folder, load_model_folder
    from infinitystar.models.vae.model import VideoVAE
    from infinitystar.text.loading import make_text_encoder
    from infinitystar.train.checkpointing import is_checkpoint_folder
    from infinitystar.train.transformer.module import transformer_from_checkpoint

    cfg_path = Path(args.pipeline_config)
    try:
        config = PipelineConfig.from_dict(json.loads(cfg_path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the pipeline config {cfg_path}: {exc}") from exc

    if is_model_folder(args.transformer):
        transformer = load_model_folder(args.transformer)
    elif is_checkpoint_folder(args.transformer):
        transformer = transformer_from_checkpoint(args.transformer)
    else:
        from infinitystar.models.transformer.checkpoint import infer_transformer_config, load_original_transformer

        transformer = load_original_transformer(args.transformer, infer_transformer_config(args.transformer))

    vae = VideoVAE.from_original_checkpoint(args.vae)

    text_encoder = make_text_encoder(args.text_encoder, transformer.cfg, "cpu")

    pipe = InfinityStarPipeline(transformer, vae, text_encoder, config)
    dtype = None if args.dtype == "fp32" else parse_dtype(args.dtype)
    out = pipe.save_pretrained(args.out, dtype=dtype)
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    print(f"{out}: {size / 1e6:.1f} MB ({args.dtype} weights)")
    return 0
