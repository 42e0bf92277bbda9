"""The gated MLP of Qwen2 / Llama with its backward pass written out.

    [g ; u] = x [W_gate ; W_up] + [b_gate ; b_up],   m = act(g) ∘ u,   y = m W_down + b_down

The forward pass keeps x and the pre-activations [g ; u], nothing else; the backward pass remakes
act(g) and m from them (elementwise work that XLA fuses into the products' operands):

    dW_down = mᵀ dy,   dm = dy W_downᵀ,   dg = act'(g) ∘ (dm ∘ u),   du = dm ∘ act(g),
    dx = [dg ; du] [W_gate ; W_up]ᵀ,      d[W_gate ; W_up] = xᵀ [dg ; du]

Autodiff of the same formula kept act(g), act'(g)'s inputs, u and m as well: six [tokens, F]
arrays per layer instead of two. Gate and up are one product of the stacked kernel [H, 2, F]
(forward and backward), so the input is read once and dx is one product over 2F instead of two
products and a sum; the stacking keeps F whole along its own axis, so a tensor-parallel split of
F stays a split of every operand.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from primejax.models.linear import ACTIVATIONS, kernel_gradient, product
from primejax.parallel.rules import constrain

_MLP = ("batch", "length", "act_mlp")


def _stacked(gate: dict, up: dict) -> tuple[jax.Array, jax.Array | None]:
    """([H, 2, F] kernel, [2, F] bias or None) of the gate and up projections."""
    bias = jnp.stack([gate["bias"], up["bias"]]) if "bias" in gate else None
    return jnp.stack([gate["kernel"], up["kernel"]], axis=1), bias


def _pre_activations(x, gate, up):
    kernel, bias = _stacked(gate, up)
    gu = product("...i,ico->...co", x, kernel, x.dtype)
    return gu + bias if bias is not None else gu


def _output(act, gu, down):
    a = ACTIVATIONS[act](gu[..., 0, :])
    m = constrain(a * gu[..., 1, :], _MLP)
    y = product("...f,fh->...h", m, down["kernel"], m.dtype)
    return y + down["bias"] if "bias" in down else y


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def gated_mlp(act: str, x: jax.Array, gate: dict, up: dict, down: dict) -> jax.Array:
    """y [..., H] of x [..., H]; gate, up: {"kernel": [H, F], "bias": [F] (optional)}; down: [F, H].

    `act` names the activation (`ACTIVATIONS`). Every product accumulates in float32 and is
    rounded to x's dtype; the kernels and biases must already be in x's dtype.
    """
    return _output(act, _pre_activations(x, gate, up), down)


def _gated_mlp_fwd(act, x, gate, up, down):
    gu = _pre_activations(x, gate, up)
    return _output(act, gu, down), (x, gu, gate, up, down)


def _gated_mlp_bwd(act, residuals, dy):
    x, gu, gate, up, down = residuals
    a, act_vjp = jax.vjp(ACTIVATIONS[act], gu[..., 0, :])
    u = gu[..., 1, :]
    m = a * u
    dm = product("...h,fh->...f", dy, down["kernel"], dy.dtype)
    (dg,) = act_vjp(dm * u)
    d_gu = jnp.stack([dg, dm * a], axis=-2)
    kernel, bias = _stacked(gate, up)
    d_kernel = kernel_gradient(x, d_gu, kernel.dtype, out_ndim=2)
    d_gate, d_up = {"kernel": d_kernel[:, 0]}, {"kernel": d_kernel[:, 1]}
    d_down = {"kernel": kernel_gradient(m, dy, down["kernel"].dtype)}
    if bias is not None:
        d_bias = _sum_over_tokens(d_gu, bias)
        d_gate["bias"], d_up["bias"] = d_bias[0], d_bias[1]
    if "bias" in down:
        d_down["bias"] = _sum_over_tokens(dy, down["bias"])
    return product("...co,ico->...i", d_gu, kernel, x.dtype), d_gate, d_up, d_down


def _sum_over_tokens(d: jax.Array, bias: jax.Array) -> jax.Array:
    """A bias's gradient: d [..., *bias.shape] summed over its leading (token) axes, in float32."""
    return jnp.sum(d.astype(jnp.float32), axis=tuple(range(d.ndim - bias.ndim))).astype(bias.dtype)


gated_mlp.defvjp(_gated_mlp_fwd, _gated_mlp_bwd)
