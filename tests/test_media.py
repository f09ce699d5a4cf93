import av
import numpy as np
import pytest
import torch
from PIL import Image

from infinitystar.media import (
    cover_resize_crop,
    read_image,
    read_video,
    resample_indices,
    write_video,
)


def moving_square(t=17, h=64, w=96):
    frames = torch.zeros(t, h, w, 3, dtype=torch.uint8)
    for i in range(t):
        frames[i, 16:40, 2 * i : 2 * i + 24, 0] = 255
    return frames


def test_mp4_round_trip_keeps_frames_and_metadata(tmp_path):
    frames = moving_square()
    path = write_video(tmp_path / "v.mp4", frames, metadata={"comment": "a red square, seed 7"})
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert "seed 7" in c.metadata.get("comment", "")
    video = read_video(path)
    assert video.shape == (3, 17, 64, 96)
    back = ((video + 1) / 2 * 255).round().permute(1, 2, 3, 0)
    assert (back - frames.float()).abs().mean() < 4  # lossy codec, close
    assert read_video(path, num_frames=9).shape[1] == 9


def test_gif_and_png(tmp_path):
    frames = moving_square(5)
    assert read_video(write_video(tmp_path / "v.gif", frames)).shape == (3, 5, 64, 96)
    png = write_video(tmp_path / "f.png", frames[:1], metadata={"prompt": "a square"})
    with Image.open(png) as im:
        assert im.text["prompt"] == "a square"
    img = read_image(png)
    assert img.shape == (3, 64, 96) and img.min() >= -1 and img.max() <= 1
    with pytest.raises(ValueError, match="one frame"):
        write_video(tmp_path / "g.png", frames)
    with pytest.raises(ValueError, match="accepted: .mp4, .gif, .png"):
        write_video(tmp_path / "v.avi", frames)


def test_resampling_to_16_fps():
    assert resample_indices(100, 16.0, 5) == [0, 1, 2, 3, 4]
    assert resample_indices(48, 24.0, 5) == [0, 1, 3, 4, 6]
    assert resample_indices(20, 8.0, 5) == [0, 0, 1, 1, 2]
    # the original training reader's formula, kept for exact data parity
    assert resample_indices(48, 24.0, 17, original=True) == [int(v) for v in np.linspace(0, 23, 17)]
    assert resample_indices(100, 16.0, 5, original=True) == [0, 0, 1, 2, 3]


def test_cover_resize_crop_always_fills_the_target():
    for w0, h0 in [(1280, 720), (720, 1280), (1001, 999), (853, 480)]:
        im = cover_resize_crop(Image.new("RGB", (w0, h0)), 480, 848)
        assert im.size == (848, 480)


def test_bad_files_are_explained(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="corrupt or not an image"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt"):
        read_video(tmp_path / "bad.mp4")
    with pytest.raises(ValueError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.tiff").write_bytes(b"x")
    with pytest.raises(ValueError, match="accepted"):
        read_image(tmp_path / "bad.tiff")
    short = write_video(tmp_path / "short.mp4", moving_square(5))
    with pytest.raises(ValueError, match="too short"):
        read_video(short, num_frames=17)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        read_video(short, num_frames=4)


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    path = write_video(tmp_path / "x.png", torch.zeros(1, 16, 16, 3, dtype=torch.uint8))
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
