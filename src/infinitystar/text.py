"""Text conditioning: prompt decoration, text encoders, negative prompts and an optional prompt rewriter.

The transformer reads text as prefix tokens: the per-token features of a Flan-T5-XL encoder (2048 channels), with
padding removed. In the pipeline a prompt goes through, in this order:

1. ``rewrite_or_keep`` / ``PromptRewriter`` (optional, off by default): any OpenAI-compatible chat endpoint turns a
   short prompt into a detailed one. A failure never stops generation; the original prompt is used instead.
2. ``decorate_prompt``: the ``<<<t=5s>>>`` duration tag that the model was trained with (videos only) and, if asked,
   the suffix that the original inference scripts always append.
3. ``TextEncoder.encode``: per prompt, the features of its valid tokens only, ``[L_i, C]`` float32.

``transformers`` is optional: this module imports without it, and only ``T5TextEncoder`` needs it
(``pip install "infinitystar[t5]"``).
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "ORIGINAL_SUFFIX",
    "RELEASED_T5_SUBFOLDER",
    "TEXT_ENCODER_INDEX",
    "T5_MAX_LENGTH",
    "PromptRewriter",
    "T5TextEncoder",
    "TextEncoder",
    "check_prompt",
    "decorate_prompt",
    "duration_tag",
    "encode_negative_prompt",
    "rewrite_or_keep",
]

ORIGINAL_SUFFIX = ", Close-up on big objects, emphasize scale and detail"
"""Appended to every prompt by the original 480p/720p inference scripts (and to the VBench prompts)."""

T5_MAX_LENGTH = 512
"""Token budget of the original (``text_maxlen``); ``cfg_uncond`` has exactly this many rows."""

RELEASED_T5_SUBFOLDER = "text_encoder/flan-t5-xl-official"
"""Where the released checkpoint keeps the T5 encoder, relative to the checkpoint root."""

TEXT_ENCODER_INDEX = "infinitystar_text_encoder.json"
"""A text-encoder folder holding this file (``{"type": ..., "config": {...}}``) is one of the package's own
encoders, rebuilt from its config; any other folder is read as a T5 encoder (see ``text_loading``)."""

_DURATION_TAG = re.compile(r"<<<t=([^>]*)s>>>")


# ----------------------------------------------------------------------------------------------------------------------
# Prompt validation and decoration (pure functions)


def check_prompt(prompt: object, name: str = "prompt") -> str:
    """Return ``prompt`` unchanged if it is a non-blank string; raise a clear error otherwise.

    A blank prompt would silently condition on just ``</s>`` (or on a bare duration tag), which is never what the user
    meant, so it is rejected here rather than deep inside the model.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be a str, got {type(prompt).__name__}: {prompt!r:.80}")
    if not prompt.strip():
        where = "" if name == "prompt" else f" ({name})"
        raise ValueError(f"prompt is empty{where}: {prompt!r}; describe the image or video to generate")
    return prompt


def duration_tag(duration_seconds: float) -> str:
    """The caption prefix ``<<<t={D}s>>>`` for a video of ``duration_seconds``.

    Training mapped each clip's real duration to whole seconds with ``int(seconds)`` (capped at 5 s, or 10 s) and
    wrote that integer in the tag, so the model only ever saw whole seconds. A non-integer duration is therefore
    truncated the same way (5.9 -> ``<<<t=5s>>>``) with a warning; durations under one second are rejected (pass
    ``None`` to ``decorate_prompt`` for an image).
    """
    if isinstance(duration_seconds, bool) or not isinstance(duration_seconds, Real):
        raise TypeError(f"duration_seconds must be a number of seconds, got {type(duration_seconds).__name__}")
    if not math.isfinite(duration_seconds) or duration_seconds < 1:
        raise ValueError(
            f"duration_seconds={duration_seconds!r} is not a video duration the model knows: give at least 1 second "
            "(the released models generate 5 s, and 10 s at 480p), or None for an image"
        )
    whole = int(duration_seconds)
    if whole != duration_seconds:
        warnings.warn(
            f"duration {duration_seconds} s is tagged as <<<t={whole}s>>>: the model was trained on whole seconds "
            "(int(seconds), as in the original data pipeline)",
            stacklevel=2,
        )
    return f"<<<t={whole}s>>>"


def decorate_prompt(prompt: str, duration_seconds: float | None, *, suffix: str | None = None) -> str:
    """Decorate a prompt the way the original trained and sampled it: ``<<<t={D}s>>>`` + prompt (+ suffix).

    - Videos (``duration_seconds`` given) get the duration tag with no space after it; images (``None``) get none.
      Without the tag, videos break (InfinityStar issue #29).
    - ``suffix`` is appended only when given. The original 480p/720p scripts always append ``ORIGINAL_SUFFIX``; pass
      ``suffix=ORIGINAL_SUFFIX`` to reproduce them (and the published VBench numbers).
    - Idempotent: a prompt that already starts with a tag, or already ends with the suffix, is not decorated twice.
      A prompt that carries a tag is kept as written for images; for videos its tag must match the duration asked
      for, otherwise a ``ValueError`` is raised rather than sending two contradicting durations.
    """
    check_prompt(prompt)
    existing = _DURATION_TAG.match(prompt)
    if existing is not None and duration_seconds is not None:
        wanted = duration_tag(duration_seconds)
        if existing.group(0) != wanted:
            raise ValueError(
                f"prompt already starts with {existing.group(0)} but duration_seconds={duration_seconds} asks for "
                f"{wanted}; remove the tag from the prompt or change the duration"
            )
    if suffix and not prompt.endswith(suffix):
        prompt = prompt + suffix
    if existing is None and duration_seconds is not None:
        prompt = duration_tag(duration_seconds) + prompt
    return prompt


