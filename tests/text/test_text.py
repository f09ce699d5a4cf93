"""Text conditioning: prompt decoration, the T5 encoder (tiny random model built offline), the prompt rewriter."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from infinitystar.text.encoders import RELEASED_T5_SUBFOLDER, T5TextEncoder, encode_negative_prompt
from infinitystar.text.prompts import ORIGINAL_SUFFIX, check_prompt, decorate_prompt, duration_tag
from infinitystar.text.rewriter import DEFAULT_SYSTEM_PROMPT, PromptRewriter, rewrite_or_keep

PROMPTS = [
    "a cat",
    "a smiling gardener waters red flowers in the garden on a sunny morning",
    "the quick fox jumps over the lazy dog",
]

# ----------------------------------------------------------------------------------------------------------------------
# decorate_prompt


def test_text_that_is_not_utf8_is_repaired_with_a_warning():
    import os

    from infinitystar.text.builtin import BuiltinTextEncoder

    latin1 = os.fsdecode(b"caf" + b"\xe9 au lait, " + "na\u00efve".encode())  # mixed: one bad byte
    with pytest.warns(UserWarning, match="not valid UTF-8"):
        fixed = check_prompt(latin1)
    assert fixed == "café au lait, naïve"  # the undecodable byte read as Windows-1252, valid UTF-8 kept
    with pytest.warns(UserWarning, match="not valid UTF-8"):
        assert check_prompt("half \ud83d of an emoji") == "half \ufffd of an emoji"
    assert check_prompt("café") == "café"  # clean text: unchanged, no warning
    BuiltinTextEncoder(channels=8).encode([fixed])  # encodable (the raw text raised UnicodeEncodeError inside)


def test_video_prompt_gets_duration_tag_without_space():
    assert decorate_prompt("A cat", 5) == "<<<t=5s>>>A cat"
    assert decorate_prompt("A cat", 10.0) == "<<<t=10s>>>A cat"


def test_image_prompt_gets_no_tag():
    assert decorate_prompt("A cat", None) == "A cat"


def test_original_inference_decoration():
    prompt = "A handsome smiling gardener"
    expected = "<<<t=5s>>>A handsome smiling gardener, Close-up on big objects, emphasize scale and detail"
    assert decorate_prompt(prompt, 5, suffix=ORIGINAL_SUFFIX) == expected
    assert decorate_prompt(prompt, None, suffix=ORIGINAL_SUFFIX) == prompt + ORIGINAL_SUFFIX


@pytest.mark.parametrize(("duration", "suffix"), [(5, None), (5, ORIGINAL_SUFFIX), (None, ORIGINAL_SUFFIX)])
def test_decoration_is_idempotent(duration, suffix):
    once = decorate_prompt("A dog runs", duration, suffix=suffix)
    assert decorate_prompt(once, duration, suffix=suffix) == once
    assert once.count("<<<t=") == (duration is not None)


def test_existing_tag_kept_for_image_and_conflicting_tag_rejected():
    assert decorate_prompt("<<<t=5s>>>A dog", None) == "<<<t=5s>>>A dog"
    with pytest.raises(ValueError, match=r"<<<t=5s>>>.*<<<t=10s>>>"):
        decorate_prompt("<<<t=5s>>>A dog", 10)


def test_non_integer_duration_truncates_like_training_with_warning():
    with pytest.warns(UserWarning, match="whole seconds"):
        assert decorate_prompt("A dog", 5.9) == "<<<t=5s>>>A dog"


@pytest.mark.parametrize("duration", [0, 0.5, -5, math.nan, math.inf])
def test_bad_durations_rejected(duration):
    with pytest.raises(ValueError, match="duration_seconds"):
        duration_tag(duration)


@pytest.mark.parametrize("duration", [True, "5"])
def test_non_numeric_duration_rejected(duration):
    with pytest.raises(TypeError, match="duration_seconds"):
        decorate_prompt("A dog", duration)


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_rejected_before_decoration(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        decorate_prompt(prompt, 5)


def test_non_string_prompt_rejected():
    with pytest.raises(TypeError, match="prompt must be a str"):
        check_prompt(42)


# ----------------------------------------------------------------------------------------------------------------------
# T5TextEncoder on a tiny random T5 built offline


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    pytest.importorskip("transformers")
    from tests.helpers.t5 import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "flan-t5-tiny")


@pytest.fixture(scope="module")
def encoder(t5_folder):
    return T5TextEncoder(t5_folder)


def test_encoder_properties(encoder):
    from tests.helpers.t5 import TINY_T5_CHANNELS

    assert encoder.channels == TINY_T5_CHANNELS
    assert encoder.max_length == 512
    assert encoder.device == torch.device("cpu")
    assert encoder.dtype == torch.float32  # fp32 default on CPU


def test_features_strip_padding_and_keep_eos(encoder):
    features = encoder.encode(PROMPTS)
    assert len(features) == len(PROMPTS)
    for prompt, feats in zip(PROMPTS, features):
        assert feats.shape == (len(prompt.split()) + 1, encoder.channels)  # words + </s>
        assert feats.dtype == torch.float32
        assert torch.isfinite(feats).all()
    ids = encoder.tokenizer(PROMPTS[0])["input_ids"]
    assert ids[-1] == encoder.tokenizer.eos_token_id


def test_batch_equals_one_by_one(encoder):
    batched = encoder.encode(PROMPTS)
    for prompt, feats in zip(PROMPTS, batched):
        torch.testing.assert_close(feats, encoder.encode([prompt])[0], atol=1e-5, rtol=1e-5)


def test_small_batch_size_splits_without_changing_features(t5_folder, encoder):
    chunked = T5TextEncoder(t5_folder, batch_size=2).encode(PROMPTS)
    for a, b in zip(chunked, encoder.encode(PROMPTS)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_dynamic_padding_matches_original_max_length_padding(t5_folder, encoder):
    """The original pads to 512; padding to the batch's longest gives the same valid-token features."""
    original = T5TextEncoder(t5_folder, pad_to_max_length=True)
    for a, b in zip(encoder.encode(PROMPTS), original.encode(PROMPTS)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    # The comparison is sensitive: without the attention mask, the padding does change the features.
    batch = encoder.tokenizer(PROMPTS[:1], max_length=512, padding="max_length", return_tensors="pt")
    assert batch["input_ids"].shape[1] == 512
    with torch.no_grad():
        unmasked = encoder.model(input_ids=batch["input_ids"]).last_hidden_state[0, : len(PROMPTS[0].split()) + 1]
    assert (unmasked - encoder.encode(PROMPTS[:1])[0]).abs().max() > 1e-3


def test_long_prompt_truncated_with_warning(t5_folder):
    short = T5TextEncoder(t5_folder, max_length=16)
    words = ("a red fox jumps over the lazy dog near the river " * 3).split()  # 33 words -> 34 tokens
    with pytest.warns(UserWarning, match=r"prompts\[1\] has 34 tokens, more than max_length=16.*truncated to 16"):
        features = short.encode(["a cat", " ".join(words)])
    assert features[1].shape == (16, short.channels)
    # Truncation keeps the first 15 words and still ends with </s>.
    torch.testing.assert_close(features[1], short.encode([" ".join(words[:15])])[0], atol=1e-5, rtol=1e-5)


def test_prompt_at_max_length_does_not_warn(t5_folder, recwarn):
    short = T5TextEncoder(t5_folder, max_length=16)
    short.encode([" ".join(["cat"] * 15)])
    assert not [w for w in recwarn if "truncated" in str(w.message)]


@pytest.mark.parametrize("prompts", [[""], ["a cat", "   "]])
def test_encoder_rejects_empty_prompt(encoder, prompts):
    with pytest.raises(ValueError, match=r"prompt is empty"):
        encoder.encode(prompts)


@pytest.mark.parametrize("prompts", ["a cat", ["a cat", None], [b"a cat"]])
def test_encoder_rejects_non_string_prompts(encoder, prompts):
    with pytest.raises(TypeError, match="must be"):
        encoder.encode(prompts)


def test_empty_list_gives_empty_list(encoder):
    assert encoder.encode([]) == []


def test_to_and_offload_keep_dtype(t5_folder):
    half = T5TextEncoder(t5_folder, dtype=torch.float16)
    assert half.dtype == torch.float16
    assert half.offload() is half
    assert half.to("cpu") is half
    assert half.device == torch.device("cpu") and half.dtype == torch.float16


def test_negative_prompt(encoder):
    assert encode_negative_prompt(encoder, None) is None
    assert encode_negative_prompt(encoder, "") is None
    assert encode_negative_prompt(encoder, "  ") is None
    negative = encode_negative_prompt(encoder, "dark blurry video")
    assert negative.shape == (4, encoder.channels)  # its own length, not the prompt's
    torch.testing.assert_close(negative, encoder.encode(["dark blurry video"])[0])
    with pytest.raises(TypeError, match="negative_prompt"):
        encode_negative_prompt(encoder, 3)


def test_missing_folder_error_names_folder_and_layout(tmp_path):
    pytest.importorskip("transformers")
    missing = tmp_path / "no-such-t5"
    with pytest.raises(FileNotFoundError) as info:
        T5TextEncoder(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "config.json" in message and "tokenizer.json" in message and "model.safetensors" in message
    assert "flan-t5-xl-official" in message


def test_incomplete_folder_lists_missing_files(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / RELEASED_T5_SUBFOLDER).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"lacks its model weights, tokenizer files.*pass that folder"):
        T5TextEncoder(tmp_path)


def test_missing_transformers_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r'pip install "infinitystar\[t5\]"'):
        T5TextEncoder(tmp_path)


