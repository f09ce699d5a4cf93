"""The latent cache: `infinitystar extract` / extract_latents (tiny random VAE, 32-64 px videos, <= 21 frames)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from infinitystar.cli import main as cli_main
from infinitystar.media import write_video
from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.checkpoint import save_original_vae_checkpoint
from infinitystar.models.vae.model import VideoVAE
from infinitystar.train.data.captions import candidate_captions, item_seed
from infinitystar.train.data.extract import extract_latents
from infinitystar.train.data.latent_cache import (
    CacheError,
    cache_file,
    cache_key,
    load_latent,
    read_entry,
    read_index,
)
from infinitystar.train.data.manifest import read_manifest
from infinitystar.train.data.preprocess import load_item

TINY = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)


def counter_video(path, n: int, fps: int, h: int = 32, w: int = 48):
    frames = torch.arange(n, dtype=torch.int32).mul(6).clamp(max=255).to(torch.uint8)
    frames = frames[:, None, None, None].expand(n, h, w, 3).contiguous()
    frames[:, : h // 2, : w // 2, 0] = 255  # some spatial structure
    return write_video(path, frames, fps=fps)


def tiny_vae(seed: int = 0) -> VideoVAE:
    torch.manual_seed(seed)  # default init of a throw-away test model
    vae = VideoVAE(TINY).eval()
    with torch.no_grad():
        vae.latent_scales.fill_(1.2)
    return vae


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three good clips, an image, and one of each kind of broken input, in one manifest."""
    root = tmp_path_factory.mktemp("extract_data")
    counter_video(root / "a.mp4", 30, 24)  # 1.25 s -> 21 frames
    counter_video(root / "b.mp4", 40, 30, h=48, w=32)  # portrait, 1.33 s -> 21 frames
    (root / "sub").mkdir()
    counter_video(root / "sub" / "a.mp4", 18, 16)  # same name, other folder: 1.125 s -> 17 frames
    from PIL import Image

    Image.new("RGB", (64, 40), (0, 128, 255)).save(root / "pic.png")
    counter_video(root / "short.mp4", 8, 24)  # 0.33 s: too short
    (root / "corrupt.mp4").write_bytes(b"\x00\x00\x00 definitely not an mp4 " * 40)
    (root / "zero.mp4").write_bytes(b"")
    lines = [
        {"path": "a.mp4", "caption": "A box. It brightens."},
        {"video_path": "b.mp4", "tarsier2_caption": "Tall box.", "MiniCPM_V_2_6_caption": "Other.", "fps": 30},
        {"path": "sub/a.mp4", "caption": "Another a."},
        {"image_path": "pic.png", "text": "blue", "long_caption": "A blue picture."},
        {"path": "short.mp4", "caption": "too short"},
        {"path": "corrupt.mp4", "caption": "corrupt"},
        {"path": "zero.mp4", "caption": "zero"},
        {"path": "missing.mp4", "caption": "missing"},
        '{"path": "a.mp4", "caption": ',
    ]
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    (root / "train.jsonl").write_text(text, encoding="utf-8")
    return root


GOOD = 4  # a.mp4, b.mp4, sub/a.mp4, pic.png
BROKEN = 5  # short, corrupt, zero-length, missing, malformed line


def run(data, out, vae=None, **kw):
    kw.setdefault("resolution", "32x48")
    kw.setdefault("max_frames", 21)
    return extract_latents(data / "train.jsonl", out, vae or tiny_vae(), progress=False, workers=1, **kw)


