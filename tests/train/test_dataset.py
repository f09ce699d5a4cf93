"""LatentDataset (the trainer's input) and MediaDataset: buckets, captions, sharding, exact resume."""

from __future__ import annotations

import io
import json

import pytest
import torch

from infinitystar.media import write_video
from infinitystar.models.config import VAEConfig
from infinitystar.models.vae.model import VideoVAE
from infinitystar.text.encoders import TextEncoder
from infinitystar.text.prompts import duration_tag
from infinitystar.train.data.captions import CaptionOptions
from infinitystar.train.data.dataset import LatentDataset, TrainSample
from infinitystar.train.data.extract import extract_latents
from infinitystar.train.data.latent_cache import CacheError, read_index
from infinitystar.train.data.media_dataset import MediaDataset, MediaSample

TINY = VAEConfig(block_out_channels=(4, 8, 8, 8, 8), layers_per_block=1, mid_layers=1)


class CharEncoder(TextEncoder):
    """A deterministic toy text encoder: one 4-channel row per character."""

    channels, max_length = 4, 512

    def _encode(self, prompts):
        return [torch.tensor([[ord(c), len(p), 0, 1] for c in p], dtype=torch.float32) for p in prompts]

    @property
    def device(self):
        return torch.device("cpu")

    def to(self, device):
        return self


def video(path, n: int, fps: int, h: int, w: int, shade: int):
    frames = torch.full((n, h, w, 3), shade, dtype=torch.uint8)
    frames[:, : h // 2, :, 1] = torch.arange(n, dtype=torch.uint8)[:, None, None] * 4
    return write_video(path, frames, fps=fps)


def tiny_vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(TINY).eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset_data")
    lines = []
    for i in range(3):  # landscape 2.2 s -> 33 frames (2 s)
        video(root / f"long{i}.mp4", 53, 24, 32, 48, 40 * i)
        lines.append({"path": f"long{i}.mp4", "caption": f"Long clip {i}. Second sentence. Third one."})
    for i in range(2):  # portrait 1.3 s -> 21 frames (1 s)
        video(root / f"tall{i}.mp4", 40, 30, 48, 32, 90 + 40 * i)
        lines.append(
            {
                "video_path": f"tall{i}.mp4",
                "tarsier2_caption": f"Tall clip {i}.",
                "MiniCPM_V_2_6_caption": f"Alt tall {i}.",
                "quality_prompt": "Sharp.",
            }
        )
    for i in range(2):  # landscape 1.2 s -> 17 frames (1 s)
        video(root / f"short{i}.mp4", 20, 16, 32, 48, 200 + 20 * i)
        lines.append({"path": f"short{i}.mp4", "caption": f"Short clip {i}."})
    from PIL import Image

    for i in range(2):
        Image.new("RGB", (40, 40), (30 * i, 60, 90)).save(root / f"img{i}.png")
        lines.append({"image_path": f"img{i}.png", "text": f"image {i}", "long_caption": f"A long caption {i}."})
    (root / "broken.mp4").write_bytes(b"not a video at all" * 30)
    lines.append({"path": "broken.mp4", "caption": "broken"})
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cache = root / "cache"
    s = extract_latents(
        root / "train.jsonl",
        cache,
        tiny_vae(),
        resolution="scales:3",
        max_frames=33,
        text_encoder=CharEncoder(),
        progress=False,
        workers=0,
    )
    assert (s.cached, s.failed) == (9, 1)
    return root


def collect(ds, epochs=(0,)):
    out = []
    for e in epochs:
        ds.set_epoch(e)
        for batch in ds:
            out.append([(s.key, s.caption, s.latent.clone()) for s in batch])
    return out


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        [(k, c) for k, c, _ in x] == [(k, c) for k, c, _ in y] and all(torch.equal(p[2], q[2]) for p, q in zip(x, y))
        for x, y in zip(a, b)
    )


