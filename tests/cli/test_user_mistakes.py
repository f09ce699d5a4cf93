"""`infinitystar generate` as a new user meets it: every mistake is one message and exit status 2 (no traceback),
checked before any model loads; nothing is silently replaced; Ctrl-C leaves no half-written file; the range policy
for seeds, guidance and temperatures; prompts from a terminal that is not UTF-8; the settings stored in the file."""

from __future__ import annotations

import json
import os
import struct
import zlib

import pytest

import infinitystar.cli.generate as generate_cli
from infinitystar.cli import main
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.generation.ranges import SEED_MAX
from infinitystar.generation.settings import METADATA_PROMPT_CHARS, read_settings
from infinitystar.media import read_video


def gen(model_dir, *args) -> int:
    return main(["generate", "--checkpoint", str(model_dir), "--quiet", *args])


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command loads a model: a request that will be refused must not cost a load."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded for a request that is refused")

    monkeypatch.setattr(generate_cli, "load_pipeline", refuse)


def one_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("infinitystar")]
    assert len(lines) == 1 and "error:" in lines[0], err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def bomb_png(path) -> None:
    """A tiny PNG whose header claims 20000 x 20000 pixels: a decompression bomb for Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_mistakes_are_refused_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch, capsys, no_model):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exists.mp4").write_bytes(b"mine")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    bomb_png(tmp_path / "bomb.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    cases = [
        (["a cat", "--device", "cdua"], ["unknown device 'cdua'", "accepted"]),
        (["a cat", "--device", "cuda:7"], ["cuda:7"]),
        (["a cat", "--out", "clip.txt"], ["--out clip.txt", "unsupported output type '.txt'", "accepted: .mp4"]),
        (["a cat", "--out", "folder"], ["--out folder is a folder", "give a file name"]),
        (["a cat", "--out", "still.png"], ["a png holds one image", "--duration 0"]),
        (["a cat", "--out", "exists.mp4"], ["--out exists.mp4 exists", "--overwrite"]),
        (["a cat", "--out", "a_file/clip.mp4"], ["a_file", "is a file, not a folder"]),
        (["--prompts", "p.txt", "--out-dir", "a_file"], ["--out-dir a_file is a file, not a folder"]),
        (["a cat", "--image", "bomb.png"], ["bomb.png", "too large to decode safely"]),
        (["a cat", "--image", "broken.png"], ["broken.png", "corrupt"]),
        (["a cat", "--guidance-scale", "-3"], ["guidance scale -3.0 is negative", "accepted are numbers >= 0"]),
        (["a cat", "--temperatures", "1e-9,1"], ["temperatures must be >= 0.001"]),
        (["a cat", "--duration", "-2"], ["duration must be 0 (an image) or a positive number"]),
        (["a cat", "--aspect-ratio", "wide"], ["aspect ratio"]),
        (["a cat", "--resolution", "720p"], ["holds a 0.016M model", "720p"]),
    ]
    (tmp_path / "p.txt").write_text("a cat\n")
    for args, fragments in cases:
        assert gen(tiny_model_dir, *args) == 2, args
        one_error(capsys, *fragments)
    assert (tmp_path / "exists.mp4").read_bytes() == b"mine"  # never replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a_file",
        "bomb.png",
        "broken.png",
        "exists.mp4",
        "folder",
        "p.txt",
    ]


def test_unwritable_folder_is_refused_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch, capsys, no_model):
    """A folder this process may not write into (simulated: the tests may run as root, who may write anywhere)."""
    import errno

    import infinitystar.cli.outputs as outputs

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "TemporaryFile", denied)
    assert gen(tiny_model_dir, "a cat", "--out", str(tmp_path / "clip.mp4")) == 2
    one_error(capsys, "cannot write into the folder of --out", "Permission denied", "choose a folder you can write to")


def test_a_full_disk_is_refused_before_the_model_loads(tiny_model_dir, tmp_path, monkeypatch, capsys, no_model):
    import shutil

    import infinitystar.cli.outputs as outputs

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    assert gen(tiny_model_dir, "a cat", "--out", str(tmp_path / "clip.mp4")) == 2
    one_error(capsys, "only 0.0 MB free", "free some space or choose another folder")


def test_a_write_that_fails_after_generating_keeps_the_result(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """The disk filled up during the generation: the error says so and where the result was saved instead."""
    import errno

    from infinitystar.generation.output import GenerationResult

    real_save = GenerationResult.save
    target = tmp_path / "out" / "clip.mp4"

    def save(self, path):
        if os.fspath(path) == os.fspath(target):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(self, path)

    monkeypatch.setattr(GenerationResult, "save", save)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "spare"))
    (tmp_path / "spare").mkdir()
    assert gen(tiny_model_dir, "a cat", "--seed", "1", "--out", str(target)) == 2
    err = one_error(capsys, "no space left on the disk", "saved to")
    assert not target.exists()
    assert read_video(tmp_path / "spare" / "clip.mp4").shape[1] == 17, err


def test_an_existing_out_needs_overwrite_and_default_names_never_replace(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert gen(tiny_model_dir, "a cat", "--seed", "3") == 0
    assert gen(tiny_model_dir, "a cat", "--seed", "3") == 0  # the same default name: a numeric suffix
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["a_cat_seed3.mp4", "a_cat_seed3_1.mp4"]
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"precious")
    assert gen(tiny_model_dir, "a cat", "--out", str(out)) == 2
    one_error(capsys, "exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert gen(tiny_model_dir, "a cat", "--out", str(out), "--seed", "4", "--overwrite") == 0
    assert read_settings(out)["seed"] == 4


def test_seed_range_and_minus_one_is_random(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for bad in (str(2**64), "-5", "abc", "1.5"):
        with pytest.raises(SystemExit) as exit_:
            gen(tiny_model_dir, "a cat", "--seed", bad)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "--seed" in err and "0 to 2**63-1" in err and "Traceback" not in err
    assert gen(tiny_model_dir, "a cat", "--seed", str(SEED_MAX), "--out", "max.mp4") == 0  # the largest works
    assert read_settings(tmp_path / "max.mp4")["seed"] == SEED_MAX
    capsys.readouterr()
    assert gen(tiny_model_dir, "a cat", "--seed", "-1") == 0
    printed = capsys.readouterr().out
    seed = int(printed.split("seed ")[-1].split(",")[0])  # the seed used is printed ...
    path = tmp_path / f"a_cat_seed{seed}.mp4"  # ... in the name ...
    assert path.is_file() and read_settings(path)["seed"] == seed  # ... and stored


def test_num_samples_with_one_prompt_writes_each_sample(tiny_model_dir, tmp_path, capsys):
    assert gen(tiny_model_dir, "a cat", "--num-samples", "3", "--seed", "10", "--out", str(tmp_path / "c.mp4")) == 0
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["c-0.mp4", "c-1.mp4", "c-2.mp4"]
    assert [read_settings(tmp_path / f"c-{k}.mp4")["seed"] for k in range(3)] == [10, 11, 12]
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


def test_out_of_range_guidance_and_temperatures_warn_in_one_line(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "noisy.mp4"
    assert gen(tiny_model_dir, "a cat", "--guidance-scale", "500", "--temperatures", "10,10", "--out", str(out)) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("infinitystar: warning:")]
    assert len(warnings) == 2, err  # each once, although the CLI and the pipeline both check
    assert "guidance scale 500 is far above" in warnings[0] and "temperature 10 is above 3" in warnings[1]
    record = read_settings(out)
    assert record["guidance_scale"] == 500 and record["temperatures"] == [10, 10]


def test_a_prompt_that_is_not_utf8_is_decoded_with_a_warning(tiny_model_dir, tmp_path, capsys):
    prompt = os.fsdecode(b"a red " + b"\xe9t\xe9 cat")  # what Python makes of Latin-1 bytes in argv
    out = tmp_path / "latin.mp4"
    assert gen(tiny_model_dir, prompt, "--seed", "2", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "PROMPT is not valid UTF-8" in err and "'a red été cat'" in err and "Traceback" not in err
    assert read_settings(out)["prompt"] == "a red été cat"


def test_prompt_files_that_are_not_utf8_name_the_file_and_line(tiny_model_dir, tmp_path, capsys, no_model):
    prompts = tmp_path / "latin1.json"
    prompts.write_bytes(b'[{"prompt": "a cat"},\n {"prompt": "' + b"\xe9t\xe9" + b'"}]')
    assert gen(tiny_model_dir, "--prompts", str(prompts), "--out-dir", str(tmp_path / "o")) == 2
    one_error(capsys, "latin1.json: line 2: not UTF-8 text (byte 0xe9", "iconv")


def test_long_prompt_is_stored_once_and_cut(tiny_model_dir, tmp_path):
    prompt = "a red cat " + "x" * 100_000
    out = tmp_path / "long.mp4"
    assert gen(tiny_model_dir, prompt, "--seed", "1", "--out", str(out)) == 0
    import av

    with av.open(str(out)) as container:
        tags = dict(container.metadata)
    stored = "".join(tags.values())
    assert stored.count("a red cat") == 1 and len(stored) < METADATA_PROMPT_CHARS + 1000
    record = json.loads(tags["comment"])
    assert record["prompt_chars"] == len(prompt) and len(record["prompt"]) == METADATA_PROMPT_CHARS
    for key in ("seed", "guidance", "guidance_scale", "temperatures", "sampler", "width", "height", "frames",
                "model", "software", "device", "dtype"):  # fmt: skip
        assert key in record


def test_ctrl_c_is_a_short_message_and_leaves_no_partial_file(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(InfinityStarPipeline, "_run_windows", interrupted)
    assert gen(tiny_model_dir, "a cat", "--out", "clip.mp4") == 130
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("infinitystar")]
    assert "Traceback" not in err and ours == ["infinitystar: interrupted (Ctrl-C); no half-written file was left"]
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback_of_a_mistake(tiny_model_dir, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="negative"):
        gen(tiny_model_dir, "a cat", "--guidance-scale", "-1", "--debug")
    monkeypatch.setenv("INFINITYSTAR_DEBUG", "1")
    with pytest.raises(ValueError, match="negative"):
        gen(tiny_model_dir, "a cat", "--guidance-scale", "-1")


def test_a_bug_still_shows_its_traceback(tiny_model_dir, tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(InfinityStarPipeline, "_run_windows", broken)
    with pytest.raises(ZeroDivisionError):
        gen(tiny_model_dir, "a cat", "--out", str(tmp_path / "x.mp4"))
