"""Chunked attention (online softmax, custom VJP) against XLA's attention: values and gradients,
bidirectional, causal, key-padded and block-masked, with L not a multiple of the block; its
memory stays O(L) where XLA's scores are O(L^2)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.models.chunked_attention import chunked_attention


def reference(q, k, v, *, causal=False, key_mask=None, mask_fn=None):
    """Dense softmax attention in float64 with the same masks (rows with no key give zeros)."""
    lq, lk = q.shape[1], k.shape[1]
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    ok = jnp.ones((q.shape[0], 1, lq, lk), bool)
    if key_mask is not None:
        ok = ok & key_mask[:, None, None, :]
    if causal:
        ok = ok & (jnp.arange(lk)[None, :] <= jnp.arange(lq)[:, None])
    if mask_fn is not None:
        ok = ok & mask_fn(jnp.arange(lq)[:, None], jnp.arange(lk)[None, :])
    p = jax.nn.softmax(jnp.where(ok, s, -jnp.inf), axis=-1)
    p = jnp.where(ok.any(-1, keepdims=True), p, 0.0)
    return jnp.einsum("bhqk,bkhd->bqhd", p, v)


def block_causal(q_pos, k_pos):  # block diffusion's mask: a block sees itself and the blocks before
    return k_pos // 8 <= q_pos // 8


CASES = {
    "bidirectional": dict(),
    "causal": dict(causal=True),
    "padded": dict(key_mask=True),
    "block-masked": dict(mask_fn=block_causal),
    "causal+padded": dict(causal=True, key_mask=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("length,block", [(40, 16), (32, 32)])
def test_values_and_gradients_equal_dense_attention(case, length, block):
    kw = dict(CASES[case])
    rng = np.random.default_rng(0)
    q, k, v, cot = (rng.standard_normal((2, length, 3, 8)) for _ in range(4))
    if kw.pop("key_mask", False):
        mask = np.ones((2, length), bool)
        mask[0, length - 11:] = False
        mask[1, :3] = False  # with causal, row 1's first queries see no key: zeros
        kw["key_mask"] = mask
    with jax.enable_x64(True):
        want, want_grads = jax.vjp(lambda *a: reference(*a, **kw), *map(jnp.asarray, (q, k, v)))
        want_grads = want_grads(jnp.asarray(cot))
    f32 = [jnp.asarray(x, jnp.float32) for x in (q, k, v)]
    got, got_grads = jax.vjp(lambda *a: chunked_attention(*a, block=block, **kw), *f32)
    got_grads = got_grads(jnp.asarray(cot, jnp.float32))
    np.testing.assert_allclose(got, want, atol=2e-5)
    for g, w, name in zip(got_grads, want_grads, "qkv"):
        np.testing.assert_allclose(g, w, atol=5e-5, err_msg=f"d{name}")


def test_matches_xla_attention_in_the_model_dtype():
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 64, 4, 16)), jnp.float32) for _ in range(3))
    for causal in (False, True):
        want = jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="xla")
        np.testing.assert_allclose(chunked_attention(q, k, v, causal=causal, block=16), want, atol=2e-6)


def test_memory_is_linear_in_length():
    """The compiled backward pass's temporaries grow about linearly with L (XLA's: quadratically)."""
    def temp_bytes(fn, length):
        x = jax.ShapeDtypeStruct((1, length, 4, 32), jnp.float32)
        grad = jax.jit(jax.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))
        return grad.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes

    chunked = lambda q, k, v: chunked_attention(q, k, v, block=128)  # noqa: E731
    dense = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation="xla")  # noqa: E731
    growth = temp_bytes(chunked, 4096) / temp_bytes(chunked, 1024)
    assert growth < 6, growth  # 4x the length: about 4x the memory
    assert temp_bytes(dense, 4096) > 8 * temp_bytes(chunked, 4096)


def test_bad_key_mask_shape_is_named():
    x = jnp.zeros((2, 8, 1, 4))
    with pytest.raises(ValueError, match=r"key_mask has shape \(2, 7\); the keys are \(2, 8\)"):
        chunked_attention(x, x, x, key_mask=jnp.ones((2, 7), bool))