def test_batches_share_one_bucket(data):
    ds = LatentDataset(data / "cache", batch_size=2, seed=3, max_duration=2, drop_last=False)
    # buckets: landscape 2 s (3 items), portrait 1 s (2), landscape 1 s (2), square images (2)
    assert len(ds) == 2 + 1 + 1 + 1
    keys = []
    for batch in ds:
        assert all(isinstance(s, TrainSample) for s in batch)
        assert len({(s.h_div_w, s.duration, tuple(s.latent.shape)) for s in batch}) == 1
        for s in batch:
            keys.append(s.key)
            assert s.latent.dtype == torch.float32 and s.latent.shape[0] == 64
            if s.duration == 0:  # image: t = 1, no duration prefix
                assert s.latent.shape[1] == 1 and not s.caption.startswith("<<<") and s.h_div_w == 1.0
                assert s.latent.shape[2:] == (3, 3)
            else:
                assert s.latent.shape[1] == 4 * s.duration + 1
                assert s.caption.startswith(duration_tag(s.duration))
            if "tall" in s.key:
                assert s.h_div_w == 1.489 and s.latent.shape[2:] == (4, 2) and s.caption.endswith(" Sharp.")
    assert sorted(keys) == sorted(e.key for e in read_index(data / "cache"))  # every item once
    # a 1 s cap truncates the 2 s clips to their first 5 latent frames, joining the 1 s landscape bucket
    capped = LatentDataset(data / "cache", batch_size=5, seed=3, max_duration=1, kinds=("video",))
    [batch] = [b for b in capped if len(b) == 5]
    assert {s.duration for s in batch} == {1} and {tuple(s.latent.shape) for s in batch} == {(64, 5, 2, 4)}
    full = {e.key: e for e in read_index(data / "cache")}
    long_sample = next(s for s in batch if "long" in s.key)
    from infinitystar.train.data.latent_cache import load_latent

    assert torch.equal(long_sample.latent, load_latent(data / "cache", full[long_sample.key])[:, :5])


def test_text_features_follow_the_caption(data):
    ds = LatentDataset(data / "cache", batch_size=1, seed=0, captions=CaptionOptions(dynamic_length=False))
    n = 0
    for batch in ds:
        for s in batch:
            assert s.text is not None  # every possible caption was cached
            assert torch.equal(s.text, CharEncoder().encode([s.caption])[0])
            n += 1
    assert n == len(ds) == 9
    # with sentence dropping, a shortened caption has no cached features
    drop = LatentDataset(data / "cache", batch_size=1, seed=0, captions=CaptionOptions(short_prob=1.0))
    samples = [s for e in range(3) for s in (drop.set_epoch(e) or [x for b in drop for x in b])]
    shortened = [s for s in samples if "long" in s.key and "Third" not in s.caption]
    assert shortened and all(s.text is None for s in shortened)
    off = LatentDataset(data / "cache", batch_size=1, seed=0, load_text=False)
    assert all(s.text is None for b in off for s in b)


