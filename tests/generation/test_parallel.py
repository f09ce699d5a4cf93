"""One video on several processes (generation/parallel.py): the same bits as one process, and bad setups refused.

The equality tests launch this file under ``torch.distributed.run`` (gloo, CPU) with 2 and 4 processes. Every rank
builds the same tiny-preset transformer (fp32, weights large enough that every path matters), computes the
one-process reference itself, then generates the same latents split over the processes: sequence parallel,
guidance parallel, both, and with the blocks' weights sharded (FSDP2, token chunks so that the blocks also run as
pieces). Rank 0 writes what it saw (bits equal, the largest logit difference, the KV heads each rank keeps) to a
JSON file the test reads.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infinitystar.cli import main
from infinitystar.generation.parallel import ParallelConfig, ParallelSetupError, check_devices, check_launch
from infinitystar.parallel import check_heads

HERE = Path(__file__).resolve()
PROMPT = "a red circle moving right on a black background"


# --------------------------------------------------------------------------------------------------------------------
# The worker (run under torch.distributed.run)
# --------------------------------------------------------------------------------------------------------------------


def _model():
    from infinitystar.models.config import get_preset
    from infinitystar.models.transformer.model import InfinityTransformer

    torch.manual_seed(0)
    model = InfinityTransformer(get_preset("tiny").transformer).eval()
    with torch.no_grad():  # larger than the training init: logits far from 0, so that every error shows
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _cases(model):
    """(name, schedule, keyword arguments of generate_latent): APG from text alone; CFG with a negative prompt of
    another length (padded keys masked) and the first 4 steps teacher-forced."""
    from infinitystar.generation.loop import SamplingOptions
    from infinitystar.generation.sampling import Guidance
    from infinitystar.schedule import schedule_from_scales

    hw = [(1, 1), (2, 3), (3, 5), (5, 5)]  # 1, 6, 15, 25 tokens per frame: odd counts leave padding on a rank
    shapes = [(1, *s) for s in hw] + [(2, *s) for s in hw] * 2
    sched = schedule_from_scales(
        shapes, 4, image_repetition=[2, 1, 1, 2], video_repetition=[1, 2, 1, 2], detail_scale_min_tokens=15
    )
    g = torch.Generator().manual_seed(1)
    ch = model.cfg.text_channels
    text, negative = torch.randn(7, ch, generator=g), torch.randn(4, ch, generator=g)
    forced = [
        torch.randint(0, 2, (1, *sched.scales[st.scale].shape, sched.bits(st.scale)), generator=g)
        for st in sched.steps[:4]
    ]
    apg = SamplingOptions(Guidance("apg", 4.0), tau_video=0.5)
    cfg = SamplingOptions(Guidance("cfg", 3.0), tau_video=0.5)
    return [
        ("apg", sched, dict(text=text, options=apg)),
        ("cfg_negative_forced", sched, dict(text=text, options=cfg, negative_text=negative, forced_bits=forced)),
    ]


def _generate(model, sched, kwargs, parallel=None):
    from infinitystar.generation.loop import generate_latent

    logits = []
    out = generate_latent(
        model,
        sched,
        generator=torch.Generator().manual_seed(7),
        on_step=lambda r: logits.append(r.logits),
        parallel=parallel,
        **kwargs,
    )
    return out, logits


def _compare(ref, got) -> dict:
    (ref_out, ref_logits), (out, logits) = ref, got
    diffs = [(a - b).abs().max().item() for a, b in zip(ref_logits, logits) if a is not None and b is not None]
    return {
        "bits_equal": len(out.bits) == len(ref_out.bits)
        and all(torch.equal(a, b) for a, b in zip(ref_out.bits, out.bits)),
        "latent_max_diff": (out.latent - ref_out.latent).abs().max().item(),
        "max_logit_diff": max(diffs) if diffs else None,
        "logit_scale": max(t.abs().max().item() for t in ref_logits if t is not None),
        "steps_compared": len(diffs),
    }


CONFIGS = {
    2: {"sp2": ParallelConfig(2), "cfg": ParallelConfig(1, True), "sp2_fsdp_chunks": ParallelConfig(2, fsdp=True)},
    4: {"sp2_cfg": ParallelConfig(2, True), "sp2_cfg_fsdp_chunks": ParallelConfig(2, True, fsdp=True)},
}


def worker(out_file: str) -> None:
    import copy

    import torch.distributed as dist

    from infinitystar.generation.parallel import start_parallel

    torch.set_num_threads(1)
    model = _model()
    cases = _cases(model)
    refs = {name: _generate(model, sched, kw) for name, sched, kw in cases}  # one process, on every rank
    results, rank = {}, None
    for cname, config in CONFIGS[int(os.environ["WORLD_SIZE"])].items():
        run = start_parallel(config, "cpu", model.cfg)
        rank = run.rank
        m = model
        if config.fsdp:
            m = copy.deepcopy(model)
            m.inference.token_chunk = 5  # blocks of the larger scales run as pieces: FSDP gathers around them
            run.shard_weights(m)
        for name, sched, kw in cases:
            results[f"{cname}/{name}"] = _compare(refs[name], _generate(m, sched, kw, run))
        cache = run.new_cache(m, cases[0][1], 1)
        m.prefill_text(cache, cases[0][2]["text"][None])
        kv = [None] * run.world_size
        dist.all_gather_object(kv, [cache.text_k[0].shape[1], cache.text_k[0].sum().item()])
        results[f"{cname}/kv_heads_per_rank"] = kv
    if rank == 0:
        Path(out_file).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def _launch(n: int, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_parallel_generation_draws_the_bits_of_one_process(tmp_path, processes):
    out = tmp_path / "results.json"
    proc = _launch(processes, str(HERE), str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    runs = {k: v for k, v in results.items() if not k.endswith("kv_heads_per_rank")}
    assert len(runs) == 2 * len(CONFIGS[processes])
    for key, r in runs.items():
        assert r["bits_equal"], key
        assert r["latent_max_diff"] == 0.0, key
        assert r["steps_compared"] > 10 and r["logit_scale"] > 1.0, key
        # the per-token parts run on fewer rows (sequence parallel) or one guidance row at a time: the matrix
        # products may round differently in the last bits; bounded here, and the bits above are the same
        assert r["max_logit_diff"] < 1e-4 * r["logit_scale"], key
    for key, per_rank in results.items():
        if key.endswith("kv_heads_per_rank"):
            sp = CONFIGS[processes][key.split("/")[0]].sp_size
            assert [h for h, _ in per_rank] == [2 // sp] * processes, key  # the tiny preset has 2 KV heads
            if sp > 1:  # the two ranks of a row keep different heads
                assert per_rank[0][1] != per_rank[1][1], key


# --------------------------------------------------------------------------------------------------------------------
# The command line: the same video as one process, byte for byte (the built-in model)
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_the_video_of_one_process(tmp_path):
    one = tmp_path / "one.mp4"
    assert main(["generate", PROMPT, "--seed", "3", "--out", str(one), "--quiet"]) == 0
    for name, flags, n in (("sp", ["--sp-size", "2"], 2), ("cfg", ["--cfg-parallel"], 2)):
        path = tmp_path / f"{name}.mp4"
        proc = _launch(n, "-m", "infinitystar.cli", "generate", PROMPT, "--seed", "3", "--out", str(path), *flags)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert path.read_bytes() == one.read_bytes(), name
        assert proc.stdout.count(str(path)) == 1  # rank 0 alone writes and reports
        assert f"rank 0 of 2 processes: {' '.join(flags)}" in proc.stderr


@pytest.mark.slow
def test_a_lora_adapter_on_sharded_weights_gives_the_video_of_one_process(tmp_path):
    """The shipped pink adapter with sequence parallel over FSDP-sharded blocks: the adapters attach to the sharded
    layers on every rank and the video is one process's, byte for byte."""
    adapter = str(Path(__file__).resolve().parents[2] / "recipes" / "lora_pink" / "adapter")
    prompt, one, split = "a pink triangle moving up on a navy background", tmp_path / "one.mp4", tmp_path / "sp.mp4"
    assert main(["generate", prompt, "--seed", "3", "--out", str(one), "--quiet", "--lora", adapter]) == 0
    flags = ["--sp-size", "2", "--fsdp", "--lora", adapter, "--quiet"]
    proc = _launch(2, "-m", "infinitystar.cli", "generate", prompt, "--seed", "3", "--out", str(split), *flags)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert split.read_bytes() == one.read_bytes()


