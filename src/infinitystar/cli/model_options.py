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


def check_model_arguments(args: argparse.Namespace) -> None:
    """Checks that need no model (run before loading one)."""
    token_chunk = getattr(args, "token_chunk", None)
    if token_chunk is not None and token_chunk < 0:
        raise ValueError(f"--token-chunk must be >= 0 (0 = whole scales), got {token_chunk}")


def load_pipeline(args: argparse.Namespace, device: str | None = None):
    """The pipeline the model options name, with its runtime options set; ``device`` overrides ``--device``
    (a torchrun rank's own GPU)."""
    from infinitystar.generation.pipeline import InfinityStarPipeline

    check_model_arguments(args)
    pipe = InfinityStarPipeline.from_pretrained(
        args.checkpoint,
        device=device if device is not None else args.device,
        dtype=args.dtype,
        resolution=args.resolution,
        offload_text_encoder=getattr(args, "offload", False),
    )
    apply_runtime_options(pipe, args)
    return pipe


def apply_runtime_options(pipe, args: argparse.Namespace) -> set[str]:
    """Set the options that act on an already loaded pipeline (``--offload``, ``--token-chunk``, ``--compile``);
    returns the names (argparse ``dest``) of the options it applied.

    :func:`load_pipeline` calls it after loading; ``bench/gpu_suite.py`` calls it on the one pipeline it builds and
    checks that every option of a step is in the returned set, so an option that only ``load_pipeline`` knows is
    reported as not measurable rather than silently ignored. A new runtime option (quantization, block offload)
    is applied here and named in the returned set.
    """
    check_model_arguments(args)
    applied = set()
    offload = getattr(args, "offload", False)
    if isinstance(offload, bool):  # the text encoder's flag; another kind of value is not this function's to claim
        pipe.offload_text_encoder = offload
        applied.add("offload")
    if getattr(args, "token_chunk", None) is not None:
        pipe.transformer.inference.token_chunk = args.token_chunk or None  # 0: whole scales
        applied.add("token_chunk")
    if hasattr(args, "compile"):
        pipe.transformer.inference.compile = bool(args.compile)
        applied.add("compile")
    return applied
