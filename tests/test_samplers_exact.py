"""Each sampler against its EXACT output law, computed by enumeration (or quadrature).

The stand-in denoiser is a pure jnp function over V = 3 real tokens (+ the mask) with strong
dependence between positions and position-specific preferences, so the order in which positions
are revealed changes the joint law: a sampler that reuses a stale p(x_0 | x_t), reveals positions
in a fixed order, or hands the model the wrong sigma draws from a visibly different law. Each
comparison is a chi-square test on one batch of draws (cells with expected count below 5 pooled),
failing below P_MIN = 1e-4: with every key fixed the tests are deterministic, and a correct sampler
would fail a given comparison for about 1 seed in 10,000 (the correct samplers score p >= 0.1 here).
Each deliberately broken sampler failed the test aimed at it, with p < 1e-27 (run once): a cache
never invalidated, or invalidated by position 0 only; ``ddpm_cache`` reusing its cache under time
conditioning; first hitting revealing the left-most mask, passing sigma = 0, using n = L for every
row, or starting from m = 1; the AR sampler ignoring temperature or top-p.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from mdlm_jax.diffusion import sampling
from mdlm_jax.diffusion.schedules import get_schedule

V, MASK = 3, 3  # real tokens 0, 1, 2; the mask is the last logit column
P_MIN = 1e-4
N_DRAWS = 8192
EPS = 1e-5  # the samplers' default grid end


def toy_logits(x, sigma, *, timed: bool):
    """Logits (B, L, V + 1) of a stand-in denoiser; x (B, L) int, sigma (B,).

    A masked position l scores token v by
        2 d(sigma) [v == pref_l] + c(sigma) [v == first revealed token],
    pref_l = round(2 l / (L - 1)) (position 0 prefers token 0, the last position token 2), the
    first revealed token being the left-most non-mask one. Without time conditioning d = 1 and
    c = 3; with it d = tanh(3 (sigma - 0.8)) and c = 2 + 1.5 d: at high noise the positions keep
    their preferences and copy strongly, at low noise the preferences flip and copying weakens.
    The mask column is 0 (SUBS removes it).
    """
    length = x.shape[1]
    pref = jax.nn.one_hot(np.round(np.arange(length) * (V - 1) / max(length - 1, 1)).astype(int), V)
    d = jnp.tanh(3.0 * (sigma - 0.8)) if timed else jnp.ones_like(sigma)
    copy_weight = 2.0 + 1.5 * d if timed else 3.0 * d
    revealed = x != MASK
    first = jnp.take_along_axis(x, jnp.argmax(revealed, axis=-1)[:, None], axis=1)[:, 0]
    copy = jnp.where(revealed.any(axis=-1)[:, None], jax.nn.one_hot(first, V), 0.0) * copy_weight[:, None]
    real = 2.0 * d[:, None, None] * pref[None] + copy[:, None, :]
    return jnp.concatenate([real, jnp.zeros(real.shape[:2] + (1,))], axis=-1)


free_denoiser = functools.partial(toy_logits, timed=False)
timed_denoiser = functools.partial(toy_logits, timed=True)


# --- exact laws -------------------------------------------------------------------------------


def all_states(length):
    """Every chain state (S = (V + 1)^L, L) in base-(V + 1) order."""
    return np.array(list(itertools.product(range(V + 1), repeat=length)))


def output_index(tokens):
    """Index of a fully revealed sequence (..., L) among the V^L outputs (base V)."""
    return tokens @ V ** np.arange(tokens.shape[-1])[::-1]


def real_probs(denoise, x, sigma):
    """p(x_0 | x) over the real tokens, float64: x (B, L), sigma (B,) -> (B, L, V)."""
    logits = np.asarray(denoise(jnp.asarray(x, jnp.int32), jnp.asarray(sigma, jnp.float32)), np.float64)[..., :V]
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def grid_chain_law(denoise, length, mc_t, mc_s, sigmas, sigma_end):
    """Exact law (V^L,) of the grid sampler's output from all-mask.

    Step k moves each masked position independently: it stays masked with probability
    mc_s[k] / mc_t[k], else takes token v with probability (1 - mc_s[k] / mc_t[k]) p(v | x, sigmas[k]);
    then masks still left take argmax p(x_0 | x, sigma_end) (noise removal).
    """
    states = all_states(length)
    law = np.zeros(len(states))
    law[-1] = 1.0  # the all-mask state is the last in base-(V + 1) order
    for mt, ms, sigma in zip(mc_t, mc_s, sigmas):
        p = real_probs(denoise, states, np.full(len(states), sigma))
        stay = ms / mt
        moved = np.concatenate([(1 - stay) * p, np.full(p.shape[:2] + (1,), stay)], axis=-1)
        per_position = np.where((states == MASK)[..., None], moved, np.eye(V + 1)[states])  # (S, L, V + 1)
        # transition[a, b] = prod_l per_position[a, l, states[b, l]]
        law = law @ per_position[:, np.arange(length), states].prod(axis=-1)
    best = real_probs(denoise, states, np.full(len(states), sigma_end)).argmax(axis=-1)
    out = np.zeros(V**length)
    np.add.at(out, output_index(np.where(states == MASK, best, states)), law)
    return out


def ddpm_law(denoise, length, schedule, num_steps):
    """``grid_chain_law`` on the ``ddpm`` grid: mc = move_chance(t), t_k = linspace(1, EPS, T + 1)."""
    t = np.linspace(1.0, EPS, num_steps + 1)[:-1]
    dt = (1.0 - EPS) / num_steps
    mc = lambda u: np.asarray(schedule.move_chance(u), np.float64)  # noqa: E731
    return grid_chain_law(denoise, length, mc(t), mc(t - dt), np.asarray(schedule.sigma(t)),
                          float(schedule.sigma(EPS)))


def ddpm_cache_law(denoise, length, num_steps):
    """``grid_chain_law`` on the ``ddpm_cache`` grid: mc(t) = t, loglinear sigma(t_k) at every step."""
    schedule = get_schedule("loglinear")
    t = np.linspace(1.0, EPS, num_steps + 1)[:-1]
    return grid_chain_law(denoise, length, t, t - (1.0 - EPS) / num_steps, np.asarray(schedule.sigma(t)),
                          float(schedule.sigma(EPS)))


def first_hitting_law(denoise, row):
    """Exact law (V^L,) of a uniformly random unmasking order from ``row`` (L,), each revealed token
    drawn from p(x_0 | x) given the tokens revealed before it (a denoiser that ignores sigma)."""
    out = np.zeros(V ** len(row))

    def visit(x, weight):
        masked = np.flatnonzero(x == MASK)
        if not masked.size:
            out[output_index(x)] += weight
            return
        p = real_probs(denoise, x[None], np.zeros(1))[0]
        for pos, v in itertools.product(masked, range(V)):
            visit(np.where(np.arange(len(x)) == pos, v, x), weight * p[pos, v] / masked.size)

    visit(np.asarray(row), 1.0)
    return out


def timed_first_hitting_law(denoise, row, m0, grid=20001):
    """Exact law (V^L,) of the continuous-time reverse process of a time-conditioned denoiser.

    W_x(m), the output law from state x with its n masks still masked at move chance m, solves
        W_x(m) = m^-n int_0^m n u^(n-1) (1/n) sum_{l masked, v} p_l(v | x, sigma(u)) W_{x + v@l}(u) du
    (the next event is at the largest of n thresholds uniform on [0, m], density n u^(n-1) / m^n;
    a uniformly random masked position is revealed there), sigma(u) = -log(1 - u). Computed on a
    uniform grid of [0, m0] with cumulative trapezoids; returns W_row(m0).
    """
    m = np.linspace(0.0, m0, grid)
    sigma = -np.log1p(-m)
    length = len(row)

    @functools.cache
    def law_at(x):
        x = np.asarray(x)
        masked = np.flatnonzero(x == MASK)
        if not masked.size:
            return np.eye(V**length)[output_index(x)][None]
        p = real_probs(denoise, np.tile(x, (grid, 1)), sigma)
        g = sum(p[:, pos, v, None] * law_at(tuple(np.where(np.arange(length) == pos, v, x)))
                for pos, v in itertools.product(masked, range(V)))  # n times the mean over positions
        n = masked.size
        w = integrate.cumulative_trapezoid(m[:, None] ** (n - 1) * g, m, axis=0, initial=0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = w / m[:, None] ** n
        w[0] = g[0] / n  # the limit m -> 0
        return w

    return law_at(tuple(row))[-1]


# --- the comparison ---------------------------------------------------------------------------


def chi_square_pvalue(tokens, law):
    """p-value of the draws tokens (N, L) against the exact law (V^L,); cells of expected count < 5
    are pooled. A draw in a cell of probability 0 gives p = 0."""
    counts = np.bincount(output_index(np.asarray(tokens)), minlength=law.size)
    if counts[law <= 0].any():
        return 0.0
    expected = law * counts.sum()
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    keep = exp > 0
    return float(stats.chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue)


def assert_follows(*pairs):
    """Each (tokens (N, L), law (V^L,)) pair passes ``chi_square_pvalue`` > P_MIN; the message
    reports every pair's p-value, counts and expected counts."""
    report, worst = [], 1.0
    for tokens, law in pairs:
        p = chi_square_pvalue(tokens, law)
        counts = np.bincount(output_index(np.asarray(tokens)), minlength=law.size)
        report.append(f"p = {p:.3g}: counts {counts.tolist()}, expected {np.round(law * counts.sum(), 1).tolist()}")
        worst = min(worst, p)
    assert worst > P_MIN, "; ".join(report)


