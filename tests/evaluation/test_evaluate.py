"""`infinitystar evaluate`: generation + scoring end to end, resume, ground-truth world videos, CLIP, FVD, ranks.

The tiny random model's videos are noise: these tests check the plumbing and that every number in the summary is
the one the metric functions give on the files, not the quality of the videos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infinitystar.cli import main
from infinitystar.evaluation import metrics
from infinitystar.evaluation.extractors import CLIPScorer, I3DFeatureExtractor
from infinitystar.evaluation.files import find_output, read_frames
from infinitystar.evaluation.prompts import parse_world_spec, write_world_prompt_file, write_world_prompts
from infinitystar.evaluation.score import parse_metrics, score_outputs
from infinitystar.evaluation.summary import PARTIAL_FILE
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.prompt_files import read_prompt_file
from infinitystar.media import read_video, write_video
from infinitystar.world.captions import parse_caption
from infinitystar.world.evaluate import evaluate as world_evaluate
from infinitystar.world.render import render
from infinitystar.world.scenes import HELDOUT_COMBOS, MOTION_DIRECTIONS, Scene
from tests.helpers.pipeline import TINY_PIPELINE, make_released_layout


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    released = make_released_layout(tmp_path_factory.mktemp("released"))
    pipe = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE)
    return pipe.save_pretrained(tmp_path_factory.mktemp("ours") / "model")


def evaluate_cli(*args) -> int:
    return main(["evaluate", "--quiet", *map(str, args)])


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ground_truth(prompt: str, size: int = 128) -> torch.Tensor:
    """A world video (17 frames) or image that shows exactly what ``prompt`` says: uint8 ``[T, H, W, 3]``."""
    p = parse_caption(prompt)
    dx, dy = MOTION_DIRECTIONS.get(p.motion, (0, 0))
    travel = 0.4 if (dx, dy) != (0, 0) else 0.0  # fraction of the frame over the 1 s clip
    start = (0.5 - dx * travel / 2, 0.5 - dy * travel / 2)
    scene = Scene(p.color, p.shape, p.motion, p.background, 0.25, start, speed=travel)
    return render(scene, size=size)


def uint8_frames(path) -> np.ndarray:
    """The file as ``media.read_video`` reads it, back to uint8 ``[T, H, W, 3]``."""
    x = read_video(path)  # [3, T, H, W] in [-1, 1]
    return ((x.permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------
# Options and world prompt files
# --------------------------------------------------------------------------------------------


def test_world_prompt_files(tmp_path):
    sets = parse_world_spec("heldout:4, train:3,train-image:2")
    assert [(s.split, s.n, s.image) for s in sets] == [("heldout", 4, False), ("train", 3, False), ("train", 2, True)]
    path = write_world_prompt_file(tmp_path / "p.jsonl", sets, seed=3)
    records = read_jsonl(path)
    assert len(records) == 9 and len({r["name"] for r in records}) == 9
    for r in records[:4]:
        p = parse_caption(r["prompt"])
        assert (p.color, p.shape, p.motion) in HELDOUT_COMBOS and r["name"].startswith("heldout_")
    for r in records[4:7]:
        p = parse_caption(r["prompt"])
        assert (p.color, p.shape, p.motion) not in HELDOUT_COMBOS and "duration" not in r
    assert all(r["duration"] == 0 and parse_caption(r["prompt"]).is_image for r in records[7:])
    items = read_prompt_file(path)
    assert [it.name for it in items] == [r["name"] for r in records]
    # deterministic in the seed; one split through the small helper
    assert write_world_prompt_file(tmp_path / "q.jsonl", "heldout:4,train:3,train-image:2", seed=3).read_text() == (
        path.read_text()
    )
    one = read_jsonl(write_world_prompts(tmp_path / "one.jsonl", "train", 5, seed=1))
    assert len(one) == 5 and all(r["name"].startswith("train_") for r in one)
    for bad, message in [
        ("heldout", "bad world prompt set"),
        ("val:3", "unknown world split"),
        ("train:0", "positive"),
        ("train-video:2", "bad world prompt set"),
        ("train:2,train:3", "repeat"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_world_spec(bad)


def test_metric_selection():
    assert parse_metrics(None) == ("flicker", "smoothness", "world")
    assert parse_metrics(None, clip_model="c", fvd_ready=True) == ("flicker", "smoothness", "world", "clip", "fvd")
    assert parse_metrics("World, flicker,world") == ("world", "flicker")
    for text, kwargs, message in [
        ("flicker,sharpness", {}, "unknown metric"),
        ("clip", {}, "--clip-model"),
        ("fvd", {}, "--i3d"),
        ("flicker", {"clip_model": "c"}, "does not list 'clip'"),
        (" , ", {}, "empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_metrics(text, **kwargs)


# --------------------------------------------------------------------------------------------
# Generation + scoring through the CLI
# --------------------------------------------------------------------------------------------


def test_generate_score_and_resume(model_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ("--world-prompts", "train:2,heldout:1", "--out-dir", out, "--checkpoint", model_dir)
    assert evaluate_cli(*args) == 0
    printed = capsys.readouterr().out
    assert "world accuracy" in printed and "temporal flickering" in printed

    items = read_prompt_file(out / "world_prompts.jsonl")
    paths = [find_output(out, it) for it in items]
    assert all(p is not None and p.suffix == ".mp4" for p in paths)
    summary = json.loads((out / "summary.json").read_text())
    for key in ("items", "scored", "missing", "unreadable", "metrics", "world", "fvd", "generation", "prompts"):
        assert key in summary
    assert summary["items"] == summary["scored"] == 3 and summary["missing"] == []
    assert summary["generation"] == {"generated": 3, "skipped": 0, "failed": []}
    assert {k: v["n"] for k, v in summary["metrics"].items()} == {"flicker": 3, "smoothness": 3}
    assert summary["world"]["n"] == 3
    assert {k: v["n"] for k, v in summary["world"]["splits"].items()} == {"train": 2, "heldout": 1}
    assert not (out / PARTIAL_FILE).exists()

    # every number is the metric function's on the file
    rows = read_jsonl(out / "scores.jsonl")
    assert [r["name"] for r in rows] == [it.name for it in items]
    frames = [uint8_frames(p) for p in paths]
    for row, f in zip(rows, frames):
        assert f.shape == (17, 128, 128, 3) and (row["frames"], row["height"]) == (17, 128)
        assert row["flicker"] == pytest.approx(metrics.temporal_flickering(f), abs=1e-12)
        assert row["smoothness"] == pytest.approx(metrics.motion_smoothness_proxy(f), abs=1e-12)
    mean_flicker = np.mean([metrics.temporal_flickering(f) for f in frames])
    assert summary["metrics"]["flicker"]["mean"] == pytest.approx(mean_flicker, abs=1e-12)
    reference = world_evaluate(frames, [it.prompt for it in items])
    for key in ("color", "shape", "motion", "all", "background"):
        assert summary["world"][key] == pytest.approx(getattr(reference, key))

    # resume: nothing new is generated, scores are reused
    before = {p.name: p.stat().st_mtime_ns for p in paths}
    assert evaluate_cli(*args) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["generation"] == {"generated": 0, "skipped": 3, "failed": []}
    assert again["reused_scores"] == 3 and again["metrics"] == summary["metrics"]
    assert {p.name: p.stat().st_mtime_ns for p in paths} == before

    # delete one output: only it is generated again (same seed, same frames) and rescored
    paths[1].unlink()
    assert evaluate_cli(*args) == 0
    third = json.loads((out / "summary.json").read_text())
    assert third["generation"] == {"generated": 1, "skipped": 2, "failed": []}
    assert third["reused_scores"] == 2
    assert paths[0].stat().st_mtime_ns == before[paths[0].name]
    assert paths[2].stat().st_mtime_ns == before[paths[2].name]
    assert np.array_equal(uint8_frames(paths[1]), frames[1])
    records = read_jsonl(out / "generations.rank0.jsonl")
    assert [r["name"] for r in records] == [it.name for it in items] + [items[1].name]


def test_no_generate_scores_ground_truth_world_videos(tmp_path, capsys):
    out = tmp_path / "gt"
    out.mkdir()
    prompts = [
        "a red circle moving right on a black background",
        "a green square moving left on a navy background",  # held out
        "a yellow triangle moving up on a gray background",
        "a white square staying still on a navy background",  # held out
        "a blue triangle on a gray background",  # image prompt
        "a purple circle moving down on a black background",  # held out; image-to-video: first frame given
        "a cat runs on the sea",  # not world grammar: flicker and smoothness only
        "an orange circle moving left on a black background",  # missing output
        "a cyan square moving down on a black background",  # corrupt output
    ]
    records = [{"prompt": p, "name": f"item{i}"} for i, p in enumerate(prompts)]
    records[4]["duration"] = 0
    reference = ground_truth(prompts[5])[:1]
    write_video(tmp_path / "first.png", reference)
    records[5]["image"] = "first.png"
    prompt_file = tmp_path / "prompts.jsonl"
    prompt_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    parsed = [parse_caption(p) for p in prompts[:6]]
    held = [i for i, p in enumerate(parsed) if (p.color, p.shape, p.motion) in HELDOUT_COMBOS]
    assert held == [1, 3, 5]

    rendered = {}
    for i, p in enumerate(prompts[:6]):
        rendered[i] = ground_truth(p)
        write_video(out / f"item{i}{'.png' if i == 4 else '.mp4'}", rendered[i])
    rendered[6] = ground_truth("a white circle moving up on a black background")
    write_video(out / "item6.mp4", rendered[6])
    (out / "item8.mp4").write_bytes(b"\x00not a video" * 50)

    assert evaluate_cli("--prompts", prompt_file, "--out-dir", out, "--no-generate") == 0
    printed = capsys.readouterr().out
    assert "missing outputs (1): item7" in printed and "unreadable: item8" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generation"] is None
    assert summary["items"] == 9 and summary["scored"] == 7
    assert summary["missing"] == ["item7"] and list(summary["unreadable"]) == ["item8"]
    world = summary["world"]
    assert world["n"] == 6 and world["all"] == 1.0
    assert (world["color"], world["shape"], world["motion"], world["background"]) == (1.0, 1.0, 1.0, 1.0)
    assert {k: v["n"] for k, v in world["splits"].items()} == {"train": 2, "heldout": 3, "image": 1}

    rows = {r["name"]: r for r in read_jsonl(out / "scores.jsonl")}
    assert "world" not in rows["item6"] and "flicker" in rows["item6"]
    assert "flicker" not in rows["item4"] and rows["item4"]["frames"] == 1  # an image has no flicker
    assert summary["metrics"]["flicker"]["n"] == 6
    for i in (0, 1, 2, 3, 5, 6):
        decoded = uint8_frames(out / f"item{i}.mp4")
        assert rows[f"item{i}"]["flicker"] == pytest.approx(metrics.temporal_flickering(decoded), abs=1e-12)
        # and within H.264's error of the flicker of the frames before encoding
        assert rows[f"item{i}"]["flicker"] == pytest.approx(metrics.temporal_flickering(rendered[i]), abs=0.01)
    assert rows["item3"]["flicker"] > rows["item0"]["flicker"]  # a still object flickers less than a moving one
    psnr = summary["metrics"]["first_frame_psnr"]
    assert psnr["n"] == 1 and 30 < psnr["mean"] == rows["item5"]["first_frame_psnr"]


def test_clip_score_with_a_tiny_local_clip(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tests.helpers.curate import make_tiny_clip

    clip_dir = make_tiny_clip(tmp_path / "clip")
    out = tmp_path / "out"
    prompt_file = write_world_prompts(tmp_path / "p.jsonl", "train", 2, seed=0)
    items = read_prompt_file(prompt_file)
    out.mkdir()
    for it in items:
        write_video(out / f"{it.name}.mp4", ground_truth(it.prompt, size=64))
    assert evaluate_cli("--prompts", prompt_file, "--out-dir", out, "--no-generate", "--clip-model", clip_dir) == 0
    assert "CLIP score" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics_requested"] == ["flicker", "smoothness", "world", "clip"]
    assert summary["metrics"]["clip"]["n"] == 2
    scorer = CLIPScorer(clip_dir)
    rows = read_jsonl(out / "scores.jsonl")
    direct = [scorer.score(read_frames(out / f"{it.name}.mp4"), it.prompt) for it in items]
    assert [r["clip"] for r in rows] == pytest.approx(direct, rel=1e-5)
    assert summary["metrics"]["clip"]["mean"] == pytest.approx(np.mean(direct), rel=1e-5)
    # rows scored without clip are not reused for a run that asks for it
    args = ("--prompts", prompt_file, "--out-dir", out, "--no-generate")
    assert evaluate_cli(*args, "--metrics", "flicker") == 0
    assert "clip" not in json.loads((out / "summary.json").read_text())["metrics"]
    assert evaluate_cli(*args, "--clip-model", clip_dir) == 0
    assert json.loads((out / "summary.json").read_text())["metrics"]["clip"]["mean"] == pytest.approx(np.mean(direct))
    # errors: clip without weights, weights that are not a CLIP folder
    assert evaluate_cli(*args, "--metrics", "clip") == 2
    assert "--clip-model" in capsys.readouterr().err
    assert evaluate_cli(*args, "--clip-model", tmp_path / "nowhere") == 2
    assert "CLIP model folder not found" in capsys.readouterr().err


class TinyI3D(torch.nn.Module):
    """Stands in for the I3D: the StyleGAN-V TorchScript call convention, [B, 3, T, H, W] -> features [B, 6]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True):
        return torch.relu(self.conv(x)).mean(dim=(2, 3, 4))  # [B, 6, T, H, W] -> [B, 6]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_fvd_against_real_videos_with_a_local_i3d(tmp_path, capsys):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = TinyI3D()
    i3d = tmp_path / "i3d.pt"
    torch.jit.script(net).save(str(i3d))
    prompt_file = write_world_prompts(tmp_path / "p.jsonl", "train", 4, seed=0)
    items = read_prompt_file(prompt_file)
    out, real = tmp_path / "out", tmp_path / "real" / "sub"
    out.mkdir()
    real.mkdir(parents=True)
    for it in items:
        write_video(out / f"{it.name}.mp4", ground_truth(it.prompt, size=64))
    for i, it in enumerate(write_world_prompts(tmp_path / "r.jsonl", "heldout", 3, seed=5).read_text().splitlines()):
        write_video(real / f"real{i}.mp4", ground_truth(json.loads(it)["prompt"], size=64))
    write_video(real / "short.mp4", ground_truth(items[0].prompt, size=64)[:9])  # too short: skipped

    kwargs = dict(metrics=("fvd",), i3d=i3d, real_videos=real.parent, fvd_frames=16, i3d_resolution=32)
    report = score_outputs(items, out, **kwargs)
    fvd = report.summary["fvd"]
    assert (fvd["generated"], fvd["real"], fvd["real_skipped"], fvd["frames"]) == (4, 3, 1, 16)
    extractor = I3DFeatureExtractor(i3d, resolution=32)
    fake_clips = [read_frames(out / f"{it.name}.mp4")[:16] for it in items]
    real_clips = [read_frames(real / f"real{i}.mp4")[:16] for i in range(3)]
    expected = metrics.frechet_distance_from_features(extractor(real_clips), extractor(fake_clips))
    assert fvd["value"] == pytest.approx(expected, rel=1e-6) and fvd["value"] > 0
    assert (out / "fvd_real_features.npz").is_file()
    assert score_outputs(items, out, **kwargs).summary["fvd"]["value"] == pytest.approx(expected, rel=1e-6)  # cached
    # the CLI: both flags are needed
    assert evaluate_cli("--prompts", prompt_file, "--out-dir", out, "--no-generate", "--i3d", i3d) == 2
    assert "--real-videos" in capsys.readouterr().err


