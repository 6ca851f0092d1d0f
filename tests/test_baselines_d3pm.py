"""Absorbing D3PM in discrete time (diffusion/d3pm.py): parity with the official d3pm outputs in
fixtures/baselines/d3pm_h64_b2_n2_v50_l16.npz, and the bound's math on an enumerable toy.

Tolerances are those of fixtures/baselines/README.md: d3pm_loss rtol 1e-4 (float32 round-off is
amplified T-fold in its second term), log-prob entries <= -1e4 count as -inf on both sides.
"""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.diffusion import d3pm, losses, process
from mdlm_jax.diffusion.schedules import get_schedule, loglinear
from mdlm_jax.interop import params_from_torch
from mdlm_jax.models import DiT

FILE = "baselines/d3pm_h64_b2_n2_v50_l16.npz"
VARIANTS = ["sm0_tc1", "sm1_tc1", "sm0_tc0", "sm1_tc0", "sm0_tc1_is", "sm1_tc1_cov"]
NET = dict(rtol=1e-5, atol=1e-5)  # DiT logits and log-probs: measured <= 1.5e-6 absolute


@pytest.fixture(scope="module")
def case(fixtures_dir):
    z = np.load(fixtures_dir / FILE)
    assert sorted(str(v) for v in z["variants"]) == sorted(VARIANTS)
    spec = json.loads(str(z["case_json"]))
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    models = {}
    for flags in spec["variants"]:
        model = DiT(vocab_size=spec["vocab"], hidden_size=spec["hidden"], cond_dim=spec["cond"],
                    n_blocks=spec["blocks"], n_heads=spec["heads"],
                    time_conditioning=flags["time_conditioning"])
        params = params_from_torch(sd, model)
        models[flags["name"]] = (flags, jax.jit(lambda x, s, m=model, p=params: m.apply({"params": p}, x, s)))
    return z, models


def assert_logprobs_close(ours, theirs, neg_inf=-1e4):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    np.testing.assert_array_equal(ours <= neg_inf, theirs <= neg_inf)
    np.testing.assert_allclose(ours[ours > neg_inf], theirs[theirs > neg_inf], **NET)


