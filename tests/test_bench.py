"""The benchmark scripts run and report consistent figures (their speed is never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *args: str) -> str:
    res = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, check=False, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "runs.jsonl"
    _run("bench_generate.py", "--model", "tiny", "--json", str(out))
    _run("bench_generate.py", "--model", "builtin", "--mode", "i2v", "--token-chunk", "64", "--json", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {"file": out, **{r["spec"]["mode"]: r for r in rows}}


def test_text_to_video_run_accounts_for_every_phase_and_flop(runs):
    from infinitystar.generation.flops import generation_flops
    from infinitystar.models.config import get_preset
    from infinitystar.schedule import build_schedule

    r = runs["t2v"]
    assert r["frames"] == [17, 256, 256, 3] and r["computed_steps"] == r["steps"]
    assert sum(r["phases"].values()) == pytest.approx(r["total_s"], rel=1e-6)
    assert all(v >= 0 for k, v in r["phases"].items() if k != "other")
    sched = build_schedule(1.0, "0.06M", 5, detail_scale_min_tokens=100, frames_per_clip=4)
    expected = generation_flops(get_preset("tiny").transformer, sched, rows=2, text_tokens=r["text_tokens"])
    assert r["flops"] == pytest.approx(expected.total)
    assert sum(r["group_flops"].values()) + r["prefill_flops"] == pytest.approx(r["flops"])
    assert r["matmul_rate"] > 0 and r["peak_memory_gib"] > 0


def test_image_to_video_run_skips_forced_steps(runs):
    r = runs["i2v"]
    assert r["inference"]["token_chunk"] == 64
    assert 0 < r["computed_steps"] < r["steps"]
    assert r["phases"]["VAE encode (reference)"] > 0


def test_attention_bench_prints_three_variants():
    out = _run("bench_attention.py", "--preset", "tiny", "--resolution", "0.06M", "--repeats", "1")
    assert out.count("| native GQA") == 2 and "repeat_kv + cat (original)" in out


def test_summary_table_has_one_row_per_run_with_its_command(runs):
    out = _run("summarize.py", str(runs["file"])).splitlines()
    assert len(out) == 2 + 2
    assert "`python bench/bench_generate.py --model tiny`" in out[2]
    assert "`python bench/bench_generate.py --model builtin --token-chunk 64 --mode i2v`" in out[3]


def test_convert_bench_prints_its_row_and_cleans_up(tmp_path):
    """A small synthetic checkpoint (2 blocks x 2048, about 0.5 GB): one row, output about half the source, the work
    folder deleted afterwards."""
    out = _run("bench_convert.py", "--gb", "0.2", "--shards", "2", "--dir", str(tmp_path / "work"))
    row = out.strip().splitlines()[-1].split("|")[1:-1]
    source, output = float(row[0].split()[0]), float(row[4].split()[0])
    assert row[1].strip() == "2" and 0.45 < output / source < 0.55
    assert not (tmp_path / "work").exists()


def test_quantize_bench_prints_the_logit_error_and_the_smaller_blocks():
    out = _run("bench_quantize.py", "--model", "tiny", "--latent-frames", "2")
    row = next(line for line in out.splitlines() if line.startswith("| tiny | int8 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    worst, mean, flipped = float(cells[3]), float(cells[4]), float(cells[5].rstrip("%"))
    assert 0 < mean <= worst < 0.05 and 0 <= flipped < 5
    assert "74% smaller" in cells[6]  # fp32 -> int8 with a scale and a zero point per row


@pytest.mark.slow
def test_parallel_bench_accounts_for_every_phase_and_the_all_to_all(tmp_path):
    out = tmp_path / "parallel.jsonl"
    text = _run("bench_parallel.py", "--model", "tiny", "--resolution", "0.016M", "--runs", "1,sp2", "--json", str(out))
    one, sp2 = (json.loads(line) for line in out.read_text().splitlines())
    assert (one["processes"], sp2["processes"], sp2["flags"]) == (1, 2, "--sp-size 2")
    assert one["frames"] == sp2["frames"] and one["computed_steps"] == sp2["computed_steps"] == sp2["steps"]
    for r in (one, sp2):
        assert sum(r["phases"].values()) == pytest.approx(r["total_s"], rel=1e-6)
        assert 0 < r["largest_step_s"] <= r["steps_s"] < r["transformer_s"]
    assert one["all_to_all_s"] == 0 and 0 < sp2["all_to_all_s"] < sp2["steps_s"]
    assert len(one["step_cpu_s"]) == 1 and len(sp2["step_cpu_s"]) == 2 and min(sp2["step_cpu_s"]) > 0
    assert one["latent_sha256"] == sp2["latent_sha256"]  # the same video
    assert sp2["phases"]["gather logits on rank 0"] > 0 and one["phases"]["gather logits on rank 0"] == 0
    assert "| 2 | --sp-size 2 |" in text
