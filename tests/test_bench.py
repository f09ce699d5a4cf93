"""The benchmark scripts run and report consistent figures (their speed is never asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
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


def test_summary_gives_ranges_over_runs_of_the_same_command(runs, tmp_path):
    """Several runs of one command are one row: each figure a min-max range, the number of runs, the GEMM rate."""
    r = runs["t2v"]
    slower = {**r, "total_s": r["total_s"] + 1.0, "matmul_rate": r["matmul_rate"] * 2}
    path = tmp_path / "two.jsonl"
    path.write_text(json.dumps(r) + "\n" + json.dumps(slower) + "\n")
    out = _run("summarize.py", str(path)).splitlines()
    assert len(out) == 3 and "GEMM rate" in out[0]
    low, high = f"{r['total_s']:.2f}", f"{r['total_s'] + 1.0:.2f}"
    assert f"{low}-{high} s" in out[2] and "2 runs" in out[2]
    gemm = r["matmul_rate"] / 1e12
    assert f"{gemm:.2f}-{2 * gemm:.2f} TFLOP/s" in out[2]


def test_every_run_records_how_its_gemm_rate_was_measured(runs):
    for r in (runs["t2v"], runs["i2v"]):
        g = r["gemm"]
        assert g["flops_per_s"] == r["matmul_rate"] > 0
        assert g["device"] == "cpu" and g["dtype"] == "float32" and g["threads"] == r["threads"]
        assert g["size"] == 1536 and g["warmup"] == 3 and g["repeats"] == 10 and g["stat"] == "best"


# ---- the GPU suite ------------------------------------------------------------------------------------------------

#: run the suite as a script with PyAV made unimportable: nothing the suite runs may need it (the GPU machine has none)
NO_AV = (
    "import runpy, sys; sys.modules['av'] = None; sys.argv[0] = 'gpu_suite.py'; "
    "runpy.run_path('gpu_suite.py', run_name='__main__')"
)


def _suite(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", NO_AV, *args], cwd=BENCH, env=env, capture_output=True, text=True, timeout=timeout
    )


def _records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "gpu.jsonl").read_text().splitlines()]


def test_gpu_suite_lists_its_steps_and_what_this_version_lacks():
    res = _suite("--list", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    from_table = {line.split("|")[1].strip() for line in res.stdout.splitlines() if line.startswith("| ")}
    assert {"480p", "720p", "720p-compile", "480p-i2v", "parity-fp32", "fsdp2-resume", "vae-bf16"} <= from_table
    assert "not available in this version" in res.stdout or "--quantize" not in res.stdout


def test_gpu_suite_needs_a_gpu_or_smoke():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = _suite("--budget", "10", timeout=300)
    assert res.returncode == 2 and "--smoke" in res.stderr


def test_gpu_suite_skips_what_the_budget_cannot_fit(tmp_path):
    res = _suite("--smoke", "--budget", "1", "--only", "480p,vae-bf16", "--out", str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    status = {r.get("step") or r.get("check"): r for r in _records(tmp_path) if r["kind"] != "header"}
    assert status.keys() == {"480p", "vae-bf16"}
    assert all(
        r["status"] == "skipped" and "left of the budget" in (r.get("reason") or r["figure"]) for r in status.values()
    )
    assert "skipped: estimate" in (tmp_path / "table.md").read_text()


def test_a_setting_the_cli_accepts_but_cannot_apply_to_a_built_pipeline_is_not_measured(tmp_path):
    """``--dtype`` is a load-time option: ``apply_runtime_options`` does not apply it, so a step asking for it must be
    listed as not available rather than measured with the default."""
    code = (
        "import sys, gpu_suite as g\n"
        "from _suite_steps import Step\n"
        "g.STEPS = (Step('bf16', 'a load-time option', '480p', ('--dtype', 'bf16')),)\n"
        f"sys.exit(g.main(['--smoke', '--only', 'bf16', '--out', {str(tmp_path)!r}]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=BENCH, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (step,) = [r for r in _records(tmp_path) if r["kind"] == "step"]
    assert step["status"] == "not available" and "apply_runtime_options" in step["reason"] and "dtype" in step["reason"]


def test_a_run_past_its_deadline_stops_between_two_steps_and_leaves_the_pipeline_as_it_was():
    code = (
        "import time, torch\n"
        "from _common import gemm_rate\n"
        "from _generation import BudgetSpent, RunSpec, build_pipeline, measure\n"
        "spec = RunSpec('tiny', 'cpu', None, '0.016M', 1, 'multinomial', None, False, 'builtin', False)\n"
        "pipe = build_pipeline(spec, torch.device('cpu'))\n"
        "transformer, vae = pipe.transformer, pipe.vae\n"
        "gemm = gemm_rate(torch.device('cpu'), torch.float32)\n"
        "try:\n"
        "    measure(pipe, spec, gemm, warmup=False, deadline=time.monotonic())\n"
        "except BudgetSpent as exc:\n"
        "    print('stopped:', exc)\n"
        "assert pipe.transformer is transformer and pipe.vae is vae\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], cwd=BENCH, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "stopped: the budget ran out after 1 of " in res.stdout


@pytest.mark.slow
def test_gpu_suite_smoke_run_measures_every_step_and_passes_every_check(tmp_path):
    """The suite's own code on the CPU (tiny preset), PyAV unimportable: every step of the table either ran or is
    named as missing from this version, every check passes, and the table is printed and written."""
    res = _suite("--smoke", "--budget", "3000", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    records = _records(tmp_path)
    steps = {r["step"]: r for r in records if r["kind"] == "step"}
    checks = {r["check"]: r for r in records if r["kind"] == "check"}
    exist_today = {"480p", "720p", "720p-chunk-0", "720p-compile", "480p-i2v", "480p-i2v-exact", "720p-chunk-4096"}
    exist_today |= {"720p-offload", "720p-16gb"} | ({"720p-int8"} if importlib.util.find_spec("torchao") else set())
    assert exist_today <= {name for name, r in steps.items() if r["status"] == "ran"}
    assert steps["720p-fp8"]["status"] == "not supported here" and "compute capability" in steps["720p-fp8"]["reason"]
    assert steps["720p-16gb"]["spec"]["offload_blocks"] and steps["720p-16gb"]["spec"]["vae_dtype"] == "bf16"
    if "720p-int8" in exist_today:
        assert steps["720p-int8"]["block_weight_bytes"] < 0.3 * steps["720p"]["block_weight_bytes"]
    assert all(r["status"] in ("ran", "not available", "not supported here") for r in steps.values())
    i2v, exact = steps["480p-i2v"], steps["480p-i2v-exact"]
    assert i2v["computed_steps"] < i2v["steps"] == exact["computed_steps"] == exact["steps"]
    assert steps["720p-chunk-0"]["inference"]["token_chunk"] is None and steps["720p"]["frames"][1:3] == [256, 256]
    assert all(r["gemm"]["size"] == 1536 and r["flops"] > 0 for r in steps.values() if r["status"] == "ran")
    (header,) = [r for r in records if r["kind"] == "header"]
    parity = {"parity-fp32", "parity-bf16"}
    expected = {c: "not run" if c in parity and header["dump"] is None else "PASS" for c in checks}
    assert {c: r["status"] for c, r in checks.items()} == expected
    assert {"flex-attention", "fsdp2-resume", "vae-bf16"} <= checks.keys()
    table = (tmp_path / "table.md").read_text()
    assert table.count("`python bench/gpu_suite.py --smoke --only ") == len(exist_today)
    assert "| fsdp2-resume |" in table and table.strip().splitlines()[-1] in res.stdout