# --- grid samplers ----------------------------------------------------------------------------

GRID_CASES = {  # name: (predictor, timed, schedule, noise, T)
    "ddpm": ("ddpm", False, get_schedule("loglinear"), "exact", 6),
    "ddpm-float32-noise": ("ddpm", False, get_schedule("loglinear"), "float32", 6),
    "ddpm-timed-cosine": ("ddpm", True, get_schedule("cosine"), "exact", 6),
    "ddpm_cache": ("ddpm_cache", False, get_schedule("loglinear"), "exact", 8),
    "ddpm_cache-timed": ("ddpm_cache", True, get_schedule("loglinear"), "exact", 4),
}


@pytest.mark.parametrize("case", list(GRID_CASES))
def test_grid_sampler_follows_the_exact_chain(case):
    """ddpm / ddpm_cache against the enumerated chain over all (V + 1)^L = 64 states at L = 3.

    ``ddpm_cache`` runs vmapped over single rows, so each row keeps its own cache and reuses it
    whenever one of its steps revealed nothing (in one batch of thousands some row changes at
    almost every step, and the cache would hardly ever be read).
    """
    predictor, timed, schedule, noise, num_steps = GRID_CASES[case]
    denoise, length = (timed_denoiser if timed else free_denoiser), 3

    def one(key, x_init):
        return sampling.sample(denoise, key, x_init, schedule=schedule, mask_id=MASK, num_steps=num_steps,
                               predictor=predictor, noise=noise, time_conditioning=timed)

    keys = jax.random.split(jax.random.key(7), N_DRAWS)
    if predictor == "ddpm_cache":
        out = jax.jit(jax.vmap(one, in_axes=(0, None)))(keys, jnp.full((1, length), MASK))
        tokens, nfe = np.asarray(out.tokens)[:, 0], np.asarray(out.nfe)
        assert_follows((tokens, ddpm_cache_law(denoise, length, num_steps)))
        if timed:  # every step calls the denoiser, plus noise removal
            assert (nfe == num_steps + 1).all()
        else:  # a call only after a step that changed the row (at most L of them), the first, and removal
            assert (nfe <= length + 2).all() and nfe.mean() < num_steps
    else:
        out = jax.jit(one)(keys[0], jnp.full((N_DRAWS, length), MASK))
        assert_follows((np.asarray(out.tokens), ddpm_law(denoise, length, schedule, num_steps)))
        assert int(out.nfe) == num_steps + 1


