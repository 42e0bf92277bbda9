"""Hugging Face checkpoint I/O: round trips through transformers, both config layouts, errors."""

import json
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from primejax.models import (
    CheckpointError,
    ConfigError,
    ModelConfig,
    load_hf_checkpoint,
    save_hf_checkpoint,
)
from primejax.tools.check_logits import hf_logits, random_batch
from tests import hf_models


def _assert_same_params(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _copy(src, tmp_path):
    dst = str(tmp_path / "ckpt")
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["qwen2_tied_gqa4_yarn", "llama_tied_bias_linear", "qwen2_mha_sliding"])
def test_save_round_trip_loads_in_transformers_with_same_logits(hf_checkpoint, tmp_path, name):
    source = hf_checkpoint(name)
    config, params = load_hf_checkpoint(source)
    save_hf_checkpoint(tmp_path, params, config)
    assert os.path.isfile(tmp_path / "model.safetensors")
    tokens, mask = random_batch(config.vocab_size)
    # hf_logits fails on any missing, unexpected or mismatched tensor.
    np.testing.assert_array_equal(hf_logits(str(tmp_path), tokens, mask), hf_logits(source, tokens, mask))
    config2, params2 = load_hf_checkpoint(tmp_path)
    assert config2 == config
    _assert_same_params(params, params2)


def test_sharded_checkpoint_saves_loads_and_replaces_cleanly(hf_checkpoint, tmp_path):
    source = hf_checkpoint("llama_gqa2_llama3")
    config, params = load_hf_checkpoint(source)
    save_hf_checkpoint(tmp_path, params, config, max_shard_bytes=60_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all(os.path.isfile(tmp_path / s) for s in shards)
    _assert_same_params(params, load_hf_checkpoint(tmp_path)[1])
    tokens, mask = random_batch(config.vocab_size)
    np.testing.assert_array_equal(hf_logits(str(tmp_path), tokens, mask), hf_logits(source, tokens, mask))
    # Saving a single file over it drops the old shards and index but keeps unrelated files.
    (tmp_path / "tokenizer.json").write_text("{}")
    save_hf_checkpoint(tmp_path, params, config)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "tokenizer.json"]
    _assert_same_params(params, load_hf_checkpoint(tmp_path)[1])


def test_bfloat16_checkpoint_loads_as_stored_or_cast(tmp_path):
    model = hf_models.make_model("qwen2_gqa2").to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    config, params = load_hf_checkpoint(tmp_path)
    assert config.dtype == "bfloat16"
    embed = params["embed"]["embedding"]
    assert embed.dtype == ml_dtypes.bfloat16
    expected = model.model.embed_tokens.weight.detach().float().numpy()
    np.testing.assert_array_equal(np.asarray(embed, np.float32), expected)
    _, params32 = load_hf_checkpoint(tmp_path, dtype="float32")
    assert params32["embed"]["embedding"].dtype == np.float32
    np.testing.assert_array_equal(params32["embed"]["embedding"], expected)
    q = model.model.layers[1].self_attn.q_proj.weight.detach().float().numpy()  # [heads * head_dim, hidden]
    np.testing.assert_array_equal(params32["layers"]["attn"]["q"]["kernel"][1].reshape(64, -1).T, q)


QWEN25_LEGACY = {  # the layout of every published Qwen2.5 config.json
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "rope_scaling": None,
    "sliding_window": 131072, "use_sliding_window": False, "max_window_layers": 28, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
}