def test_importing_package_does_not_import_transformers():
    code = "import sys, infinitystar, infinitystar.text.encoders; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------------------------------
# PromptRewriter against a local fake OpenAI-compatible server


class _FakeChatServer:
    """Answers POSTs with whatever the test sets in ``status`` / ``body`` / ``delay``; records the requests."""

    def __init__(self):
        self.status, self.body, self.delay = 200, b"{}", 0.0
        self.requests: list[dict] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                fake.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)}
                )
                if fake.delay:
                    fake.release.wait(fake.delay)
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(fake.body)))
                    self.end_headers()
                    self.wfile.write(fake.body)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, content: str) -> None:
        self.body = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
        ).encode()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = _FakeChatServer()
    yield server
    server.close()


def test_rewriter_success(fake_server):
    fake_server.answer('  "A small red fox jumps over a sleeping brown dog in a sunny meadow."\n')
    rewriter = PromptRewriter(fake_server.url, api_key="sk-test", model="my-model", temperature=0.2)
    result = rewriter.rewrite("a fox jumps over a dog")
    assert result == "A small red fox jumps over a sleeping brown dog in a sunny meadow."
    (request,) = fake_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = json.loads(request["body"])
    assert body["model"] == "my-model" and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "a fox jumps over a dog"},
    ]


