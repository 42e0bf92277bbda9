"""Text in, text out: tokenize (with the chat template), sample, detokenize."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from primejax.models.config import ModelConfig
from primejax.models.params import Params
from primejax.sampling.next_token import SamplingParams
from primejax.sampling.sampler import Rollout, generate, pad_prompts
from primejax.tokenizer import Tokenizer

Prompt = str | list[dict]


def encode_prompts(tokenizer: Tokenizer, prompts: Sequence[Prompt], chat: bool = True) -> list[list[int]]:
    """Token ids of each prompt: a string (a user message when `chat`) or a list of chat messages.

    With `chat`, `Tokenizer.apply_chat_template` applies the template with the generation prompt
    (or joins the contents when the tokenizer has none); otherwise the contents are encoded as
    they are.
    """
    ids = []
    for prompt in prompts:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if chat:
            ids.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
        else:
            ids.append(tokenizer.encode("\n".join(m["content"] for m in messages)))
    return ids


def decode_responses(tokenizer: Tokenizer, rollout: Rollout) -> list[str]:
    """The text of every response row (masked-in tokens, special tokens skipped)."""
    return decode_rows(tokenizer, np.asarray(rollout.response_tokens), np.asarray(rollout.response_mask))


def decode_rows(tokenizer: Tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """The text of every row of response `tokens` [rows, R] where `mask` is 1 (special tokens skipped)."""
    return [tokenizer.decode(row[m.astype(bool)]) for row, m in zip(tokens, mask)]


def generate_text(
    params: Params,
    config: ModelConfig,
    tokenizer: Tokenizer,
    prompts: Sequence[Prompt],
    key: jax.Array,
    sampling: SamplingParams,
    chat: bool = True,
) -> list[list[str]]:
    """`sampling.n` response texts for each prompt.

    Generation ends at the tokenizer's end tokens unless `sampling.eos_ids` names others; the
    tokenizer's pad id pads.
    """
    sampling = sampling.replace(eos_ids=sampling.eos_ids or tokenizer.eos_ids, pad_id=tokenizer.pad_id)
    tokens, mask = pad_prompts(encode_prompts(tokenizer, prompts, chat), tokenizer.pad_id)
    rollout = generate(params, tokens, mask, key, config=config, sampling=sampling)
    texts = decode_responses(tokenizer, rollout)
    return [texts[g * sampling.n:(g + 1) * sampling.n] for g in range(len(prompts))]
