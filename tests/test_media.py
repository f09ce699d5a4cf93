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


# --------------------------------------------------------------------------------------------
# One probe, one decoder, one MediaError (infinitystar.media.probe / .decode)
# --------------------------------------------------------------------------------------------


def encode(path, frames, rate, *, pts=None, options=None):
    """Write uint8 frames [T, H, W, 3] with H.264 (``pts``: each frame's time in 1/rate units; ``options``: the
    container's, e.g. mp4 ``movflags=faststart`` puts the index first so that a cut file still opens)."""
    import fractions

    with av.open(str(path), "w", options=options or {}) as c:
        stream = c.add_stream("libx264", rate=rate)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, rate)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path


def gapped_mkv(path):
    """An mkv at 10 fps whose header has no frame count and whose last frame comes late: 10 frames in 2.1 s,
    so a count estimated from the duration (21) differs from the packets (10)."""
    frames = np.broadcast_to(np.arange(0, 200, 20, dtype=np.uint8)[:, None, None, None], (10, 48, 64, 3))  # grey i*20
    return encode(path, frames, 10, pts=[0, 1, 2, 3, 4, 5, 6, 7, 8, 20])


def test_probe_counts_packets_only_when_asked(tmp_path):
    from infinitystar.media import probe_media

    path = gapped_mkv(tmp_path / "gap.mkv")
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # nothing in the header
    estimated = probe_media(path)
    assert (estimated.kind, estimated.width, estimated.height, estimated.fps) == ("video", 64, 48, 10.0)
    assert estimated.duration == pytest.approx(2.1) and estimated.num_frames == 21  # duration x fps
    assert probe_media(path, count_packets=True).num_frames == 10  # exact
    mp4 = write_video(tmp_path / "v.mp4", moving_square(17))  # the header has a count: no need to count
    assert probe_media(mp4).num_frames == probe_media(mp4, count_packets=True).num_frames == 17
    image = probe_media(write_video(tmp_path / "f.png", moving_square(1)))
    assert (image.kind, image.width, image.height, image.fps, image.num_frames) == ("image", 96, 64, None, 1)


def test_corrupt_files_raise_media_error_naming_the_file(tmp_path):
    from infinitystar.media import MediaError, probe_media, read_video_uint8, verify_decodes

    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    for call, name, what in [
        (probe_media, "broken.mp4", "video"),
        (read_video_uint8, "broken.mp4", "video"),
        (read_video, "broken.mp4", "video"),
        (probe_media, "broken.png", "image"),
        (read_image, "broken.png", "image"),
        (verify_decodes, "broken.png", "image"),
    ]:
        with pytest.raises(MediaError, match=rf"cannot read {what} .*{name}: it is corrupt or not an? {what}") as info:
            call(tmp_path / name)
        assert info.value.path == str(tmp_path / name) and info.value.reason.startswith("it is corrupt")
    with pytest.raises(
        MediaError, match=r"cannot read image .*clip\.mp4: unsupported file type '\.mp4'; accepted: \.png"
    ):
        read_image(tmp_path / "clip.mp4")


def test_an_image_too_large_to_decode_safely_is_explained(tmp_path, monkeypatch):
    from PIL import Image

    from infinitystar.media import MediaError

    path = write_video(tmp_path / "big.png", moving_square(1))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 96 x 64 is more than twice as many
    with pytest.raises(MediaError, match=r"big\.png: it is too large to decode safely .*; accepted: images up to 2000"):
        read_image(path)


def test_verify_decodes_a_good_and_a_truncated_video(tmp_path):
    from infinitystar.media import MediaError, verify_decodes

    good = write_video(tmp_path / "good.mp4", moving_square(17))
    info = verify_decodes(good)
    assert (info.kind, info.width, info.height, info.num_frames) == ("video", 96, 64, 17)
    assert verify_decodes(good, all_frames=True).num_frames == 17
    assert verify_decodes(gapped_mkv(tmp_path / "gap.mkv"), all_frames=True).num_frames == 10
    data = good.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # its index (at the end) is lost
    with pytest.raises(MediaError, match=r"cannot read video .*cut\.mp4: it is corrupt or not a video"):
        verify_decodes(tmp_path / "cut.mp4")
    noise = np.random.default_rng(0).integers(0, 256, (17, 64, 96, 3), dtype=np.uint8)  # frames of similar size
    data = encode(tmp_path / "indexed.mp4", noise, 16, options={"movflags": "faststart"}).read_bytes()
    (tmp_path / "cut_late.mp4").write_bytes(data[: len(data) // 2])  # the index survives, half the frames not
    assert verify_decodes(tmp_path / "cut_late.mp4").num_frames == 17  # the first frame decodes
    with pytest.raises(
        MediaError, match=r"cut_late\.mp4: it is corrupt or truncated: decoding failed after \d+ frames"
    ):
        verify_decodes(tmp_path / "cut_late.mp4", all_frames=True)
    png = write_video(tmp_path / "good.png", moving_square(1)).read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    assert verify_decodes(tmp_path / "good.png").kind == "image"
    with pytest.raises(MediaError, match=r"cut\.png: it is corrupt or not an image"):
        verify_decodes(tmp_path / "cut.png")  # the header alone reads fine: the pixels do not
    with pytest.raises(
        MediaError, match=r"cannot read video .*good\.png: unsupported file type '\.png'; accepted: \.mp4"
    ):
        verify_decodes(tmp_path / "good.png", "video")


def test_probe_and_decode_import_no_torch():
    import os
    import subprocess
    import sys
    from pathlib import Path

    import infinitystar

    src = str(Path(infinitystar.__file__).resolve().parents[1])
    code = (
        "import sys\n"
        "import infinitystar.media.probe, infinitystar.media.decode, infinitystar.curate.process\n"
        "from infinitystar.media import MediaError, probe_media, verify_decodes\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_curation_and_training_raise_the_same_media_error(tmp_path):
    import pickle

    import infinitystar.media
    from infinitystar import curate as curate_probe  # curation's exports
    from infinitystar.train.data import preprocess

    assert curate_probe.MediaError is preprocess.MediaError is infinitystar.media.MediaError
    assert issubclass(infinitystar.media.MediaError, ValueError)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 300)
    with pytest.raises(infinitystar.media.MediaError) as from_curation:
        curate_probe.probe_media(tmp_path / "junk.mp4")
    with pytest.raises(infinitystar.media.MediaError) as from_training:
        preprocess.probe_video(tmp_path / "junk.mp4")
    assert type(from_curation.value) is type(from_training.value)
    assert str(from_curation.value) == str(from_training.value)
    back = pickle.loads(pickle.dumps(from_training.value))  # curation workers send errors between processes
    assert (str(back), back.path, back.reason) == (
        str(from_training.value),
        from_training.value.path,
        "it is corrupt or not a video",
    )


def test_the_package_keeps_every_name_it_had():
    import infinitystar.media as media

    for name in (
        "IMAGE_SUFFIXES",
        "VIDEO_SUFFIXES",
        "cover_resize_crop",
        "frames_to_uint8",
        "read_image",
        "read_video",
        "resample_indices",
        "write_video",
    ):
        assert callable(getattr(media, name)) or isinstance(getattr(media, name), tuple)
    assert set(media.__all__) <= set(dir(media))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        media.nope  # noqa: B018
