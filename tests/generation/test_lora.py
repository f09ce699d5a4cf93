"""LoRA adapters from the user's side: the pipeline's methods, `generate --lora`, batch files' per-item `lora`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infinitystar.cli import main
from infinitystar.generation.lora import LoraSpec, parse_lora_spec, resolve_adapter_source
from infinitystar.generation.pipeline import InfinityStarPipeline
from infinitystar.media import read_video
from infinitystar.models.config import TransformerConfig
from infinitystar.models.transformer.lora import LoraError
from tests.helpers.lora import make_adapter
from tests.helpers.pipeline import TINY_PIPELINE, TINY_TRANSFORMER, make_released_layout

PROMPT = "a red cat"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    released = make_released_layout(tmp_path_factory.mktemp("released"))
    pipe = InfinityStarPipeline.from_pretrained(released, config=TINY_PIPELINE)
    return pipe.save_pretrained(tmp_path_factory.mktemp("ours") / "model")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        "style": make_adapter(root / "style", TINY_TRANSFORMER, seed=1, name="style"),
        "other": make_adapter(root / "other", TINY_TRANSFORMER, seed=2),
        "wide": make_adapter(
            root / "wide", TransformerConfig(**{**TINY_TRANSFORMER.to_dict(), "embed_dim": 128, "mlp_hidden": 256})
        ),
    }


@pytest.fixture
def tiny(model_dir):
    pipe = InfinityStarPipeline.from_pretrained(model_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _frames(pipe, seed=3):
    return pipe(PROMPT, seed=seed).frames


def test_load_scale_unload_from_the_pipeline(tiny, adapters):
    base = _frames(tiny)
    assert tiny.load_lora(adapters["style"], scale=0.0) == "style"  # its recorded name
    assert np.array_equal(_frames(tiny), base)  # scale 0 is the base model, bit for bit
    tiny.set_lora_scale(1.0)
    styled = _frames(tiny)
    assert not np.array_equal(styled, base)
    assert tiny.load_lora(adapters["other"], scale=0.5) == "other"  # the folder's name
    assert tiny.load_lora(adapters["other"], name="other2") == "other2"
    assert tiny.lora_adapters == {"style": 1.0, "other": 0.5, "other2": 1.0}
    both = _frames(tiny)
    assert not np.array_equal(both, styled)
    tiny.set_lora_scale(0.0, name="other")
    tiny.unload_lora("other2")
    assert np.array_equal(_frames(tiny), styled)
    fused = tiny.fuse_lora()
    assert fused == ["style"] and tiny.unfuse_lora() == ["style"]
    assert tiny.unload_lora() == ["style", "other"] and tiny.lora_adapters == {}
    assert np.array_equal(_frames(tiny), base)


def test_sources_and_specs(tmp_path, adapters):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    for f in adapters["style"].iterdir():
        (run / "final" / f.name).write_bytes(f.read_bytes())
    assert resolve_adapter_source(run) == run / "final"  # a training run: its final adapter
    assert resolve_adapter_source(adapters["style"] / "adapter_model.safetensors") == adapters["style"]
    with pytest.raises(LoraError, match="LoRA adapter not found: nowhere/at/all"):
        resolve_adapter_source("nowhere/at/all")
    with pytest.raises(LoraError, match="holds no LoRA adapter"):
        resolve_adapter_source(tmp_path)
    assert parse_lora_spec("a/b:0.5") == LoraSpec("a/b", 0.5)
    assert parse_lora_spec("a/b") == LoraSpec("a/b", 1.0)
    assert parse_lora_spec("c:/x/y") == LoraSpec("c:/x/y", 1.0)  # a ':' that is not a scale belongs to the path
    assert parse_lora_spec("style:-1", base=adapters["style"].parent).source == str(adapters["style"])
    for bad in ("", "x:nan", "x:inf"):
        with pytest.raises(LoraError):
            parse_lora_spec(bad)


def test_a_hub_repo_id_is_read_from_the_local_cache(tmp_path, adapters, monkeypatch):
    """``owner/name`` that is not a local path goes through huggingface_hub (offline here: its cache)."""
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--pink-lora" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in adapters["style"].iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (cache / "models--someone--pink-lora" / "refs").mkdir()
    (cache / "models--someone--pink-lora" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    assert resolve_adapter_source("someone/pink-lora") == snapshot
    with pytest.raises(LoraError, match="cannot fetch LoRA adapter 'someone/missing'"):
        resolve_adapter_source("someone/missing")


def test_an_adapter_for_another_architecture_is_refused_with_the_mismatch_named(tiny, adapters):
    with pytest.raises(LoraError, match=r"needs embed_dim=128, mlp_hidden=256, this model has embed_dim=64"):
        tiny.load_lora(adapters["wide"])
    assert tiny.lora_adapters == {}


def gen(model_dir, *args) -> int:
    return main(["generate", "--checkpoint", str(model_dir), "--quiet", *args])


def test_generate_with_lora_flags(model_dir, adapters, tmp_path, capsys):
    out = {k: tmp_path / f"{k}.mp4" for k in ("base", "zero", "styled", "two")}
    assert gen(model_dir, PROMPT, "--seed", "3", "--out", str(out["base"])) == 0
    assert gen(model_dir, PROMPT, "--seed", "3", "--out", str(out["zero"]), "--lora", f"{adapters['style']}:0") == 0
    assert gen(model_dir, PROMPT, "--seed", "3", "--out", str(out["styled"]), "--lora", str(adapters["style"])) == 0
    two = ["--lora", f"{adapters['style']}:0.7", "--lora", f"{adapters['other']}:0.4"]
    assert gen(model_dir, PROMPT, "--seed", "3", "--out", str(out["two"]), *two) == 0
    videos = {k: read_video(p) for k, p in out.items()}
    assert np.array_equal(videos["base"], videos["zero"])
    assert not np.array_equal(videos["base"], videos["styled"])
    assert not np.array_equal(videos["styled"], videos["two"])
    capsys.readouterr()
    assert gen(model_dir, PROMPT, "--lora", str(tmp_path / "missing")) == 2
    assert "infinitystar: error: LoRA adapter not found" in capsys.readouterr().err
    assert gen(model_dir, PROMPT, "--lora", f"{adapters['style']}:abc") == 2  # not a scale: part of a missing path
    assert gen(model_dir, PROMPT, "--lora", str(adapters["wide"])) == 2
    assert "was trained for another transformer: it needs embed_dim=128" in capsys.readouterr().err


def test_batch_items_choose_their_adapters(model_dir, adapters, tmp_path, capsys):
    prompts = tmp_path / "p" / "prompts.jsonl"
    prompts.parent.mkdir()
    items = [
        {"prompt": PROMPT, "name": "plain", "seed": 3},
        {"prompt": PROMPT, "name": "zero", "seed": 3, "lora": str(adapters["style"]) + ":0"},
        {"prompt": PROMPT, "name": "styled", "seed": 3, "lora": [str(adapters["style"])]},
        {"prompt": PROMPT, "name": "none", "seed": 3, "lora": []},
        {"prompt": PROMPT, "name": "broken", "seed": 3, "lora": "missing_adapter"},
        {"prompt": PROMPT, "name": "plain_again", "seed": 3},
    ]
    prompts.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "out"
    # the command's --lora applies to items without their own; an item's lora replaces it
    code = gen(model_dir, "--prompts", str(prompts), "--out-dir", str(out), "--lora", f"{adapters['other']}:1")
    assert code == 1  # one item failed
    assert "(broken): " in capsys.readouterr().err  # "skipped FILE:LINE (broken): the reason"
    v = {p.stem: read_video(p) for p in out.glob("*.mp4")}
    assert sorted(v) == ["none", "plain", "plain_again", "styled", "zero"]
    assert np.array_equal(v["zero"], v["none"])  # the base model: 'other' at 0, 'style' at 0
    assert np.array_equal(v["plain"], v["plain_again"])  # back to the command's adapter after other items
    assert not np.array_equal(v["plain"], v["none"]) and not np.array_equal(v["styled"], v["none"])
    records = [json.loads(line) for line in (out / "generations.rank0.jsonl").read_text().splitlines()]
    assert next(r for r in records if r["name"] == "styled")["lora"] == {str(adapters["style"]): 1.0}


def test_prompt_file_lora_paths_and_errors(adapters, tmp_path):
    from infinitystar.generation.prompt_files import read_prompt_file

    folder = adapters["style"].parent
    path = folder / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "x", "lora": ["style:0.5", "other"]}) + "\n")
    (item,) = read_prompt_file(path)
    assert item.lora == (LoraSpec(str(folder / "style"), 0.5), LoraSpec(str(folder / "other"), 1.0))
    path.write_text(json.dumps({"prompt": "x", "lora": 3}) + "\n")
    with pytest.raises(ValueError, match=r"prompts\.jsonl:1: 'lora' must be"):
        read_prompt_file(path)
    path.write_text(json.dumps({"prompt": "x", "lora": "style:nan"}) + "\n")
    with pytest.raises(ValueError, match=r"prompts\.jsonl:1: the scale of LoRA 'style:nan' must be a finite"):
        read_prompt_file(path)


def test_adapters_work_on_int8_quantized_blocks_and_fusing_them_is_refused(model_dir, adapters):
    pytest.importorskip("torchao")  # the [quant] extra (in [test])
    plain = InfinityStarPipeline.from_pretrained(model_dir, device="cpu")
    quant = InfinityStarPipeline.from_pretrained(model_dir, device="cpu", quantize="int8")
    x = torch.randn(1, 5, plain.transformer.cfg.embed_dim, generator=torch.Generator().manual_seed(0))
    layer_of = {p: p.transformer.blocks[0].attn.q_proj for p in (plain, quant)}
    base = {p: layer_of[p](x) for p in (plain, quant)}
    for p in (plain, quant):
        p.load_lora(adapters["style"], scale=1.0)
    delta = {p: layer_of[p](x) - base[p] for p in (plain, quant)}
    assert delta[plain].abs().max() > 0.1  # the adapter changes the layer ...
    assert torch.allclose(delta[quant], delta[plain], atol=1e-5)  # ... by the same float update on int8 weights
    with pytest.raises(LoraError, match="cannot fuse adapters into int8-quantized weights"):
        quant.fuse_lora()
    quant.set_progress_bar_config(disable=True)
    assert quant(PROMPT, seed=3).frames.shape == plain(PROMPT, seed=3).frames.shape


def test_adapters_travel_with_offloaded_blocks(model_dir, adapters):
    plain = InfinityStarPipeline.from_pretrained(model_dir, device="cpu")
    streamed = InfinityStarPipeline.from_pretrained(model_dir, device="cpu", offload="blocks")
    for p in (plain, streamed):
        p.set_progress_bar_config(disable=True)
    base = _frames(streamed)
    for p in (plain, streamed):
        p.load_lora(adapters["style"], scale=1.0)
    styled = _frames(streamed)
    assert np.array_equal(styled, _frames(plain)) and not np.array_equal(styled, base)
    streamed.unload_lora()  # the offload's list of block tensors forgets the adapters again
    assert np.array_equal(_frames(streamed), base)
