"""An optional prompt rewriter: any OpenAI-compatible chat-completions endpoint turns a short prompt into the detailed
kind the released models were trained on. Off by default; standard library only; a failure never stops a
generation (the original prompt is used instead)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Mapping
from typing import Any

from infinitystar.text.prompts import check_prompt

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
