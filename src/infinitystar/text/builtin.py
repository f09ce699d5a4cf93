"""A built-in text encoder that needs no download: fixed, hash-derived token embeddings.

Why fixed embeddings suffice. The transformer never sees words, only the features of its text prefix: it projects
them with ``text_proj`` (a learned Linear) and lets its blocks attend over them with RoPE positions. For that, a text
encoder must only give different words clearly different, stable vectors and make word order recoverable; it need
not know what words mean, because the meaning is learned by ``text_proj`` and attention from the captions seen in
training. Random unit vectors are nearly orthogonal, so any set of words is linearly separable after projection,
and a small absolute position code (on top of the transformer's own RoPE) tells "a red circle on a gray
background" from a permutation of its words. A pretrained encoder (T5) adds world knowledge that a model trained
only on the procedural world (:mod:`infinitystar.world.dataset`) cannot use, at the cost of gigabytes of weights; this
encoder ships no weights at all.

Tokens. Lowercase; the ``<<<t=Ns>>>`` duration tag is one token; words are runs of letters, digits and
apostrophes; every other non-space character is a token of its own; ``</s>`` ends every prompt (kept, as T5 keeps
its EOS). Words of :data:`VOCABULARY` have their own vector; any other word shares one of ``num_buckets`` hashed
vectors (a finite table, so a learned variant can later train exactly these rows).

Determinism. Each vector is derived from SHAKE-256 of ``(seed, token)``: its bits give the signs of a vector with
entries ``+-1/sqrt(C)`` (exactly unit norm). Integer hashing and sign flips are exact, so the table is bit-identical
on every machine, OS, CPU and torch version (floating-point random normals are not: vectorised log/cos differ in the
last bits between CPUs), and adding a word to a future vocabulary version never changes any other word's vector.
The position code is a sinusoid computed in float64 and rounded to float32.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from infinitystar.text.encoders import T5_MAX_LENGTH, TEXT_ENCODER_INDEX, TextEncoder

__all__ = ["EOS", "VOCABULARY", "BuiltinTextEncoder", "tokenize"]

EOS = "</s>"

VOCABULARY: tuple[str, ...] = (
    EOS,
    # the procedural world's grammar (world_scenes.COLORS, SHAPES, MOTIONS, BACKGROUNDS)
    "a", "an", "on", "background", "moving", "staying", "still",
    "left", "right", "up", "down",
    "red", "green", "blue", "yellow", "white", "orange", "purple", "cyan",
    "circle", "square", "triangle",
    "black", "gray", "navy",
    # duration tags of the videos the world and the released models use
    *(f"<<<t={s}s>>>" for s in range(1, 11)),
    # punctuation and a few common words, so that simple prompts outside the world do not all collide in buckets
    ",", ".", "the", "and", "with", "of", "in", "at", "to", "is", "big", "small", "fast", "slow",
    "grey", "pink", "brown", "dark", "light", "bright",
)  # fmt: skip
"""Words with their own vector (version 1: fixed forever, since trained models depend on it)."""

_TOKEN = re.compile(r"<<<t=[^>]*s>>>|[a-z0-9']+|[^\sa-z0-9']")


def tokenize(prompt: str) -> list[str]:
    """Lowercased tokens of ``prompt`` (without ``</s>``): duration tags, words, single punctuation characters."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return _TOKEN.findall(prompt.lower())


def _sign_vector(key: str, channels: int) -> np.ndarray:
    """``+-1/sqrt(C)`` float32 ``[C]`` whose signs are the bits of SHAKE-256(key)."""
    digest = hashlib.shake_256(key.encode("utf-8")).digest((channels + 7) // 8)
    bits = np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:channels]  # [C] in {0, 1}
    return (bits.astype(np.float32) * 2 - 1) / np.float32(math.sqrt(channels))


def _bucket(word: str, seed: int, num_buckets: int) -> int:
    digest = hashlib.shake_256(f"infinitystar-builtin-text/bucket/{seed}/{word}".encode()).digest(8)
    return int.from_bytes(digest, "little") % num_buckets