# --- first hitting ----------------------------------------------------------------------------


def test_first_hitting_reveals_in_a_uniformly_random_order():
    """Time-free denoiser, L = 3: rows all-mask (law: a sum over the 3! orders) and rows with the
    middle token given (2 orders), in one batch."""
    rows = np.array([[MASK, MASK, MASK], [MASK, 1, MASK]])
    x_init = jnp.asarray(np.repeat(rows, N_DRAWS // 2, axis=0))
    out = jax.jit(lambda k, x: sampling.sample_first_hitting(free_denoiser, k, x, mask_id=MASK))(
        jax.random.key(3), x_init)
    tokens = np.asarray(out.tokens)
    assert int(out.nfe) == 3
    reveal = np.asarray(out.reveal_step)
    assert (np.sort(reveal[: N_DRAWS // 2], axis=1) == [1, 2, 3]).all()
    assert (reveal[N_DRAWS // 2:, 1] == 0).all() and (np.sort(reveal[N_DRAWS // 2:, [0, 2]], axis=1) == [1, 2]).all()
    halves = np.split(tokens, len(rows))
    assert_follows(*[(half, first_hitting_law(free_denoiser, row)) for half, row in zip(halves, rows)])


TIMED_SCHEDULES = {"loglinear": get_schedule("loglinear"),
                   "linear-sigma_max-1.5": get_schedule("linear", sigma_min=1e-3, sigma_max=1.5)}


@pytest.mark.parametrize("name", list(TIMED_SCHEDULES))
def test_first_hitting_with_time_conditioning_matches_the_quadrature(name):
    """Time-conditioned denoiser, L = 2: rows all-mask (n = 2 event times) and rows with position 0
    given (n = 1), in one batch, against ``timed_first_hitting_law`` from m0 = move_chance(1)."""
    schedule = TIMED_SCHEDULES[name]
    m0 = float(schedule.move_chance(1.0))
    rows = np.array([[MASK, MASK], [1, MASK]])
    x_init = jnp.asarray(np.repeat(rows, N_DRAWS // 2, axis=0))
    out = jax.jit(lambda k, x: sampling.sample_first_hitting(timed_denoiser, k, x, mask_id=MASK,
                                                             schedule=schedule))(jax.random.key(5), x_init)
    tokens = np.asarray(out.tokens)
    assert int(out.nfe) == 2
    halves = np.split(tokens, len(rows))
    assert_follows(*[(half, timed_first_hitting_law(timed_denoiser, row, m0)) for half, row in zip(halves, rows)])


def test_quadrature_law_is_the_limit_of_the_fine_ddpm_chain():
    """The two references agree: the ddpm chain on a grid of T = 1024 steps in move-chance units
    approaches (error O(1/T), 2.4e-4 here) the continuous reverse process that
    ``timed_first_hitting_law`` integrates."""
    schedule = get_schedule("loglinear")
    m0, steps = float(schedule.move_chance(1.0)), 1024
    mc = np.linspace(m0, 0.0, steps + 1)
    chain = grid_chain_law(timed_denoiser, 2, mc[:-1], mc[1:], -np.log1p(-mc[:-1]), 0.0)
    np.testing.assert_allclose(chain, timed_first_hitting_law(timed_denoiser, np.array([MASK, MASK]), m0),
                               atol=5e-4)


# --- the AR baseline --------------------------------------------------------------------------

AR_LENGTH, BOS = 3, 2
AR_WEIGHTS = np.random.default_rng(0).normal(0.0, 1.5, (V + 1, AR_LENGTH, V + 1))


def ar_logits(x):
    """A causal stand-in: logits[:, l] = W[x[:, l], l] depends on x[:, :l + 1] only. (B, L) -> (B, L, V + 1)."""
    return jnp.asarray(AR_WEIGHTS, jnp.float32)[x, jnp.arange(x.shape[1])]


def shaped_reference(logits, temperature, top_p):
    """softmax(logits[:V] / temperature), then the smallest most-likely set of mass >= top_p, renormalized."""
    z = np.asarray(logits, np.float64)[:V] / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p)
    before = np.cumsum(p[order]) - p[order]
    kept = np.zeros(V, bool)
    kept[order[before < top_p]] = True
    return np.where(kept, p, 0.0) / p[kept].sum()


def ar_law(prefix, temperature, top_p):
    """Exact law (V^(L - start),) of the drawn tail given the kept prefix (start,)."""
    weights = np.asarray(jnp.asarray(AR_WEIGHTS, jnp.float32), np.float64)
    tails = np.array(list(itertools.product(range(V), repeat=AR_LENGTH - len(prefix))))
    law = np.ones(len(tails))
    for j, tail in enumerate(tails):
        seq = list(prefix) + list(tail)
        for pos in range(len(prefix), AR_LENGTH):
            law[j] *= shaped_reference(weights[seq[pos - 1], pos - 1], temperature, top_p)[seq[pos]]
    return law


@pytest.mark.parametrize("temperature,top_p,prefix,noise", [
    (1.0, 1.0, (BOS,), "exact"),
    (0.5, 1.0, (BOS,), "exact"),
    (1.7, 0.75, (BOS,), "float32"),
    (0.8, 0.9, (BOS, 0), "exact"),
])
def test_ar_sampler_draws_the_shaped_law_and_keeps_the_prefix(temperature, top_p, prefix, noise):
    start = len(prefix)
    x_init = jnp.asarray(np.tile(list(prefix) + [MASK] * (AR_LENGTH - start), (N_DRAWS, 1)))
    out = jax.jit(lambda k, x: sampling.sample_ar(ar_logits, k, x, mask_id=MASK, temperature=temperature,
                                                  top_p=top_p, noise=noise, start=start))(jax.random.key(11), x_init)
    tokens = np.asarray(out.tokens)
    np.testing.assert_array_equal(tokens[:, :start], np.tile(prefix, (N_DRAWS, 1)))
    assert (tokens < V).all()
    assert int(out.nfe) == AR_LENGTH - start
    np.testing.assert_array_equal(np.asarray(out.reveal_step)[0], [0] * start + list(range(1, AR_LENGTH - start + 1)))
    assert_follows((tokens[:, start:], ar_law(prefix, temperature, top_p)))