def test_ranks_generate_disjoint_shares_and_do_not_score(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "ranked"
    args = ("--world-prompts", "train-image:3", "--out-dir", out, "--checkpoint", model_dir)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        assert evaluate_cli(*args) == 0
        assert "--no-generate" in capsys.readouterr().out
    assert not (out / "summary.json").exists() and not (out / "scores.jsonl").exists()
    shares = [[r["name"] for r in read_jsonl(out / f"generations.rank{rank}.jsonl")] for rank in (0, 1)]
    names = [it.name for it in read_prompt_file(out / "world_prompts.jsonl")]
    assert shares == [names[0::2], names[1::2]]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names)

    # a rank other than 0 does nothing with --no-generate; one process scores everything
    assert evaluate_cli(*args, "--no-generate") == 0  # rank 1
    assert not (out / "summary.json").exists()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert evaluate_cli(*args, "--no-generate") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == 3 and summary["world"]["splits"]["image"]["n"] == 3
    assert summary["world"]["motion"] is None and summary["metrics"]["flicker"]["n"] == 0


def test_a_failed_item_is_reported_and_the_rest_scored(model_dir, tmp_path, capsys):
    prompt_file = tmp_path / "p.jsonl"
    lines = [
        {"prompt": "a red circle moving right on a black background", "name": "ok"},
        {"prompt": "a blue square moving up on a gray background", "name": "bad", "image": "missing.png"},
    ]
    prompt_file.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert evaluate_cli("--prompts", prompt_file, "--out-dir", out, "--checkpoint", model_dir) == 1
    assert "missing outputs (1): bad" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scored"] == 1 and summary["missing"] == ["bad"]
    [failed] = summary["generation"]["failed"]
    assert failed["name"] == "bad" and "not found" in failed["error"]


