"""Tiny random transformers models covering the Qwen2 and Llama variants primejax supports.

Every weight (biases and norm scales included) is perturbed away from its init value, so a
mismatch in any of them shows in the logits.
"""

import torch
import transformers

_COMMON = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2}

CASES = {
    # Qwen2: q/k/v bias, GQA ratio 2, Qwen2.5's RoPE theta.
    "qwen2_gqa2": ("qwen2", {"num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 1e6}),
    # Qwen2 tied embeddings, GQA ratio 4, YaRN scaling active within the test length.
    "qwen2_tied_gqa4_yarn": ("qwen2", {
        "num_attention_heads": 8, "num_key_value_heads": 2, "tie_word_embeddings": True,
        "max_position_embeddings": 64,
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    }),
    # Qwen2 multi-head (ratio 1) with sliding-window attention on the second layer.
    "qwen2_mha_sliding": ("qwen2", {
        "num_attention_heads": 4, "num_key_value_heads": 4, "use_sliding_window": True, "sliding_window": 8,
        "max_window_layers": 1,
    }),
    # Llama: no bias, GQA ratio 2, Llama 3 RoPE scaling active within the test length.
    "llama_gqa2_llama3": ("llama", {
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16},
    }),
    # Llama tied, attention and MLP biases, ratio 1, linear scaling.
    "llama_tied_bias_linear": ("llama", {
        "num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": True, "attention_bias": True,
        "mlp_bias": True, "rope_scaling": {"rope_type": "linear", "factor": 2.0},
    }),
    # Llama with head_dim != hidden / heads, GQA ratio 4, dynamic NTK past max_position_embeddings.
    "llama_headdim_dynamic": ("llama", {
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 24, "max_position_embeddings": 32,
        "rope_theta": 500000.0, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0},
    }),
    # Llama with LongRoPE, its long factors in use past the original length of 16.
    "llama_longrope": ("llama", {
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "rope_scaling": {"rope_type": "longrope", "original_max_position_embeddings": 16,
                         "long_factor": [1.0 + 0.5 * i for i in range(8)],
                         "short_factor": [1.0 + 0.1 * i for i in range(8)]},
    }),
}


def make_config(name: str) -> transformers.PretrainedConfig:
    family, overrides = CASES[name]
    config_class = {"qwen2": transformers.Qwen2Config, "llama": transformers.LlamaConfig}[family]
    return config_class(**{**_COMMON, **overrides})


def make_model(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(make_config(name), attn_implementation="eager")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()
