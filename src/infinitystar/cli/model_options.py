"""The model options every generating subcommand shares (``generate``, ``serve``, ``evaluate``): which model,
where it runs, how much memory it may use; and the one function that loads a pipeline from them.

Kept in one place so that a new way to load or run the model (a repo id, quantization, offload, several GPUs) is
offered with the same flag and the same help everywhere. Light to import: torch loads inside :func:`load_pipeline`.
"""

from __future__ import annotations

import argparse

DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def add_model_arguments(parser: argparse.ArgumentParser, *, speed: bool = True) -> None:
    """``--checkpoint``, ``--resolution``, ``--device``, ``--dtype``, ``--offload`` and, with ``speed``, the speed and
    memory group (``--compile``, ``--token-chunk``)."""
    group = parser.add_argument_group("model")
    group.add_argument("--checkpoint", help="model folder: our layout or the released one (default: built-in model)")
    group.add_argument("--resolution", help="480p or 720p (picks the weights in a released folder holding both)")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, help="transformer dtype (default bf16 on GPU, fp32 on CPU)")
    group.add_argument("--offload", action="store_true", help="keep the text encoder on the CPU between prompts")
    group.add_argument(
        "--lora",
        action="append",
        metavar="PATH[:SCALE]",
        help="LoRA adapter to load (an adapter folder, a training run or a hub repo id) and its scale (default 1); "
        "repeat for several",
    )
    if speed:
        add_speed_arguments(parser)


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    speed = parser.add_argument_group("speed and memory")
    speed.add_argument(
        "--compile", action="store_true", help="torch.compile the transformer blocks (the first video compiles)"
    )
    speed.add_argument(
        "--token-chunk",
        type=int,
        default=8192,
        help="tokens per MLP / attention chunk on large scales: less memory (0 = whole scales; default 8192)",
    )


def check_model_arguments(args: argparse.Namespace) -> list:
    """Checks that need no model (run before loading one); returns the ``--lora`` adapters (``LoraSpec`` list),
    each found on disk (or a hub repo id)."""
    from infinitystar.generation.lora import check_source, parse_lora_spec

    token_chunk = getattr(args, "token_chunk", None)
    if token_chunk is not None and token_chunk < 0:
        raise ValueError(f"--token-chunk must be >= 0 (0 = whole scales), got {token_chunk}")
    specs = [parse_lora_spec(text) for text in getattr(args, "lora", None) or []]
    for spec in specs:
        check_source(spec.source)  # a missing or broken folder fails before the model loads
    return specs


def load_pipeline(args: argparse.Namespace, device: str | None = None):
    """The pipeline the model options name, with its inference options set; ``device`` overrides ``--device``
    (a torchrun rank's own GPU)."""
    from infinitystar.generation.pipeline import InfinityStarPipeline

    adapters = check_model_arguments(args)
    pipe = InfinityStarPipeline.from_pretrained(
        args.checkpoint,
        device=device if device is not None else args.device,
        dtype=args.dtype,
        resolution=args.resolution,
        offload_text_encoder=getattr(args, "offload", False),
    )
    if getattr(args, "token_chunk", None) is not None:
        pipe.transformer.inference.token_chunk = args.token_chunk or None
    pipe.transformer.inference.compile = bool(getattr(args, "compile", False))
    for spec in adapters:
        pipe.load_lora(spec.source, scale=spec.scale)
    return pipe
