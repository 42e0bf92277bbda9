"""Model configuration: one frozen dataclass for the Qwen2 and Llama families.

`ModelConfig.from_hf_dict` reads a Hugging Face `config.json` in either layout found in the wild:
the one written before transformers 5 (`rope_theta`, `rope_scaling`, `torch_dtype` at top level, as
every published Qwen2.5 checkpoint has) and the transformers 5 one (`rope_parameters`, `dtype`).
`to_hf_dict` writes the older layout, which every transformers version reads.

The config is hashable so that it can be a static argument of jitted functions.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")
SUPPORTED_ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "gelu_new", "relu")
DTYPES = ("float32", "bfloat16", "float16")
# What a layer keeps for the backward pass (`jax.checkpoint` policies): "none" keeps everything,
# "full" nothing (the layer is recomputed), "dots" the matmul outputs, "dots_no_batch" the matmul
# outputs without a batch dimension (the weights' own products).
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")


class ConfigError(ValueError):
    """A model config that primejax cannot represent; the message names the field and value."""


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters, with `rope_type` one of SUPPORTED_ROPE_TYPES.

    `params` holds the scaling keys of the HF dict (factor, low_freq_factor, ...) as sorted pairs.
    """

    theta: float = 10000.0
    rope_type: str = "default"
    params: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def to_hf_scaling(self) -> dict[str, Any] | None:
        if self.rope_type == "default":
            return None
        return {"rope_type": self.rope_type, **dict(self.params)}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only transformer plus the compute dtype used to run it.

    Per-layer `sliding_windows` holds 0 for full attention, or the window length w: a query at
    cache slot i sees key slots j with i - w < j <= i (transformers' `sliding_attention`).
    """

    model_type: str = "qwen2"
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    rms_norm_eps: float = 1e-6
    rope: RopeConfig = RopeConfig()
    max_position_embeddings: int = 4096
    qkv_bias: bool = True
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    sliding_windows: tuple[int, ...] = ()
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    # The dtype the checkpoint was stored in; the dtype the forward pass computes in.
    dtype: str = "float32"
    compute_dtype: str = "float32"
    # How layers are rematerialised under differentiation (REMAT_POLICIES); a run setting, not saved.
    remat: str = "none"
    # Whether the layer loop runs unrolled rather than scanned (training and scoring); a run setting,
    # not saved.
    unroll_layers: bool = False

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"model_type={self.model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rope.rope_type not in SUPPORTED_ROPE_TYPES:
            raise ConfigError(
                f"rope_type={self.rope.rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
            )
        for key in ("long_factor", "short_factor") if self.rope.rope_type == "longrope" else ():
            if len(self.rope.get(key)) != self.head_dim // 2:
                raise ConfigError(
                    f"longrope {key} has {len(self.rope.get(key))} entries, expected head_dim / 2 = {self.head_dim // 2}"
                )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"hidden_act={self.hidden_act!r} is not supported; supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
            )
        for name in ("dtype", "compute_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be one of {', '.join(DTYPES)}")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat={self.remat!r} must be one of {', '.join(REMAT_POLICIES)}")
        if not isinstance(self.unroll_layers, bool):
            raise ConfigError(f"unroll_layers={self.unroll_layers!r} must be True or False")
        if self.sliding_windows and len(self.sliding_windows) != self.num_layers:
            raise ConfigError(
                f"sliding_windows has {len(self.sliding_windows)} entries for num_layers={self.num_layers}"
            )

    @property
    def windows(self) -> tuple[int, ...]:
        """Sliding window per layer, 0 meaning full causal attention."""
        return self.sliding_windows or (0,) * self.num_layers

    @property
    def num_params(self) -> int:
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        q = self.num_heads * self.head_dim
        attn = h * (q + 2 * kv) + q * h
        attn += (q + 2 * kv) * self.qkv_bias + h * self.o_bias
        mlp = 3 * h * self.intermediate_size + (2 * self.intermediate_size + h) * self.mlp_bias
        per_layer = attn + mlp + 2 * h
        embed = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + embed + h

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ Hugging Face config.json

    @classmethod
    def from_hf_dict(cls, hf: dict[str, Any], **overrides) -> ModelConfig:
        """Builds a config from the dict of a Hugging Face `config.json` (either layout)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"model_type={model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if key not in hf:
                raise ConfigError(f"config.json has no {key!r}")
        num_heads = hf["num_attention_heads"]
        num_layers = hf["num_hidden_layers"]
        if model_type == "qwen2":
            qkv_bias, o_bias, mlp_bias = True, False, False
        else:
            qkv_bias = o_bias = bool(hf.get("attention_bias", False))
            mlp_bias = bool(hf.get("mlp_bias", False))
        partial = _rope_dict(hf).get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        if partial not in (None, 1, 1.0):
            raise ConfigError(f"partial_rotary_factor={partial!r} is not supported (only 1.0)")
        values = {
            "model_type": model_type,
            "vocab_size": hf["vocab_size"],
            "hidden_size": hf["hidden_size"],
            "intermediate_size": hf["intermediate_size"],
            "num_layers": num_layers,
            "num_heads": num_heads,
            "num_kv_heads": hf.get("num_key_value_heads") or num_heads,
            "head_dim": hf.get("head_dim") or hf["hidden_size"] // num_heads,
            "rms_norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
            "rope": _parse_rope(hf),
            "max_position_embeddings": hf.get("max_position_embeddings", 32768 if model_type == "qwen2" else 2048),
            "qkv_bias": qkv_bias,
            "o_bias": o_bias,
            "mlp_bias": mlp_bias,
            "tie_word_embeddings": bool(hf.get("tie_word_embeddings", False)),
            "hidden_act": hf.get("hidden_act", "silu"),
            "sliding_windows": _parse_sliding_windows(hf, model_type, num_layers),
            "initializer_range": float(hf.get("initializer_range", 0.02)),
            "bos_token_id": hf.get("bos_token_id"),
            "eos_token_ids": _as_id_tuple(hf.get("eos_token_id")),
            "pad_token_id": hf.get("pad_token_id"),
            "dtype": _parse_dtype(hf.get("dtype", hf.get("torch_dtype"))),
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike, **overrides) -> ModelConfig:
        return cls.from_hf_dict(read_hf_config(path), **overrides)

    def to_hf_dict(self) -> dict[str, Any]:
        """The `config.json` dict, in the layout every transformers version reads."""
        architecture = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[self.model_type]
        out: dict[str, Any] = {
            "architectures": [architecture],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope.theta,
            "rope_scaling": self.rope.to_hf_scaling(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": self.dtype,
            "use_cache": True,
            "attention_dropout": 0.0,
        }
        if self.model_type == "llama":
            out["attention_bias"] = self.qkv_bias
            out["mlp_bias"] = self.mlp_bias
        else:
            windows = set(self.windows) - {0}
            out["use_sliding_window"] = bool(windows)
            out["sliding_window"] = windows.pop() if windows else None
            out["max_window_layers"] = self.num_layers
            out["layer_types"] = ["sliding_attention" if w else "full_attention" for w in self.windows]
        if self.bos_token_id is not None:
            out["bos_token_id"] = self.bos_token_id
        if self.eos_token_ids:
            out["eos_token_id"] = self.eos_token_ids[0] if len(self.eos_token_ids) == 1 else list(self.eos_token_ids)
        if self.pad_token_id is not None:
            out["pad_token_id"] = self.pad_token_id
        return out


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
    """Reads `config.json` from a checkpoint directory, with clear errors."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"checkpoint directory {path!r} has no config.json")
    with open(config_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{config_path!r} is not valid JSON: {e}") from e


def _rope_dict(hf: dict[str, Any]) -> dict[str, Any]:
    """The RoPE parameters of either layout as one flat dict (may be empty).

    As in transformers, a non-empty `rope_scaling` takes precedence over `rope_parameters`.
    """
    params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"rope_parameters={params!r} must be a dict")
    if params and all(isinstance(v, dict) for v in params.values()):
        raise ConfigError(f"per-layer-type rope_parameters={params!r} are not supported")
    return dict(params)


def _parse_rope(hf: dict[str, Any]) -> RopeConfig:
    params = _rope_dict(hf)
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    params.pop("partial_rotary_factor", None)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"rope_type={rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type in ("llama3", "yarn", "longrope"):
        # As in transformers: a top-level value wins, then the scaling dict's, then the model's limit.
        if "original_max_position_embeddings" in hf:
            params["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
        params.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    required = {"linear": ("factor",), "dynamic": ("factor",),
                "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
                "longrope": ("long_factor", "short_factor")}.get(rope_type, ())
    for key in required:
        if params.get(key) is None:
            raise ConfigError(f"rope_type={rope_type!r} needs {key!r} in rope parameters, got {params!r}")
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in params.items()))
    return RopeConfig(theta=theta, rope_type=rope_type, params=frozen)


def _parse_sliding_windows(hf: dict[str, Any], model_type: str, num_layers: int) -> tuple[int, ...]:
    if model_type != "qwen2" or not hf.get("use_sliding_window", False):
        return ()
    window = hf.get("sliding_window")
    if not window:
        return ()
    layer_types = hf.get("layer_types") or [
        "sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
        for i in range(num_layers)
    ]
    if len(layer_types) != num_layers:
        raise ConfigError(f"layer_types has {len(layer_types)} entries for num_hidden_layers={num_layers}")
    return tuple(int(window) if t == "sliding_attention" else 0 for t in layer_types)


def _parse_dtype(value: Any) -> str:
    if value is None:
        return "float32"
    name = str(value).removeprefix("torch.")
    if name not in DTYPES:
        raise ConfigError(f"dtype={value!r} is not supported; supported: {', '.join(DTYPES)}")
    return name


def _as_id_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)
