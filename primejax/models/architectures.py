"""Published architectures by name, as their `config.json` fields, for planning without the weights.

`architecture(name)` gives the ModelConfig of a model family member, so that the ahead-of-time
planner (`primejax.tools.aot`) can size a run before any checkpoint is downloaded. The values are
those of the models' Hugging Face `config.json` files.
"""

from __future__ import annotations

from typing import Any

from primejax.models.config import ModelConfig

_QWEN2_7B = {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
             "hidden_act": "silu"}
_QWEN2_SMALL = {"model_type": "qwen2", "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
                "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # Eurus-2-7B-SFT, the paper's policy, PRM and reference, is a fine-tuned Qwen2.5-Math-7B.
    "qwen2.5-math-7b": {**_QWEN2_7B, "vocab_size": 152064, "max_position_embeddings": 4096, "rope_theta": 10000.0},
    "qwen2.5-7b": {**_QWEN2_7B, "vocab_size": 152064, "max_position_embeddings": 32768, "rope_theta": 1000000.0},
    "qwen2.5-0.5b": {**_QWEN2_SMALL, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2},
    "qwen2.5-1.5b": {**_QWEN2_SMALL, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                     "num_attention_heads": 12, "num_key_value_heads": 2},
    "llama-3.1-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
                     "hidden_act": "silu", "rope_theta": 500000.0, "attention_bias": False, "mlp_bias": False,
                     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
}


def architecture(name: str, **overrides: Any) -> ModelConfig:
    """The ModelConfig of the named architecture; KeyError listing the known names otherwise."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ModelConfig.from_hf_dict(dict(ARCHITECTURES[name]), **overrides)
