"""Text encoders: prompts -> per-token features for the transformer's text prefix.

The transformer reads text as prefix tokens: the per-token features of a Flan-T5-XL encoder (2048 channels), padding
removed. :class:`TextEncoder` is the interface (the built-in fixed-embedding encoder in :mod:`.builtin`
implements it too); :class:`T5TextEncoder` wraps a local T5 folder. Before encoding, prompts are decorated
(:mod:`.prompts`) and optionally rewritten (:mod:`.rewriter`); which encoder a folder holds is decided in
:mod:`.loading`.

``transformers`` is optional: this module imports without it, and only ``T5TextEncoder`` needs it
(``pip install "infinitystar[t5]"``).
"""

from __future__ import annotations

import os
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from infinitystar.text.prompts import _check_prompt_list

__all__ = [
    "RELEASED_T5_SUBFOLDER",
    "TEXT_ENCODER_INDEX",
    "T5_MAX_LENGTH",
    "T5TextEncoder",
    "TextEncoder",
    "encode_negative_prompt",
]

T5_MAX_LENGTH = 512
"""Token budget of the original (``text_maxlen``); ``cfg_uncond`` has exactly this many rows."""

RELEASED_T5_SUBFOLDER = "text_encoder/flan-t5-xl-official"
"""Where the released checkpoint keeps the T5 encoder, relative to the checkpoint root."""

TEXT_ENCODER_INDEX = "infinitystar_text_encoder.json"
"""A text-encoder folder holding this file (``{"type": ..., "config": {...}}``) is one of the package's own
encoders, rebuilt from its config; any other folder is read as a T5 encoder (see :mod:`.loading`)."""

# ----------------------------------------------------------------------------------------------------------------------
# Text encoders


class TextEncoder(ABC):
    """Turns prompts into per-token features for the transformer's text prefix.

    Subclasses set ``channels`` (feature width: 2048 for Flan-T5-XL) and ``max_length`` (token budget, EOS included),
    and implement ``_encode`` and ``to``. ``encode`` validates the prompts once here, so every encoder rejects blank
    and non-string prompts with the same messages.
    """

    channels: int
    max_length: int

    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Features of each prompt's valid tokens: a list of ``[L_i, channels]`` float32 tensors on ``self.device``.

        Padding is stripped, the EOS token is kept (T5 appends ``</s>``), and a prompt longer than ``max_length``
        tokens is truncated with a warning.
        """
        prompts = _check_prompt_list(prompts)
        if not prompts:
            return []
        return self._encode(prompts)

    __call__ = encode

    @abstractmethod
    def _encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """Encode already validated, non-empty prompts."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the encoder runs and where ``encode`` returns features."""

    @abstractmethod
    def to(self, device: str | torch.device) -> TextEncoder:
        """Move the encoder to ``device`` (dtype unchanged) and return it."""

    def offload(self) -> TextEncoder:
        """Move the encoder to the CPU and release cached GPU memory.

        The text is encoded once per prompt, before the scale loop; the pipeline calls this afterwards to give the
        encoder's memory (about 2.4 GB for Flan-T5-XL in fp16) back to the transformer.
        """
        was_cuda = self.device.type == "cuda"
        self.to("cpu")
        if was_cuda:
            torch.cuda.empty_cache()
        return self


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            'T5TextEncoder needs the optional dependency "transformers": pip install "infinitystar[t5]"'
        ) from error
    return transformers


_T5_EXPECTED_FILES = {
    "config": ("config.json",),
    "model weights": (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ),
    "tokenizer": ("tokenizer.json", "spiece.model"),
}


def _describe_expected_files() -> str:
    return "; ".join(f"{what}: {' or '.join(names)}" for what, names in _T5_EXPECTED_FILES.items())


def _check_t5_folder(path: str | os.PathLike[str]) -> Path:
    """Fail early, naming the folder and the files, instead of a deep transformers/hub error."""
    folder = Path(path).expanduser()
    layout = (
        f"Expected a local folder (nothing is downloaded) holding {_describe_expected_files()} - "
        f"as in the released checkpoint's {RELEASED_T5_SUBFOLDER}/."
    )
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"T5 text encoder folder {str(folder)!r} {what}. {layout}")
    missing = [what for what, names in _T5_EXPECTED_FILES.items() if not any((folder / n).is_file() for n in names)]
    if missing:
        hint = ""
        if (folder / RELEASED_T5_SUBFOLDER).is_dir():
            hint = f" It contains {RELEASED_T5_SUBFOLDER}/: pass that folder instead."
        raise FileNotFoundError(
            f"T5 text encoder folder {str(folder)!r} lacks its {', '.join(missing)} files.{hint} {layout}"
        )
    return folder