def test_bad_input_gives_one_clear_error(tmp_path, capsys, monkeypatch):
    import infinitystar.generation.layouts as pl

    cases = [
        (["--prompts", tmp_path / "none.jsonl", "--out-dir", tmp_path / "o"], "prompt file not found"),
        (["--world-prompts", "dev:3", "--out-dir", tmp_path / "o"], "unknown world split"),
        (["--prompts", tmp_path / "p.txt", "--out-dir", tmp_path / "o", "--metrics", "fid"], "unknown metric"),
        (["--prompts", tmp_path / "p.txt", "--out-dir", tmp_path / "nowhere", "--no-generate"], "folder not found"),
        (["--prompts", tmp_path / "p.txt", "--out-dir", tmp_path / "o", "--num-samples", "0"], "--num-samples"),
    ]
    (tmp_path / "p.txt").write_text("a red circle moving right on a black background\n")
    for extra, message in cases:
        assert evaluate_cli(*extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    # without --checkpoint the built-in model is used; when it is missing, the pipeline's message
    monkeypatch.setattr(pl, "BUILTIN_MODEL_DIR", tmp_path / "no_model")
    assert evaluate_cli("--prompts", tmp_path / "p.txt", "--out-dir", tmp_path / "o") == 2
    assert "no built-in default model" in capsys.readouterr().err
