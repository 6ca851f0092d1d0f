"""Math that can fail: schedules, weights, the NELBO estimator, time samplers, the sampler."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tests_util
from scipy import stats

from mdlm_jax.diffusion import losses, process, sampling
from mdlm_jax.diffusion.schedules import SCHEDULES, get_schedule
from mdlm_jax.models import DiT

ALL_SCHEDULES = [("loglinear", {}), ("cosine", {}), ("cosinesqr", {}), ("linear", {}),
                 ("geometric", {}), ("polynomial", {"k": 2.0})]
assert {name for name, _ in ALL_SCHEDULES} == set(SCHEDULES)

V_REAL, MASK, L = 4, 4, 3  # tiny vocabulary (plus the mask) and length for enumeration


def tiny_model(seed=0):
    """A small DiT with every parameter random (the zero-initialised ones too), fixed under jit."""
    model = DiT(vocab_size=V_REAL + 1, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2, dropout=0.0)
    params = nn.meta.unbox(model.init(jax.random.key(seed), jnp.zeros((1, L), jnp.int32), jnp.zeros((1,)))["params"])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    params = tree.unflatten([jax.random.normal(k, x.shape) * 0.5 for k, x in zip(keys, leaves)])
    return jax.jit(lambda x, s: model.apply({"params": params}, x, s))


@pytest.mark.parametrize("name,params", ALL_SCHEDULES)
def test_dsigma_is_the_derivative_of_sigma(name, params):
    schedule = get_schedule(name, **params)
    t = jnp.linspace(0.01, 0.99, 37)
    grad = jax.vmap(jax.grad(schedule.sigma))(t)
    np.testing.assert_allclose(schedule.dsigma(t), grad, rtol=2e-5, atol=1e-6)


def test_loglinear_weight_is_exactly_one_over_t():
    t = np.linspace(1e-3, 1.0, 1001)
    schedule = get_schedule("loglinear")
    np.testing.assert_allclose(losses.continuous_weight(*schedule(t)), 1 / t, rtol=2e-6)
    with jax.enable_x64(True):
        sigma, dsigma = schedule(jnp.asarray(t, jnp.float64))
        np.testing.assert_allclose(losses.continuous_weight(sigma, dsigma), 1 / t, rtol=1e-12)
        # the discrete weight goes through exp(-sigma), which rounds at 1e-11 in float64
        np.testing.assert_allclose(losses.discrete_weight(schedule, jnp.asarray(t, jnp.float64), 1000), 1 / t,
                                   rtol=1e-10)


def exact_nelbo_per_token(denoise, x0, sampling_eps=1e-3, eps=1e-3):
    """The exact continuous-time NELBO per token of x0 by enumeration (tests_util)."""
    return tests_util.exact_nelbo_per_token(denoise, x0, MASK, sampling_eps=sampling_eps, eps=eps)


@pytest.mark.parametrize("sampler", ["uniform", "antithetic"])
def test_monte_carlo_nelbo_matches_enumeration(sampler):
    denoise = tiny_model()
    x0 = np.array([1, 3, 0])
    exact = exact_nelbo_per_token(denoise, x0)
    batch = jnp.tile(jnp.asarray(x0)[None], (256, 1))
    loss = jax.jit(lambda k: losses.diffusion_loss(
        denoise, batch, jnp.ones_like(batch, jnp.float32), k, schedule=get_schedule("loglinear"),
        mask_id=MASK, time_sampler=sampler).loss)
    estimates = np.array([loss(k) for k in jax.random.split(jax.random.key(3), 200)])
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * se, (estimates.mean(), exact, se)


@pytest.mark.parametrize("name,params", ALL_SCHEDULES)
@pytest.mark.parametrize("num_steps", [0, 10])
def test_nelbo_of_exact_denoiser_is_entropy_for_every_schedule(name, params, num_steps):
    """For i.i.d. tokens x_l ~ pi the exact posterior at a masked position is pi, and the NELBO
    is H(pi) (alpha(0) - alpha(1)) for any schedule: H(pi) up to the schedule's endpoint eps."""
    schedule = get_schedule(name, **params)
    pi = np.array([0.5, 0.25, 0.15, 0.1])
    entropy = -(pi * np.log(pi)).sum()
    expected = entropy * float(schedule.alpha(0.0) - schedule.alpha(1.0))
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.choice(V_REAL, size=(4096, 8), p=pi))
    logits = jnp.concatenate([jnp.log(jnp.asarray(pi, jnp.float32)), jnp.zeros(1)])
    denoise = lambda x, s: jnp.broadcast_to(logits, x.shape + (V_REAL + 1,))  # noqa: E731
    loss = jax.jit(lambda k: losses.diffusion_loss(
        denoise, x0, jnp.ones(x0.shape), k, schedule=schedule, mask_id=MASK, sampling_eps=0.0,
        num_steps=num_steps).loss)
    estimates = np.array([loss(k) for k in jax.random.split(jax.random.key(0), 16)])
    se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - expected) < 4 * se + 1e-4, (estimates.mean(), expected, se)
    assert abs(expected - entropy) < 2.5e-3 * entropy  # every schedule's endpoints are within 2e-3