def _position_code(length: int, channels: int) -> np.ndarray:
    """Sinusoidal position code ``[L, C]`` with unit-norm rows (sin on even, cos on odd channels)."""
    pos = np.arange(length, dtype=np.float64)[:, None]  # [L, 1]
    freq = 10000.0 ** (-np.arange(0, channels, 2, dtype=np.float64) / channels)  # [ceil(C/2)]
    angle = pos * freq  # [L, ceil(C/2)]
    code = np.zeros((length, channels), dtype=np.float64)
    code[:, 0::2] = np.sin(angle)[:, : (channels + 1) // 2]
    code[:, 1::2] = np.cos(angle)[:, : channels // 2]
    return (code / np.linalg.norm(code, axis=1, keepdims=True)).astype(np.float32)


class BuiltinTextEncoder(TextEncoder):
    """Fixed-embedding word encoder: ``features[i] = token_vector[i] + position_scale * position_code[i]``.

    Same interface as :class:`~infinitystar.text.encoders.T5TextEncoder`: ``encode(prompts)`` returns, per prompt,
    float32 ``[L_i, channels]`` features of its tokens and ``</s>`` (no padding); a prompt longer than ``max_length``
    tokens (``</s>`` included) is truncated with a warning. Token vectors have unit norm, like the rows of the
    transformer's learned null text ``cfg_uncond`` (drawn as ``randn / sqrt(C)``), so conditional and unconditional
    prefixes have the same scale.

    Args:
        channels: feature width; must equal the transformer's ``text_channels`` (see :meth:`for_config`).
        max_length: token budget per prompt, ``</s>`` included (the transformer's ``text_maxlen``).
        seed: selects another fixed table (a trained model is tied to its seed).
        num_buckets: shared vectors for words outside :data:`VOCABULARY`.
        position_scale: weight of the position code (0 disables it).
        device: where ``encode`` returns features.
    """

    version = 1
    #: the ``"type"`` its folders record (:mod:`infinitystar.text.loading` dispatches on it)
    type_name = "builtin"

    def __init__(
        self,
        channels: int = 256,
        max_length: int = T5_MAX_LENGTH,
        *,
        seed: int = 0,
        num_buckets: int = 4096,
        position_scale: float = 0.5,
        device: str | torch.device = "cpu",
    ) -> None:
        for name, value, low in (
            ("channels", channels, 8),
            ("max_length", max_length, 2),
            ("num_buckets", num_buckets, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if not (isinstance(position_scale, int | float) and math.isfinite(position_scale) and position_scale >= 0):
            raise ValueError(f"position_scale must be a finite number >= 0, got {position_scale!r}")
        self.channels = channels
        self.max_length = max_length
        self.seed = seed
        self.num_buckets = num_buckets
        self.position_scale = float(position_scale)
        self.token_to_id: dict[str, int] = {token: i for i, token in enumerate(VOCABULARY)}
        keys = [f"infinitystar-builtin-text/token/{seed}/{t}" for t in VOCABULARY]
        keys += [f"infinitystar-builtin-text/bucket-vector/{seed}/{b}" for b in range(num_buckets)]
        table = np.stack([_sign_vector(k, channels) for k in keys])  # [V + B, C]
        self._table = torch.from_numpy(table).to(device)
        self._positions = torch.from_numpy(_position_code(max_length, channels)).to(device)  # [max_length, C]

    # ------------------------------------------------------------------------------------------------------------------

    @classmethod
    def for_config(cls, transformer_config, **kwargs) -> BuiltinTextEncoder:
        """An encoder whose width and length match a ``TransformerConfig`` (``text_channels``, ``text_maxlen``)."""
        return cls(transformer_config.text_channels, transformer_config.text_maxlen, **kwargs)

    def config(self) -> dict:
        """Everything that determines the features: store it with a model trained on them."""
        return {
            "type": self.type_name,
            "version": self.version,
            "channels": self.channels,
            "max_length": self.max_length,
            "seed": self.seed,
            "num_buckets": self.num_buckets,
            "position_scale": self.position_scale,
        }

    @classmethod
    def from_config(cls, config: Mapping, device: str | torch.device = "cpu") -> BuiltinTextEncoder:
        """Rebuild the encoder described by :meth:`config` (rejects other types, versions and unknown keys)."""
        config = dict(config)
        if config.pop("type", "builtin") != "builtin":
            raise ValueError(f"not a built-in text encoder config: {config!r}")
        version = config.pop("version", cls.version)
        if version != cls.version:
            raise ValueError(
                f"built-in text encoder version {version} is not supported (this package has {cls.version})"
            )
        accepted = {"channels", "max_length", "seed", "num_buckets", "position_scale"}
        unknown = sorted(set(config) - accepted)
        if unknown:
            raise ValueError(f"unknown built-in text encoder settings {unknown}; accepted: {sorted(accepted)}")
        return cls(**config, device=device)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``infinitystar_text_encoder.json`` (``{"type": "builtin", "config": ...}``) into ``folder``: all a
        model folder needs, since the table is recomputed from the config (no weights to ship)."""
        from infinitystar.files import write_json

        folder = Path(folder)
        write_json(folder / TEXT_ENCODER_INDEX, {"type": self.type_name, "config": self.config()})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> BuiltinTextEncoder:
        """The encoder :meth:`save_pretrained` wrote into ``folder``."""
        from infinitystar.files import read_json

        spec = read_json(Path(folder) / TEXT_ENCODER_INDEX, "built-in text encoder settings")
        return cls.from_config(spec.get("config", {}) if isinstance(spec, dict) else {}, device=device)

    # ------------------------------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table: the vocabulary, then the hash buckets."""
        return len(VOCABULARY) + self.num_buckets

    @property
    def table(self) -> torch.Tensor:
        """The fixed embedding table ``[vocab_size, channels]`` (a learned variant would start from it)."""
        return self._table

    def token_ids(self, prompt: str) -> list[int]:
        """Row of every token of ``prompt``, ``</s>`` last, truncated to ``max_length`` (without warning)."""
        words = tokenize(prompt)[: self.max_length - 1]
        vocab = len(VOCABULARY)
        ids = [self.token_to_id.get(w, -1) for w in words]
        ids = [i if i >= 0 else vocab + _bucket(w, self.seed, self.num_buckets) for i, w in zip(ids, words)]
        return ids + [self.token_to_id[EOS]]

    @property
    def device(self) -> torch.device:
        return self._table.device

    def to(self, device: str | torch.device) -> BuiltinTextEncoder:
        self._table = self._table.to(device)
        self._positions = self._positions.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(channels={self.channels}, max_length={self.max_length}, seed={self.seed}, "
            f"num_buckets={self.num_buckets}, position_scale={self.position_scale}, device={self.device})"
        )

    def _encode(self, prompts: list[str]) -> list[torch.Tensor]:
        out = []
        for i, prompt in enumerate(prompts):
            count = len(tokenize(prompt)) + 1
            if count > self.max_length:
                warnings.warn(
                    f"prompts[{i}] has {count} tokens, more than max_length={self.max_length}: it is truncated to "
                    f"{self.max_length} tokens (its end is ignored)",
                    stacklevel=3,  # the caller of encode()
                )
            ids = torch.tensor(self.token_ids(prompt), dtype=torch.long, device=self.device)  # [L]
            out.append(self._table[ids] + self.position_scale * self._positions[: ids.numel()])  # [L, C]
        return out