# --------------------------------------------------------------------------------------------------------------------
# Bad setups: one clear message, before any model loads
# --------------------------------------------------------------------------------------------------------------------


def test_parallel_config_checks_its_values():
    assert ParallelConfig().world_size == 1 and not ParallelConfig().enabled
    assert ParallelConfig(4, True).world_size == 8 and ParallelConfig(4, True).flags() == "--sp-size 4 --cfg-parallel"
    assert ParallelConfig(fsdp=True).enabled
    with pytest.raises(ValueError, match="sp_size must be an integer >= 1, got 0"):
        ParallelConfig(0)
    with pytest.raises(ValueError, match="got '2'"):
        ParallelConfig("2")
    with pytest.raises(TypeError, match="cfg_parallel must be True or False"):
        ParallelConfig(2, cfg_parallel="yes")


def _no_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def _torchrun(monkeypatch, rank: int, world: int):
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


def test_launch_must_match_the_flags(monkeypatch):
    _no_torchrun(monkeypatch)
    with pytest.raises(ParallelSetupError, match="launch it with torchrun --nproc_per_node 2"):
        check_launch(ParallelConfig(2))
    with pytest.raises(ParallelSetupError, match="use it with --sp-size K"):
        check_launch(ParallelConfig(fsdp=True))
    _torchrun(monkeypatch, 1, 2)
    with pytest.raises(ParallelSetupError, match=r"exactly 2 x 2 = 4 processes, but 2 were started") as err:
        check_launch(ParallelConfig(2, True))
    assert err.value.rank == 1  # the command line prints it on rank 0 only
    assert check_launch(ParallelConfig(1, True)) == (1, 2, 1)


