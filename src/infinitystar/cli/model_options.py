"""The model options every generating subcommand shares (``generate``, ``serve``, ``evaluate``): which model,
where it runs, how much memory it may use; and the one function that loads a pipeline from them.

Kept in one place so that a new way to load or run the model (a repo id, quantization, offload, several GPUs) is
offered with the same flag and the same help everywhere. Light to import: torch loads inside :func:`load_pipeline`.
"""

from __future__ import annotations

import argparse

DTYPE_CHOICES = ("fp32", "bf16", "fp16")
VAE_DTYPE_CHOICES = ("fp32", "bf16")
QUANTIZE_CHOICES = ("int8", "fp8")  # infinitystar.models.transformer.quantize.QUANTIZE_MODES (kept light here)
OFFLOAD_CHOICES = ("none", "text", "blocks", "all")  # infinitystar.generation.placement.OFFLOAD_MODES


def add_model_arguments(parser: argparse.ArgumentParser, *, speed: bool = True, parallel: bool = True) -> None:
    """``--checkpoint``, ``--transformer``, ``--resolution``, ``--device``, ``--dtype``, ``--vae-dtype``,
    ``--quantize``, ``--offload``, the hub group (``--revision``, ``--cache-dir``, ``--local-files-only``); with
    ``speed`` the speed and memory group (``--compile``, ``--token-chunk``); with ``parallel`` the several-processes
    group (``--sp-size``, ``--cfg-parallel``, ``--fsdp``) for commands whose every rank can follow rank 0's
    generations."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--checkpoint",
        help="model folder (our layout or the released one) or a Hugging Face repo id such as "
        "FoundationVision/InfinityStar (default: the built-in model)",
    )
    group.add_argument(
        "--transformer",
        help="transformer weights replacing the checkpoint's: a fine-tuned one, e.g. the original's "
        "global_step_N.pth, a .safetensors file or a shard folder",
    )
    group.add_argument("--resolution", help="480p or 720p (picks the weights in a released folder holding both)")
    group.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default: cuda if available)")
    group.add_argument("--dtype", choices=DTYPE_CHOICES, help="transformer dtype (default bf16 on GPU, fp32 on CPU)")
    group.add_argument(
        "--vae-dtype",
        choices=VAE_DTYPE_CHOICES,
        default="fp32",
        help="VAE dtype: fp32 (default, as the original) or bf16 (less memory at decode)",
    )
    group.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="weight-only 8-bit transformer blocks (torchao: pip install 'infinitystar[quant]'); int8 on CPU and "
        "CUDA, fp8 on GPUs of compute capability 8.9+",
    )
    group.add_argument(
        "--offload",
        nargs="?",
        const="text",
        choices=OFFLOAD_CHOICES,
        help="keep on the CPU: text (the text encoder between prompts; the default of a bare --offload), blocks "
        "(the transformer blocks, each streamed to the GPU for its turn), all (both)",
    )
    group.add_argument(
        "--lora",
        action="append",
        metavar="PATH[:SCALE]",
        help="LoRA adapter to load (an adapter folder, a training run or a hub repo id) and its scale (default 1); "
        "repeat for several",
    )
    add_hub_arguments(parser)
    if speed:
        add_speed_arguments(parser)
    if parallel:
        add_parallel_arguments(parser)


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """How a repo id is fetched (every command that takes one: generate, serve, evaluate, convert, train, extract)."""
    hub = parser.add_argument_group("Hugging Face hub (when a repo id is given)")
    hub.add_argument("--revision", help="branch, tag or commit of the repository (default: main)")
    hub.add_argument("--cache-dir", help="hub cache folder (default: HF_HUB_CACHE or HF_HOME/hub)")
    hub.add_argument(
        "--local-files-only",
        action="store_true",
        help="never download: use the hub cache only (as HF_HUB_OFFLINE=1)",
    )


def hub_options(args: argparse.Namespace):
    """The :class:`~infinitystar.hub.HubOptions` of the hub flags."""
    from infinitystar.hub import HubOptions

    return HubOptions(
        getattr(args, "revision", None), getattr(args, "cache_dir", None), bool(getattr(args, "local_files_only", 0))
    )


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


def add_parallel_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "one video on several processes",
        "launch with torchrun --nproc_per_node N, N = K (x 2 with --cfg-parallel); the same seed gives the same video "
        "as one process",
    )
    group.add_argument(
        "--sp-size",
        type=int,
        default=1,
        metavar="K",
        help="sequence parallel: split every step's tokens and attention heads over K processes (K must divide the "
        "model's key/value heads: 8 for 8B, 2 for the built-in model; default 1)",
    )
    group.add_argument(
        "--cfg-parallel",
        action="store_true",
        help="guidance parallel: the conditional and unconditional rows on two sets of processes (2 x K in all)",
    )
    group.add_argument(
        "--fsdp", action="store_true", help="shard the transformer blocks' weights over the processes (FSDP2)"
    )


def group_size(args: argparse.Namespace) -> int:
    """Processes that generate one video together (1 without the parallel flags)."""
    return max(1, getattr(args, "sp_size", 1)) * (2 if getattr(args, "cfg_parallel", False) else 1)


def _check_token_chunk(args: argparse.Namespace) -> None:
    token_chunk = getattr(args, "token_chunk", None)
    if token_chunk is not None and token_chunk < 0:
        raise ValueError(f"--token-chunk must be >= 0 (0 = whole scales), got {token_chunk}")


def check_model_arguments(args: argparse.Namespace) -> list:
    """Checks that need no model (run before loading one); returns the ``--lora`` adapters (``LoraSpec`` list),
    each found on disk (or a hub repo id)."""
    from infinitystar.generation.lora import check_source, parse_lora_spec

    _check_token_chunk(args)
    sp_size = getattr(args, "sp_size", 1)
    if sp_size < 1:
        raise ValueError(f"--sp-size must be >= 1 (the processes that share every step), got {sp_size}")
    specs = [parse_lora_spec(text) for text in getattr(args, "lora", None) or []]
    for spec in specs:
        check_source(spec.source)  # a missing or broken folder fails before the model loads
    return specs


def load_pipeline(args: argparse.Namespace, device: str | None = None):
    """The pipeline the model options name, with its runtime options set; ``device`` overrides ``--device``
    (a torchrun rank's own GPU)."""
    from infinitystar.generation.parallel import ParallelConfig
    from infinitystar.generation.pipeline import InfinityStarPipeline

    adapters = check_model_arguments(args)
    parallel = ParallelConfig(
        getattr(args, "sp_size", 1), bool(getattr(args, "cfg_parallel", False)), bool(getattr(args, "fsdp", False))
    )
    pipe = InfinityStarPipeline.from_pretrained(
        args.checkpoint,
        device=device if device is not None else args.device,
        dtype=args.dtype,
        resolution=args.resolution,
        quantize=getattr(args, "quantize", None),
        offload=getattr(args, "offload", None),
        vae_dtype=getattr(args, "vae_dtype", "fp32"),
        transformer_weights=getattr(args, "transformer", None),
        revision=getattr(args, "revision", None),
        cache_dir=getattr(args, "cache_dir", None),
        local_files_only=bool(getattr(args, "local_files_only", False)),
        parallel=parallel,
    )
    apply_runtime_options(pipe, args)
    for spec in adapters:
        pipe.load_lora(spec.source, scale=spec.scale)
    return pipe


def apply_runtime_options(pipe, args: argparse.Namespace) -> set[str]:
    """Bring a loaded pipeline to the options that can act on it (``--quantize``, ``--offload``, ``--vae-dtype``,
    ``--token-chunk``, ``--compile``); returns the names (argparse ``dest``) of the options it applied.

    :func:`load_pipeline` calls it after loading with the same options (then it changes nothing that loading did);
    ``bench/gpu_suite.py`` calls it on the one pipeline it builds and checks that every option of a step is in the
    returned set, so an option that only ``load_pipeline`` knows is reported as not measurable rather than silently
    ignored. A new runtime option is applied here and named in the returned set.
    """
    from infinitystar.generation.layouts import parse_vae_dtype
    from infinitystar.generation.placement import Placement, apply_placement

    _check_token_chunk(args)
    apply_placement(pipe, Placement.of(pipe.device, getattr(args, "quantize", None), getattr(args, "offload", None)))
    applied = {"quantize", "offload"}
    if hasattr(args, "vae_dtype"):
        dtype = parse_vae_dtype(args.vae_dtype)
        if next(pipe.vae.parameters()).dtype != dtype:
            pipe.vae.to(dtype)
        applied.add("vae_dtype")
    if getattr(args, "token_chunk", None) is not None:
        pipe.transformer.inference.token_chunk = args.token_chunk or None  # 0: whole scales
        applied.add("token_chunk")
    if hasattr(args, "compile"):
        pipe.transformer.inference.compile = bool(args.compile)
        applied.add("compile")
    return applied