def _dtype_kwarg(transformers: Any) -> str:
    """``from_pretrained`` renamed ``torch_dtype`` to ``dtype`` in transformers 4.56."""
    major, minor = (int(re.match(r"\d+", part).group()) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class T5TextEncoder(TextEncoder):
    """A T5 encoder (Flan-T5-XL for the released models) loaded from a local folder through ``transformers``.

    Matches the original's ``encode_prompt``: tokenizer with ``legacy=True``, ``max_length=512`` with truncation,
    the encoder run with the attention mask, ``last_hidden_state.float()``, padding tokens dropped. The original pads
    every prompt to 512 tokens; by default we pad only to the longest prompt of the batch, which gives the same
    features for the valid tokens (T5 masks padded keys and its position bias is relative) at a fraction of the cost.
    ``pad_to_max_length=True`` restores the original padding exactly.

    Args:
        path: folder with ``config.json``, the weights and the tokenizer (``text_encoder/flan-t5-xl-official/``).
        device: where to run.
        dtype: weights dtype; default float16 on CUDA (like the original) and float32 elsewhere. T5's feed-forward
            output projections stay in float32, as ``transformers`` keeps them for T5.
        max_length: token budget per prompt, EOS included.
        pad_to_max_length: pad every prompt to ``max_length`` like the original instead of to the batch's longest.
        batch_size: prompts encoded per forward pass.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        *,
        max_length: int = T5_MAX_LENGTH,
        pad_to_max_length: bool = False,
        batch_size: int = 16,
    ) -> None:
        transformers = _require_transformers()
        folder = _check_t5_folder(path)
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 (one token and </s>), got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.path = folder
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        self.batch_size = batch_size
        self.tokenizer = _load_tokenizer(transformers, folder)
        self.model = transformers.T5EncoderModel.from_pretrained(
            folder, local_files_only=True, **{_dtype_kwarg(transformers): dtype}
        )
        self.model.eval().requires_grad_(False)
        self.model.to(device)
        self.channels = int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device) -> T5TextEncoder:
        self.model.to(torch.device(device))
        return self

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={str(self.path)!r}, device={self.device}, dtype={self.dtype}, "
            f"channels={self.channels}, max_length={self.max_length})"
        )

    def _encode(self, prompts: list[str]) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for start in range(0, len(prompts), self.batch_size):
            features.extend(self._encode_batch(prompts[start : start + self.batch_size], first_index=start))
        return features

    def _encode_batch(self, prompts: list[str], first_index: int) -> list[torch.Tensor]:
        self._warn_if_truncated(prompts, first_index)
        batch = self.tokenizer(
            prompts,
            max_length=self.max_length,
            truncation=True,
            padding="max_length" if self.pad_to_max_length else "longest",
            return_tensors="pt",
        )
        ids = batch["input_ids"].to(self.device)  # [B, L_pad]
        mask = batch["attention_mask"].to(self.device)  # [B, L_pad], 1 = real token
        with torch.no_grad():  # not inference_mode: cached features may later feed a training graph
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # [B, L_pad, C]
        # Boolean indexing keeps the valid rows in order, whichever side the tokenizer pads on.
        return [hidden[i][mask[i].bool()] for i in range(len(prompts))]

    def _warn_if_truncated(self, prompts: list[str], first_index: int) -> None:
        lengths = [len(ids) for ids in self.tokenizer(prompts, verbose=False)["input_ids"]]
        for offset, length in enumerate(lengths):
            if length > self.max_length:
                warnings.warn(
                    f"prompts[{first_index + offset}] has {length} tokens, more than max_length={self.max_length}: "
                    f"it is truncated to {self.max_length} tokens (its end is ignored)",
                    stacklevel=5,  # the caller of encode()
                )


def _load_tokenizer(transformers: Any, folder: Path) -> Any:
    """``AutoTokenizer`` with ``legacy=True`` like the original, for tokenizer classes that accept it."""
    try:
        return transformers.AutoTokenizer.from_pretrained(folder, legacy=True, local_files_only=True)
    except TypeError:
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)


def encode_negative_prompt(encoder: TextEncoder, negative_prompt: str | None) -> torch.Tensor | None:
    """T5 features ``[L_neg, C]`` of a negative prompt, at its own length; ``None`` when there is none.

    ``None``, ``""`` or a blank string mean "no negative prompt": the transformer then uses its learned null text
    ``cfg_uncond[:L]``, exactly as the original does with the empty negative prompt its scripts always pass. A real
    negative prompt is usually not as long as the prompt; the transformer pads the shorter row of the text prefix and
    masks those padded keys (the original attended to its zero padding, a bug its scripts never triggered).
    The negative prompt is not decorated: the original never decorated it.
    """
    if negative_prompt is None:
        return None
    if not isinstance(negative_prompt, str):
        raise TypeError(f"negative_prompt must be a str or None, got {type(negative_prompt).__name__}")
    if not negative_prompt.strip():
        return None
    return encoder.encode([negative_prompt])[0]
