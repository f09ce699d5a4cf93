"""Tiny synthetic media for the curation tests: textured videos that move or stand still, written with PyAV.

The textures are smooth random patterns (a coarse random grid upsampled), so H.264 keeps them sharp, a shift
between frames is real motion, and two textures with different colour palettes make an unmistakable scene cut.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def texture(height: int, width: int, seed: int, palette: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A sharp random texture uint8 ``[height, width, 3]``: 4x4-pixel blocks of random levels, tinted."""
    rng = np.random.default_rng(seed)
    blocks = rng.random(((height + 3) // 4, (width + 3) // 4, 1))
    base = np.kron(blocks, np.ones((4, 4, 1)))[:height, :width]  # [h, w, 1] in [0, 1)
    return (base * np.asarray(palette, dtype=np.float64)).astype(np.uint8)


def moving(
    num_frames: int, height: int = 48, width: int = 64, *, seed: int = 0, speed: int = 2, palette=(255, 255, 255)
) -> np.ndarray:
    """A texture sliding ``speed`` pixels per frame to the right: ``[T, H, W, 3]``."""
    tex = texture(height, width + speed * num_frames, seed, palette)
    return np.stack([tex[:, t * speed : t * speed + width] for t in range(num_frames)])


def static(num_frames: int, height: int = 48, width: int = 64, *, seed: int = 0, palette=(255, 255, 255)) -> np.ndarray:
    """The same textured frame repeated: ``[T, H, W, 3]``."""
    return np.repeat(texture(height, width, seed, palette)[None], num_frames, axis=0)


def flat(num_frames: int, height: int = 48, width: int = 64, value: int = 0) -> np.ndarray:
    """A uniform grey (or black) video."""
    return np.full((num_frames, height, width, 3), value, dtype=np.uint8)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 16, codec: str = "libx264") -> Path:
    """Write uint8 ``[T, H, W, 3]`` (even H and W) at ``fps``: near-lossless H.264 by default, or ``codec``
    (e.g. ``mpeg4`` for .avi, ``libvpx-vp9`` for .webm); the container follows the file suffix."""
    import fractions

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fractions.Fraction(fps).limit_denominator(1001))
        if codec == "libx264":
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": "8", "preset": "ultrafast"}
        else:
            stream.pix_fmt = "yuv420p"
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: str | Path, frame: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path)
    return path


def write_corrupt(path: str | Path, size: int = 2000, seed: int = 0) -> Path:
    """Random bytes under a media suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


# --------------------------------------------------------------------------------------------
# Tiny random models built offline (plumbing tests only: their outputs are meaningless)
# --------------------------------------------------------------------------------------------

_VOCAB_TEXT = (
    "<pad> <s> </s> <unk> <image> user assistant : . , a the video image shows cat dog runs jumps red "
    "blue green sky sea tree man woman camera moves slowly fast in on with and of scene light bright dark "
    "describe"
)


def tiny_tokenizer(image_token: bool = False):
    """A word-level fast tokenizer over a small vocabulary (``</s>`` appended to every text)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(_VOCAB_TEXT.split())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if not image_token:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    if image_token:
        tok.add_tokens(["<image>"], special_tokens=True)  # the processor writes <image><image>... without spaces
    return tok, vocab


def make_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIP (32 px images, 8-d embeddings) with tokenizer and image processor, saved to ``folder``."""
    import torch
    import transformers
    from transformers import CLIPConfig, CLIPModel

    folder = Path(folder)
    tok, vocab = tiny_tokenizer()
    config = CLIPConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": vocab["</s>"],
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} :{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>"
    "{% else %} {{ c['text'] }}{% endif %}{% endfor %} {% endfor %}{% if add_generation_prompt %}assistant :{% endif %}"
)


def make_tiny_llava(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random LLaVA (CLIP vision tower 32 px, 1-layer Llama) with its processor, saved to ``folder``."""
    import torch
    import transformers
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    folder = Path(folder)
    tok, vocab = tiny_tokenizer(image_token=True)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_id=vocab["<image>"],
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# Plug-ins for the tests (importable by spawned workers: tests/ is on sys.path)
# --------------------------------------------------------------------------------------------


class RedShareScorer:
    """Share of the red channel in the frames' total intensity (a scorer loaded by dotted path)."""

    name = "red_share"
    direction = "max"

    def __init__(self, threshold: float | None = None, scale: float = 1.0) -> None:
        self.threshold, self.scale = threshold, scale

    def score(self, frames: np.ndarray) -> float:
        x = frames.astype(np.float64)
        return float(x[..., 0].sum() / max(x.sum(), 1.0)) * self.scale


class CrashOnRedScorer:
    """Kills its worker process when the frames are mostly red: stands in for a decoder crash or an OOM kill."""

    name = "crash_on_red"
    direction = "min"
    threshold = None

    def score(self, frames: np.ndarray) -> float:
        import os

        x = frames.astype(np.float64)
        if x[..., 0].mean() > 3 * x[..., 2].mean() + 1:
            os._exit(3)
        return 0.0


class EchoCaptioner:
    """A captioner that describes what it was given (number and size of frames), for plumbing tests."""

    name = "echo"

    def __init__(self, num_frames: int = 3, frame_size: int = 32, prefix: str = "clip") -> None:
        self.num_frames, self.frame_size, self.prefix = num_frames, frame_size, prefix

    def caption(self, frames: np.ndarray, kind: str) -> str:
        t, h, w, _ = frames.shape
        return f"{self.prefix} {kind}: {t} frames of {h}x{w}, mean {frames.mean():.1f}."


class SlowScorer:
    """Sleeps on every call, so a test can kill a run while it is in the middle of its inputs."""

    name = "slow"
    direction = "min"
    threshold = None

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def score(self, frames: np.ndarray) -> float:
        import time

        time.sleep(self.seconds)
        return 0.0
