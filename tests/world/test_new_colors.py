"""A colour the default world lacks (pink): drawn, captioned, written and evaluated only when asked for, with its own
held-out split, while the default world and its evaluator stay bit for bit what they were."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from infinitystar.cli import main
from infinitystar.evaluation.prompts import parse_world_spec, world_prompt_records
from infinitystar.world.analysis import analyze
from infinitystar.world.captions import caption, parse_caption, prompts
from infinitystar.world.dataset import WorldDataset
from infinitystar.world.evaluate import evaluate_video
from infinitystar.world.palette import palette_for, palette_lut
from infinitystar.world.render import render
from infinitystar.world.scenes import (
    COLORS,
    MOTIONS,
    NEW_COLORS,
    SHAPES,
    Scene,
    WorldSpec,
    allowed_backgrounds,
    combos,
    sample_scene,
)

PINK = (255, 105, 180)


def test_the_default_world_and_its_palette_are_unchanged():
    """Scenes, captions, renders and prompts of the default world, and the evaluator's colour table, hash to what the
    code before new colours produced (computed with that code)."""
    h = hashlib.sha256()
    for i in range(12):
        s = sample_scene(i, "train" if i % 2 else "heldout", image=(i % 5 == 0))
        h.update(caption(s).encode())
        h.update(render(s, 1 if s.is_image else 9, 64).numpy().tobytes())
    h.update("|".join(prompts("heldout", 20, 3) + prompts("train", 7, 1, image=True)).encode())
    assert h.hexdigest() == "0858099ce5ce0f39910638bfc0d67d303980203485a57d84d8decaae4b256bbe"
    nearest, dist2 = palette_lut()
    lut = hashlib.sha256(nearest.tobytes() + dist2.tobytes()).hexdigest()
    assert lut == "05bd303fd98466662e3593b9c0ab3ec5ecbebfa62033ea0b87e2a204b0706849"
    assert palette_for("red") == palette_for(None) == tuple(COLORS)
    assert combos("train") == combos("train", tuple(COLORS))  # asking for the eight colours is the default world


def test_pink_has_its_own_split_with_every_shape_and_motion_seen():
    train, held = combos("train", ("pink",)), combos("heldout", ("pink",))
    assert len(train) == 10 and len(held) == 5 and not set(train) & set(held)
    assert {s for _, s, _ in train} == set(SHAPES) and {m for _, _, m in train} == set(MOTIONS)
    assert ("pink", "triangle", "moving up") in held
    assert {m for _, _, m in held} == set(MOTIONS)  # every motion held out once
    assert allowed_backgrounds("pink") == ("black", "gray", "navy")
    both = combos("heldout", ("red", "pink"))
    assert [c for c in both if c[0] == "red"] == [c for c in combos("heldout") if c[0] == "red"]


def test_pink_scenes_render_caption_and_write(tmp_path):
    spec = WorldSpec(frames=5, size=64, colors=("pink",))
    data = WorldDataset(6, seed=1, spec=spec, image_fraction=0.3)
    for i in range(6):
        s = data.scene(i)
        assert s.color == "pink" and (s.color, s.shape, s.motion) not in combos("heldout", ("pink",))
        frames = render(s, 1 if s.is_image else 5, 64).numpy()
        assert (frames == PINK).all(-1).sum() > 0.05 * frames[..., 0].size
        assert parse_caption(data.caption(i)).color == "pink"
    with pytest.raises(ValueError, match="unknown color 'teal'; accepted: red, green, .*, cyan, pink"):
        WorldSpec(colors=("teal",))
    with pytest.raises(ValueError, match="colors must be a non-empty list"):
        WorldSpec(colors="pink")
    assert main(["world", "write", "--out", str(tmp_path / "w"), "-n", "3", "--colors", "pink", "--frames", "5"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "w" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(" pink " in x["caption"] for x in lines)
    assert main(["world", "write", "--out", str(tmp_path / "x"), "-n", "1", "--colors", "teal"]) == 2


def test_world_prompts_of_pink(capsys):
    assert main(["world", "prompts", "--colors", "pink", "--split", "heldout", "-n", "10"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 10 and len(set(printed)) >= 5
    held = set(combos("heldout", ("pink",)))
    assert all((p.color, p.shape, p.motion) in held for p in map(parse_caption, printed))


def _pink_video(shape="triangle", motion="moving up", background="navy", noise=10.0):
    scene = Scene("pink", shape, motion, background, 0.4, (0.5, 0.7), 0.0 if motion == "staying still" else 0.25)
    frames = render(scene, 17, 128).numpy().astype(np.float32)
    noisy = frames + np.random.default_rng(0).normal(0, noise, frames.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def test_the_evaluator_reads_pink_when_the_prompt_asks_for_it():
    video = _pink_video()
    report = evaluate_video(video, "a pink triangle moving up on a navy background")
    assert report.all_correct and report.analysis.color == "pink" and report.background_correct
    assert evaluate_video(video, "a pink circle moving up on a navy background").shape_correct is False
    # read with the default palette (a default-world prompt, or no prompt) pink is no colour at all
    assert analyze(video).color is None
    red = evaluate_video(video, "a red triangle moving up on a navy background")
    assert red.analysis.color is None and not red.color_correct
    # a red object under a pink prompt: pink is in the palette, but red is what is there
    scene = Scene("red", "square", "moving left", "black", 0.4, (0.7, 0.5), 0.25)
    report = evaluate_video(render(scene, 17, 128), "a pink square moving left on a black background")
    assert report.analysis.color == "red" and not report.color_correct and report.shape_correct


def test_evaluate_world_prompts_with_a_new_colour():
    sets = parse_world_spec("heldout:2,pink-heldout:5,pink-train-image:2")
    assert [s.label for s in sets] == ["heldout", "pink-heldout", "pink-train-image"]
    records = world_prompt_records(sets)
    assert [r["name"][:17] for r in records[2:4]] == ["pink_heldout_0000", "pink_heldout_0001"]
    pink_held = {" ".join(r["prompt"].split()[1:5]) for r in records[2:7]}
    assert len(pink_held) == 5  # the five held-out pink combinations, once each
    assert records[-1]["duration"] == 0 and " pink " in records[-1]["prompt"]
    for bad in ("teal-heldout:3", "pink-image-heldout:3", "pink:3"):
        with pytest.raises(ValueError, match="bad world prompt set|unknown"):
            parse_world_spec(bad)


def test_scores_are_split_by_colour(tmp_path):
    from infinitystar.evaluation.score import _parse_world, _world_split
    from infinitystar.evaluation.summary import _split_order

    def split(prompt):
        return _world_split(_parse_world(prompt))

    assert split("a pink triangle moving up on a navy background") == "pink-heldout"
    assert split("a pink triangle moving left on a navy background") == "pink-train"
    assert split("a pink triangle on a navy background") == "pink-image"
    assert split("a red square moving down on a black background") == "heldout"
    order = sorted(["pink-heldout", "image", "pink-train", "heldout", "train"], key=_split_order)
    assert order == ["train", "heldout", "image", "pink-train", "pink-heldout"]
    assert set(NEW_COLORS) == {"pink"}
