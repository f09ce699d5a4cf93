"""Dataclass configs and the registry of named presets.

The model code only ever reads these dataclasses; nothing reads a global argument object.
``TransformerConfig.from_original_kwargs`` / ``VAEConfig.from_original_namespace`` translate
the original implementation's settings (as found in a parity dump's ``config.json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from infinitystar import config_dicts


def swiglu_hidden(embed_dim: int, mlp_ratio: float) -> int:
    """The original's SwiGLU width: ``round(C * ratio / 256) * 256`` with round-half-to-even."""
    return int(round(embed_dim * mlp_ratio / 256) * 256)


@dataclass(frozen=True)
class TransformerConfig:
    """The spacetime autoregressive transformer (Qwen3-style blocks, text as prefix tokens)."""

    embed_dim: int = 4096
    depth: int = 36
    num_heads: int = 32
    num_kv_heads: int = 8
    mlp_hidden: int = 16384
    block_chunks: int = 6  #: only shapes the original checkpoint's key names
    text_channels: int = 2048  #: width of the text encoder's features (flan-t5-xl: 2048)
    text_maxlen: int = 512  #: rows of the learned null text; longest prompt in tokens
    latent_channels: int = 64  #: width of the VAE latent fed through ``word_embed``
    semantic_dim: int = 16  #: bits per token of semantic scales
    detail_dim: int = 64  #: bits per token of detail scales
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_text_offset: int = 512  #: visual scale-axis position = offset + global step counter
    pad_to_multiplier: int = 128  #: training packs are padded to a multiple of this

    def __post_init__(self) -> None:
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        elif (self.embed_dim // self.num_heads) % 8:
            problems.append(f"head_dim {self.embed_dim // self.num_heads} must be a multiple of 8 (4-axis RoPE)")
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            problems.append(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.depth < 1 or self.block_chunks < 1 or self.depth % self.block_chunks:
            problems.append(f"depth {self.depth} is not divisible by block_chunks {self.block_chunks}")
        if problems:
            raise ValueError("invalid TransformerConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TransformerConfig:
        """From a ``config.json``: unknown keys and values of the wrong type are errors that name them."""
        return config_dicts.from_dict(cls, d)

    @classmethod
    def from_original_kwargs(cls, kw: dict, mlp_hidden: int | None = None, **extra) -> TransformerConfig:
        """From the original constructor's kwargs (``transformer_kwargs`` of a parity dump).

        ``mlp_hidden`` overrides the width computed from ``mlp_ratio`` (read it from a weight
        shape when one is at hand).
        """
        c = int(kw["embed_dim"])
        heads = int(kw["num_heads"])
        kv = int(kw.get("num_key_value_heads", -1))
        return cls(
            embed_dim=c,
            depth=int(kw["depth"]),
            num_heads=heads,
            num_kv_heads=heads if kv <= 0 else kv,
            mlp_hidden=mlp_hidden if mlp_hidden is not None else swiglu_hidden(c, float(kw["mlp_ratio"])),
            block_chunks=int(kw.get("block_chunks", 1)),
            text_channels=int(kw["text_channels"]),
            text_maxlen=int(kw.get("text_maxlen", 512)),
            pad_to_multiplier=int(kw.get("pad_to_multiplier", 128)),
            **extra,
        )


@dataclass(frozen=True)
class VAEConfig:
    """The causal video VAE with its 2x2 "absorbed" patchify and 64x64 projections."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16  #: VAE latent channels before the absorbed 2x2 patchify
    block_out_channels: tuple[int, ...] = (96, 192, 384, 384, 384)
    layers_per_block: int = 2
    spatial_compression: tuple[int, ...] = (2, 2, 2)  #: per down block, from the first
    temporal_compression: tuple[int, ...] = (2, 2)  #: per down block, from the first
    mid_layers: int = 2  #: ResNet blocks in the encoder's and the decoder's middle block
    #: widths of the parameter-free BSQ quantizers (semantic, detail); the original VAE
    #: checkpoint carries their ``mask`` buffers, whose shapes the loader checks
    semantic_bits: int = 16
    detail_bits: int = 64

    @property
    def token_channels(self) -> int:
        """Channels of a token after the absorbed patchify (64 for the released VAE)."""
        return self.latent_channels * 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VAEConfig:
        """From a ``config.json`` (JSON lists become the tuple fields); unknown keys and wrong types are errors."""
        return config_dicts.from_dict(cls, d)

    @classmethod
    def from_original_namespace(cls, ns: dict) -> VAEConfig:
        """From the original VAE constructor's Namespace (``vae_namespace`` of a parity dump)."""
        return cls(
            in_channels=int(ns.get("in_channels", 3)),
            out_channels=int(ns.get("out_channels", 3)),
            latent_channels=int(ns.get("latent_channels", 16)),
            block_out_channels=tuple(int(c) for c in ns["block_out_channels"]),
            layers_per_block=int(ns.get("layers_per_block", 2)),
            spatial_compression=tuple(int(c) for c in ns.get("spatial_compression_list", (2, 2, 2))),
            temporal_compression=tuple(int(c) for c in ns.get("temporal_compression_list", (2, 2))),
            semantic_bits=int(ns.get("semantic_scale_dim", 16)),
            detail_bits=int(ns.get("detail_scale_dim", 64)),
        )


@dataclass(frozen=True)
class ModelPreset:
    """A named model: transformer + VAE + the schedule settings it was trained with."""

    name: str
    transformer: TransformerConfig
    vae: VAEConfig = field(default_factory=VAEConfig)
    description: str = ""


def _qwen(depth: int, c: int, heads: int, kv: int, mlp: int, chunks: int, **kw) -> TransformerConfig:
    return TransformerConfig(
        embed_dim=c, depth=depth, num_heads=heads, num_kv_heads=kv, mlp_hidden=mlp, block_chunks=chunks, **kw
    )


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset("8b", _qwen(36, 4096, 32, 8, 16384, 6), description="released InfinityStar 8B"),
        ModelPreset("7b", _qwen(36, 4096, 32, 8, 12288, 6), description="original infinity_qwen7b"),
        ModelPreset("14b", _qwen(48, 4608, 36, 9, 18432, 24), description="original infinity_qwen14b"),
        ModelPreset("wide14b", _qwen(36, 5632, 44, 11, 19200, 6), description="original infinity_qwen_wide14b"),
        ModelPreset("2b", _qwen(28, 2304, 18, 18, 8192, 7), description="original infinity_qwen2_2b"),
        ModelPreset("30b", _qwen(54, 6144, 48, 12, 24576, 27), description="original infinity_qwen2_30b"),
        ModelPreset("0b", _qwen(4, 512, 4, 4, 1792, 2), description="original debug model infinity_qwen0b"),
        ModelPreset(
            "small",
            _qwen(6, 256, 4, 2, 1024, 2, text_channels=256),
            VAEConfig(block_out_channels=(16, 32, 64, 64, 64)),
            description="small CPU model",
        ),
        ModelPreset(
            "tiny",
            _qwen(4, 128, 4, 2, 512, 2, text_channels=64),
            VAEConfig(block_out_channels=(8, 16, 16, 16, 16)),
            description="tiny random model for tests",
        ),
    ]
}


def get_preset(name: str) -> ModelPreset:
    """A preset by name, with a clear error listing the accepted names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; accepted: {', '.join(PRESETS)}") from None