def test_extract_writes_resumes_and_reports(data, tmp_path):
    out = tmp_path / "cache"
    s = run(data, out)
    assert (s.cached, s.skipped_existing, s.failed) == (GOOD, 0, BROKEN)
    reasons = " | ".join(r for _, r in s.failures)
    for expected in ("too short", "corrupt or not a video", "empty (0 bytes)", "not found", "malformed JSON"):
        assert expected in reasons
    report = json.loads((out / "failures-rank00000.json").read_text())
    assert report["summary"]["failed"] == BROKEN and len(report["failures"]) == BROKEN

    entries = {(e.source.split("extract_data")[-1], e.kind): e for e in read_index(out)}
    assert len(entries) == GOOD
    a = entries[("0/a.mp4", "video")]
    assert a.num_frames == 21 and a.latent_shape == (64, 6, 2, 3) and a.seconds == pytest.approx(1.25)
    assert a.max_duration() == 1 and a.source_fps == 24 and a.pixel_size == (32, 48) and a.h_div_w == 0.671
    sub_a = entries[("0/sub/a.mp4", "video")]
    assert sub_a.key != a.key and sub_a.num_frames == 17  # same file name, no collision
    pic = entries[("0/pic.png", "image")]
    assert pic.latent_shape == (64, 1, 2, 3) and pic.caption == "blue" and pic.alt_caption == "A blue picture."
    b = entries[("0/b.mp4", "video")]
    assert b.alt_caption == "Other." and b.source_fps == 30
    # the file: latent float32 + header metadata equal to the index line
    with safe_open(str(out / a.file), framework="pt") as f:
        assert set(f.keys()) == {"latent"}
        assert f.get_tensor("latent").dtype == torch.float32
        assert len(json.loads(f.metadata()["frame_indices"])) == 21
    assert read_entry(out / a.file) == a

    # reproducible: the posterior noise comes from (seed, key) -> the same as encoding by hand
    [item] = [i for i in read_manifest(data / "train.jsonl", on_error="skip").items if i.path.name == "b.mp4"]
    clip = load_item(item, "32x48", max_frames=21)
    g = torch.Generator().manual_seed(item_seed(0, 0, b.key, "posterior"))
    with torch.no_grad():
        ref = tiny_vae().encode(clip.video[None], generator=g)[0]
    assert torch.equal(load_latent(out, b), ref)
    assert torch.equal(load_latent(out, b, 2), ref[:, :2])

    # resume: nothing new is encoded, the broken items are retried and reported again
    mtimes = {e.key: (out / e.file).stat().st_mtime_ns for e in read_index(out)}
    s2 = run(data, out)
    assert (s2.cached, s2.skipped_existing, s2.failed) == (0, GOOD, BROKEN)
    assert mtimes == {e.key: (out / e.file).stat().st_mtime_ns for e in read_index(out)}
    assert len((out / "index-rank00000.jsonl").read_text().splitlines()) == GOOD


def test_interrupted_run_resumes_to_the_same_cache(data, tmp_path):
    full = tmp_path / "full"
    run(data, full)
    part = tmp_path / "part"
    s = run(data, part, max_new=2)  # "killed" after two items
    assert s.cached == 2
    # a crash between writing a file and appending its index line: the index line is lost
    index = part / "index-rank00000.jsonl"
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # torn last line
    assert len(read_index(part)) == 1
    s = run(data, part)
    assert (s.cached, s.skipped_existing) == (GOOD - 2, 2)
    done, ref = read_index(part), read_index(full)
    assert [e.key for e in done] == [e.key for e in ref]
    for e, r in zip(done, ref):
        assert e == r and torch.equal(load_latent(part, e), load_latent(full, r))


def test_settings_mismatch_and_sharding(data, tmp_path):
    out = tmp_path / "cache"
    # two ranks: disjoint shares that together make the whole cache
    s0 = run(data, out, rank=0, world_size=2)
    s1 = run(data, out, rank=1, world_size=2)
    assert s0.cached + s1.cached == GOOD and s0.cached > 0 and s1.cached > 0
    assert s0.failed + s1.failed == BROKEN
    assert (out / "index-rank00001.jsonl").is_file()
    assert len(read_index(out)) == GOOD
    # resuming with other settings is refused, naming what differs
    with pytest.raises(CacheError, match="max_frames: cache has 21, this run 17"):
        run(data, out, max_frames=17)
    with pytest.raises(CacheError, match="vae_fingerprint"):
        run(data, out, vae=tiny_vae(seed=1))
    with pytest.raises(CacheError, match="not a latent cache"):
        read_index(tmp_path)
    # collision-free names depend on path, frame range and resolution
    items = read_manifest(data / "train.jsonl", on_error="skip").items
    keys = {cache_key(i, "32x48") for i in items}
    assert len(keys) == len(items)
    assert cache_key(items[0], "32x48") != cache_key(items[0], "480p")
    assert cache_file(out, cache_key(items[0], "32x48")).parent.parent == out / "latents"


