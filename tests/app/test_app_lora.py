"""The web demo with LoRA adapters (`serve --lora`): a scale per adapter for each request, checked, and the page's
sliders wired to it."""

from __future__ import annotations

import numpy as np
import pytest

from infinitystar.app.checks import DemoInputError
from infinitystar.app.handlers import DemoSettings, generate_media
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.media import read_video
from tests.app.test_app import _require_gradio
from tests.helpers.lora import make_adapter
from tests.helpers.pipeline import TINY_PIPELINE, TINY_TRANSFORMER


@pytest.fixture(scope="module")
def lora_pipe(released, tmp_path_factory):
    pipe = InfinityStarPipeline.from_pretrained(released, device="cpu", config=TINY_PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora(make_adapter(tmp_path_factory.mktemp("ad") / "style", TINY_TRANSFORMER, seed=1), scale=0.8)
    return pipe


def _video(pipe, out, **kw):
    res = generate_media(pipe, "text-to-video", "a red cat", output_dir=out, seed=5, duration=1, **kw)
    return read_video(res.path).numpy()


def test_each_request_sets_its_scales_and_the_server_keeps_its_own(lora_pipe, tmp_path):
    served = _video(lora_pipe, tmp_path)  # the scale the server loaded it with
    off = _video(lora_pipe, tmp_path, lora_scales={"style": 0})
    lora_pipe.set_lora_scale(0.0)
    base = _video(lora_pipe, tmp_path)
    lora_pipe.set_lora_scale(0.8)
    assert np.array_equal(off, base) and not np.array_equal(served, base)
    assert lora_pipe.lora_adapters == {"style": 0.8}  # put back after the request
    assert np.array_equal(_video(lora_pipe, tmp_path, lora_scales={"style": 0.8}), served)
    for scales, match in [
        ({"nope": 1.0}, "no LoRA adapter 'nope' is loaded; loaded: style"),
        ({"style": 3.0}, "scale of LoRA 'style'"),
        ({"style": float("nan")}, "scale of LoRA 'style'"),
    ]:
        with pytest.raises(DemoInputError, match=match):
            _video(lora_pipe, tmp_path / "rejected", lora_scales=scales)
    assert not (tmp_path / "rejected").exists()


def test_the_page_has_a_slider_per_adapter_wired_to_generation(lora_pipe, tmp_path):
    _require_gradio()
    from infinitystar.app.page import build_app

    demo = build_app(lora_pipe, DemoSettings(output_dir=tmp_path))
    by_id = {c.get("props", {}).get("elem_id"): c for c in demo.get_config_file()["components"]}
    for key in ("t2v", "t2i", "i2v", "v2v"):
        slider = by_id[f"{key}-lora-style"]
        assert slider["type"] == "slider" and slider["props"]["value"] == 0.8 and slider["props"]["maximum"] == 2.0
    t2v = next(f for f in demo.fns.values() if f.api_name == "t2v")
    assert t2v.tracks_progress and len(t2v.inputs) == 10  # the nine inputs of every tab + one slider
    args = ("text-to-video", "a red cat", None, 1, "1:1", 5, False, 3.0, [])
    path, _, info, _seed, gallery = t2v.fn(*args, lambda *a, **k: None, 0.0)  # (progress as gradio inserts it)
    lora_pipe.set_lora_scale(0.0)
    base = _video(lora_pipe, tmp_path)
    lora_pipe.set_lora_scale(0.8)
    assert np.array_equal(read_video(path).numpy(), base) and "seed 5" in info.replace("*", "") and gallery