def test_heads_must_divide():
    check_heads(32, 8, 8)
    with pytest.raises(ValueError, match=r"size 3 must divide the model's key/value heads \(8\).*: 1, 2, 4, 8"):
        check_heads(32, 8, 3)


def test_devices_must_agree():
    check_devices([("a", "cuda:0", ""), ("a", "cuda:1", ""), ("b", "cuda:0", "")])
    with pytest.raises(ValueError, match=r"mixed devices \(rank 0 on cuda:0, rank 1 on cpu\)"):
        check_devices([("a", "cuda:0", ""), ("a", "cpu", "")])
    with pytest.raises(ValueError, match="ranks 0 and 1 both run on cuda:1 of a"):
        check_devices([("a", "cuda:1", ""), ("a", "cuda:1", "")])
    with pytest.raises(ValueError, match="rank 1: no GPU here"):
        check_devices([("a", "cpu", ""), ("a", "cpu", "no GPU here")])


@pytest.mark.parametrize(
    "flags, world, message",
    [
        (["--sp-size", "2"], None, "splits one generation over 2 processes: launch it with torchrun"),
        (["--cfg-parallel"], None, "launch it with torchrun --nproc_per_node 2"),
        (["--fsdp"], None, "--fsdp shards the weights over the processes"),
        (["--sp-size", "0"], None, "--sp-size must be >= 1"),
        (["--sp-size", "2", "--cfg-parallel"], 2, "needs exactly 2 x 2 = 4 processes, but 2 were started"),
        (["--sp-size", "4"], 4, r"size 4 must divide the model's key/value heads \(2\) .*accepted sizes .*: 1, 2"),
    ],
)
def test_cli_refuses_a_bad_setup_before_loading(monkeypatch, tmp_path, capsys, flags, world, message):
    import infinitystar.generation.pipeline as pipeline

    if world is None:
        _no_torchrun(monkeypatch)
    else:
        _torchrun(monkeypatch, 0, world)
    monkeypatch.setattr(pipeline, "load_components", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["generate", PROMPT, "--out", str(tmp_path / "x.mp4"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("infinitystar: error:") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "x.mp4").exists()


def test_serve_has_no_parallel_flags(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--sp-size", "2"])
    assert "unrecognized arguments: --sp-size 2" in capsys.readouterr().err


if __name__ == "__main__":
    worker(sys.argv[1])
