"""Repo ids through the real ``huggingface_hub``, offline, against a cache written as a download leaves it: both
layouts by ``from_pretrained("ORG/NAME")`` and ``--checkpoint ORG/NAME``; what is missing is said with the command
that downloads it. Sockets are closed for these tests: nothing may reach the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infinitystar.cli import main
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.hub import HubError
from infinitystar.media import read_video
from tests.helpers.hub import forbid_network, populate_hub_cache
from tests.helpers.pipeline import TINY_PIPELINE

RELEASED_ID = "FoundationVision/InfinityStar"
OURS_ID = "someone/infinitystar-tiny"


@pytest.fixture(scope="module")
def cache(tmp_path_factory, released, pipe):
    """One cache with the released repo (480p only, as a 480p download leaves it) and a repo in our layout."""
    root = tmp_path_factory.mktemp("hf_cache")
    populate_hub_cache(root, RELEASED_ID, released, keep=lambda rel: "720p" not in rel)
    ours = pipe.save_pretrained(tmp_path_factory.mktemp("ours") / "model")
    populate_hub_cache(root, OURS_ID, ours)
    return root


@pytest.fixture
def offline(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    forbid_network(monkeypatch)
    return cache


def test_from_pretrained_both_layouts_by_repo_id(offline, pipe):
    ours = InfinityStarPipeline.from_pretrained(OURS_ID, device="cpu")
    released = InfinityStarPipeline.from_pretrained(RELEASED_ID, resolution="480p", config=TINY_PIPELINE)
    expected = pipe("a cat", seed=5, progress=False).frames
    for p in (ours, released):
        np.testing.assert_array_equal(p("a cat", seed=5, progress=False).frames, expected)


def test_cli_both_layouts_by_repo_id(offline, tmp_path):
    out = tmp_path / "ours.mp4"
    assert main(["generate", "a cat", "--checkpoint", OURS_ID, "--seed", "1", "--out", str(out), "--quiet"]) == 0
    assert read_video(out).shape == (3, 17, 128, 128)
    img = tmp_path / "released.png"
    args = ["--checkpoint", RELEASED_ID, "--resolution", "480p", "--duration", "0", "--out", str(img), "--quiet"]
    assert main(["generate", "a cat", *args]) == 0  # the released 480p settings: a 480x848 image
    from PIL import Image

    with Image.open(img) as im:
        assert im.size == (848, 480)


def test_not_cached_offline_says_what_to_download(offline, tmp_path, capsys):
    """The 720p weights were never downloaded: one message with the command that fetches what is missing."""
    with pytest.raises(HubError, match=r"hf download FoundationVision/InfinityStar --include 'infinitystar_8b_720p"):
        InfinityStarPipeline.from_pretrained(RELEASED_ID, resolution="720p")
    assert main(["generate", "a cat", "--checkpoint", "nobody/absent", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infinitystar: error: nobody/absent is not a local folder and is not in the Hugging Face")
    assert "downloads are off" in err and "hf download nobody/absent --include model_index.json" in err


def test_local_files_only_and_cache_dir_flags(cache, monkeypatch, tmp_path):
    """Without the environment: --cache-dir and --local-files-only (no HF_HUB_OFFLINE) do the same."""
    for var in ("HF_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    forbid_network(monkeypatch)
    out = tmp_path / "v.mp4"
    flags = ["--cache-dir", str(cache), "--local-files-only", "--quiet", "--out", str(out)]
    assert main(["generate", "a cat", "--checkpoint", OURS_ID, *flags]) == 0 and out.is_file()


def test_a_local_path_wins_over_a_repo_id(offline, pipe, tmp_path, monkeypatch):
    """A folder named like a repo id is loaded from disk, not from the cache."""
    monkeypatch.chdir(tmp_path)
    pipe.save_pretrained(tmp_path / "someone" / "infinitystar-tiny")
    (tmp_path / "someone" / "infinitystar-tiny" / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match="someone/infinitystar-tiny/model_index.json.*not valid JSON"):
        InfinityStarPipeline.from_pretrained(OURS_ID)


def test_train_init_by_repo_id_fetches_and_loads_the_transformer(offline, pipe, capsys):
    """``train --init ORG/NAME``: the CLI resolves the repo id to the cached snapshot (only the transformer), and
    ``load_init_state`` finds the transformer in either layout."""
    import json

    from infinitystar.hub import resolve
    from infinitystar.train.transformer.module import load_init_state

    assert main(["train", "--recipe", "tiny_cpu", "--init", OURS_ID, "--print-config"]) == 0
    init = json.loads(capsys.readouterr().out)["model"]["init"]
    assert "models--someone--infinitystar-tiny/snapshots/" in init
    expected = pipe.transformer.state_dict()
    for repo in (OURS_ID, RELEASED_ID):
        state = load_init_state(resolve(repo, ("transformer",), "480p"), pipe.transformer.cfg, resolution="480p")
        assert state.keys() == expected.keys() and all(torch.equal(state[k], v) for k, v in expected.items())


def test_extract_vae_by_repo_id(offline, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (64, 40), (0, 128, 255)).save(tmp_path / "pic.png")
    (tmp_path / "m.jsonl").write_text('{"image_path": "pic.png", "text": "blue"}\n')
    args = ["extract", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "cache"), "--vae", RELEASED_ID]
    args += ["--resolution", "32x48", "--device", "cpu", "--quiet", "--workers", "0"]
    assert main(args) == 0
    assert "cached 1, already cached 0, failed 0" in capsys.readouterr().out
