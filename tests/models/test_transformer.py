"""The transformer on tiny configs: blocks, attention pattern, KV-cached steps, loss."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from infinitystar.models.config import TransformerConfig
from infinitystar.models.rope import text_rope
from infinitystar.models.transformer.attention import block_visibility, pack_block_ids
from infinitystar.models.transformer.layers import sdpa
from infinitystar.models.transformer.model import InfinityTransformer
from infinitystar.schedule import schedule_from_scales
from infinitystar.train.transformer.loss import bit_loss, scale_loss_weights

CFG = TransformerConfig(
    embed_dim=64, depth=2, num_heads=4, num_kv_heads=2, mlp_hidden=128, block_chunks=1, text_channels=24
)
L_TEXT = 5


def _schedule():
    """Image pyramid + two clips of 2 latent frames; clip c refers to the last scale of clip c-1."""
    hw = [(1, 1), (2, 3), (3, 4)]
    shapes = [(1, *s) for s in hw] + [(2, *s) for s in hw] * 2
    return schedule_from_scales(
        shapes, 3, image_repetition=[2, 1, 2], video_repetition=[1, 2, 2], detail_scale_min_tokens=6
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = InfinityTransformer(CFG).eval()
    with torch.no_grad():  # larger than the training init so that every path matters numerically
        for p in m.parameters():
            if p.ndim >= 2:
                p.normal_(0, 1 / math.sqrt(p.shape[-1]))
            else:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _text(n=L_TEXT, seed=1):
    return torch.randn(n, CFG.text_channels, generator=torch.Generator().manual_seed(seed))


def _codes(sched, batch=1, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, sched.num_visual_tokens(), CFG.latent_channels, generator=g)


def _scale_slices(sched):
    out, start = [], 0
    for sc in sched.scales:
        out.append(slice(start, start + sc.num_tokens))
        start += sc.num_tokens
    return out


def _head_logits(out, sched, s, sl):
    return (out.semantic if sched.scales[s].semantic else out.detail)[:, sl]


# --------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------


def _reference_attention(attn, x, cos, sin):
    """Straightforward re-derivation: repeat_kv copies, complex RoPE, explicit softmax."""
    b, n, _ = x.shape
    h, kv, hd = attn.num_heads, attn.num_kv_heads, attn.head_dim

    def norm(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * w

    def rope(t):
        z = torch.view_as_complex(t.unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(z * torch.complex(cos, sin)[:, None]).flatten(-2)  # [b, n, heads, hd/2]

    q = rope(norm((x @ attn.q_proj.weight.T).view(b, n, h, hd), attn.q_norm.weight))
    k = rope(norm((x @ attn.k_proj.weight.T).view(b, n, kv, hd), attn.k_norm.weight))
    v = (x @ attn.v_proj.weight.T).view(b, n, kv, hd)
    k = k.repeat_interleave(h // kv, dim=2)  # query head i uses kv head i // (h / kv)
    v = v.repeat_interleave(h // kv, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
    o = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, n, h * hd)
    return o @ attn.o_proj.weight.T


def test_gqa_attention_matches_repeat_kv_reference(model):
    attn = model.blocks[0].attn
    x = torch.randn(2, 6, CFG.embed_dim)
    cos, sin = text_rope(6, CFG.head_dim)
    with torch.no_grad():
        ours = attn(x, cos, sin, lambda q, k, v: sdpa(q, k, v))
        ref = _reference_attention(attn, x, cos, sin)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_sdpa_gqa_equals_repeated_heads():
    q, k, v = torch.randn(2, 8, 5, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = torch.rand(2, 1, 5, 7) > 0.3
    mask[..., 0] = True
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), attn_mask=mask)
    torch.testing.assert_close(sdpa(q, k, v, mask), expected, rtol=1e-6, atol=1e-6)


def test_block_residual_structure(model):
    blk = model.blocks[1]
    x = torch.randn(1, 4, CFG.embed_dim)
    cos, sin = text_rope(4, CFG.head_dim)
    with torch.no_grad():
        h = x + blk.attn(blk.attn_norm(x), cos, sin, lambda q, k, v: sdpa(q, k, v))
        mlp = blk.mlp.down_proj(F.silu(blk.mlp.gate_proj(blk.mlp_norm(h))) * blk.mlp.up_proj(blk.mlp_norm(h)))
        torch.testing.assert_close(blk(x, cos, sin, lambda q, k, v: sdpa(q, k, v)), h + mlp)


def test_rmsnorm_computes_in_float32():
    from infinitystar.models.transformer.layers import RMSNorm

    norm = RMSNorm(8).to(torch.bfloat16)
    x = torch.randn(3, 8).to(torch.bfloat16) * 100
    y = norm(x)
    assert y.dtype == torch.bfloat16
    ref = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    assert torch.equal(y, ref)


# --------------------------------------------------------------------------------------
# Training pack and its attention pattern
# --------------------------------------------------------------------------------------


def test_block_visibility_and_block_ids():
    sched = _schedule()
    vis = block_visibility(sched)
    s = len(sched.scales)
    assert vis.shape == (s + 2, s + 2)
    for sc in sched.scales:
        allowed = {sc.index, s, *sc.ref_scales}
        assert {k for k in range(s + 2) if vis[sc.index, k]} == allowed
    assert vis[s].tolist() == [False] * s + [True, False]  # text sees only itself
    assert not vis[s + 1].any() and not vis[:, s + 1].any()  # padding: nothing either way
    assert vis[3, 2] and vis[6, 5] and not vis[6, 2]  # each clip sees the previous clip's last scale
    ids = pack_block_ids(sched, [2, 4], sched.num_visual_tokens() + 6)
    assert ids.shape == (2, sched.num_visual_tokens() + 6)
    assert ids[0, -5:].tolist() == [s] + [s + 1] * 4  # text of 2 tokens, then 4 padding
    assert ids[1, -5:].tolist() == [s, s, s, s + 1, s + 1]  # text of 4 tokens, then 2 padding
    assert ids[1, : sched.scales[0].num_tokens + 1].tolist() == [0, 1]


def _influences(sched, depth):
    """Scales whose output an input change of each scale reaches: itself, then through refs, one
    hop per layer (scale 5 sees scale 2 in layer 1, scale 6 sees the changed scale 5 in layer 2)."""
    reach = {s: {s} for s in range(len(sched.scales))}
    for _ in range(depth):
        for s in reach:
            reach[s] |= {sc.index for sc in sched.scales if set(sc.ref_scales) & reach[s]}
    return reach


def test_scale_depends_only_on_itself_text_and_refs(model):
    sched = _schedule()
    slices = _scale_slices(sched)
    codes, text = _codes(sched), _text()
    reach = _influences(sched, CFG.depth)
    assert reach[2] == {2, 3, 4, 5, 6, 7, 8} and reach[5] == {5, 6, 7, 8} and reach[0] == {0}
    with torch.no_grad():
        base = model(codes, text, sched)
        for changed in range(len(sched.scales)):
            x = codes.clone()
            x[:, slices[changed]] += 1.0
            out = model(x, text, sched)
            for s in range(len(sched.scales)):
                diff = (out.detail[:, slices[s]] - base.detail[:, slices[s]]).abs().max().item()
                if s in reach[changed]:
                    assert diff > 1e-4, f"scale {s} ignores a change of scale {changed}"
                else:
                    assert diff <= 1e-6, f"scale {s} changed by {diff} after changing unrelated scale {changed}"
        other = model(codes, _text(seed=9), sched)
        assert not torch.allclose(other.detail, base.detail)  # every scale sees the text


def test_batch_rows_with_different_text_lengths_are_independent(model):
    sched = _schedule()
    codes = _codes(sched, batch=2)
    texts = [_text(3, seed=4), _text(7, seed=5)]
    with torch.no_grad():
        both = model(codes, texts, sched)
        for b in range(2):
            alone = model(codes[b : b + 1], texts[b], sched)
            torch.testing.assert_close(both.detail[b : b + 1], alone.detail, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(both.semantic[b : b + 1], alone.semantic, rtol=1e-5, atol=1e-5)


def test_flex_attention_path_matches_dense(model):
    sched = _schedule()
    codes, texts = _codes(sched, batch=2), [_text(3), _text(6, seed=3)]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex attention warns that it is not compiled
        dense = model(codes, texts, sched, attn_impl="dense")
        flex = model(codes, texts, sched, attn_impl="flex")
    torch.testing.assert_close(flex.detail, dense.detail, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flex.semantic, dense.semantic, rtol=1e-5, atol=1e-5)


def test_auto_attention_falls_back_to_dense_when_flex_fails(model, monkeypatch):
    import infinitystar.models.transformer.model as T

    sched = _schedule()
    codes = _codes(sched)

    def broken(*args, **kwargs):
        raise RuntimeError("no flex here")

    monkeypatch.setattr(T, "_flex_attend", broken)
    monkeypatch.setattr(T, "_FLEX_FAILED", False)
    monkeypatch.setattr(T, "_flex_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    with torch.no_grad(), pytest.warns(UserWarning, match="FlexAttention failed"):
        out = model(codes, _text(), sched, attn_impl="auto")
    assert T._FLEX_FAILED  # later calls go straight to the dense path, without a warning each step
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(codes, _text(), sched, attn_impl="auto")
    monkeypatch.undo()
    with torch.no_grad():
        torch.testing.assert_close(out.detail, model(codes, _text(), sched, attn_impl="dense").detail)
    with pytest.raises(ValueError, match="attn_impl"):
        model(codes, _text(), sched, attn_impl="sparse")


def test_condition_dropout_replaces_text_by_null_text(model):
    sched = _schedule()
    codes, text = _codes(sched), _text()
    with torch.no_grad():
        kept = model(codes, text, sched, cond_drop_prob=0.0)
        dropped = model(codes, text, sched, cond_drop_prob=1.0, generator=torch.Generator().manual_seed(0))
        null = model(codes, model.cfg_uncond[:L_TEXT], sched)
        plain = model(codes, text, sched)
    torch.testing.assert_close(dropped.detail, null.detail)
    torch.testing.assert_close(kept.detail, plain.detail)
    assert not torch.allclose(dropped.detail, kept.detail)


def test_step_counters_are_validated(model):
    sched = _schedule()
    with pytest.raises(ValueError, match="step counter of scale 0"):
        model(_codes(sched), _text(), sched, [5] + [sc.first_step for sc in sched.scales[1:]])
    with pytest.raises(ValueError, match="tokens"):
        model(_codes(sched)[:, :-1], _text(), sched)


# --------------------------------------------------------------------------------------
# KV-cached inference
# --------------------------------------------------------------------------------------


def _run_steps(model, sched, rows_text, step_codes, only=None, lengths=None):
    cache = model.new_cache(sched, rows_text.shape[0])
    model.prefill_text(cache, rows_text, lengths)
    logits = {}
    for st in sched.steps:
        if only is None or st.index in only:
            logits[st.index] = model.step(cache, step_codes[st.index], sched, st)
    return logits, cache


def _random_step_codes(sched, rows, seed=3):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for st in sched.steps:
        n = sched.scales[st.scale].num_tokens
        out[st.index] = torch.randn(1, n, CFG.latent_channels, generator=g).expand(rows, -1, -1)
    return out


def test_cached_steps_equal_training_forward(model):
    """With every referenced scale packed at its last repetition, the training pack and the
    KV cache compute the same logits, for every repetition of every scale, both rows."""
    sched = _schedule()
    text = _text()
    rows = model.text_rows(text, guidance=True)
    assert torch.equal(rows[1], model.cfg_uncond[:L_TEXT])
    step_codes = _random_step_codes(sched, 2)
    with torch.no_grad():
        logits, _ = _run_steps(model, sched, rows, step_codes)
        slices = _scale_slices(sched)
        for st in sched.steps:
            counters = [sc.last_step for sc in sched.scales]
            counters[st.scale] = st.index
            packed = torch.cat(
                [step_codes[st.index if s == st.scale else sc.last_step][:1] for s, sc in enumerate(sched.scales)], 1
            ).expand(2, -1, -1)
            out = model(packed, [rows[0], rows[1]], sched, counters)
            expected = _head_logits(out, sched, st.scale, slices[st.scale])
            torch.testing.assert_close(logits[st.index], expected, rtol=1e-5, atol=1e-5)
            assert logits[st.index].dtype == torch.float32


def test_cache_keeps_only_what_later_scales_need(model):
    sched = _schedule()
    rows = model.text_rows(_text(), guidance=False)
    step_codes = _random_step_codes(sched, 1)
    cache = model.new_cache(sched, 1)
    model.prefill_text(cache, rows)
    held = []
    with torch.no_grad():
        for st in sched.steps:
            model.step(cache, step_codes[st.index], sched, st)
            held.append((st.scale, st.repetition, sorted(cache.scales)))
    by_scale = {}
    for scale, _, kept in held:
        by_scale[scale] = kept  # after the scale's last repetition
    assert by_scale[1] == [] and by_scale[2] == [2]  # the image's last scale, for clip 1
    assert by_scale[4] == [2] and by_scale[5] == [5]  # clip 1 done: its last scale replaces it
    assert by_scale[8] == []  # nothing refers to the last clip
    assert cache.has_text and cache.text_k[0].shape == (1, CFG.num_kv_heads, L_TEXT, CFG.head_dim)


def test_skipped_steps_give_the_same_logits(model):
    """The generation loop may skip teacher-forced steps whose K/V nobody needs."""
    sched = _schedule()
    rows = model.text_rows(_text(), guidance=False)
    step_codes = _random_step_codes(sched, 1)
    only = {sched.scales[2].last_step} | {st.index for st in sched.steps if st.scale >= 3}
    with torch.no_grad():
        full, _ = _run_steps(model, sched, rows, step_codes)
        part, _ = _run_steps(model, sched, rows, step_codes, only=only)
    for i in only:
        torch.testing.assert_close(part[i], full[i], rtol=0, atol=0)


def test_step_needs_the_reference_and_the_text(model):
    sched = _schedule()
    rows = model.text_rows(_text(), guidance=False)
    step_codes = _random_step_codes(sched, 1)
    cache = model.new_cache(sched, 1)
    first_clip_step = sched.steps[sched.scales[3].first_step]
    with torch.no_grad():
        with pytest.raises(RuntimeError, match="prefill_text"):
            model.step(cache, step_codes[0], sched, sched.steps[0])
        model.prefill_text(cache, rows)
        with pytest.raises(RuntimeError, match="not cached"):
            model.step(cache, step_codes[first_clip_step.index], sched, first_clip_step)
        with pytest.raises(ValueError, match="codes_input"):
            model.step(cache, step_codes[0][:, :0], sched, sched.steps[0])


def test_negative_prompt_of_another_length_is_masked(model):
    sched = _schedule()
    text, negative = _text(7), _text(3, seed=8)
    with pytest.raises(ValueError, match="return_lengths"):
        model.text_rows(text, guidance=True, negative=negative)
    rows, lengths = model.text_rows(text, guidance=True, negative=negative, return_lengths=True)
    assert rows.shape == (2, 7, CFG.text_channels) and lengths == [7, 3]
    step_codes = _random_step_codes(sched, 2)
    with torch.no_grad():
        both, _ = _run_steps(model, sched, rows, step_codes, lengths=lengths)
        cond, _ = _run_steps(model, sched, text[None], {k: v[:1] for k, v in step_codes.items()})
        uncond, _ = _run_steps(model, sched, negative[None], {k: v[:1] for k, v in step_codes.items()})
    for i in both:
        torch.testing.assert_close(both[i][:1], cond[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(both[i][1:], uncond[i], rtol=1e-5, atol=1e-5)


def test_long_prompt_is_truncated_with_a_warning(model):
    long = torch.randn(CFG.text_maxlen + 9, CFG.text_channels)
    with pytest.warns(UserWarning, match="only the first 512"):
        rows = model.text_rows(long, guidance=True)
    assert rows.shape == (2, CFG.text_maxlen, CFG.text_channels)
    assert torch.equal(rows[0], long[: CFG.text_maxlen])
    cache = model.new_cache(_schedule(), 1)
    with pytest.warns(UserWarning, match="only the first 512"), torch.no_grad():
        model.prefill_text(cache, long[None])
    assert cache.text_length == CFG.text_maxlen


def test_bf16_model_runs_and_returns_fp32_logits(model):
    import copy

    sched = _schedule()
    m16 = copy.deepcopy(model).to(torch.bfloat16)
    rows = m16.text_rows(_text(), guidance=False)
    step_codes = _random_step_codes(sched, 1)
    with torch.no_grad():
        ref, _ = _run_steps(model, sched, rows, step_codes, only={0, 1})
        got, cache = _run_steps(m16, sched, rows, step_codes, only={0, 1})
    assert cache.text_k[0].dtype == torch.bfloat16
    for i in ref:
        assert got[i].dtype == torch.float32
        torch.testing.assert_close(got[i], ref[i], rtol=0.1, atol=0.1)


# --------------------------------------------------------------------------------------
# Loss
# --------------------------------------------------------------------------------------


def test_scale_weights_by_hand():
    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2)], 2, detail_scale_min_tokens=100)  # V = 1, 4
    w0, w1 = 4 ** (1 / 5) * 1, 1.0 * 4
    torch.testing.assert_close(scale_loss_weights(sched, 4), torch.tensor([w0, w1]) / (w0 + w1))
    torch.testing.assert_close(scale_loss_weights(sched, 0), torch.tensor([1.0, 4.0]) / 5)  # plain token mean
    big = schedule_from_scales([(1, 1, 1), (1, 32, 32)], 2, detail_scale_min_tokens=10**6)  # V = 1, 1024
    w0 = 40.0  # 1024 ** (1 / 1.5) = 101.6, clipped at max_reweight
    torch.testing.assert_close(scale_loss_weights(big, 0.5), torch.tensor([w0, 1024.0]) / (w0 + 1024))


def test_bit_loss_by_hand():
    """Scale 0 (semantic, 1 token): logits (0, 0) -> ln 2 per bit. Scale 1 (detail, 4 tokens):
    the correct bit gets +20 -> ~0 loss, except one token whose bits are all wrong."""
    sched = schedule_from_scales([(1, 1, 1), (1, 2, 2)], 2, detail_scale_min_tokens=2)
    assert sched.scales[0].semantic and not sched.scales[1].semantic
    g = torch.Generator().manual_seed(0)
    labels = [torch.randint(0, 2, (1, 1, 1, 1, 16), generator=g), torch.randint(0, 2, (1, 1, 2, 2, 64), generator=g)]
    semantic = torch.zeros(1, 5, 32)
    detail = torch.full((1, 5, 128), 123.0)  # scale 0 must not read the detail head
    lab1 = labels[1].reshape(4, 64)
    pairs = F.one_hot(lab1, 2).float() * 20  # [4, 64, 2]: +20 on the label's logit
    pairs[3] = F.one_hot(1 - lab1[3], 2).float() * 20  # last token: every bit wrong by 20
    detail[0, 1:] = pairs.reshape(4, 128)
    out = bit_loss(detail, semantic, labels, sched, reweight_by_scale=4)
    wrong = F.softplus(torch.tensor(20.0)).item()  # -log sigmoid(-20)
    right = F.softplus(torch.tensor(-20.0)).item()
    torch.testing.assert_close(out.token_loss[0], torch.tensor([math.log(2), right, right, right, wrong]))
    assert out.token_acc[0, 1:].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert out.token_acc[0, 0].item() == float((labels[0] == 0).float().mean())  # ties pick bit 0
    s1 = (3 * right + wrong) / 4
    w0, w1 = 4 ** (1 / 5), 4.0
    torch.testing.assert_close(out.loss, torch.tensor((w0 * math.log(2) + w1 * s1) / (w0 + w1)))
    torch.testing.assert_close(out.scale_loss[0], torch.tensor([math.log(2), s1]))


def test_bit_loss_averages_over_the_batch_and_backpropagates(model):
    sched = _schedule()
    codes = _codes(sched, batch=2)
    g = torch.Generator().manual_seed(5)
    labels = [torch.randint(0, 2, (2, sc.num_tokens, sched.bits(sc.index)), generator=g) for sc in sched.scales]
    out = model(codes, [_text(), _text(4, seed=2)], sched)
    loss = bit_loss(out.detail, out.semantic, labels, sched)
    singles = [
        bit_loss(out.detail[b : b + 1], out.semantic[b : b + 1], [lab[b : b + 1] for lab in labels], sched).loss
        for b in range(2)
    ]
    torch.testing.assert_close(loss.loss, (singles[0] + singles[1]) / 2)
    loss.loss.backward()
    assert model.word_embed.weight.grad is not None and model.blocks[0].attn.q_proj.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
