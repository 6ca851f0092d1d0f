"""Logits are float32 even when the model computes in bfloat16 (DESIGN: logits with float32
accumulation): the output projection accumulates and returns float32, never rounding to bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.diffusion import losses
from mdlm_jax.models import DiT, dit, layers


def _model_and_params():
    model = DiT(vocab_size=97, hidden_size=64, cond_dim=16, n_blocks=1, n_heads=2, dropout=0.0, dtype=jnp.bfloat16,
                vocab_multiple=64)  # 128 output columns, 31 of them pads
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, 96)
    params = nn.meta.unbox(model.init(jax.random.key(1), tokens, jnp.zeros((2,)))["params"])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = tree.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    return model, params, tokens


def _reference(model, params, tokens):
    """The output layer's input in float32, then the projection of its bfloat16-rounded operands in float64
    (all 128 columns, the pads' too)."""
    hidden = model.apply({"params": params}, tokens, jnp.zeros((2,)), return_hidden=True)
    linear = params["output_layer"]["linear"]
    as_f64 = lambda x: np.asarray(jnp.asarray(x).astype(jnp.bfloat16).astype(jnp.float32), np.float64)  # noqa: E731
    return as_f64(hidden) @ as_f64(linear["kernel"]) + np.asarray(linear["bias"], np.float64)


def test_bfloat16_model_gives_float32_logits_accumulated_in_float32():
    model, params, tokens = _model_and_params()
    logits = model.apply({"params": params}, tokens, jnp.zeros((2,)))
    assert logits.dtype == jnp.float32
    want = _reference(model, params, tokens)[..., :97]
    scale = np.abs(want).max()
    # bfloat16 output rounding alone would be up to 2^-9 of the largest logit; float32 accumulation is ~1e-6.
    np.testing.assert_allclose(np.asarray(logits, np.float64), want, atol=1e-5 * scale)


@pytest.mark.parametrize("chunk", [3, 8, 0])  # 0: projected_token_nll, the whole batch at once
def test_the_fused_loss_projects_in_float32_too(chunk):
    model, params, tokens = _model_and_params()
    hidden = model.apply({"params": params}, tokens, jnp.zeros((2,)), return_hidden=True)
    project = lambda p, h: dit.project_hidden(model, p, h)  # noqa: E731
    assert project(params, hidden).dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(project(params, hidden), np.float64), _reference(model, params, tokens),
                               atol=1e-5 * np.abs(_reference(model, params, tokens)).max())
    if chunk:
        fused = losses.chunked_token_nll(hidden, lambda h: project(params, h), tokens, 96, chunk, 97)
    else:
        fused = losses.projected_token_nll(project, params, hidden, tokens, 96, 97)
    full = losses.token_nll(model.apply({"params": params}, tokens, jnp.zeros((2,))), tokens, 96)
    np.testing.assert_allclose(fused, full, rtol=1e-6, atol=1e-5)


def test_wide_bias_gradient_is_the_sum_over_positions():
    """``layers.add_bias`` takes the bias gradient as ones @ dy: the same sum as the reduction."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(3), 3)
        y, bias = jax.random.normal(keys[0], (3, 5, 7), jnp.float64), jax.random.normal(keys[1], (7,), jnp.float64)
        cotangent = jax.random.normal(keys[2], (3, 5, 7), jnp.float64)
        out, vjp = jax.vjp(layers.add_bias, y, bias)
        d_y, d_bias = vjp(cotangent)
        np.testing.assert_array_equal(out, y + bias)
        np.testing.assert_array_equal(d_y, cotangent)
        np.testing.assert_allclose(d_bias, np.asarray(cotangent).sum((0, 1)), rtol=1e-13)


def test_dit_output_bias_gradient_counts_every_position_and_no_pad_entry():
    """d/d bias of sum(logits * c) is c summed over (B, L); the pad entries of a padded vocabulary get 0."""
    model = DiT(vocab_size=97, hidden_size=64, cond_dim=16, n_blocks=1, n_heads=2, dropout=0.0, vocab_multiple=8)
    tokens = jax.random.randint(jax.random.key(0), (2, 8), 0, 96)
    params = nn.meta.unbox(model.init(jax.random.key(1), tokens, jnp.zeros((2,)))["params"])
    c = jax.random.normal(jax.random.key(4), (2, 8, 97))
    grads = jax.grad(lambda p: (model.apply({"params": p}, tokens, jnp.zeros((2,))) * c).sum())(params)
    d_bias = np.asarray(grads["output_layer"]["linear"]["bias"], np.float64)
    assert d_bias.shape == (104,)
    np.testing.assert_allclose(d_bias[:97], np.asarray(c, np.float64).sum((0, 1)), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(d_bias[97:], 0.0)
