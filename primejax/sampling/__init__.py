"""Rollout generation: batched sampling with a KV cache, n samples per prompt."""

from primejax.sampling.next_token import SamplingParams, draw, next_token, sampling_logits
from primejax.sampling.sampler import Rollout, bucket, generate, pad_prompts
from primejax.sampling.text import decode_responses, decode_rows, encode_prompts, generate_text

__all__ = [
    "Rollout",
    "SamplingParams",
    "bucket",
    "decode_responses",
    "decode_rows",
    "draw",
    "encode_prompts",
    "generate",
    "generate_text",
    "next_token",
    "pad_prompts",
    "sampling_logits",
]
