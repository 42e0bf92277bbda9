"""Tests for primejax.tokenizer: the demo tokenizer and the local-directory wrapper."""

import re

import jax
import numpy as np
import pytest
import tokenizers
import transformers

from primejax.models import ModelConfig, init_params, save_hf_checkpoint
from primejax.tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    Tokenizer,
    build_demo_tokenizer,
    demo_corpus,
)

VOCAB_SIZE = 300
TINY = ModelConfig(vocab_size=VOCAB_SIZE, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2,
                   num_kv_heads=1, head_dim=8)
UNSEEN = "héllo ∑ 日本 — emoji 🙂, tabs\tand\nnewlines  "
CONVERSATION = [
    {"role": "system", "content": "Put the final answer in \\boxed{}."},
    {"role": "user", "content": "Compute 12 + 30."},
]
CHATML = (
    "<|im_start|>system\nPut the final answer in \\boxed{}.<|im_end|>\n"
    "<|im_start|>user\nCompute 12 + 30.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def corpus():
    return demo_corpus()


@pytest.fixture(scope="module")
def tok(corpus):
    return build_demo_tokenizer(corpus, vocab_size=VOCAB_SIZE)


def test_demo_corpus_is_deterministic_arithmetic(corpus):
    assert 1000 <= len(corpus) <= 10000
    assert corpus == demo_corpus()
    assert all("\\boxed{" in line for line in corpus)


def test_exact_vocab_size(tok):
    assert tok.vocab_size == VOCAB_SIZE
    assert len(tok.hf) == VOCAB_SIZE


def test_training_is_deterministic(tok, corpus):
    again = build_demo_tokenizer(corpus, vocab_size=VOCAB_SIZE)
    assert again.hf.get_vocab() == tok.hf.get_vocab()
    assert again.encode(corpus[0]) == tok.encode(corpus[0])


def test_special_ids(tok):
    vocab = tok.hf.get_vocab()
    assert tok.pad_id == vocab[ENDOFTEXT]
    assert tok.eos_ids == (vocab[IM_END], vocab[ENDOFTEXT])
    assert tok.hf.eos_token_id == vocab[IM_END]
    assert tok.bos_id is None
    assert len({vocab[ENDOFTEXT], vocab[IM_START], vocab[IM_END]}) == 3


def test_round_trip_corpus_text(tok, corpus):
    for text in corpus[:200]:
        ids = tok.encode(text)
        assert all(0 <= i < VOCAB_SIZE for i in ids)
        assert tok.decode(ids) == text
    # Merges were learned: corpus text takes well under one token per byte (digits stay single tokens).
    assert len(tok.encode(corpus[0])) < 0.6 * len(corpus[0].encode())


def test_round_trip_unseen_unicode(tok):
    ids = tok.encode(UNSEEN)
    assert tok.decode(ids) == UNSEEN
    assert tok.decode(np.asarray(ids, dtype=np.int32)) == UNSEEN


def test_encode_adds_no_special_tokens(tok):
    ids = tok.encode("Compute 1 + 2.")
    assert tok.pad_id not in ids
    assert not set(ids) & set(tok.eos_ids)


def test_chat_template_is_chatml(tok):
    assert tok.has_chat_template
    ids = tok.apply_chat_template(CONVERSATION)
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    assert tok.decode(ids, skip_special_tokens=False) == CHATML
    vocab = tok.hf.get_vocab()
    assert ids[0] == vocab[IM_START]
    assert ids.count(vocab[IM_START]) == 3 and ids.count(vocab[IM_END]) == 2


def test_chat_template_without_generation_prompt(tok):
    ids = tok.apply_chat_template(CONVERSATION, add_generation_prompt=False)
    assert tok.decode(ids, skip_special_tokens=False) == CHATML.removesuffix(
        "<|im_start|>assistant\n"
    )


def test_chat_fallback_without_template(tok):
    backend = tokenizers.Tokenizer.from_str(tok.hf.backend_tokenizer.to_str())
    plain = Tokenizer.from_hf(
        transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END)
    )
    assert not plain.has_chat_template
    assert plain.pad_id == plain.eos_ids[0] == tok.hf.get_vocab()[IM_END]
    ids = plain.apply_chat_template(CONVERSATION)
    assert plain.decode(ids) == "Put the final answer in \\boxed{}.\nCompute 12 + 30."


def test_decode_skips_special_tokens(tok):
    body = tok.encode("The answer is \\boxed{42}.")
    ids = [tok.hf.get_vocab()[IM_START], *body, tok.eos_ids[0], tok.pad_id, tok.pad_id]
    assert tok.decode(ids) == "The answer is \\boxed{42}."
    assert tok.decode(ids, skip_special_tokens=False) == (
        "<|im_start|>The answer is \\boxed{42}.<|im_end|><|endoftext|><|endoftext|>"
    )
    batch = np.asarray([body + [tok.pad_id] * 3, body[:3] + [tok.pad_id] * len(body)])
    assert tok.batch_decode(batch) == [tok.decode(body), tok.decode(body[:3])]


def test_save_and_reload(tok, corpus, tmp_path):
    tok.save(tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    for text in (corpus[0], corpus[-1], UNSEEN):
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.pad_id == tok.pad_id
    assert loaded.eos_ids == tok.eos_ids
    assert loaded.bos_id == tok.bos_id
    assert loaded.apply_chat_template(CONVERSATION) == tok.apply_chat_template(CONVERSATION)


def test_auto_tokenizer_loads_saved_dir(tok, tmp_path):
    tok.save(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert len(hf) == VOCAB_SIZE
    assert hf.encode(UNSEEN, add_special_tokens=False) == tok.encode(UNSEEN)
    assert hf.pad_token == ENDOFTEXT and hf.eos_token == IM_END
    text = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert text == CHATML


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_reload_next_to_a_model_config_keeps_the_tokens(tok, corpus, tmp_path, model_type):
    # transformers picks the tokenizer class from config.json's model_type (Qwen2Tokenizer imposes its
    # own pre-tokenization); a model's tokens must not change when its directory is reloaded.
    save_hf_checkpoint(tmp_path, init_params(TINY.replace(model_type=model_type), jax.random.key(0)),
                       TINY.replace(model_type=model_type))
    tok.save(tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    for text in (corpus[0], corpus[-1], "Compute 4 * (12 + 305). 12 + 305 = 317.", UNSEEN):
        assert loaded.encode(text) == tok.encode(text)
    assert loaded.apply_chat_template(CONVERSATION) == tok.apply_chat_template(CONVERSATION)


def test_missing_dir_raises_file_not_found(tmp_path):
    missing = tmp_path / "no_such_tokenizer"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        Tokenizer.from_dir(missing)


def test_dir_without_tokenizer_files_raises_value_error(tmp_path):
    (tmp_path / "README.md").write_text("not a tokenizer")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))) as err:
        Tokenizer.from_dir(tmp_path)
    assert "tokenizer.json" in str(err.value)


@pytest.mark.parametrize("size", [0, 100, 258])
def test_vocab_size_too_small_raises(corpus, size):
    with pytest.raises(ValueError, match=f"vocab_size={size}"):
        build_demo_tokenizer(corpus[:10], vocab_size=size)


def test_smallest_vocab_is_bytes_plus_specials(corpus):
    tiny = build_demo_tokenizer(corpus[:10], vocab_size=259)
    assert tiny.vocab_size == 259
    assert tiny.decode(tiny.encode(UNSEEN)) == UNSEEN
