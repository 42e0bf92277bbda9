"""The supervised warm start: masked cross-entropy on response tokens (the SFT model PRIME starts from).

    L(θ) = − Σ_{i,t} m_{i,t} log π_θ(y_{i,t} | x_i, y_{i,<t}) / Σ_{i,t} m_{i,t}

over the tokens of the reference responses y (their end token included), never the prompt x.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from primejax.models import ModelConfig
from primejax.models.params import Params
from primejax.parallel.rules import constrain_rows, replicate
from primejax.sampling import bucket, pad_prompts
from primejax.tokenizer import Tokenizer
from primejax.train.logprobs import Sequences, chunked_log_probs
from primejax.train.steps import ModelState


def encode_examples(tokenizer: Tokenizer, examples: Sequence[tuple[list[dict], str]], max_response_length: int,
                    prompt_length: int | None = None) -> Sequences:
    """(prompt messages, response text) pairs as a `Sequences` batch (numpy).

    The prompt gets the chat template with the generation prompt, left-padded to `prompt_length`
    (default: the bucket of the longest); the response is its tokens plus the first end token,
    right-padded to `max_response_length`. ValueError names an example whose response is longer.
    """
    prompts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True) for messages, _ in examples]
    prompt_tokens, prompt_mask = pad_prompts(prompts, tokenizer.pad_id, prompt_length)
    response_tokens = np.full((len(examples), max_response_length), tokenizer.pad_id, np.int32)
    response_mask = np.zeros((len(examples), max_response_length), np.int32)
    for i, (_, text) in enumerate(examples):
        ids = tokenizer.encode(text) + [tokenizer.eos_ids[0]]
        if len(ids) > max_response_length:
            raise ValueError(f"SFT example {i} has a response of {len(ids)} tokens (end token included), more than "
                             f"max_response_length={max_response_length}")
        response_tokens[i, :len(ids)] = ids
        response_mask[i, :len(ids)] = 1
    return Sequences(tokens=np.concatenate([prompt_tokens, response_tokens], 1),
                     segment_ids=np.concatenate([prompt_mask, response_mask], 1), response_mask=response_mask)


def prompt_bucket(tokenizer: Tokenizer, examples: Sequence[tuple[list[dict], str]]) -> int:
    """The padded prompt length that fits every example's templated prompt."""
    return bucket(max(len(tokenizer.apply_chat_template(m, add_generation_prompt=True)) for m, _ in examples))


def sft_loss(params: Params, sequences: Sequences, *, config: ModelConfig, chunk: int, num_tokens: jax.Array,
             keep_logits: bool = False) -> jax.Array:
    """Σ −log π_θ over the response mask, divided by `num_tokens` (the mini-batch's token count)."""
    log_probs, _ = chunked_log_probs(params, sequences, config=config, chunk=chunk, with_entropy=False,
                                     keep_logits=keep_logits)
    return -jnp.sum(jnp.where(sequences.response_mask, log_probs, 0.0)) / num_tokens


def sft_step(state: ModelState, sequences: Sequences, *, config: ModelConfig, optimizer: optax.GradientTransformation,
             micro_batch: int, chunk: int, keep_logits: bool = False) -> tuple[ModelState, dict[str, jax.Array]]:
    """One AdamW step on the batch's token-mean loss, gradients accumulated over micro-batches (on a
    mesh, each micro-batch's rows laid over the batch axes, as in the PRIME updates)."""
    num_tokens = jnp.maximum(jnp.sum(sequences.response_mask, dtype=jnp.float32), 1.0)
    micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // micro_batch, micro_batch, *x.shape[1:]),
                         replicate(sequences))
    grad_fn = jax.value_and_grad(partial(sft_loss, config=config, chunk=chunk, num_tokens=num_tokens,
                                         keep_logits=keep_logits))

    def accumulate(carry, batch):
        loss, grads = carry
        value, g = grad_fn(state.params, constrain_rows(batch))
        return (loss + value, jax.tree.map(jnp.add, grads, g)), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params))
    (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return ModelState(optax.apply_updates(state.params, updates), opt_state), {
        "sft/loss": loss, "sft/grad_norm": optax.tree.norm(grads)}