def test_both_config_layouts_read_the_same():
    v5 = {k: v for k, v in QWEN25_LEGACY.items() if k not in ("rope_theta", "rope_scaling", "torch_dtype")}
    v5.update(rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, dtype="bfloat16")
    legacy = ModelConfig.from_hf_dict(QWEN25_LEGACY)
    assert legacy == ModelConfig.from_hf_dict(v5)
    assert (legacy.head_dim, legacy.num_kv_heads, legacy.rope.theta, legacy.dtype) == (128, 4, 1e6, "bfloat16")
    assert legacy.sliding_windows == () and legacy.qkv_bias and not legacy.o_bias
    assert legacy.num_params == 7_615_616_512  # Qwen2.5-7B

    llama_legacy = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                    "rope_theta": 500000.0, "torch_dtype": "bfloat16",
                    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    llama_v5 = {k: v for k, v in llama_legacy.items() if k not in ("rope_theta", "rope_scaling", "torch_dtype")}
    llama_v5.update(dtype="bfloat16", rope_parameters={**llama_legacy["rope_scaling"], "rope_theta": 500000.0})
    assert ModelConfig.from_hf_dict(llama_legacy) == ModelConfig.from_hf_dict(llama_v5)
    # A top-level original_max_position_embeddings wins over the scaling dict's, as in transformers.
    top_level = ModelConfig.from_hf_dict({**llama_legacy, "original_max_position_embeddings": 4096})
    assert top_level.rope.get("original_max_position_embeddings") == 4096
    # The oldest scaling key, "type", still reads.
    linear = {**llama_legacy, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert ModelConfig.from_hf_dict(linear).rope.rope_type == "linear"


@pytest.mark.parametrize("name", list(hf_models.CASES))
def test_config_survives_a_write_and_read(name):
    config = ModelConfig.from_hf_dict(hf_models.make_config(name).to_dict())
    assert ModelConfig.from_hf_dict(config.to_hf_dict()) == config


# ---------------------------------------------------------------------------------------- errors


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_hf_checkpoint(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_checkpoint(tmp_path)


def _edit_config(path, **changes):
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.update(changes)
    with open(config_path, "w") as f:
        json.dump(config, f)


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "gpt2"}, "model_type='gpt2' is not supported"),
    ({"rope_scaling": {"rope_type": "mrope", "factor": 2.0}}, "rope_type='mrope' is not supported"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "needs 'low_freq_factor'"),
    ({"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0] * 3, "short_factor": [1.0] * 3}},
     "longrope long_factor has 3 entries, expected head_dim / 2 = 8"),
    ({"num_key_value_heads": 3}, "num_heads=4 must be a multiple of num_kv_heads=3"),
    ({"hidden_act": "swish2"}, "hidden_act='swish2'"),
    ({"dtype": "int8"}, "dtype='int8'"),
])
def test_unsupported_config_is_named(hf_checkpoint, tmp_path, changes, message):
    path = _copy(hf_checkpoint("qwen2_gqa2"), tmp_path)
    _edit_config(path, **changes)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        load_hf_checkpoint(path)


def _rewrite_tensors(path, edit):
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file, metadata={"format": "pt"})


def test_missing_tensor_is_named(hf_checkpoint, tmp_path):
    path = _copy(hf_checkpoint("qwen2_gqa2"), tmp_path)
    _rewrite_tensors(path, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf_checkpoint(path)


def test_extra_tensor_is_named(hf_checkpoint, tmp_path):
    path = _copy(hf_checkpoint("qwen2_gqa2"), tmp_path)
    _rewrite_tensors(path, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": np.ones(16, np.float32)}))
    with pytest.raises(CheckpointError, match=r"does not use: model\.layers\.0\.self_attn\.q_norm\.weight"):
        load_hf_checkpoint(path)


def test_shape_mismatch_names_tensor_expected_and_got(hf_checkpoint, tmp_path):
    path = _copy(hf_checkpoint("qwen2_gqa2"), tmp_path)
    _edit_config(path, intermediate_size=80)
    with pytest.raises(CheckpointError,
                       match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(96, 64\), expected \(80, 64\)"):
        load_hf_checkpoint(path)


def test_truncated_file_and_missing_shard(hf_checkpoint, tmp_path):
    path = _copy(hf_checkpoint("qwen2_gqa2"), tmp_path)
    file = os.path.join(path, "model.safetensors")
    with open(file, "r+b") as f:
        f.truncate(os.path.getsize(file) // 2)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_hf_checkpoint(path)

    config, params = load_hf_checkpoint(hf_checkpoint("qwen2_gqa2"))
    sharded = tmp_path / "sharded"
    save_hf_checkpoint(sharded, params, config, max_shard_bytes=60_000)
    second = sorted(f for f in os.listdir(sharded) if f.startswith("model-"))[1]
    os.remove(sharded / second)
    with pytest.raises(CheckpointError, match=f"names shard '{second}', which does not exist"):
        load_hf_checkpoint(sharded)


def test_save_rejects_params_that_do_not_match_the_config(hf_checkpoint, tmp_path):
    config, params = load_hf_checkpoint(hf_checkpoint("qwen2_gqa2"))
    with pytest.raises(CheckpointError, match=r"layers/mlp/gate/kernel has shape \(2, 64, 96\), expected \(2, 64, 80\)"):
        save_hf_checkpoint(tmp_path, params, config.replace(intermediate_size=80))
    del params["final_norm"]
    with pytest.raises(CheckpointError, match="no weight at final_norm/scale"):
        save_hf_checkpoint(tmp_path, params, config)
    assert not os.path.exists(tmp_path / "model.safetensors")  # nothing half-written