def test_text_features_are_stored_per_candidate_caption(data, tmp_path):
    from infinitystar.text.encoders import TextEncoder

    class CharEncoder(TextEncoder):
        """A deterministic toy encoder: one 4-channel row per character (code point features)."""

        channels, max_length = 4, 512

        def _encode(self, prompts):
            return [
                torch.tensor([[ord(c), ord(c) % 7, len(p), i] for c in p], dtype=torch.float32)
                for i, p in enumerate(prompts)
            ]

        @property
        def device(self):
            return torch.device("cpu")

        def to(self, device):
            return self

    out = tmp_path / "cache"
    run(data, out, text_encoder=CharEncoder())
    b = next(e for e in read_index(out) if e.source.endswith("b.mp4"))
    assert b.text_captions == tuple(candidate_captions("video", "Tall box.", "Other.", None, 1))
    assert b.text_captions == ("<<<t=1s>>>Tall box.", "<<<t=1s>>>Other.")
    from infinitystar.train.data.latent_cache import load_text_features

    feats = load_text_features(out, b, "<<<t=1s>>>Other.")
    assert feats.shape == (len("<<<t=1s>>>Other."), 4) and feats[0, 0] == ord("<")
    assert load_text_features(out, b, "something else") is None
    pic = next(e for e in read_index(out) if e.kind == "image")
    assert pic.text_captions == ("blue", "A blue picture.")  # images: no duration prefix


def test_cli_extract_with_a_vae_checkpoint(data, tmp_path, capsys):
    ckpt = tmp_path / "vae.pth"
    save_original_vae_checkpoint(tiny_vae(), ckpt)
    out = tmp_path / "cache"
    args = ["extract", "--manifest", str(data / "train.jsonl"), "--out", str(out), "--vae", str(ckpt)]
    args += ["--resolution", "32x48", "--max-frames", "21", "--device", "cpu", "--quiet", "--workers", "0"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert f"cached {GOOD}, already cached 0, failed {BROKEN}" in captured.out
    assert "too short" in captured.err and "corrupt" in captured.err
    # the same latents as the library call with the same VAE checkpoint
    lib = tmp_path / "lib"
    run(data, lib, vae=VideoVAE.from_original_checkpoint(ckpt))
    for e, r in zip(read_index(out), read_index(lib)):
        assert e.key == r.key and torch.equal(load_latent(out, e), load_latent(lib, r))
    # rerun: resumes
    assert cli_main(args) == 0
    assert f"cached 0, already cached {GOOD}" in capsys.readouterr().out
    # bad options: one clear error, exit status 2
    for bad, message in (
        (["--resolution", "33x48"], "multiples of 16"),
        (["--max-frames", "20"], "max_frames must be 1 + 4k"),
        (["--vae", str(tmp_path / "nope.pth")], "not found"),
    ):
        shutil.rmtree(tmp_path / "other", ignore_errors=True)
        rest = args[:4] + [str(tmp_path / "other")] + args[5:]
        assert cli_main(rest + bad) == 2
        assert message in capsys.readouterr().err


def test_duplicate_lines_are_cached_once(data, tmp_path):
    line = json.dumps({"path": str(data / "a.mp4"), "caption": "twice"}) + "\n"
    (tmp_path / "dup.jsonl").write_text(line * 2)
    s = extract_latents(
        tmp_path / "dup.jsonl", tmp_path / "c", tiny_vae(), resolution="32x48", max_frames=17, progress=False
    )
    assert (s.cached, s.skipped_existing, s.failed) == (1, 1, 0)
    assert (
        len(read_index(tmp_path / "c")) == 1
        and len((tmp_path / "c" / "index-rank00000.jsonl").read_text().splitlines()) == 1
    )


@pytest.mark.slow
def test_cli_extract_with_tiny_t5(data, tmp_path, capsys):
    from tests.helpers.t5 import make_tiny_t5

    t5 = make_tiny_t5(tmp_path / "t5")
    ckpt = tmp_path / "vae.pth"
    save_original_vae_checkpoint(tiny_vae(), ckpt)
    out = tmp_path / "cache"
    args = ["extract", "--manifest", str(data / "train.jsonl"), "--out", str(out), "--vae", str(ckpt), "--t5", str(t5)]
    assert cli_main(args + ["--resolution", "32x48", "--max-frames", "21", "--device", "cpu", "--quiet"]) == 0
    entry = next(e for e in read_index(out) if e.kind == "image")
    from infinitystar.train.data.latent_cache import load_text_features

    feats = load_text_features(out, entry, "blue")
    assert feats.shape == (2, 32) and torch.isfinite(feats).all()  # "blue" + </s>
