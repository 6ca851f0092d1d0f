"""``layers.gelu_tanh``: jax.nn.gelu(approximate=True)'s values with a backward pass that keeps only
its input; the gradient against autodiff of the formula in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.models import layers


def _points(dtype):
    x = np.concatenate([np.linspace(-9.0, 9.0, 3001), [0.0, -1e-6, 1e-6, 30.0, -30.0]])
    return jnp.asarray(x, dtype)


def test_values_and_gradient_equal_autodiff_in_float64():
    with jax.enable_x64(True):
        x = _points(jnp.float64)
        np.testing.assert_array_equal(layers.gelu_tanh(x), jax.nn.gelu(x, approximate=True))
        got = jax.vmap(jax.grad(layers.gelu_tanh))(x)
        want = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=True)))(x)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)  # 1 + tanh cancels for x << 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_gradient_is_as_accurate_as_autodiff(dtype):
    """In float32 and bfloat16 the input gradient is no further from the float64 one than autodiff
    of the formula in the same dtype (the derivative is computed in float32 and rounded once)."""
    x = _points(dtype)
    cotangent = jnp.linspace(-2.0, 2.0, x.shape[0]).astype(dtype)

    def input_grad(f, v, c):
        out = jax.vjp(f, v)[1](c)[0]
        assert out.dtype == v.dtype
        return np.asarray(out.astype(jnp.float32), np.float64) if out.dtype != jnp.float64 else np.asarray(out)

    def formula(v):
        return jax.nn.gelu(v, approximate=True)

    ours, autodiff = input_grad(layers.gelu_tanh, x, cotangent), input_grad(formula, x, cotangent)
    with jax.enable_x64(True):
        exact = input_grad(formula, jnp.asarray(np.asarray(x.astype(jnp.float32)), jnp.float64),
                           jnp.asarray(np.asarray(cotangent.astype(jnp.float32)), jnp.float64))
    scale = np.abs(exact).max()
    assert np.abs(ours - exact).max() <= 1.01 * np.abs(autodiff - exact).max() + 1e-7 * scale
