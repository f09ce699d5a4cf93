"""The web demo's handlers (plain functions, no browser), its page layout and the `serve` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from infinitystar.app.checks import (
    ASPECT_RATIOS,
    AUTO_ASPECT,
    MAX_SEED,
    UPLOAD_ERROR_PREFIX,
    DemoInputError,
    check_prompt_text,
    check_upload,
    inspect_upload,
    resolve_seed,
)
from infinitystar.app.handlers import (
    DemoSettings,
    add_to_gallery,
    aspect_choices,
    generate_media,
    model_summary,
)
from infinitystar.app.page import GENERATION_CONCURRENCY_ID, launch_options
from infinitystar.media import read_video, write_video

MB = 2**20


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Valid and broken uploads: a png, a jpg, a 1 s mp4, a corrupt png, a corrupt mp4, a gif, an empty png."""
    import torch
    from PIL import Image

    d = tmp_path_factory.mktemp("media")
    y, x = np.mgrid[0:96, 0:120]
    rgb = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(d / "good.png")
    Image.fromarray(rgb).save(d / "good.jpg")
    Image.fromarray(rgb).save(d / "anim.gif")
    frames = torch.from_numpy(np.stack([np.roll(rgb, 3 * i, axis=1) for i in range(17)]))  # 17 frames = 1 s
    write_video(d / "good.mp4", frames)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"definitely not image data" * 10)
    (d / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (d / "empty.png").write_bytes(b"")
    png = (d / "good.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    return d


def gen(pipe, mode, prompt="a red cat runs", out=None, **kw):
    kw.setdefault("duration", 1)
    return generate_media(pipe, mode, prompt, output_dir=out, **kw)


# ---- input checks --------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   \n\t", None, 42])
def test_empty_or_non_text_prompt_is_a_clear_error(prompt):
    with pytest.raises(DemoInputError, match="prompt is empty"):
        check_prompt_text(prompt)


def test_prompt_is_stripped_and_capped():
    assert check_prompt_text("  a cat  ") == "a cat"
    with pytest.raises(DemoInputError, match="at most 2000"):
        check_prompt_text("a" * 2001)


def test_seed_random_fixed_and_rejected():
    assert resolve_seed(123, randomize=True) is None  # the pipeline draws one and returns it
    assert resolve_seed(7.0, randomize=False) == 7
    assert resolve_seed("12", randomize=False) == 12
    assert resolve_seed(MAX_SEED, randomize=False) == MAX_SEED
    for bad in (-1, 1.5, MAX_SEED + 1, float("nan"), "abc"):
        with pytest.raises(DemoInputError, match="whole number from 0"):
            resolve_seed(bad, randomize=False)
    with pytest.raises(DemoInputError, match="no seed given"):
        resolve_seed(None, randomize=False)


def test_valid_uploads_pass(media):
    for name in ("good.png", "good.jpg"):
        assert check_upload(str(media / name), "image", 50 * MB) == media / name
    assert check_upload(media / "good.mp4", "video", 50 * MB) == media / "good.mp4"


@pytest.mark.parametrize(
    ("name", "kind", "match"),
    [
        ("corrupt.png", "image", "cannot read the image 'corrupt.png': it is corrupt"),
        ("truncated.png", "image", "cannot read the image 'truncated.png'"),
        ("empty.png", "image", "is empty"),
        ("anim.gif", "image", r"not a supported image type \(\.gif\); accepted: png, jpg, jpeg, webp"),
        ("good.png", "video", "not a supported video type .*accepted: mp4, webm, mov"),
        ("corrupt.mp4", "video", "cannot read the video 'corrupt.mp4'"),
        ("missing.png", "image", "no longer on the server"),
    ],
)
def test_bad_uploads_give_one_clear_message(media, name, kind, match):
    with pytest.raises(DemoInputError, match=match):
        check_upload(media / name, kind, 50 * MB)


def test_upload_size_limit_and_nothing_uploaded(media):
    size = (media / "good.png").stat().st_size
    with pytest.raises(DemoInputError, match=r"larger than the .* MB limit"):
        check_upload(media / "good.png", "image", size - 1)
    assert check_upload(media / "good.png", "image", size) == media / "good.png"
    with pytest.raises(DemoInputError, match="no video uploaded: upload one .*mp4, webm, mov up to 50 MB"):
        check_upload(None, "video", 50 * MB)


def test_inspect_upload_reports_in_the_status_box_instead_of_raising(media):
    preview, status = inspect_upload(str(media / "corrupt.png"), "image", 50 * MB)
    assert preview is None and status.startswith(UPLOAD_ERROR_PREFIX) and "corrupt.png" in status
    preview, status = inspect_upload(str(media / "good.png"), "image", 50 * MB)
    assert preview == str(media / "good.png") and "good.png" in status and not status.startswith(UPLOAD_ERROR_PREFIX)
    assert inspect_upload(None, "image", 50 * MB) == (None, "")


def test_settings_reject_nonsense():
    with pytest.raises(ValueError, match="max_upload_mb"):
        DemoSettings(max_upload_mb=0)
    with pytest.raises(ValueError, match="max_duration"):
        DemoSettings(max_duration=0)
    assert DemoSettings(max_upload_mb=50).max_upload_bytes == 50 * MB


# ---- what the page shows about the model ------------------------------------------------------


def test_model_summary_and_aspect_choices_show_the_models_resolution(pipe):
    text = model_summary(pipe, DemoSettings())
    assert "0.016M" in text and "128×128" in text and "50 MB" in text and "up to 2 s" in text
    choices = aspect_choices(pipe)
    assert [v for _, v in choices] == list(ASPECT_RATIOS)
    assert ("1:1 · 128×128", "1:1") in choices and ("16:9 · 176×96", "16:9") in choices
    assert aspect_choices(pipe, with_auto=True)[0][1] == AUTO_ASPECT


# ---- generation handlers ---------------------------------------------------------------------


def test_text_to_video_writes_an_h264_mp4_with_the_seed_and_reports_progress(pipe, tmp_path):
    steps = []
    res = gen(pipe, "text-to-video", out=tmp_path, seed=7, progress=lambda d, t: steps.append((d, t)))
    assert res.path.parent == tmp_path and res.path.suffix == ".mp4" and "seed7" in res.path.name
    assert (res.seed, res.mode, res.num_frames, res.height, res.width) == (7, "text-to-video", 17, 128, 128)
    assert read_video(res.path).shape == (3, 17, 128, 128)
    import av

    with av.open(str(res.path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    total = steps[-1][1]
    assert total > 1 and [d for d, _ in steps] == list(range(1, total + 1))  # one report per scale step
    assert "**seed 7**" in res.summary() and "17 frames" in res.summary()
    again = gen(pipe, "text-to-video", out=tmp_path, seed=7)
    assert again.path != res.path  # never overwrites an earlier result
    assert np.array_equal(read_video(again.path).numpy(), read_video(res.path).numpy())  # the seed reproduces it


def test_random_seed_is_drawn_and_reported(pipe, tmp_path):
    res = gen(pipe, "text-to-video", out=tmp_path, seed=None, randomize_seed=True)
    assert 0 <= res.seed < 2**31 and f"seed{res.seed}" in res.path.name and f"seed {res.seed}" in res.caption


def test_text_to_image_writes_a_png(pipe, tmp_path):
    from PIL import Image

    res = gen(pipe, "text-to-image", out=tmp_path, seed=1, duration=None, aspect_ratio="16:9")
    assert res.is_image and res.path.suffix == ".png"
    with Image.open(res.path) as im:
        assert im.size == (176, 96)


def test_image_to_video_and_continuation(pipe, media, tmp_path):
    i2v = gen(pipe, "image-to-video", out=tmp_path, seed=2, image=str(media / "good.png"), aspect_ratio=AUTO_ASPECT)
    assert i2v.mode == "image-to-video" and i2v.num_frames == 17
    assert (i2v.height, i2v.width) == (112, 144)  # the upload's 96x120 picks the 3:4-ish template, not 1:1
    v2v = gen(pipe, "continuation", out=tmp_path, seed=3, video=str(media / "good.mp4"), duration=2)
    assert v2v.mode == "continuation" and v2v.num_frames == 33


def test_generation_rejects_bad_requests_with_clear_messages(pipe, media, tmp_path):
    cases = [
        (dict(mode="text-to-video", prompt="  "), "prompt is empty"),
        (dict(mode="sketch-to-video"), "unknown mode 'sketch-to-video'; accepted: text-to-video"),
        (dict(mode="text-to-video", duration=0), r"duration \(seconds\) must be a number from 1 to 2"),
        (dict(mode="text-to-video", duration=99), "from 1 to 2"),
        (dict(mode="text-to-video", aspect_ratio="7:5"), "unknown aspect ratio '7:5'; accepted: 16:9"),
        (dict(mode="text-to-video", guidance_scale=float("nan")), "guidance scale must be a number"),
        (dict(mode="text-to-video", seed=-3), "whole number from 0"),
        (dict(mode="image-to-video"), "no image uploaded"),
        (dict(mode="image-to-video", image=str(media / "corrupt.png")), "cannot read the image 'corrupt.png'"),
        (dict(mode="continuation", video=str(media / "corrupt.mp4")), "cannot read the video 'corrupt.mp4'"),
        # the pipeline's own check, passed through: a 1 s video cannot be continued to 1 s
        (dict(mode="continuation", video=str(media / "good.mp4"), duration=1), "already has 17 frames"),
    ]
    for kwargs, match in cases:
        kwargs = {"prompt": "a cat", "seed": 0, **kwargs}
        with pytest.raises(DemoInputError, match=match):
            gen(pipe, out=tmp_path, **kwargs)
    assert not list(tmp_path.iterdir())  # nothing written for a rejected request


def test_gallery_is_newest_first_and_capped(pipe, tmp_path):
    a = gen(pipe, "text-to-image", out=tmp_path, seed=1, prompt="a red fox")
    b = gen(pipe, "text-to-image", out=tmp_path, seed=2, prompt="a blue boat")
    items = add_to_gallery(add_to_gallery([], a, limit=5), b, limit=5)
    assert items == [(str(b.path), "seed 2 · a blue boat"), (str(a.path), "seed 1 · a red fox")]
    assert add_to_gallery(items, a, limit=2) == [(str(a.path), a.caption), items[0]]


def test_a_video_gets_a_still_for_the_gallery(pipe, tmp_path):
    from PIL import Image

    result = gen(pipe, "text-to-video", out=tmp_path, seed=4)
    assert result.thumbnail is not None and result.thumbnail.suffix == ".jpg" and result.thumbnail.is_file()
    with Image.open(result.thumbnail) as still:  # the first frame, at the video's size
        assert still.size == (result.width, result.height)
    assert add_to_gallery([], result, limit=3) == [(str(result.thumbnail), result.caption)]


# ---- the page and the serve command ---------------------------------------------------------


def _require_gradio():
    try:
        import gradio  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("gradio is not installed; CI installs it with the test extra (pip install -e '.[test]')")
        pytest.skip("gradio is not installed (pip install -e '.[demo]')")


def test_build_app_has_four_modes_one_generation_slot_and_a_gallery(pipe, tmp_path):
    _require_gradio()
    from infinitystar.app.page import build_app

    demo = build_app(pipe, DemoSettings(output_dir=tmp_path))
    config = demo.get_config_file()
    by_id = {c.get("props", {}).get("elem_id"): c for c in config["components"]}
    tab_labels = [c["props"]["label"] for c in config["components"] if c["type"] in ("tab", "tabitem")]
    assert tab_labels == ["text-to-video", "text-to-image", "image-to-video", "continuation"]
    for key in ("t2v", "t2i", "i2v", "v2v"):
        for part in ("prompt", "seed", "random-seed", "aspect", "guidance", "generate", "result", "info", "download"):
            assert f"{key}-{part}" in by_id, f"{key}-{part} missing"
    assert by_id["t2v-result"]["type"] == "video" and by_id["t2i-result"]["type"] == "image"
    assert by_id["i2v-upload"]["props"]["file_types"] == [".png", ".jpg", ".jpeg", ".webp"]
    assert by_id["v2v-upload"]["props"]["file_types"] == [".mp4", ".webm", ".mov"]
    assert "t2i-duration" not in by_id and by_id["t2v-duration"]["props"]["maximum"] == 2
    assert by_id["gallery"]["type"] == "gallery"
    generation = [f for f in demo.fns.values() if f.api_name in ("t2v", "t2i", "i2v", "v2v")]
    assert len(generation) == 4
    assert {f.concurrency_limit for f in generation} == {1}
    assert {f.concurrency_id for f in generation} == {GENERATION_CONCURRENCY_ID}  # one slot for all four
    assert all(f.tracks_progress for f in generation)  # gr.Progress is wired to the pipeline's callback


def test_launch_options_bind_localhost_and_cap_uploads(tmp_path):
    opts = launch_options(DemoSettings(max_upload_mb=50), "127.0.0.1", 7860, tmp_path)
    assert opts["server_name"] == "127.0.0.1" and opts["server_port"] == 7860 and opts["share"] is False
    assert opts["max_file_size"] == 50 * MB and opts["allowed_paths"] == [str(tmp_path)]
    # the page refuses an oversize upload itself, with a message next to the upload (tests/app/test_browser.py)
    assert str(50 * MB) in opts["head"] and "i2v-upload-status" in opts["head"] and "v2v-upload" in opts["head"]


def test_serve_without_a_builtin_model_exits_with_the_pipelines_message(tmp_path, monkeypatch, capsys):
    _require_gradio()
    import infinitystar.generation.layouts as pipeline_module
    from infinitystar.cli import main

    monkeypatch.setattr(pipeline_module, "BUILTIN_MODEL_DIR", tmp_path / "no_model_here")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")  # serve sets it if unset; keep it scoped to the test
    assert main(["serve", "--port", "7860"]) == 2
    err = capsys.readouterr().err
    assert "no built-in default model" in err and "Traceback" not in err
    assert main(["serve", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    assert main(["serve", "--max-upload-mb", "0"]) == 2  # checked before the model loads
    assert "max_upload_mb must be a positive number" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    assert main(["serve", "--output-dir", str(tmp_path / "a_file")]) == 2  # also before the model loads
    assert "--output-dir" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the demo extra were not installed
    assert main(["serve"]) == 2
    assert "pip install 'infinitystar[demo]'" in capsys.readouterr().err


def test_serve_loads_the_checkpoint_and_launches_on_localhost(pipe, tmp_path, monkeypatch):
    _require_gradio()
    import infinitystar.app.page as app_module
    from infinitystar.cli import main

    folder = pipe.save_pretrained(tmp_path / "model")
    seen = {}

    def fake_launch(p, settings, *, host, port, block):
        seen.update(pipe=p, settings=settings, host=host, port=port, block=block)

    monkeypatch.setattr(app_module, "launch_app", fake_launch)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    out_dir = tmp_path / "results"
    assert main(["serve", "--checkpoint", str(folder), "--device", "cpu", "--output-dir", str(out_dir)]) == 0
    assert (seen["host"], seen["port"], seen["block"]) == ("127.0.0.1", 7860, True)
    assert seen["pipe"].config == pipe.config and seen["settings"].output_dir == Path(out_dir)
    assert seen["settings"].max_upload_mb == 50
    with pytest.raises(SystemExit):
        main(["serve", "--share"])  # not an option: the demo is local unless --host says otherwise
    assert main(["serve", "--port", "70000"]) == 2
