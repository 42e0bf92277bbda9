"""Decoder-only transformers of the Qwen2 and Llama families, and their checkpoints."""

from primejax.models.config import ConfigError, ModelConfig, RopeConfig
from primejax.models.hf_checkpoint import CheckpointError, load_hf_checkpoint, save_hf_checkpoint
from primejax.models.params import init_params, param_axes, param_shapes, weight_specs
from primejax.models.transformer import (
    KVCache,
    cache_axes,
    forward,
    hidden_states,
    init_cache,
    logits_from_hidden,
    positions_from_segment_ids,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "KVCache",
    "ModelConfig",
    "RopeConfig",
    "cache_axes",
    "forward",
    "hidden_states",
    "init_cache",
    "init_params",
    "load_hf_checkpoint",
    "logits_from_hidden",
    "param_axes",
    "param_shapes",
    "positions_from_segment_ids",
    "save_hf_checkpoint",
    "weight_specs",
]
