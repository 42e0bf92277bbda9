"""Matmul FLOPs of the transformer's passes, counted from the architecture (2 FLOPs a multiply-add).

    per token and layer    2 · (H·(q + 2·kv) + q·H + 3·H·F)      q, kv = heads × head_dim, kv heads × head_dim
    attention, per layer   4 · q · (query positions × visible key positions)
    output head            2 · V · H per scored position

Softmax, norms and elementwise work are not counted: they are a few percent of a layer's FLOPs.
XLA's own `cost_analysis` counts a loop's body once, so it cannot count scanned layers or decode
steps; these formulas can.
"""

from __future__ import annotations

from primejax.models.config import ModelConfig


def layer_flops_per_token(config: ModelConfig) -> int:
    h, f = config.hidden_size, config.intermediate_size
    q, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    return 2 * (h * (q + 2 * kv) + q * h + 3 * h * f) * config.num_layers


def forward_flops(config: ModelConfig, rows: int, prompt_len: int, response_len: int) -> int:
    """One forward pass over rows of prompt + response tokens, the output head on the response only
    (as scoring and the updates apply it), full attention scores over the sequence."""
    seq = prompt_len + response_len
    return packed_forward_flops(config, rows, seq, tokens=rows * seq, scored=rows * response_len)


def packed_forward_flops(config: ModelConfig, rows: int, seq: int, *, tokens: int, scored: int) -> int:
    """One forward pass whose layers run on `tokens` tokens and whose head scores `scored` positions
    (a packed batch: `primejax.models.packing`), attention over rows of `seq` positions."""
    q = config.num_heads * config.head_dim
    return (tokens * layer_flops_per_token(config) + 2 * scored * config.vocab_size * config.hidden_size +
            4 * rows * seq * seq * q * config.num_layers)


def generation_flops(config: ModelConfig, prompts: int, n: int, prompt_len: int, response_len: int) -> int:
    """Prefill of `prompts` prompts once, then `n` responses each decoded token by token (each new
    token attends to its prompt and the tokens before it); the output head on every decoded position."""
    q = config.num_heads * config.head_dim
    head = 2 * config.vocab_size * config.hidden_size
    prefill = prompts * prompt_len * layer_flops_per_token(config) + 4 * prompts * prompt_len ** 2 * q * \
        config.num_layers + prompts * head
    rows = prompts * n
    attended = response_len * prompt_len + response_len * (response_len + 1) // 2
    decode = rows * response_len * (layer_flops_per_token(config) + head) + 4 * rows * attended * q * config.num_layers
    return prefill + decode
