"""Each objective's Monte-Carlo loss, through its own ``prepare`` (t, importance sampling, the
T-grid, the masks, the keys), equals its exact expectation, enumerated over the data, the
2^L mask patterns and t (Gauss-Legendre panels in continuous time, the bins' probabilities in
discrete time), in float64 with closed-form move chances and weights.

The denoiser is a fixed random table of logits indexed by the whole x_t, so every position
depends on every other and a draw that ties the masks to t (a reused key) or to each other
moves the expectation. V = 4 with the mask last, L = 3.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.config import default_config
from mdlm_jax.diffusion import d3pm, sedd
from mdlm_jax.diffusion.schedules import get_schedule
from mdlm_jax.objectives import get_objective

V, MASK, L, EPS = 4, 3, 3, 1e-3
DATA = np.array([[0, 1, 2], [2, 2, 0], [1, 0, 0]])
TABLE = np.random.default_rng(0).standard_normal((V**L, L, V)) * 2
PATTERNS = np.array(list(itertools.product([False, True], repeat=L)))
F0 = np.log1p(-np.exp(-EPS))  # log move chance at sigma_min and sigma_max (BASELINES.md)
FT = np.log1p(-np.exp(np.log1p(-(1 - EPS))))


def logits_of(xt):
    """The table's logits for x_t (..., L) int -> (..., L, V), as numpy (float64) or jax."""
    code = sum(xt[..., l] * V**l for l in range(L))
    return jnp.asarray(TABLE, jnp.float32)[code] if isinstance(xt, jax.Array) else TABLE[code]


def objective_for(**diffusion):
    cfg = default_config()
    cfg.model.time_conditioning = diffusion.pop("time_conditioning", False)
    cfg.diffusion.update(diffusion)
    return get_objective(cfg, mask_id=MASK, schedule=get_schedule("loglinear", eps=EPS))


