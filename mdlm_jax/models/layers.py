"""Building blocks of the DiT denoiser (SPEC section 6): pure helpers plus small Flax modules.

Every parameter carries logical axis names (``embed, mlp, heads, kv, vocab, cond, freq``) that
``mdlm_jax.parallel`` maps to mesh axes.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def torch_linear_init(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default Linear weight and bias init."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def partitioned(init, names):
    return nn.with_logical_partitioning(init, names)


def constrain(x, names):
    """Activation sharding by logical axis names (``batch``, ``length``, ``embed``, ``heads``,
    ``kv``, ``mlp``, ``vocab``) through the rules the train and eval steps set
    (``nn.logical_axis_rules``) on the context mesh; outside them (sampling, tests, one device) x
    is returned as it is. A mesh axis that does not divide its dimension (a 50,258-entry vocabulary
    over 4 tensor shards) is left out, as for parameters. Shapes: x (...) -> x."""
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    spec = nn.logical_to_mesh_axes(names, rules)

    def size(axis):
        return math.prod(mesh.shape[a] for a in ((axis,) if isinstance(axis, str) else axis))

    fitted = [a if a is None or dim % size(a) == 0 else None for a, dim in zip(spec, x.shape)]
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*fitted))


def timestep_features(sigma, dim: int = 256, max_period: float = 10000.0):
    """Sinusoidal features [cos(sigma f_i), sin(sigma f_i)], f_i = exp(-ln(max_period) i / (dim/2)).

    Shapes: sigma (B,) -> (B, dim) float32 (cos half first).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = sigma.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def rotary_cos_sin(length: int, head_dim: int):
    """Rotary tables for positions 0..L-1: inv_freq = 10000^(-arange(0, d, 2)/d), halves layout.

    Shapes: -> cos, sin (L, d) float32 (each frequency repeated in both halves).
    """
    inv_freq = 1.0 / (10000 ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x, cos, sin):
    """x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1] (GPT-NeoX halves).

    Shapes: x (B, L, H, d), cos / sin (L, d) -> (B, L, H, d) in x's dtype.
    """
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = x.astype(jnp.float32) * cos[None, :, None] + rotated * sin[None, :, None]
    return out.astype(x.dtype)


def modulate(x, shift, scale):
    """adaLN modulation x * (1 + scale) + shift. Shapes: x (B, L, D), shift / scale (B, D)."""
    return x * (1 + scale[:, None]) + shift[:, None]


class LayerNorm(nn.Module):
    """LayerNorm with a scale and no bias, eps 1e-5, computed in float32 (output float32)."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", partitioned(nn.initializers.ones, ("embed",)), (x.shape[-1],))
        x = x.astype(jnp.float32)
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale


def linear(x, kernel, bias, dtype, out_dtype=None, wide: bool = False):
    """x (..., D) @ kernel (D, F) + bias (F,) (or None) with both operands cast to ``dtype``: (..., F).

    ``out_dtype`` (e.g. float32 for logits) is the matmul's accumulation and output dtype and the
    dtype the bias is added in; None keeps ``dtype``. ``wide`` (the vocabulary projection) takes the
    bias gradient as a product (``add_bias``); the narrow layers keep XLA's reduction, which is fast
    there and lets XLA share one layout of the gradient with the weight's.
    """
    out_dtype = out_dtype or dtype
    y = flat_dot(x.astype(dtype), kernel.astype(dtype), preferred_element_type=out_dtype)
    if bias is None:
        return y
    bias = bias.astype(out_dtype)
    return add_bias(y, bias) if wide else y + bias


def flat_dot(x, kernel, contract: int = 1, preferred_element_type=None):
    """Contracts the last ``contract`` axes of x with the first ones of kernel over the flattened
    leading axes: x (..., *C), kernel (*C, *F) -> (..., *F).

    Why flatten: the weight gradient then contracts one axis, where over (B, L) XLA:CPU wrote a
    transposed copy of each layer's output gradient before the product (a block's fwd + bwd at
    L = 1024: 0.59 -> 0.51 s; docs/BENCHMARKS.md). The kernel keeps its shape, and with it its sharding."""
    lead = x.shape[:x.ndim - contract]
    rows = x.reshape((-1,) + x.shape[x.ndim - contract:])
    dims = ((tuple(range(1, contract + 1)), tuple(range(contract))), ((), ()))
    y = jax.lax.dot_general(rows, kernel, dims, preferred_element_type=preferred_element_type)
    return y.reshape(lead + y.shape[1:])


@jax.custom_vjp
def add_bias(y, bias):
    """y (..., F) + bias (F,) -> (..., F), whose bias gradient is the product ones (N,) @ dy (N, F)
    over the N leading positions rather than a reduction: XLA:CPU's reduction over a major axis of
    the output layer's (2048, 50,304) gradient took 742 ms, the product 17.5 ms (the same sum)."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, None


def _add_bias_bwd(_, dy):
    rows = dy.reshape(-1, dy.shape[-1])
    ones = jnp.ones((rows.shape[0],), rows.dtype)
    return dy, jnp.dot(ones, rows, precision=jax.lax.Precision.HIGHEST)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


@jax.custom_vjp
def gelu_tanh(x):
    """GELU's tanh approximation, 0.5 x (1 + tanh(c (x + a x^3))) with c = sqrt(2 / pi), a = 0.044715:
    ``jax.nn.gelu(x, approximate=True)``'s values, with a backward pass that keeps only x.

    Autodiff of that formula keeps x^2, x^3, the tanh and the half-sum for the backward pass: four
    more (B, L, 4D) buffers per block, each written by the forward pass and read by the backward
    one (in a scan, copied into the stacked residuals). Here the derivative
    0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2), t = tanh(c (x + a x^3)), is recomputed from x, in
    float32 at least. Shapes: (...) -> (...), x's dtype.
    """
    return jax.nn.gelu(x, approximate=True)


def _gelu_tanh_fwd(x):
    return jax.nn.gelu(x, approximate=True), x


def _gelu_tanh_bwd(x, dy):
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    t = jnp.tanh(_GELU_C * (x32 + _GELU_A * x32 ** 3))
    slope = 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * x32 * x32)
    return ((dy.astype(x32.dtype) * slope).astype(x.dtype),)


gelu_tanh.defvjp(_gelu_tanh_fwd, _gelu_tanh_bwd)


class Dense(nn.Module):
    """Linear layer with torch-compatible init, float32 params and a configurable compute dtype.

    ``zero_init`` gives the adaLN-zero / output-layer init (weight and bias exactly 0).
    """

    features: int
    names: tuple  # logical axis names (in, out)
    use_bias: bool = True
    zero_init: bool = False
    dtype: Dtype = jnp.float32
    out_dtype: Dtype = None  # see ``linear``
    wide: bool = False  # see ``linear``

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        init = nn.initializers.zeros if self.zero_init else torch_linear_init(fan_in)
        kernel = self.param("kernel", partitioned(init, self.names), (fan_in, self.features))
        bias = self.param("bias", partitioned(init, self.names[1:]), (self.features,)) if self.use_bias else None
        return linear(x, kernel, bias, self.dtype, self.out_dtype, self.wide)