def _check_prompt_list(prompts: object) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of str, got {type(prompts).__name__} (wrap a single prompt in a list)")
    return [check_prompt(p, f"prompts[{i}]") for i, p in enumerate(prompts)]


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


# ----------------------------------------------------------------------------------------------------------------------
# Optional prompt rewriter (any OpenAI-compatible chat-completions endpoint; standard library only)

DEFAULT_SYSTEM_PROMPT = """\
You turn a user's short idea into a prompt for a text-to-video model that makes 5-second clips.
Rules:
- Answer with the rewritten prompt only: one paragraph of plain English prose, 50 to 140 words, \
no title, list, quotes or comments.
- Describe objectively what the camera sees: the subjects and their appearance (shape, colour, material, clothing, \
size), the setting, the light, the framing and any camera movement.
- Describe the motion concretely, paced for about 5 seconds: one or two clear actions, not a story.
- Keep every subject, object, place, action, count, attribute and style of the original prompt.
- Add no new named entity: no person, character, brand, place or title that the original does not name.
- Do not describe sounds, thoughts or feelings that cannot be seen.
- If the original is already detailed, keep its content and only make it clearer."""


def _chat_completions_url(base_url: str) -> str:
    """Accept ``http://host:port``, ``.../v1`` or the full ``.../chat/completions`` address (query kept)."""
    if not isinstance(base_url, str) or not base_url.strip():
        raise ValueError(f"base_url must be an http(s) address, got {base_url!r}")
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http:// or https:// address, got {base_url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions" if path.endswith("/v1") else "/v1/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _snippet(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _strip_quotes(text: str) -> str:
    """Chat models often wrap the answer in quotes; a prompt never needs them."""
    text = text.strip()
    for left, right in (('"', '"'), ("'", "'"), ("\u201c", "\u201d")):
        if len(text) >= 2 and text[0] == left and text[-1] == right:
            return text[1:-1].strip()
    return text


class PromptRewriter:
    """Rewrites a short prompt into a detailed one with any OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Off by default and never required: the original used Azure OpenAI GPT-4o; this works with OpenAI, vLLM, Ollama,
    llama.cpp, LM Studio and the like, using only the standard library. The API key is sent only if given here (it is
    deliberately not read from ``OPENAI_API_KEY``, so that a key is never sent to an endpoint it was not meant for).

    Args:
        base_url: ``http://host:port``, ``http://host:port/v1`` or the full ``.../chat/completions`` address.
        api_key: sent as ``Authorization: Bearer <api_key>`` when given.
        model: model name the endpoint expects.
        system_prompt: the rewriting instructions.
        timeout: seconds to wait for the answer.
        temperature: sampling temperature; ``None`` leaves the endpoint's default.
        headers: extra HTTP headers (e.g. ``{"api-key": ...}`` for Azure).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        model: str = "gpt-4o",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        timeout: float = 60,
        *,
        temperature: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = _chat_completions_url(base_url)
        self.api_key = api_key
        self.model = model
        self.system_prompt = system_prompt
        self.timeout = timeout
        self.temperature = temperature
        self.headers = dict(headers or {})

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.api_key else "none"
        return f"PromptRewriter(url={self.url!r}, model={self.model!r}, api_key={key}, timeout={self.timeout})"

    def rewrite(self, prompt: str) -> str:
        """The rewritten prompt. Raises ``RuntimeError`` on any network, HTTP or answer-format problem."""
        check_prompt(prompt)
        raw = self._post(self._request_body(prompt))
        return self._parse_answer(raw)

    __call__ = rewrite

    def _request_body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt},
            ],
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def _post(self, body: dict[str, Any]) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = _snippet(error.read() or b"")
            raise RuntimeError(
                f"prompt rewriter: {self.url} answered HTTP {error.code} {error.reason}: {detail}"
            ) from error
        except TimeoutError as error:
            raise RuntimeError(f"prompt rewriter: {self.url} timed out after {self.timeout} s") from error
        except urllib.error.URLError as error:
            if isinstance(error.reason, TimeoutError):
                raise RuntimeError(f"prompt rewriter: {self.url} timed out after {self.timeout} s") from error
            raise RuntimeError(f"prompt rewriter: cannot reach {self.url}: {error.reason}") from error
        except OSError as error:  # connection reset, remote closed, ...
            raise RuntimeError(f"prompt rewriter: request to {self.url} failed: {error}") from error

    def _parse_answer(self, raw: bytes) -> str:
        try:
            answer = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RuntimeError(f"prompt rewriter: the answer of {self.url} is not JSON: {_snippet(raw)!r}") from error
        try:
            content = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as error:
            raise RuntimeError(
                f"prompt rewriter: unexpected answer format from {self.url} (no choices[0].message.content): "
                f"{_snippet(json.dumps(answer))}"
            ) from error
        if not isinstance(content, str) or not _strip_quotes(content):
            raise RuntimeError(f"prompt rewriter: {self.url} returned an empty rewritten prompt")
        return _strip_quotes(content)


def rewrite_or_keep(prompt: str, rewriter: PromptRewriter | None) -> str:
    """Rewrite ``prompt`` if a rewriter is configured; on failure warn and keep the original prompt."""
    check_prompt(prompt)
    if rewriter is None:
        return prompt
    try:
        return rewriter.rewrite(prompt)
    except RuntimeError as error:
        warnings.warn(f"{error}; using the original prompt", stacklevel=2)
        return prompt
