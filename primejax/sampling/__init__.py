"""Rollout generation: batched sampling with a KV cache, n samples per prompt."""

from primejax.sampling.generate import Rollout, bucket, generate, pad_prompts
from primejax.sampling.next_token import SamplingParams, draw, next_token, sampling_logits

__all__ = ["Rollout", "SamplingParams", "bucket", "draw", "generate", "next_token", "pad_prompts", "sampling_logits"]
