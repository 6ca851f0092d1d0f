"""Samplers respect what they must keep and count their calls; their output laws are checked
exactly in test_samplers_exact.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from tests_util import OPTIMIZED

from mdlm_jax.diffusion import sampling
from mdlm_jax.diffusion.schedules import get_schedule
from mdlm_jax.models import DiT

V_REAL, MASK, L = 3, 3, 2


def random_denoiser(length=L, seed=0):
    model = DiT(vocab_size=V_REAL + 1, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2, dropout=0.0)
    params = nn.meta.unbox(model.init(jax.random.key(seed), jnp.zeros((1, length), jnp.int32), jnp.zeros((1,)))["params"])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = tree.unflatten([0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    return lambda x, s: model.apply({"params": params}, x, s)


def test_first_hitting_never_exceeds_length_calls_and_keeps_prefix():
    denoise = random_denoiser(length=6)
    x_init = jnp.array([[0, 1, MASK, MASK, MASK, MASK], [MASK] * 6, [2, MASK, 1, MASK, 0, MASK]])
    out = sampling.sample_first_hitting(denoise, jax.random.key(0), x_init, mask_id=MASK)
    assert int(out.nfe) == 6  # the row with the most masks
    tokens = np.asarray(out.tokens)
    assert (tokens != MASK).all()
    fixed = np.asarray(x_init) != MASK
    np.testing.assert_array_equal(tokens[fixed], np.asarray(x_init)[fixed])
    assert (np.asarray(out.reveal_step)[fixed] == 0).all()


@pytest.mark.parametrize("predictor", ["ddpm", "ddpm_cache", "first_hitting"])
def test_infilling_never_changes_a_fixed_position(predictor):
    denoise = random_denoiser(length=8)
    rng = np.random.default_rng(0)
    x_init = np.where(rng.random((16, 8)) < 0.5, MASK, rng.integers(0, V_REAL, (16, 8)))
    if predictor == "first_hitting":
        out = sampling.sample_first_hitting(denoise, jax.random.key(0), jnp.asarray(x_init), mask_id=MASK)
    else:
        out = sampling.sample(denoise, jax.random.key(0), jnp.asarray(x_init), schedule=get_schedule("loglinear"),
                              mask_id=MASK, num_steps=16, predictor=predictor)
    fixed = x_init != MASK
    np.testing.assert_array_equal(np.asarray(out.tokens)[fixed], x_init[fixed])


def test_predictor_errors_name_every_predictor_and_the_first_hitting_entry_point():
    args = dict(schedule=get_schedule("loglinear"), mask_id=MASK, num_steps=2)
    x_init = jnp.full((1, L), MASK)
    with pytest.raises(ValueError, match="first_hitting"):
        sampling.sample(random_denoiser(), jax.random.key(0), x_init, predictor="euler", **args)
    with pytest.raises(ValueError, match=r"sample_first_hitting\(\.\.\.\) instead"):
        sampling.sample(random_denoiser(), jax.random.key(0), x_init, predictor="first_hitting", **args)
    assert sampling.ALL_PREDICTORS == sampling.PREDICTORS + ("first_hitting",)


def test_ddpm_cache_with_time_conditioning_calls_the_denoiser_every_step():
    denoise = lambda x, sigma: jnp.zeros(x.shape + (V_REAL + 1,)) + sigma[:, None, None]  # noqa: E731
    x_init = jnp.full((2, L), MASK)

    def nfe(timed):
        return int(sampling.sample(denoise, jax.random.key(0), x_init, schedule=get_schedule("loglinear"),
                                   mask_id=MASK, num_steps=64, predictor="ddpm_cache", time_conditioning=timed).nfe)

    assert nfe(True) == 64 + 1  # every step, then noise removal
    assert nfe(False) <= 2 * L + 2  # one call per change of x (<= L per row), the first call, noise removal


def test_ar_sampler_keeps_positions_before_start_and_checks_start():
    logits = lambda x: jnp.zeros(x.shape + (V_REAL + 1,))  # noqa: E731
    x_init = jnp.array([[2, 0, 1, MASK, MASK], [2, 1, 1, 0, 0]])
    out = sampling.sample_ar(logits, jax.random.key(0), x_init, mask_id=MASK, start=3)
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[:, :3], np.asarray(x_init)[:, :3])
    assert (tokens < V_REAL).all() and int(out.nfe) == 2
    np.testing.assert_array_equal(np.asarray(out.reveal_step), [[0, 0, 0, 1, 2]] * 2)
    default = sampling.sample_ar(logits, jax.random.key(0), x_init, mask_id=MASK)  # start = 1: only BOS kept
    assert int(default.nfe) == 4 and (np.asarray(default.tokens)[:, 0] == 2).all()
    for bad in (0, 6):
        with pytest.raises(ValueError, match=r"start must lie in \[1, 5\]"):
            sampling.sample_ar(logits, jax.random.key(0), x_init, mask_id=MASK, start=bad)


def test_semi_autoregressive_keeps_every_committed_token():
    length, stride, strides = 8, 3, 4
    denoise = random_denoiser(length=length)
    seen = []

    sample = jax.jit(lambda k, x: sampling.sample(denoise, k, x, schedule=get_schedule("loglinear"), mask_id=MASK,
                                                  num_steps=8))

    def block(k, x_init):
        out = sample(k, x_init)
        seen.append((np.asarray(x_init), np.asarray(out.tokens)))
        return out

    out = sampling.semi_autoregressive(block, jax.random.key(0), jnp.full((2, length), MASK), stride=stride,
                                       num_strides=strides, mask_id=MASK)
    tokens = np.asarray(out.tokens)
    assert tokens.shape == (2, length + strides * stride) and (tokens != MASK).all()
    for i, (x_init, block_out) in enumerate(seen[1:], start=1):
        start = i * stride  # block i covers tokens[start : start + length]
        np.testing.assert_array_equal(x_init[:, : length - stride], tokens[:, start: start + length - stride])
        np.testing.assert_array_equal(block_out, tokens[:, start: start + length])


def test_nucleus_keeps_exactly_the_nucleus():
    probs = np.array([0.05, 0.4, 0.1, 0.3, 0.15])
    lp = jnp.log(jnp.asarray(probs))
    for top_p, kept in [(0.39, {1}), (0.41, {1, 3}), (0.69, {1, 3}), (0.71, {1, 3, 4}), (0.94, {1, 3, 4, 2}),
                        (1.0, {0, 1, 2, 3, 4})]:
        out = np.asarray(sampling.nucleus(lp, top_p))
        assert set(np.flatnonzero(np.isfinite(out))) == kept, top_p
    # top_p 0.65, off the 0.4 + 0.3 boundary, which float32 rounding of log -> exp decides either way
    shaped = np.asarray(sampling.shaped_probs(jnp.log(jnp.asarray(probs))[None, None], jnp.array([[MASK + 10]]),
                                              MASK + 10, top_p=0.65))[0, 0]
    np.testing.assert_allclose(shaped, np.array([0, 0.4, 0, 0.3, 0]) / 0.7, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("x64,p,log2_draws", [(True, 1e-8, 30), (False, 1e-7, 28)])
def test_tail_token_is_drawn_at_its_rate(x64, p, log2_draws):
    """A token of probability p against one of 1 - p: about 10.7 / 26.8 hits expected.

    The official float32 Gumbel noise cannot draw the 1e-8 token: its smallest noise value is
    about 1.2e-7, so the tail token would need the other token's Exp(1) noise above 11.9
    (probability 7e-6) and then the very last uniform of the float32 grid (2^-23).
    """
    chunk = 2**24
    with jax.enable_x64(x64):
        q = jnp.asarray([1 - p, p], jnp.float64 if x64 else jnp.float32)
        count = jax.jit(lambda k: (sampling.sample_categorical(
            jnp.broadcast_to(q, (chunk, 2)), sampling.exponential_noise(k, (chunk, 2))) == 1).sum(),
            compiler_options=OPTIMIZED)
        hits = sum(int(count(k)) for k in jax.random.split(jax.random.key(0), 2 ** (log2_draws - 24)))
    expected = p * 2**log2_draws
    assert stats.poisson(expected).cdf(hits) > 1e-3 and stats.poisson(expected).sf(hits - 1) > 1e-3, (hits, expected)


def test_float32_noise_reproduces_the_official_gumbel_cap():
    """'float32' is the official noise: g = -log E never exceeds -log(-log(1 - 2^-24)) ~ 16.6,
    which is what lowers the entropy of official samples; 'exact' has no such cap in distribution."""
    official = sampling.categorical_noise("float32", jax.random.key(1), (2**20,))
    cap = -np.log(1e-10 - np.log1p(-2.0**-24))
    assert float(jnp.max(-jnp.log(official))) <= cap + 1e-3
    exact = sampling.categorical_noise("exact", jax.random.key(1), (2**20,))
    assert float(jnp.min(exact)) > 0
    with pytest.raises(ValueError, match="noise"):
        sampling.categorical_noise("float16", jax.random.key(1), (2,))


def test_unmask_step_draws_the_ancestral_step_distribution():
    """unmask_step (two stages, noise only when something unmasks) against the closed form of
    q(x_s | x_t): P(stay masked) = mc_s / mc_t, P(v) = (1 - mc_s / mc_t) p_v; the carried token stays."""
    p = jnp.asarray([0.5, 0.3, 0.15, 0.05, 0.0])  # the last entry is the mask
    mask, n = 4, 2**16
    x = jnp.asarray([[mask, 2]])
    p_x0 = jnp.stack([p, jax.nn.one_hot(2, 5)])[None]
    mc_t, mc_s = jnp.asarray([0.5]), jnp.asarray([0.3])
    draws = jax.jit(jax.vmap(lambda k: sampling.unmask_step(x, p_x0, mc_t, mc_s, k, mask)))(
        jax.random.split(jax.random.key(3), n))
    assert np.all(np.asarray(draws[:, 0, 1]) == 2)
    counts = np.bincount(np.asarray(draws[:, 0, 0]), minlength=5)
    expected = np.append(0.4 * np.asarray(p[:4]), 0.6) * n
    assert counts[3] > 0 and stats.chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
    nothing = sampling.unmask_step(x, p_x0, mc_t, mc_t, jax.random.key(0), mask)  # mc_s = mc_t: no move
    np.testing.assert_array_equal(nothing, x)
