"""The memory flags every generating command shares (``--quantize``, ``--offload``) and ``infinitystar info``'s
memory planner, from the user's side."""

from __future__ import annotations

import numpy as np
import pytest

from infinitystar.cli import main
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.media import read_video
from tests.helpers.pipeline import TINY_PIPELINE


@pytest.fixture(scope="module")
def model_dir(released, tmp_path_factory):
    pipe = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE)
    return pipe.save_pretrained(tmp_path_factory.mktemp("ours") / "model")


def gen(model_dir, out, *args) -> int:
    return main(
        ["generate", "a red cat", "--checkpoint", str(model_dir), "--quiet", "--seed", "2", "--out", str(out), *args]
    )


def test_quantize_and_offload_flags_write_videos(model_dir, tmp_path):
    runs = {
        "plain": (),
        "blocks": ("--offload", "blocks"),
        "text": ("--offload",),  # a bare --offload is the text encoder, as before
        "int8": ("--quantize", "int8"),
        "int8_all": ("--quantize", "int8", "--offload", "all"),
    }
    videos = {}
    for name, flags in runs.items():
        assert gen(model_dir, tmp_path / f"{name}.mp4", *flags) == 0, name
        videos[name] = read_video(tmp_path / f"{name}.mp4")
    assert videos["plain"].shape == (3, 17, 128, 128)
    assert np.array_equal(videos["blocks"], videos["plain"]) and np.array_equal(videos["text"], videos["plain"])
    assert np.array_equal(videos["int8_all"], videos["int8"]) and videos["int8"].shape == videos["plain"].shape


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--quantize", "fp8", "--device", "cpu"), "'fp8' needs a CUDA GPU with fp8 support"),
        (("--offload", "gpu"), "argument --offload: invalid choice: 'gpu'"),
        (("--quantize", "int4"), "argument --quantize: invalid choice: 'int4'"),
    ],
)
def test_unsupported_settings_exit_2_with_one_message(model_dir, tmp_path, capsys, flags, message):
    try:
        code = gen(model_dir, tmp_path / "x.mp4", *flags)
    except SystemExit as exc:  # argparse's own choices
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_info_plans_memory_and_names_the_fastest_setting(capsys):
    assert main(["info", "--gpu-memory", "24", "--resolution", "720p"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith("--dtype")]
    assert len(rows) == 3 * 3 * 4 * 2  # every dtype x quantize x offload
    assert "8B at 720p (720x1280), 5 s (81 frames)" in out
    assert "Fastest setting that fits 24 GiB: --dtype bf16 --quantize int8 --offload text (" in out
    assert main(["info", "--gpu-memory", "80", "--resolution", "480p", "--duration", "5"]) == 0
    assert "Fastest setting that fits 80 GiB: --dtype bf16 (" in capsys.readouterr().out
    assert main(["info", "--gpu-memory", "3"]) == 0
    assert (
        "Nothing fits in 3 GiB; the smallest is --dtype bf16 --quantize int8 --offload all" in capsys.readouterr().out
    )
    assert main(["info", "--resolution", "1080p"]) == 2
    assert "--resolution '1080p' is not a released resolution; accepted: 480p, 720p" in capsys.readouterr().err
