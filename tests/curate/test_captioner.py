"""Captions in curation: the transformers VLM captioner with a tiny random LLaVA, custom captioners, precedence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from infinitystar.curate import CurateConfig, parse_captioner_spec, run_curate
from infinitystar.curate.captioner import (
    VLMCaptioner,
    build_captioner,
    check_captioner_spec,
    first_sentence,
    sidecar_caption,
)
from tests.helpers.curate import make_tiny_llava, moving, texture, write_image, write_video

CFG = dict(min_short_edge=32, min_duration=1.0, motion="diff")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    return make_tiny_llava(tmp_path_factory.mktemp("vlm") / "llava")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    cut = np.concatenate([moving(20, seed=2, palette=(255, 70, 40)), moving(20, seed=3, palette=(40, 90, 255))])
    write_video(root / "cut.mp4", cut, fps=16)  # two clips
    write_video(root / "known.mp4", moving(20, seed=4), fps=16)
    (root / "known.txt").write_text("A known caption.")
    write_image(root / "photo.png", texture(48, 64, 7))
    return root


def test_vlm_captioner_produces_deterministic_text(tiny_vlm):
    captioner = VLMCaptioner(str(tiny_vlm), num_frames=3, frame_size=32, max_new_tokens=5)
    frames = moving(6, 32, 48)
    text = captioner.caption(frames, "video")
    assert isinstance(text, str) and text.strip() == text and text
    assert captioner.caption(frames, "video") == text  # greedy decoding
    assert isinstance(captioner.caption(frames[:1], "image"), str)
    prompt = captioner.prompt_text(3, "video")
    assert prompt.count("<image>") == 3 and "Describe this video" in prompt
    with pytest.raises(ValueError, match="kind must be 'video' or 'image'"):
        captioner.caption(frames, "audio")


def test_vlm_captioner_errors(tiny_vlm, tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        VLMCaptioner(str(tmp_path))
    with pytest.raises(ValueError, match="dtype 'int8' not supported"):
        VLMCaptioner(str(tiny_vlm), dtype="int8")
    with pytest.raises(ValueError, match="prompts must not be empty"):
        VLMCaptioner(str(tiny_vlm), video_prompt=" ")
    with pytest.raises(ValueError, match="captioner model folder not found"):
        check_captioner_spec(parse_captioner_spec(str(tmp_path / "missing" / "model")))
    with pytest.raises(ValueError, match="unknown captioner 'tarsier'"):
        check_captioner_spec(parse_captioner_spec("tarsier"))


def test_run_with_the_vlm_captioner_captions_every_clip(tiny_vlm, media, tmp_path):
    spec = parse_captioner_spec(f"{tiny_vlm},max_new_tokens=6", num_frames=2, frame_size=32)
    assert dict(spec.options) == {"frame_size": 32, "max_new_tokens": 6, "num_frames": 2}
    report = run_curate(media, tmp_path / "m.jsonl", CurateConfig(**CFG, captioner=spec))
    entries = _lines(tmp_path / "m.jsonl")
    videos = {
        (Path(e["video_path"]).name, e["begin_frame_id"]): e["tarsier2_caption"] for e in entries if "video_path" in e
    }
    assert set(videos) == {("cut.mp4", 0), ("cut.mp4", 20), ("known.mp4", 0)}
    assert videos[("known.mp4", 0)] == "A known caption."  # an existing caption is kept
    assert all(isinstance(c, str) and c for c in videos.values())
    image = next(e for e in entries if "image_path" in e)
    assert image["long_caption"] and image["text"] == first_sentence(image["long_caption"])
    assert report["captions"] == {"captioner": 3, "sidecar": 1}
    assert report["uncaptioned"] == 0 and not (tmp_path / "m.uncaptioned.jsonl").exists()


def test_recaption_replaces_existing_captions(media, tmp_path):
    spec = parse_captioner_spec("tests.helpers.curate:EchoCaptioner,prefix=seen", num_frames=2, frame_size=24)
    report = run_curate(media, tmp_path / "m.jsonl", CurateConfig(**CFG, captioner=spec, recaption=True))
    captions = {
        Path(e.get("video_path") or e["image_path"]).name: e.get("tarsier2_caption") or e["long_caption"]
        for e in _lines(tmp_path / "m.jsonl")
    }
    assert captions["known.mp4"].startswith("seen video: 2 frames of 24x32")
    assert captions["photo.png"].startswith("seen image: 1 frames of 24x32")
    assert report["captions"] == {"captioner": 4}


def test_custom_captioner_in_workers_and_without_captioner(media, tmp_path):
    spec = parse_captioner_spec("tests.helpers.curate:EchoCaptioner", num_frames=3)
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    run_curate(media, one, CurateConfig(**CFG, captioner=spec))
    run_curate(media, two, CurateConfig(**CFG, captioner=spec), workers=2)
    assert one.read_text() == two.read_text()
    assert "clip video: 3 frames of 32x43" in one.read_text()  # 48x64 frames at a 32-px shorter side

    bare = tmp_path / "bare.jsonl"
    report = run_curate(media, bare, CurateConfig(**CFG, sidecar_captions=False))
    assert bare.read_text() == "" and report["uncaptioned"] == 4
    assert all(e["tarsier2_caption"] == "" for e in _lines(tmp_path / "bare.uncaptioned.jsonl") if "video_path" in e)


def test_caption_helpers(tmp_path):
    assert first_sentence("A cat runs. Then it sleeps.") == "A cat runs."
    assert first_sentence("  no full stop here ") == "no full stop here"
    assert first_sentence("Version 2.5 works! Yes.") == "Version 2.5 works!"
    (tmp_path / "a.txt").write_text("  spaced \n caption ")
    assert sidecar_caption(tmp_path / "a.mp4") == "spaced caption"
    (tmp_path / "b.txt").write_text("   ")
    assert sidecar_caption(tmp_path / "b.mp4") is None
    assert sidecar_caption(tmp_path / "c.mp4") is None
    with pytest.raises(ValueError, match="lacks"):
        build_captioner(parse_captioner_spec("tests.helpers.curate:RedShareScorer"))