def test_rewriter_without_key_sends_no_authorization(fake_server):
    fake_server.answer("A detailed prompt.")
    assert PromptRewriter(fake_server.url + "/v1/")("a cat") == "A detailed prompt."
    assert "Authorization" not in fake_server.requests[0]["headers"]
    assert "temperature" not in json.loads(fake_server.requests[0]["body"])


def test_rewriter_http_500(fake_server):
    fake_server.status, fake_server.body = 500, b'{"error": {"message": "model overloaded"}}'
    with pytest.raises(RuntimeError, match=r"HTTP 500.*model overloaded"):
        PromptRewriter(fake_server.url).rewrite("a cat")


def test_rewriter_malformed_json(fake_server):
    fake_server.body = b"<html>not json</html>"
    with pytest.raises(RuntimeError, match="not JSON"):
        PromptRewriter(fake_server.url).rewrite("a cat")


@pytest.mark.parametrize("body", [{"choices": []}, {"error": "bad key"}, {"choices": [{"message": {"content": " "}}]}])
def test_rewriter_unexpected_format(fake_server, body):
    fake_server.body = json.dumps(body).encode()
    with pytest.raises(RuntimeError, match="unexpected answer format|empty rewritten prompt"):
        PromptRewriter(fake_server.url).rewrite("a cat")


def test_rewriter_timeout(fake_server):
    fake_server.delay = 5.0
    fake_server.answer("too late")
    with pytest.raises(RuntimeError, match=r"timed out after 0.2 s"):
        PromptRewriter(fake_server.url, timeout=0.2).rewrite("a cat")


def test_rewriter_unreachable():
    import socket

    with socket.socket() as sock:  # a port that nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeError, match="cannot reach"):
        PromptRewriter(f"http://127.0.0.1:{port}", timeout=2).rewrite("a cat")


def test_rewrite_or_keep_falls_back_with_warning(fake_server):
    fake_server.status = 503
    with pytest.warns(UserWarning, match="using the original prompt"):
        assert rewrite_or_keep("a cat", PromptRewriter(fake_server.url)) == "a cat"
    assert rewrite_or_keep("a cat", None) == "a cat"


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("http://localhost:8000", "http://localhost:8000/v1/chat/completions"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1/chat/completions"),
        ("https://api.example.com/openai/v1/", "https://api.example.com/openai/v1/chat/completions"),
        (
            "https://x.example/deploy/chat/completions?api-version=1",
            "https://x.example/deploy/chat/completions?api-version=1",
        ),
    ],
)
def test_rewriter_endpoint_address(base_url, endpoint):
    assert PromptRewriter(base_url).url == endpoint


@pytest.mark.parametrize("base_url", ["file:///etc/passwd", "localhost:8000", ""])
def test_rewriter_rejects_non_http_addresses(base_url):
    with pytest.raises(ValueError, match="base_url"):
        PromptRewriter(base_url)


def test_rewriter_hides_key_and_rejects_empty_prompt():
    rewriter = PromptRewriter("http://localhost:1", api_key="sk-secret")
    assert "sk-secret" not in repr(rewriter)
    with pytest.raises(ValueError, match="prompt is empty"):
        rewriter.rewrite(" ")


def test_default_system_prompt_states_the_rules():
    for rule in ("50 to 140 words", "5 seconds", "Keep every", "no new named entity"):
        assert rule.lower() in DEFAULT_SYSTEM_PROMPT.lower()
