"""`infinitystar generate`: single prompts, every mode flag, batches with resume and rank sharding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from infinitystar.cli import main
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.prompt_files import read_prompt_file, shard
from infinitystar.generation.settings import read_settings
from infinitystar.media import read_video
from tests.helpers.pipeline import TINY_PIPELINE, make_released_layout


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    released = make_released_layout(tmp_path_factory.mktemp("released"))
    pipe = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE)
    return pipe.save_pretrained(tmp_path_factory.mktemp("ours") / "model")


def gen(model_dir, *args) -> int:
    return main(["generate", "--checkpoint", str(model_dir), "--quiet", *args])


def test_text_to_video_writes_a_playable_mp4_named_with_the_seed(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert gen(model_dir, "a red cat", "--seed", "7") == 0
    path = tmp_path / "a_red_cat_seed7.mp4"
    assert path.is_file() and str(path.name) in capsys.readouterr().out
    video = read_video(path)
    assert video.shape == (3, 17, 128, 128)
    record = read_settings(path)  # every setting, once, as JSON
    assert record["seed"] == 7 and record["prompt"] == "a red cat" and record["model"] == "model"
    assert record["guidance"] == "apg" and record["sampler"] == "multinomial" and record["dtype"] == "fp32"


def test_speed_flags_give_the_same_video(model_dir, tmp_path):
    """--token-chunk only bounds memory: the same seed gives the same video; --sampler bernoulli draws
    other bits (same distribution)."""
    paths = {name: tmp_path / f"{name}.mp4" for name in ("plain", "chunked", "bernoulli")}
    assert gen(model_dir, "a red cat", "--seed", "3", "--out", str(paths["plain"]), "--token-chunk", "0") == 0
    assert gen(model_dir, "a red cat", "--seed", "3", "--out", str(paths["chunked"]), "--token-chunk", "5") == 0
    assert gen(model_dir, "a red cat", "--seed", "3", "--out", str(paths["bernoulli"]), "--sampler", "bernoulli") == 0
    plain, chunked, bern = (read_video(p) for p in paths.values())
    assert np.array_equal(plain, chunked)
    assert bern.shape == plain.shape and not np.array_equal(plain, bern)


def test_every_mode_from_the_command_line(model_dir, tmp_path):
    from PIL import Image

    img = tmp_path / "in.png"
    Image.fromarray(np.full((100, 140, 3), 90, np.uint8)).save(img)
    assert gen(model_dir, "a cat", "--duration", "0", "--seed", "1", "--out", str(tmp_path / "t2i.png")) == 0
    with Image.open(tmp_path / "t2i.png") as im:
        assert im.size == (128, 128)
    assert gen(model_dir, "a cat", "--image", str(img), "--seed", "1", "--out", str(tmp_path / "i2v.mp4")) == 0
    assert read_video(tmp_path / "i2v.mp4").shape[1] == 17
    assert (
        gen(
            model_dir,
            "a cat",
            "--video",
            str(tmp_path / "i2v.mp4"),
            "--duration",
            "2",
            "--out",
            str(tmp_path / "v2v.mp4"),
        )
        == 0
    )
    assert read_video(tmp_path / "v2v.mp4").shape[1] == 33
    assert (
        gen(
            model_dir,
            "a cat",
            "--duration",
            "2",
            "--aspect-ratio",
            "16:9",
            "--guidance",
            "cfg",
            "--guidance-scale",
            "2",
            "--temperatures",
            "1,0.5",
            "--out",
            str(tmp_path / "long.gif"),
        )
        == 0
    )
    assert (tmp_path / "long.gif").stat().st_size > 0


def test_bad_arguments_exit_2_with_one_message(model_dir, tmp_path, capsys):
    cases = [
        (["a cat", "--image", str(tmp_path / "missing.png")], "not found"),
        (["a cat", "--temperatures", "hot"], "--temperatures"),
        (["a cat", "--aspect-ratio", "wide"], "aspect ratio"),
        ([], "give a PROMPT"),
        (["a cat", "--out", str(tmp_path / "x.avi")], "unsupported output type"),
        (["a cat", "--token-chunk", "-1"], "--token-chunk must be >= 0"),
    ]
    for extra, message in cases:
        assert gen(model_dir, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["generate", "a cat", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


def test_without_checkpoint_the_missing_builtin_model_is_explained(monkeypatch, tmp_path, capsys):
    import infinitystar.generation.layouts as pl

    monkeypatch.setattr(pl, "BUILTIN_MODEL_DIR", tmp_path / "none")
    assert main(["generate", "a red circle moving right on a black background"]) == 2
    assert "no built-in default model" in capsys.readouterr().err


def test_batch_resumes_and_reports_bad_items(model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "a cat"}, {"prompt": "a dog", "seed": 5, "name": "dog"}, {"prompt": "x", "image": "no.png"}]
    prompts.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "out"
    assert gen(model_dir, "--prompts", str(prompts), "--out-dir", str(out)) == 1  # one bad item
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["00000_a_cat.mp4", "dog.mp4"]
    records = [json.loads(line) for line in (out / "generations.rank0.jsonl").read_text().splitlines()]
    assert {r["name"]: r["seed"] for r in records} == {"00000_a_cat": 0, "dog": 5}
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    (out / "dog.mp4").unlink()
    assert gen(model_dir, "--prompts", str(prompts), "--out-dir", str(out)) == 1
    assert (out / "dog.mp4").is_file()
    assert (out / "00000_a_cat.mp4").stat().st_mtime_ns == before["00000_a_cat.mp4"]  # skipped, not redone


def test_batch_is_sharded_over_ranks(model_dir, tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("# comment\na cat\na dog\n\na fox\n")
    out = tmp_path / "out"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert gen(model_dir, "--prompts", str(prompts), "--out-dir", str(out), "--duration", "0") == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00000_a_cat.png", "00001_a_dog.png", "00002_a_fox.png"]
    rank1 = [json.loads(x)["name"] for x in (out / "generations.rank1.jsonl").read_text().splitlines()]
    assert rank1 == ["00001_a_dog"]


def test_prompt_files_vbench_and_errors(tmp_path):
    vb = tmp_path / "vbench.json"
    vb.write_text(
        json.dumps(
            [
                {"prompt_en": "a cat/dog", "dimension": ["color"], "refined_prompt": "A long refined prompt."},
                {"prompt_en": "a fox", "dimension": ["scene"]},
            ]
        )
    )
    items = read_prompt_file(vb, num_samples=2, seed=10)
    assert [i.name for i in items] == ["a cat_dog-0", "a cat_dog-1", "a fox-0", "a fox-1"]
    assert items[0].prompt == "A long refined prompt." and items[2].prompt == "a fox"
    assert [i.seed for i in items] == [10, 11, 10, 11]
    assert shard(items, 1, 2) == [items[1], items[3]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not valid JSON"):
        read_prompt_file(bad)
    bad.write_text('{"prompt": "ok", "colour": "red"}\n')
    with pytest.raises(ValueError, match="unknown keys"):
        read_prompt_file(bad)
    bad.write_text('{"prompt": "a", "name": "x"}\n{"prompt": "b", "name": "x"}\n')
    with pytest.raises(ValueError, match="output name 'x'"):
        read_prompt_file(bad)
    with pytest.raises(ValueError, match="unsupported prompt file"):
        read_prompt_file(vb.with_suffix(".csv").write_text("a") and vb.with_suffix(".csv"))
    empty = tmp_path / "e.txt"
    empty.write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_file(empty)
