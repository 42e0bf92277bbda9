"""Dense products with float32 accumulation, written-out backward passes, and the activations.

    product         einsum accumulated in float32, rounded to a given dtype
    linear          x @ kernel whose kernel gradient transposes the narrower operand
    kernel_gradient that choice for any dense layer's kernel
    head_logits     float32 logits whose cotangent is rounded to the hidden states' dtype
    head_logits_t   the same of a transposed head [hidden, vocab], for training's chunked head
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": partial(jax.nn.gelu, approximate=False),
    "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True),
    "gelu_new": partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}


def product(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """einsum(spec, a, b) accumulated in float32 and rounded to `dtype`.

    With bfloat16 operands XLA on CPU multiplies 2-2.3x faster into a float32 result (the
    AVX512-BF16 kernel) than into a bfloat16 one; with float32 operands this is a plain einsum.
    """
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(dtype)


@jax.custom_vjp
def linear(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [..., in] @ kernel [in, out], in x's dtype.

    The backward pass is written out so that the kernel's gradient is a product over tokens whose
    left operand is the narrower of x [tokens, in] and dy [tokens, out] (x^T dy when in <= out,
    (dy^T x)^T otherwise). When that product contracted several token axes, XLA on CPU laid its
    left operand out transposed first, and the einsum's transpose rule, which always made
    (dy^T x)^T, transposed every [tokens, out] cotangent: a SwiGLU MLP's forward and backward took
    1.4x as long, a training step of the layers 1.25x; the narrower side made the layers 1.05x
    (float32) and 1.09x (bfloat16) faster than always transposing x. Over one token axis
    (`kernel_gradient`) nothing is copied, and the narrower left operand is as fast or faster: x of
    [3328, 1536] and dy of [3328, 512] took 26.8 ms against 28.6 ms.
    """
    return product("...i,io->...o", x, kernel, x.dtype)


def _linear_fwd(x: jax.Array, kernel: jax.Array):
    return linear(x, kernel), (x, kernel)


def _linear_bwd(residuals, dy: jax.Array):
    x, kernel = residuals
    return product("...o,io->...i", dy, kernel, x.dtype), kernel_gradient(x, dy, kernel.dtype)


linear.defvjp(_linear_fwd, _linear_bwd)


def kernel_gradient(x: jax.Array, dy: jax.Array, dtype, out_ndim: int = 1) -> jax.Array:
    """The gradient [in, *out] of a kernel that maps x [..., in] to y [..., *out], given dy: Σ_tokens x ⊗ dy.

    The left operand of the product is the narrower of x and dy (see `linear`). `out_ndim` is the
    number of trailing axes of dy that are output axes.
    """
    out_shape = dy.shape[dy.ndim - out_ndim:]
    x, dy = tokens_first(x, 1), dy.reshape(-1, math.prod(out_shape))
    if dy.shape[1] < x.shape[1]:
        return jnp.moveaxis(product("to,ti->oi", dy, x, dtype).reshape(*out_shape, -1), -1, 0)
    return product("ti,to->io", x, dy, dtype).reshape(-1, *out_shape)


def tokens_first(x: jax.Array, trailing: int) -> jax.Array:
    """x with its leading axes (all but the last `trailing`) merged into one token axis.

    A product over tokens then contracts one axis: contracting two (a packed batch's streams and
    slots, [G, C, ...]) makes XLA on CPU lay the left operand out transposed first, a copy of it
    per product (a [512, 3072] kernel gradient over 3328 tokens: 52 ms against 45 ms). `kernel_gradient`
    also merges the output axes: XLA on CPU multiplies bfloat16 into float32 only as a plain matrix
    product.
    """
    return x.reshape(-1, *x.shape[x.ndim - trailing:])


@jax.custom_vjp
def head_logits(h: jax.Array, head: jax.Array) -> jax.Array:
    """Float32 logits h · headᵀ [..., vocab] of hidden states h [..., hidden] and a head [vocab, hidden].

    The backward pass rounds the logits' cotangent to h's dtype before its two products (in
    float32 nothing changes). With bfloat16 hidden states this is the precision of a bfloat16
    model whose logits are bfloat16, and the products stay bfloat16 with float32 accumulation;
    a float32 cotangent would make XLA on CPU upcast the head and multiply in float32, about 7x
    slower on a CPU with bfloat16 matrix units.
    """
    return jnp.einsum("...h,vh->...v", h, head, preferred_element_type=jnp.float32)


def _head_logits_fwd(h: jax.Array, head: jax.Array):
    return head_logits(h, head), (h, head)


def _head_logits_bwd(residuals, d_logits: jax.Array):
    h, head = residuals
    d_logits = d_logits.astype(h.dtype)
    d_head = product("tv,th->vh", tokens_first(d_logits, 1), tokens_first(h, 1), head.dtype)
    return product("...v,vh->...h", d_logits, head, h.dtype), d_head


head_logits.defvjp(_head_logits_fwd, _head_logits_bwd)


@jax.custom_vjp
def head_logits_t(h: jax.Array, head_t: jax.Array) -> jax.Array:
    """`head_logits` of a transposed head head_t [hidden, vocab]: float32 h · head_t [..., vocab].

    The gradient is made as [hidden, vocab], hᵀ d_logits, whose left operand XLA on CPU lays out
    transposed: [tokens, hidden] of h rather than the [tokens, vocab] cotangent that the gradient
    of a [vocab, hidden] head (d_logitsᵀ h) transposes. A loop over chunks of tokens (the training
    head) accumulates that gradient in head_t's layout and the one transpose of the head is outside
    it, instead of one [tokens, vocab] transpose per chunk: a PRIME update of the small Qwen2 shape
    (32000 tokens, 5 chunks of 512 positions) took 1.04× less time, the policy step 1.10×.
    """
    return jnp.einsum("...h,hv->...v", h, head_t, preferred_element_type=jnp.float32)


def _head_logits_t_fwd(h: jax.Array, head_t: jax.Array):
    return head_logits_t(h, head_t), (h, head_t)


def _head_logits_t_bwd(residuals, d_logits: jax.Array):
    h, head_t = residuals
    d_logits = d_logits.astype(h.dtype)
    d_head_t = product("th,tv->hv", tokens_first(h, 1), tokens_first(d_logits, 1), head_t.dtype)
    return product("...v,hv->...h", d_logits, head_t, h.dtype), d_head_t


head_logits_t.defvjp(_head_logits_t_fwd, _head_logits_t_bwd)