def monte_carlo(objective, n=8192, batches=48):
    """Per-token loss of ``batches`` batches of n rows drawn from DATA -> (mean, standard error)."""

    @jax.jit
    def batch_loss(key):
        k_data, k_draw, k_sobol = jax.random.split(key, 3)
        x0 = jnp.asarray(DATA)[jax.random.randint(k_data, (n,), 0, len(DATA))]
        ex = objective.prepare(dict(input_ids=x0, attention_mask=jnp.ones_like(x0)), k_draw, k_sobol)
        return objective.token_losses(lambda x, sigma: (logits_of(x), None), ex).loss

    values = np.array([batch_loss(k) for k in jax.random.split(jax.random.key(1), batches)], np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(batches)


def enumerated(t_nodes, t_weights, move_chance, row_loss):
    """sum_t w_t E_{x0 ~ DATA} sum_patterns P(pattern | mc(t)) row_loss(x_t, x0, t) / L.

    ``row_loss(xt (R, L), x0 (R, L), t (R,)) -> (R,)`` float64; t_nodes, t_weights (J,)."""
    x0 = np.repeat(DATA, len(PATTERNS), 0)
    masked = np.tile(PATTERNS, (len(DATA), 1))
    xt, k = np.where(masked, MASK, x0), masked.sum(-1)
    total = 0.0
    for t, w in zip(t_nodes, t_weights):
        mc = move_chance(t)
        p = mc**k * (1 - mc) ** (L - k) / len(DATA)
        total += w * float((p * row_loss(xt, x0, np.full(len(x0), t))).sum())
    return total / L


def continuous_t(sampling_eps, transform=lambda t: t):
    """Gauss-Legendre nodes and weights of E over t' ~ U[sampling_eps, 1), on panels refined near 0."""
    edges = np.unique(np.clip([sampling_eps, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0], sampling_eps, 1.0))
    x, w = np.polynomial.legendre.leggauss(24)
    nodes, weights = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        nodes.append(a + (b - a) * (x + 1) / 2)
        weights.append(w * (b - a) / 2 / (1 - sampling_eps))
    return transform(np.concatenate(nodes)), np.concatenate(weights)


def discrete_t(num_steps, sampling_eps, inverse=lambda u: u):
    """The official T-grid t = (k + 1) / T with P(k) the measure of t' ~ U[sampling_eps, 1) whose
    (transformed) value falls in [k / T, (k + 1) / T); ``inverse`` maps the bin edges back to t'."""
    k = np.arange(num_steps)
    lo = np.maximum(inverse(k / num_steps), sampling_eps)
    hi = np.minimum(inverse((k + 1) / num_steps), 1.0)
    p = np.clip(hi - lo, 0, None) / (1 - sampling_eps)
    keep = p > 0
    return (k[keep] + 1) / num_steps, p[keep]


def subs_nll(xt, x0):
    """-log p(x0 | x_t) with the mask column removed (SUBS), at masked positions (R, L)."""
    logits = logits_of(xt)[..., :MASK]
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return np.where(xt == MASK, -np.take_along_axis(lp, x0[..., None], -1)[..., 0], 0.0)


def loglinear_move_chance(t):
    return (1 - EPS) * t


def is_move_chance(t):
    """Importance sampling / change of variables: log move chance linear in t from F0 to FT."""
    return np.exp(t * FT + (1 - t) * F0)


def is_inverse(u):
    """The t' whose importance-sampled t is u: (1 - eps) u = exp(t' FT + (1 - t') F0)."""
    with np.errstate(divide="ignore"):
        return (np.log((1 - EPS) * np.asarray(u, np.float64)) - F0) / (FT - F0)


def x64(fn):
    def wrapped(*args):
        with jax.enable_x64(True):
            return np.asarray(fn(*(jnp.asarray(a) for a in args)), np.float64)

    return wrapped


SUBS = [
    ("continuous, uniform t", dict(time_sampler="uniform"), continuous_t(1e-3), loglinear_move_chance,
     lambda xt, x0, t: (subs_nll(xt, x0) / t[:, None]).sum(-1)),
    ("continuous, antithetic t", dict(time_sampler="antithetic"), continuous_t(1e-3), loglinear_move_chance,
     lambda xt, x0, t: (subs_nll(xt, x0) / t[:, None]).sum(-1)),
    ("T = 10", dict(time_sampler="uniform", num_steps=10), discrete_t(10, 1e-3), loglinear_move_chance,
     lambda xt, x0, t: (subs_nll(xt, x0) / t[:, None]).sum(-1)),
    ("importance sampling", dict(time_sampler="uniform", importance_sampling=True), continuous_t(1e-3),
     is_move_chance, lambda xt, x0, t: -F0 * subs_nll(xt, x0).sum(-1)),
    ("change of variables", dict(time_sampler="uniform", change_of_variables=True), continuous_t(1e-3),
     is_move_chance, lambda xt, x0, t: -F0 * subs_nll(xt, x0).sum(-1)),
]


@pytest.mark.parametrize("name,diffusion,t_rule,move_chance,row_loss", SUBS, ids=[s[0] for s in SUBS])
def test_subs_monte_carlo_equals_enumeration(name, diffusion, t_rule, move_chance, row_loss):
    exact = enumerated(*t_rule, move_chance, row_loss)
    mean, se = monte_carlo(objective_for(parameterization="subs", **diffusion))
    assert se < 0.01 * exact, (name, se, exact)
    assert abs(mean - exact) < 4 * se, (name, mean, exact, se)


def d3pm_row_loss(subs_masking, num_steps=10):
    @x64
    def row_loss(xt, x0, t):
        lp = d3pm.d3pm_log_probs(jnp.asarray(logits_of(np.asarray(xt))), MASK, subs_masking)
        clean = d3pm.d3pm_log_probs(jnp.asarray(logits_of(np.asarray(x0))), MASK, subs_masking)
        return (d3pm.d3pm_token_loss(lp, xt, x0, t, MASK, num_steps) + d3pm.reconstruction_loss(clean, x0)).sum(-1)

    return row_loss


D3PM = [
    ("zero masking", dict(subs_masking=True), discrete_t(10, 0.1), loglinear_move_chance),
    ("no zero masking", dict(subs_masking=False), discrete_t(10, 0.1), loglinear_move_chance),
    # importance sampling maps t' = 0 to t = 1e-3, in the NaN bin for T < 1000: the paper's T
    ("importance sampling", dict(subs_masking=False, importance_sampling=True, num_steps=1000, sampling_eps=1e-3),
     discrete_t(1000, 1e-3, is_inverse), loglinear_move_chance),
]


@pytest.mark.parametrize("name,diffusion,t_rule,move_chance", D3PM, ids=[s[0] for s in D3PM])
def test_d3pm_monte_carlo_equals_enumeration(name, diffusion, t_rule, move_chance):
    """T = 10 makes the bins coarse; sampling_eps = 1 / T keeps t = 1 / T (NaN) out."""
    diffusion = dict(dict(num_steps=10, sampling_eps=0.1), **diffusion)
    exact = enumerated(*t_rule, move_chance, d3pm_row_loss(diffusion["subs_masking"], diffusion["num_steps"]))
    mean, se = monte_carlo(objective_for(parameterization="d3pm", time_sampler="uniform", **diffusion))
    assert se < 0.01 * exact, (name, se, exact)
    assert abs(mean - exact) < 4 * se, (name, mean, exact, se)


def test_sedd_monte_carlo_equals_enumeration():
    @x64
    def row_loss(xt, x0, t):
        sigma = -jnp.log1p(-(1 - EPS) * t)
        dsigma = (1 - EPS) / (1 - (1 - EPS) * t)
        log_score = sedd.sedd_log_score(jnp.asarray(logits_of(np.asarray(xt))), xt, sigma, MASK)
        return (dsigma[:, None] * sedd.score_entropy(log_score, sigma, xt, x0, MASK)).sum(-1)

    exact = enumerated(*continuous_t(1e-3), loglinear_move_chance, row_loss)
    mean, se = monte_carlo(objective_for(parameterization="sedd", time_sampler="uniform", time_conditioning=True))
    assert se < 0.01 * exact, (se, exact)
    assert abs(mean - exact) < 4 * se, (mean, exact, se)
