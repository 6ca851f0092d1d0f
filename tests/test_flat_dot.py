"""``layers.flat_dot``: the matmul of the DiT and BERT layers over flattened leading axes; values and
gradients against ``jnp.einsum`` in float64, for one and two contracted axes, and the preferred
output dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.models import layers

CASES = {
    # name: (x shape, kernel shape, contract, the einsum it must equal)
    "dense": ((2, 5, 6), (6, 7), 1, "bld,df->blf"),
    "qkv": ((2, 5, 6), (6, 3, 2, 4), 1, "bld,dthk->blthk"),
    "attn_out": ((2, 5, 2, 3), (2, 3, 6), 2, "blhk,hkd->bld"),
    "one_leading_axis": ((5, 6), (6, 7), 1, "nd,df->nf"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_equal_einsum_in_float64(name):
    x_shape, k_shape, contract, spec = CASES[name]
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal(x_shape))
        kernel = jnp.asarray(rng.standard_normal(k_shape))
        out_shape = jnp.einsum(spec, x, kernel).shape
        weights = jnp.asarray(rng.standard_normal(out_shape))  # a cotangent that weighs every output

        def loss(f, x, kernel):
            return jnp.sum(weights * f(x, kernel))

        got = jax.value_and_grad(lambda x, k: loss(lambda a, b: layers.flat_dot(a, b, contract), x, k),
                                 argnums=(0, 1))(x, kernel)
        want = jax.value_and_grad(lambda x, k: loss(lambda a, b: jnp.einsum(spec, a, b), x, k),
                                  argnums=(0, 1))(x, kernel)
        assert layers.flat_dot(x, kernel, contract).shape == out_shape
        np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_preferred_element_type_sets_the_output_dtype():
    x = jnp.ones((2, 3, 4), jnp.bfloat16)
    kernel = jnp.ones((4, 5), jnp.bfloat16)
    assert layers.flat_dot(x, kernel).dtype == jnp.bfloat16
    out = layers.flat_dot(x, kernel, preferred_element_type=jnp.float32)
    assert out.dtype == jnp.float32 and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, 4.0)
