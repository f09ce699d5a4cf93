"""A tiny random T5 encoder and tokenizer, built offline, saved in the layout ``T5TextEncoder`` loads.

Used by the text tests and by the pipeline tests (``make_tiny_t5(root / "text_encoder/flan-t5-xl-official")``).
The tokenizer is a word-level vocabulary with T5's special ids (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) and appends
``</s>`` like T5, so a prompt of ``n`` known words has ``n + 1`` tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

TINY_T5_CHANNELS = 32

_WORDS = (
    "a an the of and in on with over under near at to from by while its their his her "
    "cat dog fox bird horse fish robot car boat tree flower river sea sky city street forest mountain garden "
    "gardener man woman child smiling handsome old young small big red blue green white black golden "
    "runs jumps walks flies swims drives looks smiles waters plants holds turns "
    "quick lazy bright dark slow fast sunny rainy morning evening light shadow camera close-up view scale detail "
    "video image scene"
)
TINY_T5_WORDS = tuple(_WORDS.split())

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in TINY_T5_WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512
    )
    return tokenizer, len(vocab)


def make_tiny_t5(folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny random T5 encoder (d_model 32, 2 layers) and its tokenizer into ``folder``; return the folder."""
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, vocab_size = _tiny_tokenizer()
    config = T5Config(
        vocab_size=vocab_size,
        d_model=TINY_T5_CHANNELS,
        d_kv=8,
        num_heads=2,
        num_layers=2,
        d_ff=64,
        feed_forward_proj="gated-gelu",  # as Flan-T5
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