def test_constants(case):
    z, _ = case
    sigma_min, sigma_max = d3pm.loglinear_sigma_range(float(z["noise_eps"]))
    np.testing.assert_array_equal(sigma_max, z["noise_sigma_max"])  # 6.9077682, not -log(1e-3)
    np.testing.assert_array_equal(sigma_min, z["noise_sigma_min"])
    assert d3pm.NEG_INFINITY == float(z["neg_infinity"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward(case, variant):
    z, models = case
    flags, denoise = models[variant]
    sigma = jnp.asarray(z["fwd_sigma"])
    np.testing.assert_array_equal(z[f"{variant}/fwd/sigma_backbone"],
                                  z["fwd_sigma"] if flags["time_conditioning"] else 0.0)
    logits = denoise(jnp.asarray(z["fwd_xt"]), sigma)
    np.testing.assert_allclose(logits, z[f"{variant}/fwd/logits"], **NET)
    lp = d3pm.d3pm_log_probs(logits, int(z["mask_index"]), flags["subs_masking"])
    assert_logprobs_close(lp, z[f"{variant}/fwd/out"])


@pytest.mark.parametrize("section", ["loss0", "loss1"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_training_loss(case, variant, section):
    """The official _loss fed the recorded draws: t, x_t, both forward passes, every loss term."""
    z, models = case
    flags, denoise = models[variant]
    r = lambda k: z[f"{variant}/{section}/{k}"]  # noqa: E731
    mask_id, num_steps = int(z["mask_index"]), int(z["T"])
    is_on, cov = flags.get("importance_sampling", False), flags.get("change_of_variables", False)
    x0, u = jnp.asarray(z["x0"]), jnp.asarray(r("u"))

    e = process.antithetic_from_uniform(jnp.asarray(r("eps_t")), len(x0))  # official: one u per row
    t_in = (1 - float(z["sampling_eps"])) * e + float(z["sampling_eps"])
    if is_on:
        np.testing.assert_array_equal(t_in, r("is_t_in"))
        np.testing.assert_allclose(d3pm.importance_sampling_t(t_in), r("t_sampled"), rtol=1e-6)
    else:
        np.testing.assert_array_equal(t_in, r("t_sampled"))
    t = d3pm.d3pm_time(t_in, num_steps, importance_sampling=is_on)
    np.testing.assert_array_equal(t, r("t"))  # bitwise, t = 1 in loss1's last row included

    c = d3pm.d3pm_corrupt(x0, t, u, mask_id, change_of_variables=cov)
    if not cov:
        sigma, dsigma = loglinear(t)
        np.testing.assert_allclose(sigma, r("sigma"), rtol=1e-6)
        np.testing.assert_allclose(dsigma, r("dsigma"), rtol=1e-6)
    np.testing.assert_allclose(c.move_chance, r("move_chance")[:, 0], rtol=1e-6)
    np.testing.assert_array_equal(c.xt, r("xt"))
    np.testing.assert_allclose(c.conditioning, r("unet_conditioning")[:, 0], rtol=1e-6)
    np.testing.assert_allclose(r("sigma_backbone"), r("unet_conditioning")[:, 0] * flags["time_conditioning"])

    logits = denoise(c.xt, c.conditioning)
    np.testing.assert_allclose(logits, r("logits"), **NET)
    lp = d3pm.d3pm_log_probs(logits, mask_id, flags["subs_masking"])
    assert_logprobs_close(lp, r("model_output"))
    token = d3pm.d3pm_token_loss(lp, c.xt, x0, t, mask_id, num_steps)
    np.testing.assert_allclose(token, r("d3pm_loss"), rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(token)[np.asarray(c.xt) != mask_id] == 0)
    # the formula alone, on the official log-probs: only XLA's vs torch's log/exp round-off
    token_official_lp = d3pm.d3pm_token_loss(jnp.asarray(r("model_output")), c.xt, x0, t, mask_id, num_steps)
    np.testing.assert_allclose(token_official_lp, r("d3pm_loss"), rtol=1e-6, atol=1e-6)

    np.testing.assert_array_equal(r("recon_sigma_backbone"), 0.0)
    lp_clean = d3pm.d3pm_log_probs(denoise(x0, jnp.zeros(len(x0))), mask_id, flags["subs_masking"])
    assert_logprobs_close(lp_clean, r("recon_logprobs"))
    recon = d3pm.reconstruction_loss(lp_clean, x0)
    np.testing.assert_allclose(recon, r("recon_loss"), rtol=1e-5)
    np.testing.assert_allclose(recon + token, r("loss"), rtol=1e-4, atol=1e-6)

    out = d3pm.d3pm_loss(denoise, x0, jnp.asarray(z["attention_mask"]), t, u, mask_id=mask_id,
                         num_steps=num_steps, subs_masking=flags["subs_masking"], change_of_variables=cov)
    np.testing.assert_allclose(out.token_loss, r("nlls"), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.loss, r("loss_mean"), rtol=1e-5)


# ---- the math, on an enumerable toy: 3 real tokens + the mask, length 3, 4 sequences -----------

MASK, V, L = 3, 4, 3
DATA = np.array([[0, 1, 2], [0, 0, 1], [2, 1, 0], [1, 1, 1]])
DATA_P = np.array([0.4, 0.3, 0.2, 0.1])
PATTERNS = np.array(list(itertools.product([0, 1], repeat=L)), bool)  # True = masked


def exact_log_probs(xt, mask_mass=0.0):
    """log of (1 - mask_mass) p_data(x0_l | x_t) + mask_mass e_mask: the exact posterior of the toy
    data given the unmasked tokens, blended with mass on the mask token (-inf where 0).
    Shapes: xt (B, L) -> (B, L, V)."""
    dtype = jnp.result_type(float)
    consistent = jnp.all((xt[:, None] == MASK) | (xt[:, None] == jnp.asarray(DATA)[None]), -1)  # (B, N)
    w = jnp.asarray(DATA_P, dtype) * consistent
    post = jnp.einsum("bn,nlv->blv", w, jax.nn.one_hot(DATA, V, dtype=dtype)) / w.sum(-1)[:, None, None]
    return jnp.log((1 - mask_mass) * post + mask_mass * jax.nn.one_hot(MASK, V, dtype=dtype))


def enumerated_rows():
    """Every (x0, mask pattern) pair: x0, xt (R, L), the data probability (R,), masked counts (R,)."""
    x0 = np.repeat(DATA, len(PATTERNS), 0)
    masked = np.tile(PATTERNS, (len(DATA), 1))
    return x0, np.where(masked, MASK, x0), np.repeat(DATA_P, len(PATTERNS)), masked.sum(-1)


def bin_probabilities(num_steps, sampling_eps):
    """P(t = (k + 1) / T) for t' ~ U[sampling_eps, 1): the measure of [k / T, (k + 1) / T) there.
    Returns the grid t (K,) and the probabilities (K,) of the bins that occur."""
    k = np.arange(num_steps)
    p = np.clip(np.minimum((k + 1) / num_steps, 1) - np.maximum(k / num_steps, sampling_eps), 0, None)
    keep = p > 0
    return (k[keep] + 1) / num_steps, p[keep] / (1 - sampling_eps)


def expected_d3pm_bound(grid, bin_p, num_steps, mask_mass=0.0, eps=1e-3):
    """E_t E_{x0, x_t} sum_l d3pm_token_loss by enumeration, x_t masked with (1 - eps) t."""
    x0, xt, data_p, k = enumerated_rows()
    lp = d3pm.d3pm_log_probs(exact_log_probs(jnp.asarray(xt), mask_mass), MASK, False)
    n, rows = len(grid), len(x0)
    loss = d3pm.d3pm_token_loss(jnp.tile(lp, (n, 1, 1)), jnp.tile(jnp.asarray(xt), (n, 1)),
                                jnp.tile(jnp.asarray(x0), (n, 1)), jnp.asarray(np.repeat(grid, rows), lp.dtype),
                                MASK, num_steps)
    mc = (1 - eps) * grid[:, None]
    pattern_p = mc**k * (1 - mc) ** (L - k)
    return float((bin_p[:, None] * data_p * pattern_p * np.asarray(loss, np.float64).sum(-1).reshape(n, rows)).sum())


def test_token_loss_is_T_times_the_d3pm_kl():
    """At a masked token, T KL(q(x_s | x_t, x0) || p(x_s | x_t)), both built from transition
    matrices by Bayes: q(x_s | x_t, x0) = Q_st[x_s, x_t] Qbar_s[x0, x_s] / Qbar_t[x0, x_t] and
    p(x_s | x_t) ~ Q_st[x_s, x_t] sum_x0 Qbar_s[x0, x_s] p(x0 | x_t) (the mask a possible x0),
    alpha_t = 1 - t, t clamped to 1 - 1e-4 (float64, any log-probs, mask mass included)."""
    rng = np.random.default_rng(0)
    vocab, mask = 6, 5
    with jax.enable_x64(True):
        for num_steps in (10, 1000):
            t = np.array([2, 3, num_steps // 2, num_steps - 1, num_steps]) / num_steps
            batch, length = len(t), 7
            logits = rng.standard_normal((batch, length, vocab)) * 2
            x0 = rng.integers(0, mask, (batch, length))
            xt = np.where(rng.random((batch, length)) < 0.6, mask, x0)
            for subs_masking in (False, True):
                lp = np.asarray(d3pm.d3pm_log_probs(jnp.asarray(logits), mask, subs_masking))
                ours = np.asarray(d3pm.d3pm_token_loss(jnp.asarray(lp), jnp.asarray(xt), jnp.asarray(x0),
                                                       jnp.asarray(t), mask, num_steps))
                expected = np.zeros((batch, length))
                for b in range(batch):
                    tc = min(t[b], 1 - 1e-4)
                    alpha_t, alpha_s = 1 - tc, 1 - (tc - 1 / num_steps)
                    e_mask = np.eye(vocab)[mask]
                    qbar_s = alpha_s * np.eye(vocab) + (1 - alpha_s) * e_mask  # rows: from x0
                    qbar_t = alpha_t * np.eye(vocab) + (1 - alpha_t) * e_mask
                    q_st = alpha_t / alpha_s * np.eye(vocab) + (1 - alpha_t / alpha_s) * e_mask
                    for l in np.flatnonzero(xt[b] == mask):
                        q = q_st[:, mask] * qbar_s[x0[b, l]] / qbar_t[x0[b, l], mask]
                        p = q_st[:, mask] * (np.exp(lp[b, l]) @ qbar_s)
                        p /= p.sum()
                        kl = np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1) / p), 0.0))
                        expected[b, l] = num_steps * kl
                np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
                assert np.all(ours >= 0)
                if subs_masking:  # p(mask) = 0: the MDLM token loss -log p(x0) / t at the grid t
                    mdlm = losses.masked_diffusion_loss(jnp.asarray(logits), jnp.asarray(x0), jnp.asarray(xt),
                                                        1 / jnp.minimum(jnp.asarray(t), 1 - 1e-4),
                                                        jnp.ones((batch, length)), mask)
                    np.testing.assert_allclose(ours, mdlm.token_loss, rtol=1e-9)


@pytest.mark.parametrize("mask_mass", [0.0, 0.1])
def test_monte_carlo_loss_matches_enumeration(mask_mass):
    """The sampled training path (t ~ U[sampling_eps, 1), discretisation, masking with the
    recorded-style uniforms) is unbiased for the bound enumerated over bins, data and masks,
    with the exact posterior (mask_mass 0) or one keeping 10% on the mask (the nr terms).
    T = 10 makes the bins coarse; sampling_eps = 1 / T keeps t = 1 / T (NaN) out. 4 standard errors."""
    num_steps, sampling_eps, n = 10, 0.1, 1 << 18
    grid, bin_p = bin_probabilities(num_steps, sampling_eps)
    exact = expected_d3pm_bound(grid, bin_p, num_steps, mask_mass)

    @jax.jit
    def draw(key):
        k_data, k_t, k_u = jax.random.split(key, 3)
        x0 = jnp.asarray(DATA)[jax.random.choice(k_data, len(DATA), (n,), p=jnp.asarray(DATA_P, jnp.float32))]
        t = d3pm.d3pm_time(process.sample_t(k_t, n, sampler="uniform", sampling_eps=sampling_eps), num_steps)
        c = d3pm.d3pm_corrupt(x0, t, jax.random.uniform(k_u, x0.shape), MASK)
        lp = d3pm.d3pm_log_probs(exact_log_probs(c.xt, mask_mass), MASK, False)
        return d3pm.d3pm_token_loss(lp, c.xt, x0, t, MASK, num_steps).sum(-1)

    samples = np.asarray(draw(jax.random.key(0)), np.float64)
    se = samples.std(ddof=1) / np.sqrt(n)
    assert se < 0.01 * exact
    assert abs(samples.mean() - exact) < 4 * se, (samples.mean(), exact, se)


def test_large_T_bound_approaches_the_continuous_mdlm_bound():
    """With the exact posterior (p(mask) = 0) the T-step bound is a right Riemann sum of the MDLM
    integrand g(t) = E sum_l [masked] (dsigma / expm1 sigma) (-log p(x0_l | x_t)), a quadratic in
    t here, so B_T - B_inf = (g(1) - g(eps)) / (2 T (1 - eps)) + O(1 / T^2); the clamp at
    t = 1 adds 2e-4 of that. Checked within 1e-3 relative at T = 1000 and 10,000 (float64)."""
    sampling_eps, eps = 1e-3, 1e-3
    schedule = get_schedule("loglinear", eps=eps)
    with jax.enable_x64(True):
        x0, xt, data_p, k = enumerated_rows()
        logits = exact_log_probs(jnp.asarray(xt))

        def g(t):
            sigma, dsigma = schedule(jnp.full(len(x0), t, jnp.float64))
            out = losses.masked_diffusion_loss(logits, jnp.asarray(x0), jnp.asarray(xt),
                                               losses.continuous_weight(sigma, dsigma), jnp.ones(xt.shape), MASK)
            mc = (1 - eps) * t
            return float((data_p * mc**k * (1 - mc) ** (L - k) * np.asarray(out.token_loss).sum(-1)).sum())

        nodes, weights = np.polynomial.legendre.leggauss(20)  # exact for the quadratic g
        t_nodes = sampling_eps + (1 - sampling_eps) * (nodes + 1) / 2
        b_inf = sum(w * g(t) for w, t in zip(weights, t_nodes)) / 2
        for num_steps in (1000, 10_000):
            b_t = expected_d3pm_bound(*bin_probabilities(num_steps, sampling_eps), num_steps, eps=eps)
            first_order = (g(1.0) - g(sampling_eps)) / (2 * num_steps * (1 - sampling_eps))
            np.testing.assert_allclose(b_t - b_inf, first_order, rtol=1e-3)