def test_ranks_get_disjoint_items_and_equal_counts(data):
    per_rank = [LatentDataset(data / "cache", batch_size=1, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 4  # 9 batches over 2 ranks: the 9th is dropped on both
    keys = [[s.key for b in ds for s in b] for ds in per_rank]
    assert not set(keys[0]) & set(keys[1])
    with pytest.raises(ValueError, match="rank must be"):
        LatentDataset(data / "cache", batch_size=1, seed=1, rank=2, world_size=2)


def test_state_dict_resumes_with_the_same_next_batches(data):
    kw = dict(batch_size=2, seed=11, drop_last=False)
    reference = collect(LatentDataset(data / "cache", prefetch=0, **kw), epochs=(0, 1))
    assert same(collect(LatentDataset(data / "cache", prefetch=3, **kw), epochs=(0, 1)), reference)
    per_epoch = len(LatentDataset(data / "cache", **kw))
    assert len(reference) == 2 * per_epoch and not same(reference[:per_epoch], reference[per_epoch:])

    ds = LatentDataset(data / "cache", **kw)
    ds.set_epoch(0)
    seen = []
    for batch in ds:
        seen.append([(s.key, s.caption, s.latent.clone()) for s in batch])
        if len(seen) == 3:
            break
    state = ds.state_dict()
    assert state["epoch"] == 0 and state["batch_index"] == 3
    buf = io.BytesIO()
    torch.save(state, buf)  # what a checkpoint does
    buf.seek(0)

    resumed = LatentDataset(data / "cache", **kw)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    rest = collect(resumed, epochs=(0, 1))  # set_epoch(0) keeps the loaded position
    assert same(seen + rest, reference)

    # a state taken at the very end of an epoch resumes with the next epoch
    end = LatentDataset(data / "cache", **kw)
    collect(end, epochs=(0,))
    tail = LatentDataset(data / "cache", **kw)
    tail.load_state_dict(end.state_dict())
    assert same(collect(tail, epochs=(0, 1)), reference[per_epoch:])
    with pytest.warns(UserWarning, match="batch_size: saved 2, now 1"):
        LatentDataset(data / "cache", batch_size=1, seed=11).load_state_dict(state)
    with pytest.raises(ValueError, match="lacks"):
        resumed.load_state_dict({"epoch": 0})


def test_latent_dataset_errors(data, tmp_path):
    with pytest.raises(CacheError, match="not a latent cache"):
        LatentDataset(tmp_path, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="kinds"):
        LatentDataset(data / "cache", batch_size=1, seed=0, kinds=("audio",))
    with pytest.raises(ValueError, match="batch_size"):
        LatentDataset(data / "cache", batch_size=0, seed=0)
    with pytest.raises(ValueError, match="max_duration"):
        LatentDataset(data / "cache", batch_size=1, seed=0, max_duration=0)
    with pytest.warns(UserWarning, match="no full batch"):
        assert len(LatentDataset(data / "cache", batch_size=4, seed=0, kinds=("image",))) == 0


def test_media_dataset_yields_preprocessed_clips(data):
    ds = MediaDataset(data / "train.jsonl", resolution="32x48", batch_size=2, seed=0, num_frames=17)
    assert [w for w, _ in ds.problems] and "broken" in ds.problems[0][1]
    assert len(ds.plans) == 9
    n = 0
    for batch in ds:
        assert len({tuple(s.video.shape) for s in batch}) == 1
        for s in batch:
            assert isinstance(s, MediaSample) and s.video.shape[1:] in ((17, 32, 48), (1, 32, 48))
            assert s.video.min() >= -1 and s.video.max() <= 1
            n += 1
    assert n == 2 * len(ds) and len(ds) == 4  # 7 clips -> 3 batches of 2, 2 images -> 1
    # online VAE encoding gives TrainSamples; resume works the same way as the cache's
    enc = MediaDataset(data / "train.jsonl", resolution="32x48", batch_size=1, seed=0, vae=tiny_vae(), max_duration=1)
    batches = iter(enc)
    first = next(batches)
    assert isinstance(first[0], TrainSample) and first[0].latent.shape[0] == 64
    state = enc.state_dict()
    nxt = next(batches)
    assert nxt[0].key != first[0].key
    again = MediaDataset(data / "train.jsonl", resolution="32x48", batch_size=1, seed=0, vae=tiny_vae(), max_duration=1)
    again.load_state_dict(state)
    resumed = next(iter(again))
    assert resumed[0].key == nxt[0].key and torch.equal(resumed[0].latent, nxt[0].latent)
    assert resumed[0].caption == nxt[0].caption


def test_caption_options_from_a_config_dict(data):
    ds = LatentDataset(
        data / "cache", batch_size=1, seed=0, captions={"duration_prefix": False, "short_prob": 0.0}, kinds=["video"]
    )
    assert ds.captions == CaptionOptions(duration_prefix=False, short_prob=0.0)
    assert not any(s.caption.startswith("<<<") for b in ds for s in b)
    with pytest.raises(ValueError, match=r"unknown caption options key\(s\) \['prefix'\]"):
        LatentDataset(data / "cache", batch_size=1, seed=0, captions={"prefix": True})


def test_several_caches_read_as_one(data, tmp_path):
    """New data and replayed data in two caches (e.g. made by two tokenizers): one dataset, keys kept apart."""
    import shutil

    from infinitystar.train.data.latent_cache import load_latent

    shutil.copytree(data / "cache", tmp_path / "copy")
    one = LatentDataset(data / "cache", batch_size=1, seed=0, drop_last=False)
    two = LatentDataset([data / "cache", tmp_path / "copy"], batch_size=1, seed=0, drop_last=False)
    assert len(two.entries) == 2 * len(one.entries)
    keys = [e.key for e in two.entries]
    assert len(set(keys)) == len(keys) and {k.split("/")[0] for k in keys} == {"0", "1"}
    for i, entry in enumerate(two.entries):
        original = next(e for e in one.entries if e.key == entry.key.split("/", 1)[1])
        assert two.entry_dirs[i] == (data / "cache" if entry.key.startswith("0/") else tmp_path / "copy")
        assert torch.equal(two[i].latent[:, :1], load_latent(data / "cache", original)[:, :1])
    with pytest.raises(ValueError, match="nope"):
        LatentDataset([data / "cache", tmp_path / "nope"], batch_size=1, seed=0)
