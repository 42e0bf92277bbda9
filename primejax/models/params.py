"""The parameter pytree: one table of weights drives init, logical axes and checkpoint names.

Params are a plain nested dict of arrays. Layer weights are stacked on a leading `layers` axis so
the forward pass scans over them. Every weight has logical axis names (`vocab`, `embed`, `heads`,
`kv_heads`, `head_dim`, `mlp`, `layers`) that sharding rules map onto mesh axes.

Layout (L layers, H hidden, N heads, K kv heads, D head dim, F mlp, V vocab):

    embed/embedding            [V, H]
    layers/attn_norm/scale     [L, H]
    layers/attn/{q,k,v}/kernel [L, H, N|K, D]   bias [L, N|K, D]  (qkv_bias)
    layers/attn/o/kernel       [L, N, D, H]     bias [L, H]       (o_bias)
    layers/mlp_norm/scale      [L, H]
    layers/mlp/{gate,up}/kernel [L, H, F]       bias [L, F]       (mlp_bias)
    layers/mlp/down/kernel     [L, F, H]        bias [L, H]       (mlp_bias)
    final_norm/scale           [H]
    lm_head/embedding          [V, H]           (absent with tied embeddings)

The output head is stored like the input embedding, [vocab, hidden]: tied and untied heads share
one code path, and the logits contract the minor axis of both operands, which is faster on CPU
than an [H, V] kernel.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from primejax.models.config import ModelConfig

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class WeightSpec:
    """One weight: where it lives, its shape and axes, and its Hugging Face tensor.

    `shape`/`axes` exclude the stacked `layers` axis for per-layer weights. `hf_name` has `{i}` for
    the layer index and `hf_shape` is the HF tensor's shape. `transpose` marks a linear kernel,
    stored by HF as [out, in]: ours is its transpose reshaped to `shape`.
    """

    path: tuple[str, ...]
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    hf_name: str
    hf_shape: tuple[int, ...]
    init: str  # "normal", "zeros" or "ones"
    per_layer: bool = True
    transpose: bool = False

    def full_shape(self, num_layers: int) -> tuple[int, ...]:
        return (num_layers, *self.shape) if self.per_layer else self.shape

    def full_axes(self) -> tuple[str, ...]:
        return ("layers", *self.axes) if self.per_layer else self.axes


def weight_specs(config: ModelConfig) -> list[WeightSpec]:
    """The table of every weight of `config`'s model."""
    c = config
    H, N, K, D, F, V = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size, c.vocab_size
    layer = "model.layers.{i}."
    specs = [
        WeightSpec(("embed", "embedding"), (V, H), ("vocab", "embed"), "model.embed_tokens.weight", (V, H), "normal",
                   per_layer=False),
        WeightSpec(("layers", "attn_norm", "scale"), (H,), ("embed",), layer + "input_layernorm.weight", (H,), "ones"),
        WeightSpec(("layers", "mlp_norm", "scale"), (H,), ("embed",), layer + "post_attention_layernorm.weight",
                   (H,), "ones"),
    ]
    for name, heads, head_axis in (("q", N, "heads"), ("k", K, "kv_heads"), ("v", K, "kv_heads")):
        hf = layer + f"self_attn.{name}_proj."
        specs.append(WeightSpec(("layers", "attn", name, "kernel"), (H, heads, D), ("embed", head_axis, "head_dim"),
                                hf + "weight", (heads * D, H), "normal", transpose=True))
        if c.qkv_bias:
            specs.append(WeightSpec(("layers", "attn", name, "bias"), (heads, D), (head_axis, "head_dim"),
                                    hf + "bias", (heads * D,), "zeros"))
    specs.append(WeightSpec(("layers", "attn", "o", "kernel"), (N, D, H), ("heads", "head_dim", "embed"),
                            layer + "self_attn.o_proj.weight", (H, N * D), "normal", transpose=True))
    if c.o_bias:
        specs.append(WeightSpec(("layers", "attn", "o", "bias"), (H,), ("embed",), layer + "self_attn.o_proj.bias",
                                (H,), "zeros"))
    for name, shape, axes, bias_dim, bias_axis in (
        ("gate", (H, F), ("embed", "mlp"), F, "mlp"),
        ("up", (H, F), ("embed", "mlp"), F, "mlp"),
        ("down", (F, H), ("mlp", "embed"), H, "embed"),
    ):
        hf = layer + f"mlp.{name}_proj."
        specs.append(WeightSpec(("layers", "mlp", name, "kernel"), shape, axes, hf + "weight", shape[::-1],
                                "normal", transpose=True))
        if c.mlp_bias:
            specs.append(WeightSpec(("layers", "mlp", name, "bias"), (bias_dim,), (bias_axis,), hf + "bias", (bias_dim,),
                                    "zeros"))
    specs.append(WeightSpec(("final_norm", "scale"), (H,), ("embed",), "model.norm.weight", (H,), "ones",
                             per_layer=False))
    if not c.tie_word_embeddings:
        specs.append(WeightSpec(("lm_head", "embedding"), (V, H), ("vocab", "embed"), "lm_head.weight", (V, H),
                                "normal", per_layer=False))
    return specs


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def get_path(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def param_axes(config: ModelConfig) -> dict:
    """A pytree shaped like the params whose leaves are tuples of logical axis names."""
    out: dict = {}
    for spec in weight_specs(config):
        set_path(out, spec.path, spec.full_axes())
    return out


def param_shapes(config: ModelConfig, dtype: str | jnp.dtype = jnp.float32) -> Params:
    """A pytree of `jax.ShapeDtypeStruct`, shaped like the params, without allocating them."""
    out: dict = {}
    for spec in weight_specs(config):
        set_path(out, spec.path, jax.ShapeDtypeStruct(spec.full_shape(config.num_layers), jnp.dtype(dtype)))
    return out


def init_params(config: ModelConfig, key: jax.Array, dtype: str | jnp.dtype = jnp.float32) -> Params:
    """Random init as transformers does it: N(0, initializer_range) kernels and embeddings,
    zero biases, unit norm scales."""
    out: dict = {}
    specs = weight_specs(config)
    for spec, k in zip(specs, jax.random.split(key, len(specs))):
        shape = spec.full_shape(config.num_layers)
        if spec.init == "normal":
            value = config.initializer_range * jax.random.normal(k, shape, jnp.float32)
        elif spec.init == "ones":
            value = jnp.ones(shape, jnp.float32)
        else:
            value = jnp.zeros(shape, jnp.float32)
        set_path(out, spec.path, value.astype(dtype))
    return out
