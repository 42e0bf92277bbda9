"""Tokenizers: a thin wrapper over Hugging Face tokenizers, and a small demo tokenizer.

`Tokenizer.from_dir` loads any tokenizer saved by `save_pretrained` from a local
directory (nothing is downloaded). `build_demo_tokenizer` trains a byte-level BPE
tokenizer with a ChatML chat template on local text, for the built-in demo.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import transformers
from tokenizers import Tokenizer as _BackendTokenizer
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
BYTE_ALPHABET_SIZE = 256

# Pieces a text is split into before BPE: contractions, words, single digits, punctuation runs,
# newlines and other whitespace (the split Qwen2 tokenizers use).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# ChatML, as used by Qwen2 (without its default system prompt).
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Any of these files in a directory marks it as holding a saved tokenizer.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """A Hugging Face tokenizer together with the ids the RL loop needs.

    Attributes:
      hf: the underlying `transformers` tokenizer.
      vocab_size: number of tokens, added tokens included (`len(hf)`).
      pad_id: the pad token id, or the eos id when there is no pad token.
      eos_ids: ids that end a generation: eos, then `<|im_end|>` and
        `<|endoftext|>` where the vocabulary has them (no repeats).
      bos_id: the bos token id, or None.
      has_chat_template: whether `hf` carries a chat template.
    """

    hf: Any
    vocab_size: int
    pad_id: int
    eos_ids: tuple[int, ...]
    bos_id: int | None
    has_chat_template: bool

    @classmethod
    def from_hf(cls, hf: Any) -> Tokenizer:
        """Wraps a loaded `transformers` tokenizer."""
        vocab = hf.get_vocab()
        candidates = [hf.eos_token_id] + [vocab.get(t) for t in (IM_END, ENDOFTEXT)]
        eos_ids = tuple(dict.fromkeys(int(i) for i in candidates if i is not None))
        if not eos_ids:
            raise ValueError(f"tokenizer {hf.name_or_path!r} has no eos token")
        pad_id = hf.pad_token_id if hf.pad_token_id is not None else eos_ids[0]
        return cls(
            hf=hf,
            vocab_size=len(hf),
            pad_id=int(pad_id),
            eos_ids=eos_ids,
            bos_id=None if hf.bos_token_id is None else int(hf.bos_token_id),
            has_chat_template=bool(getattr(hf, "chat_template", None)),
        )

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Loads a tokenizer saved with `save_pretrained` from a local directory."""
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory not found: {path}")
        if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
            raise ValueError(
                f"no tokenizer files in {path}: expected one of {', '.join(TOKENIZER_FILES)}"
            )
        return cls.from_hf(transformers.AutoTokenizer.from_pretrained(path, local_files_only=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without special tokens added."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a conversation.

        Uses the chat template when there is one; otherwise joins the message
        contents with newlines (and `add_generation_prompt` has no effect).
        """
        if not self.has_chat_template:
            return self.encode("\n".join(m["content"] for m in messages))
        out = self.hf.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt
        )
        # transformers 5 returns a BatchEncoding by default; 4.x a plain list.
        if isinstance(out, Mapping):
            out = out["input_ids"]
        return [int(i) for i in out]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (a list or a 1-D numpy array)."""
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(
        self, batch: Iterable[Sequence[int]], skip_special_tokens: bool = True
    ) -> list[str]:
        """Texts of several id sequences (lists or numpy arrays)."""
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def save(self, path: str | os.PathLike) -> None:
        """Writes the tokenizer to `path` with `save_pretrained`."""
        self.hf.save_pretrained(os.fspath(path))


def build_demo_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Tokenizer:
    """Trains a byte-level BPE tokenizer with a ChatML chat template on `texts`.

    Every string round-trips, since all 256 bytes are in the base alphabet.
    `vocab_size` counts the bytes and the special tokens `<|endoftext|>` (also
    the pad token), `<|im_start|>` and `<|im_end|>` (the eos token); it is met
    exactly when `texts` offer enough merges. Training is deterministic.
    """
    minimum = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} is below the minimum of {minimum}")
    backend = _BackendTokenizer(models.BPE())
    # Qwen2's pre-tokenization: `transformers` loads a directory whose config.json says qwen2 with
    # Qwen2Tokenizer, which imposes it whatever tokenizer.json holds, so a model trained with any other
    # would see different tokens once saved and reloaded.
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=IM_END, pad_token=ENDOFTEXT
    )
    hf.chat_template = CHATML_TEMPLATE
    return Tokenizer.from_hf(hf)


def demo_corpus() -> list[str]:
    """A few thousand short synthetic arithmetic sentences (seeded, deterministic)."""
    rng = random.Random(0)
    phrasings = (
        "Compute {a} + {b}. The answer is \\boxed{{{s}}}.",
        "What is {a} plus {b}? The answer is \\boxed{{{s}}}.",
        "Compute {a} - {b}. The answer is \\boxed{{{d}}}.",
        "What is {a} minus {b}? {a} - {b} = {d}, so the answer is \\boxed{{{d}}}.",
        "Compute {a} * {b}. The answer is \\boxed{{{p}}}.",
        "What is {a} times {b}? We get {a} * {b} = {p}. The answer is \\boxed{{{p}}}.",
    )
    corpus = []
    for _ in range(3000):
        a, b = rng.randint(0, 999), rng.randint(0, 99)
        corpus.append(rng.choice(phrasings).format(a=a, b=b, s=a + b, d=a - b, p=a * b))
    return corpus
