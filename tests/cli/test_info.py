"""``infinitystar info``: presets, schedules and the memory estimate, per process for one video on several."""

from __future__ import annotations

from infinitystar.cli import main
from infinitystar.generation.memory import estimate_generation_memory
from infinitystar.models.config import VAEConfig, get_preset
from infinitystar.schedule import build_schedule
from infinitystar.sizes import latent_frames


def _row(out: str, resolution: str, duration: str) -> str:
    return next(line for line in out.splitlines() if line.split()[:1] == [resolution] and line.split()[2] == duration)


def test_info_prints_the_memory_of_each_process(capsys):
    assert main(["info"]) == 0
    single = _row(capsys.readouterr().out, "720p", "5")
    assert main(["info", "--sp-size", "2", "--fsdp"]) == 0
    out = capsys.readouterr().out
    assert "8B GPU memory per process (estimate)" in out and "One video on 2 processes (--sp-size 2 --fsdp)" in out
    sched = build_schedule(9 / 16, "720p", latent_frames(81))
    est = estimate_generation_memory(
        get_preset("8b").transformer, sched, mlp_chunk_tokens=8192, sp_size=2, fsdp=True, vae=VAEConfig()
    )  # info counts the released VAE in fp32
    row = _row(out, "720p", "5")
    assert f"{est.gib()['total']:.1f} GiB" in row and row != single


def test_info_refuses_a_size_that_does_not_divide_the_heads(capsys):
    assert main(["info", "--sp-size", "3"]) == 2
    assert "size 3 must divide the model's key/value heads (8)" in capsys.readouterr().err
    assert main(["info", "--fsdp"]) == 2
    assert "add --sp-size K or --cfg-parallel" in capsys.readouterr().err