def time_sampler_variances(num_keys=200, batch=64, length=8):
    """Variance over seeds of the batch NELBO estimate, per time sampler.

    The denoiser knows x0 and is confident in proportion to exp(-sigma), like a trained model:
    its loss is near 0 at small t and log 4 at t = 1, so most of the estimator's variance comes
    from t, which is what stratification removes.
    """
    x0 = jnp.asarray(np.random.default_rng(0).integers(0, V_REAL, (batch, length)))
    denoise = lambda x, s: 10 * jnp.exp(-s)[:, None, None] * jax.nn.one_hot(x0, V_REAL + 1)  # noqa: E731
    out = {}
    for sampler in process.TIME_SAMPLERS:
        loss = jax.jit(lambda k, sampler=sampler: losses.diffusion_loss(
            denoise, x0, jnp.ones(x0.shape), k, schedule=get_schedule("loglinear"), mask_id=MASK,
            time_sampler=sampler).loss)
        out[sampler] = float(np.var([loss(k) for k in jax.random.split(jax.random.key(7), num_keys)], ddof=1))
    return out


def test_stratified_time_samplers_reduce_variance():
    var = time_sampler_variances()
    assert var["antithetic"] < 0.2 * var["uniform"], var
    assert var["sobol"] < 0.2 * var["uniform"], var


