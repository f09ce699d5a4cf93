"""The procedural world: determinism, caption grammar, split, motion, framing, datasets and files."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from infinitystar.media import read_image, read_video
from infinitystar.world.captions import caption, parse_caption, prompts
from infinitystar.world.dataset import WorldDataset, write_world
from infinitystar.world.render import render
from infinitystar.world.scenes import (
    ALL_COMBOS,
    BACKGROUNDS,
    COLORS,
    HELDOUT_COMBOS,
    MIN_BACKGROUND_DISTANCE,
    MOTION_DIRECTIONS,
    MOTIONS,
    SHAPES,
    TRAIN_COMBOS,
    Scene,
    WorldSpec,
    allowed_backgrounds,
    sample_scene,
)

SIZE = 64


def object_mask(video: torch.Tensor, scene: Scene) -> np.ndarray:
    """Pixels that differ from the background: the object with its antialiased rim, ``[T, H, W]``."""
    return (video.numpy() != np.asarray(BACKGROUNDS[scene.background], dtype=np.uint8)).any(-1)


# ----------------------------------------------------------------------------------------------------------------------
# Determinism and rendering


def test_same_seed_same_scene_and_bytes():
    a, b = sample_scene(123), sample_scene(123)
    assert a == b
    assert render(a, 17, SIZE).numpy().tobytes() == render(b, 17, SIZE).numpy().tobytes()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [sample_scene(g1) for _ in range(5)] == [sample_scene(g2) for _ in range(5)]
    others = {caption(sample_scene(s)) + str(sample_scene(s).start) for s in range(20)}
    assert len(others) == 20  # different seeds give different scenes


def test_render_shape_dtype_and_exact_colors():
    scene = Scene("orange", "circle", "moving right", "navy", 0.3, (0.3, 0.5), 0.4)
    video = render(scene, 9, (48, 80))
    assert video.shape == (9, 48, 80, 3) and video.dtype == torch.uint8
    # the centre of the object is exactly the palette colour, a far corner exactly the background
    cx = round(0.3 * 80)
    assert video[0, 24, cx].tolist() == list(COLORS["orange"])
    assert video[0, 1, 78].tolist() == list(BACKGROUNDS["navy"])
    # antialiased rim: some pixels strictly between the two colours
    values = {tuple(p) for p in video[0].reshape(-1, 3).tolist()}
    assert len(values) > 2


def test_shapes_have_their_area():
    """Coverage of circle / square / triangle of side s is pi/4 s^2, s^2 and s^2/2 (checks the geometry)."""
    side_frac = 0.4
    for shape, expected in (("circle", math.pi / 4), ("square", 1.0), ("triangle", 0.5)):
        video = render(Scene("white", shape, None, "black", side_frac, (0.5, 0.5)), 1, 128)
        coverage = video.numpy()[..., 0].astype(np.float64).sum() / 255
        assert coverage == pytest.approx(expected * (side_frac * 128) ** 2, rel=0.02), shape


def test_image_scene_renders_one_frame_by_default():
    scene = sample_scene(3, image=True)
    assert scene.is_image and scene.motion is None and scene.speed == 0
    assert render(scene, size=32).shape == (1, 32, 32, 3)
    assert caption(scene) == f"a {scene.color} {scene.shape} on a {scene.background} background"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frames": 4}, r"1 \+ 4k"),
        ({"frames": 0}, r"1 \+ 4k"),
        ({"size": 40}, "multiple of 16"),
        ({"size": (64, 8)}, "multiple of 16"),
        ({"size": "64"}, "multiple of 16"),
    ],
)
def test_render_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render(sample_scene(0), **kwargs)


def test_scene_validation():
    with pytest.raises(ValueError, match="unknown color 'teal'.*accepted: red"):
        Scene("teal", "circle", None, "black", 0.2, (0.5, 0.5))
    with pytest.raises(ValueError, match="unknown shape"):
        Scene("red", "star", None, "black", 0.2, (0.5, 0.5))
    with pytest.raises(ValueError, match="unknown motion"):
        Scene("red", "circle", "moving sideways", "black", 0.2, (0.5, 0.5))
    with pytest.raises(ValueError, match="size"):
        Scene("red", "circle", None, "black", 1.5, (0.5, 0.5))
    with pytest.raises(ValueError, match="speed 0"):
        Scene("red", "circle", "staying still", "black", 0.2, (0.5, 0.5), 0.3)
    with pytest.raises(ValueError, match="start"):
        Scene("red", "circle", None, "black", 0.2, (math.nan, 0.5))
    with pytest.raises(ValueError, match="unknown split"):
        sample_scene(0, split="test")
    with pytest.raises(TypeError, match="Generator or an int seed"):
        sample_scene("0")
    with pytest.raises(ValueError, match="does not fit"):
        WorldSpec(size_range=(0.2, 0.4), travel_range=(0.3, 0.6))
    scene = sample_scene(9)
    assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


# ----------------------------------------------------------------------------------------------------------------------
# Captions


def test_caption_round_trip_for_every_combination():
    for color, shape, motion in ALL_COMBOS:
        for background in BACKGROUNDS:
            for m in (motion, None):
                text = caption(Scene(color, shape, m, background, 0.2, (0.5, 0.5)))
                parsed = parse_caption(text)
                assert (parsed.color, parsed.shape, parsed.motion, parsed.background) == (color, shape, m, background)
                assert parsed.duration is None
                tagged = parse_caption(f"<<<t=1s>>>{text}")
                assert tagged.duration == 1 and tagged.motion == m
    assert caption(Scene("red", "circle", "moving right", "black", 0.2, (0.5, 0.5))) == (
        "a red circle moving right on a black background"
    )


def test_parse_caption_is_tolerant():
    parsed = parse_caption("  <<<t=5s>>>  A  Red CIRCLE moving   right on a Black background.  ")
    assert (parsed.color, parsed.shape, parsed.motion, parsed.background, parsed.duration) == (
        "red",
        "circle",
        "moving right",
        "black",
        5,
    )
    assert parse_caption("an orange square on a navy background").motion is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a red circle",
        "a teal circle moving right on a black background",
        "a red hexagon moving right on a black background",
        "a red circle moving sideways on a black background",
        "a red circle moving right on a white background",
        "a red circle moving right on a black background and a dog",
        "<<<t=xs>>>a red circle on a black background",
    ],
)
def test_parse_caption_rejects_other_text(text):
    with pytest.raises(ValueError, match="grammar|duration tag"):
        parse_caption(text)


def test_parse_caption_error_lists_accepted_words():
    with pytest.raises(ValueError) as info:
        parse_caption("a teal circle on a black background")
    message = str(info.value)
    assert all(word in message for word in (*COLORS, *SHAPES, *MOTIONS, *BACKGROUNDS))


# ----------------------------------------------------------------------------------------------------------------------
# Split


def test_heldout_split_is_compositional():
    assert len(ALL_COMBOS) == 120 and len(set(ALL_COMBOS)) == 120
    assert len(HELDOUT_COMBOS) == 18 and set(ALL_COMBOS) >= HELDOUT_COMBOS
    assert set(TRAIN_COMBOS) | HELDOUT_COMBOS == set(ALL_COMBOS) and not set(TRAIN_COMBOS) & HELDOUT_COMBOS
    train = set(TRAIN_COMBOS)
    # every word and every pair of words appears in training
    assert {c for c, _, _ in train} == set(COLORS)
    assert {s for _, s, _ in train} == set(SHAPES)
    assert {m for _, _, m in train} == set(MOTIONS)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        all_pairs = {(c[i], c[j]) for c in ALL_COMBOS}
        assert {(c[i], c[j]) for c in train} == all_pairs
    # held out spread over every colour, shape and motion
    assert set(Counter(c for c, _, _ in HELDOUT_COMBOS)) == set(COLORS)
    assert set(Counter(m for _, _, m in HELDOUT_COMBOS)) == set(MOTIONS)
    assert ("red", "circle", "moving right") in train  # the demo prompt


def test_sampling_respects_the_split():
    g = torch.Generator().manual_seed(0)
    train = [sample_scene(g, "train") for _ in range(600)]
    heldout = [sample_scene(g, "heldout") for _ in range(200)]
    assert not {s.combo for s in train} & HELDOUT_COMBOS
    assert {s.combo for s in train} == set(TRAIN_COMBOS)  # 600 draws cover all 102 training combinations
    assert {s.combo for s in heldout} == HELDOUT_COMBOS
    for text in prompts("train", 300, seed=1):
        p = parse_caption(text)
        assert (p.color, p.shape, p.motion) not in HELDOUT_COMBOS
    held = prompts("heldout", 36, seed=2)
    assert Counter((p.color, p.shape, p.motion) for p in map(parse_caption, held)) == Counter(
        {c: 2 for c in HELDOUT_COMBOS}
    )  # balanced: every held-out combination exactly twice
    assert prompts("heldout", 36, seed=2) == held and prompts("heldout", 36, seed=3) != held
    assert all(parse_caption(t).is_image for t in prompts("train", 10, seed=0, image=True))


def test_background_is_never_the_object_color():
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        s = sample_scene(g)
        assert math.dist(COLORS[s.color], BACKGROUNDS[s.background]) >= MIN_BACKGROUND_DISTANCE
    for color in COLORS:
        assert allowed_backgrounds(color)
    for bg in BACKGROUNDS.values():  # and never close to any palette colour
        assert min(math.dist(bg, c) for c in COLORS.values()) >= MIN_BACKGROUND_DISTANCE


# ----------------------------------------------------------------------------------------------------------------------
# Motion and framing


def test_motion_is_visible_and_object_stays_inside():
    g = torch.Generator().manual_seed(7)
    seen = Counter()
    for _ in range(120):
        scene = sample_scene(g)
        seen[scene.motion] += 1
        video = render(scene, 17, SIZE)
        mask = object_mask(video, scene)  # [T, H, W]
        # fully inside: the outermost rows and columns are background in every frame
        assert not mask[:, 0].any() and not mask[:, -1].any() and not mask[:, :, 0].any() and not mask[:, :, -1].any()
        ys, xs = np.indices(mask.shape[1:]) + 0.5
        area = mask.sum((1, 2))
        cx = (mask * xs).sum((1, 2)) / area / SIZE  # [T] centroid track, frame fractions
        cy = (mask * ys).sum((1, 2)) / area / SIZE
        dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
        if scene.motion == "staying still":
            assert math.hypot(dx, dy) < 0.02
        else:
            ex, ey = MOTION_DIRECTIONS[scene.motion]
            along = dx * ex + dy * ey
            assert along > WorldSpec().travel_range[0] - 0.03, (scene, along)  # pixel rounding
            assert abs(dx * ey) + abs(dy * ex) < 0.02  # no drift across the motion
    assert set(seen) == set(MOTIONS)


def test_speed_scales_with_clip_length():
    """Speeds are per second: a 33-frame clip (2 s) moves half as fast as a 17-frame one over the same travel."""
    g = torch.Generator().manual_seed(4)
    for frames in (9, 17, 33):
        spec = WorldSpec(frames=frames, size=32)
        for _ in range(10):
            scene = sample_scene(g, spec=spec)
            travel = scene.speed * spec.duration
            if scene.motion == "staying still":
                assert scene.speed == 0
            else:
                assert spec.travel_range[0] <= travel <= spec.travel_range[1]
    assert WorldSpec(frames=33).duration == 2.0 and WorldSpec().duration == 1.0


# ----------------------------------------------------------------------------------------------------------------------
# Datasets and files


def test_dataset_is_deterministic_by_index_and_seed():
    spec = WorldSpec(frames=5, size=32)
    ds = WorldDataset(6, seed=3, spec=spec)
    video, text = ds[2]
    assert video.shape == (3, 5, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert parse_caption(text).motion is not None
    again = WorldDataset(6, seed=3, spec=spec)[2]
    assert torch.equal(video, again[0]) and text == again[1]
    assert ds[-1][1] == ds[5][1]
    assert [c for _, c in ds] == [ds.caption(i) for i in range(6)]
    other = WorldDataset(6, seed=4, spec=spec)
    assert [ds.scene(i) for i in range(6)] != [other.scene(i) for i in range(6)]
    # the uint8 frames are recovered exactly from the float video
    frames = ((video.permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(frames, render(ds.scene(2), 5, 32))
    with pytest.raises(IndexError, match="out of range"):
        ds[6]


def test_dataset_images_and_duration_tags():
    spec = WorldSpec(frames=17, size=32)
    ds = WorldDataset(40, seed=0, spec=spec, image_fraction=0.5, duration_tag=True)
    kinds = Counter(ds.scene(i).is_image for i in range(40))
    assert kinds[True] > 5 and kinds[False] > 5
    for i in range(40):
        text = ds.caption(i)
        if ds.scene(i).is_image:
            assert not text.startswith("<<<") and parse_caption(text).is_image
        else:
            assert text.startswith("<<<t=1s>>>a ") and parse_caption(text).duration == 1
    image_index = next(i for i in range(40) if ds.scene(i).is_image)
    assert ds[image_index][0].shape == (3, 1, 32, 32)
    assert all(ds.scene(i).combo not in HELDOUT_COMBOS for i in range(40))
    with pytest.raises(ValueError, match="at least 1 s"):
        WorldDataset(1, spec=WorldSpec(frames=9), duration_tag=True)
    with pytest.raises(ValueError, match="image_fraction"):
        WorldDataset(1, image_fraction=2.0)


def test_write_world_files_and_manifest(tmp_path):
    spec = WorldSpec(frames=5, size=32)
    manifest = write_world(tmp_path / "world", 4, seed=1, split="heldout", spec=spec, image_fraction=0.3)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    ds = WorldDataset(4, seed=1, split="heldout", spec=spec, image_fraction=0.3)
    assert [d["caption"] for d in lines] == [ds.caption(i) for i in range(4)]
    assert all(set(d) == {"path", "caption"} for d in lines)
    for i, entry in enumerate(lines):
        path = manifest.parent / entry["path"]
        assert path.is_file()
        expected = ds[i][0]
        if path.suffix == ".png":
            got = read_image(path)  # [3, H, W] lossless
            assert torch.equal(got, expected[:, 0])
        else:
            got = read_video(path)  # [3, T, H, W], lossy H.264
            assert got.shape == expected.shape
            assert (got - expected).abs().mean() < 0.05
    assert not list(manifest.parent.glob(".*tmp"))  # no temporary files left behind


def test_cli_write_prompts_and_eval(tmp_path, capsys):
    from infinitystar.cli import main

    out = tmp_path / "w"
    assert main(["world", "write", "--out", str(out), "-n", "3", "--frames", "5", "--size", "32", "48"]) == 0
    manifest = out / "manifest.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(entries) == 3 and read_video(out / entries[0]["path"]).shape == (3, 5, 32, 48)
    assert main(["world", "eval", str(manifest), "--json", str(tmp_path / "r.json")]) == 0
    assert "3 videos" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n"] == 3 and len(report["reports"]) == 3
    assert main(["world", "prompts", "--split", "heldout", "-n", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(tuple(vars(parse_caption(t)).values())[:3] in HELDOUT_COMBOS for t in lines)
    small = tmp_path / "small"
    args = ["world", "write", "--out", str(small), "-n", "4", "--frames", "5", "--size", "32", "--seed", "1"]
    assert main([*args, "--size-range", "0.2", "0.25", "--travel-range", "0.3", "0.4"]) == 0
    assert main([*args[:3], str(tmp_path / "big"), *args[4:]]) == 0
    capsys.readouterr()
    area = {}
    for name in ("small", "big"):
        folder = tmp_path / name
        paths = [json.loads(line)["path"] for line in (folder / "manifest.jsonl").read_text().splitlines()]
        frames = [read_video(folder / p) for p in paths]  # [3, T, H, W] in [-1, 1]
        area[name] = sum(float((f - f[:, :, :1, :1]).abs().amax(0).gt(0.3).float().mean()) for f in frames)
    assert area["small"] < 0.6 * area["big"], area  # the default world's objects are larger
    with pytest.raises(SystemExit):
        main([*args, "--size-range", "0.2"])
    assert main(["world", "eval", str(tmp_path / "missing.jsonl")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "x.mp4"}\n')
    assert main(["world", "eval", str(bad)]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
