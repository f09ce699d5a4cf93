"""Repo ids: which strings are repo ids, and which files a call asks the hub for (pure functions)."""

from __future__ import annotations

import pytest

from infinitystar.hub import HubOptions, allow_patterns, cache_dir_of, download_command, is_repo_id, own_components


@pytest.mark.parametrize(
    "text, expected",
    [
        ("FoundationVision/InfinityStar", True),
        ("org/name-1.5_b", True),
        ("InfinityStar", False),
        ("a/b/c", False),
        ("/abs/path", False),
        ("./rel", False),
        ("org/..", False),
        ("org/name.git", False),
        ("", False),
    ],
)
def test_is_repo_id(text, expected):
    assert is_repo_id(text) is expected


def test_released_layout_fetches_one_resolution_only():
    """A 480p user downloads the 480p transformer, the VAE and T5, never the 35 GB 720p transformer."""
    assert allow_patterns(["transformer", "vae", "text_encoder"], "480p", None) == [
        "infinitystar_8b_480p_weights/*",
        "infinitystar_videovae.pth",
        "text_encoder/flan-t5-xl-official/*",
    ]
    assert allow_patterns(["transformer"], None, None) == ["infinitystar_8b_720p_weights/*"]  # the default, 720p
    assert allow_patterns(["vae"], "720p", None) == ["infinitystar_videovae.pth"]
    with pytest.raises(ValueError, match="720p and 480p; got resolution='1080p'"):
        allow_patterns(["vae"], "1080p", None)
    with pytest.raises(ValueError, match=r"unknown model part\(s\) \['unet'\]"):
        allow_patterns(["unet"], "480p", None)


def test_our_layout_fetches_the_components_its_index_lists():
    index = {"format": "infinitystar", "components": {"transformer": "tf", "vae": "vae", "text_encoder": "t5"}}
    assert allow_patterns(["transformer", "text_encoder"], "480p", index) == ["model_index.json", "tf/*", "t5/*"]
    old = {"format": "infinitystar", "version": 1}  # written before "components" existed: the default folders
    assert own_components(old) == {"transformer": "transformer", "vae": "vae", "text_encoder": "text_encoder"}
    assert allow_patterns(["vae"], None, old) == ["model_index.json", "vae/*"]


def test_download_command_and_cache_dir(monkeypatch):
    cmd = download_command("org/m", ["a/*", "b.pth"], HubOptions(revision="v2", cache_dir="/c c"))
    assert cmd == "hf download org/m --include 'a/*' b.pth --revision v2 --cache-dir '/c c'"
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert cache_dir_of(HubOptions()) is None
    monkeypatch.setenv("HF_HOME", "/home/h")
    assert cache_dir_of(HubOptions()) == "/home/h/hub"
    monkeypatch.setenv("HF_HUB_CACHE", "/cache")
    assert cache_dir_of(HubOptions()) == "/cache" and cache_dir_of(HubOptions(cache_dir="/x")) == "/x"