def test_sobol_is_stratified_uniform_and_continues():
    key = jax.random.key(0)
    first = np.asarray(process.sobol_1d(key, 64, 0))
    np.testing.assert_array_equal(np.sort(np.floor(first * 64)), np.arange(64))
    whole = np.asarray(process.sobol_1d(key, 128, 0))
    np.testing.assert_array_equal(whole[64:], np.asarray(process.sobol_1d(key, 64, 64)))
    np.testing.assert_array_equal(np.sort(np.floor(whole * 128)), np.arange(128))
    pooled = np.concatenate([np.asarray(process.sobol_1d(k, 8)) for k in jax.random.split(key, 2000)])
    assert stats.kstest(pooled, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("chunk", [1, 3, 7, 8])  # 3 does not divide L = 7: the padded tail
def test_chunked_token_nll_equals_full_logits(chunk):
    """The fused output layer + cross-entropy gives token_nll's values and gradients (float64)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        hidden, kernel = jnp.asarray(rng.standard_normal((2, 7, 5))), jnp.asarray(rng.standard_normal((5, 11)))
        targets = jnp.asarray(rng.integers(0, 10, (2, 7)))  # 10 = the mask id is never a target

        def full(h, w):
            return losses.token_nll(h @ w, targets, 10)

        def fused(h, w):
            return losses.chunked_token_nll(h, lambda x: x @ w, targets, 10, chunk)

        np.testing.assert_allclose(fused(hidden, kernel), full(hidden, kernel), rtol=1e-13)
        for a, b in zip(jax.grad(lambda h, w: fused(h, w).sum(), (0, 1))(hidden, kernel),
                        jax.grad(lambda h, w: full(h, w).sum(), (0, 1))(hidden, kernel)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("mask_id", [2, 10])
def test_projected_token_nll_equals_token_nll_of_the_cut_logits(mask_id):
    """The output layer + cross-entropy with the gradient written out (softmax - onehot) against
    autodiff of token_nll on the logits cut to the vocabulary, in float64: values and the gradients
    of the hidden state, the kernel and the bias, with 3 pad columns (V = 11 of 14) and a weight per
    position (the NELBO's); the mask column inside the vocabulary or its last entry."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        hidden = jnp.asarray(rng.standard_normal((2, 7, 5)))
        params = {"w": jnp.asarray(rng.standard_normal((5, 14))), "b": jnp.asarray(rng.standard_normal(14))}
        targets = jnp.asarray(rng.integers(0, 10, (2, 7)))
        targets = jnp.where(targets == mask_id, 0, targets)  # the mask is never a target
        weight = jnp.asarray(rng.uniform(0.5, 2.0, (2, 7)))

        def project(p, h):
            return h @ p["w"] + p["b"]

        def full(p, h):
            return (losses.token_nll(project(p, h)[..., :11], targets, mask_id) * weight).sum()

        def fused(p, h):
            return (losses.projected_token_nll(project, p, h, targets, mask_id, 11) * weight).sum()

        np.testing.assert_allclose(losses.projected_token_nll(project, params, hidden, targets, mask_id, 11),
                                   losses.token_nll(project(params, hidden)[..., :11], targets, mask_id), rtol=1e-13)
        got, want = jax.grad(fused, (0, 1))(params, hidden), jax.grad(full, (0, 1))(params, hidden)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        assert np.all(np.asarray(got[0]["w"])[:, 11:] == 0) and np.all(np.asarray(got[0]["b"])[11:] == 0)
        # padded logits straight into token_nll: the pad columns excluded, not sliced off
        np.testing.assert_allclose(losses.token_nll(project(params, hidden), targets, mask_id, 11),
                                   losses.token_nll(project(params, hidden)[..., :11], targets, mask_id), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_token_nll_values_and_gradient_equal_log_softmax_in_float64(dtype):
    """token_nll's values and gradient against -log_softmax differentiated by JAX in float64, the
    mask column removed; weights g per position, so each row's scale is checked."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        logits = rng.standard_normal((2, 7, 11)) * 3
        targets = rng.integers(0, 10, (2, 7))  # 10 = the mask id is never a target
        g = rng.standard_normal((2, 7))

        def reference(z):
            z = jnp.where(jnp.arange(11) == 10, -jnp.inf, z)
            logp = jax.nn.log_softmax(z, axis=-1)
            return -jnp.take_along_axis(logp, jnp.asarray(targets)[..., None], axis=-1)[..., 0]

        want, want_grad = reference(logits), jax.grad(lambda z: (reference(z) * g).sum())(jnp.asarray(logits))
        z = jnp.asarray(logits, dtype)
        got = losses.token_nll(z, targets, 10)
        got_grad = jax.grad(lambda z: (losses.token_nll(z, targets, 10) * g).sum())(z)
        assert got.dtype == dtype and got_grad.dtype == dtype
        tol = 1e-13 if dtype == "float64" else 2e-6
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
        np.testing.assert_allclose(got_grad, want_grad, rtol=tol, atol=tol)
        assert np.all(np.asarray(got_grad)[..., 10] == 0)


def test_discrete_snapping():
    t = process.sample_t(jax.random.key(0), 1000, num_steps=10)
    np.testing.assert_allclose(np.unique(np.round(np.asarray(t) * 10, 4)), np.arange(1, 11))


@pytest.mark.parametrize("num_steps", [7, 128, 1000])
def test_discretize_t_is_the_official_float32_grid_bitwise_under_jit(num_steps):
    """torch's float32 k / T + 1 / T, correctly rounded: XLA's own k * (1 / T) is 1 ulp off in some
    bins (1.0000001 in the last one at T = 1000), which moves dsigma by 1e-4 at the end point."""
    k = np.arange(num_steps, dtype=np.float32)
    official = k / np.float32(num_steps) + np.float32(1 / num_steps)
    t = (k + np.float32(0.5)) / np.float32(num_steps)
    got = jax.jit(process.discretize_t, static_argnums=1)(jnp.asarray(t), num_steps)
    np.testing.assert_array_equal(np.asarray(got), official)


@pytest.mark.parametrize("predictor", ["ddpm", "ddpm_cache"])
def test_sampler_fills_every_mask_and_keeps_fixed_tokens(predictor):
    denoise = tiny_model()
    x_init = jnp.array([[MASK, 2, MASK], [1, MASK, MASK], [MASK, MASK, MASK], [0, 1, 2]] * 4)
    out = jax.jit(lambda k: sampling.sample(denoise, k, x_init, schedule=get_schedule("loglinear"), mask_id=MASK,
                                            num_steps=8, predictor=predictor))(jax.random.key(0))
    tokens = np.asarray(out.tokens)
    assert (tokens != MASK).all() and (tokens < V_REAL).all()
    fixed = np.asarray(x_init) != MASK
    np.testing.assert_array_equal(tokens[fixed], np.asarray(x_init)[fixed])
    assert int(out.nfe) <= 9


def test_ddpm_cache_skips_calls_when_nothing_changes():
    denoise = tiny_model()
    x_init = jnp.full((2, L), MASK)
    out = sampling.sample(denoise, jax.random.key(1), x_init, schedule=get_schedule("loglinear"), mask_id=MASK,
                          num_steps=1000, predictor="ddpm_cache")
    # At most one call per change of x (<= L per row, 2 rows) plus the first call and noise removal.
    assert 2 <= int(out.nfe) <= 2 * L + 2


def draw_counts(probs, n, rng):
    q = jnp.broadcast_to(jnp.asarray(probs), (n, len(probs)))
    idx = sampling.sample_categorical(q, sampling.exponential_noise(rng, q.shape))
    return np.bincount(np.asarray(idx), minlength=len(probs))


@pytest.mark.parametrize("x64", [True, False])
def test_categorical_sampling_chi_square_including_tail(x64):
    probs = np.array([0.6, 0.3, 0.09, 0.009, 9e-4, 1e-4])
    with jax.enable_x64(x64):
        assert sampling.x64_enabled() == x64
        counts = draw_counts(probs, 1_000_000, jax.random.key(0))
    expected = probs / probs.sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
    assert counts[-1] > 50  # the 1e-4 entry is drawn at its rate (about 100 times)


def test_loss_and_sampler_compile_once():
    denoise = tiny_model()
    traces = {"loss": 0, "sample": 0}

    @jax.jit
    def loss(x0, key):
        traces["loss"] += 1
        return losses.diffusion_loss(denoise, x0, jnp.ones(x0.shape), key, schedule=get_schedule("loglinear"),
                                     mask_id=MASK).loss

    @jax.jit
    def sample(key):
        traces["sample"] += 1
        return sampling.sample(denoise, key, jnp.full((2, L), MASK), schedule=get_schedule("loglinear"),
                               mask_id=MASK, num_steps=4, predictor="ddpm_cache")

    rng = np.random.default_rng(0)
    for i in range(3):
        loss(jnp.asarray(rng.integers(0, V_REAL, (8, L)), jnp.int32), jax.random.key(i))
        sample(jax.random.key(i))
    assert traces == {"loss": 1, "sample": 1}


def test_bad_inputs_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="noise schedule"):
        get_schedule("nope")
    with pytest.raises(ValueError, match="unknown"):
        get_schedule("loglinear", sigma_max=3.0)
    with pytest.raises(ValueError, match="t must lie in"):
        get_schedule("loglinear")(jnp.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="time sampler"):
        process.sample_t(jax.random.key(0), 4, sampler="halton")
    with pytest.raises(ValueError, match="predictor"):
        sampling.sample(lambda x, s: x, jax.random.key(0), jnp.zeros((1, 2), jnp.int32),
                        schedule=get_schedule("loglinear"), mask_id=0, num_steps=2, predictor="euler")
    with pytest.raises(ValueError, match="n_heads"):
        DiT(vocab_size=8, hidden_size=30, n_heads=4)
    model = DiT(vocab_size=5, hidden_size=16, cond_dim=8, n_blocks=1, n_heads=2)
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 5\)"):
        model.init(jax.random.key(0), jnp.array([[0, 5]]), jnp.zeros(1))
