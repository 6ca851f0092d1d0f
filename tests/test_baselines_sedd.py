"""SEDD (score entropy) and SEDD's analytic sampler: parity with the official baselines in
tests/fixtures/baselines (README.md there has the formulas and tolerances), and math that can fail.
"""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.diffusion import analytic, losses, process, sampling, sedd
from mdlm_jax.diffusion.schedules import get_schedule
from mdlm_jax.interop import params_from_torch
from mdlm_jax.models import DiT

SEDD, SUBS = "sedd_h64_b3_n4_v64_l24_tc1", "subs_h64_b2_n4_v56_l20"
SCHEDULE = get_schedule("loglinear", eps=1e-3)
SAMPLING_EPS = 1e-3


class Case:
    """One baseline file: its arrays, a jitted DiT per time_conditioning, and per-variant views."""

    def __init__(self, fixtures_dir, name):
        self.z = np.load(fixtures_dir / "baselines" / f"{name}.npz")
        case = json.loads(str(self.z["case_json"]))
        sd = {k[len("state_dict/"):]: self.z[k] for k in self.z.files if k.startswith("state_dict/")}
        self.models = {}
        for tc in (False, True):
            model = DiT(vocab_size=case["vocab"], hidden_size=case["hidden"], cond_dim=case["cond"],
                        n_blocks=case["blocks"], n_heads=case["heads"], time_conditioning=tc)
            params = params_from_torch(sd, model)
            self.models[tc] = jax.jit(lambda x, s, model=model, params=params: model.apply({"params": params}, x, s))
        self.mask_id = int(self.z["mask_index"])
        self.parameterization = str(self.z["parameterization"])

    def time_conditioning(self, variant):
        return json.loads(str(self.z[f"{variant}/variant_json"]))["time_conditioning"]

    def get(self, variant, section):
        return lambda key: self.z[f"{variant}/{section}/{key}"]

    def score_fn(self, variant):
        tc = self.time_conditioning(variant)
        return analytic.make_score_fn(self.models[tc], self.parameterization, mask_id=self.mask_id,
                                      time_conditioning=tc)


@pytest.fixture(scope="module")
def sedd_case(fixtures_dir):
    return Case(fixtures_dir, SEDD)


@pytest.fixture(scope="module")
def subs_case(fixtures_dir):
    return Case(fixtures_dir, SUBS)


def case_for(request, name):
    return request.getfixturevalue("sedd_case" if name == SEDD else "subs_case")


def sample_t_official(eps_t, batch):
    """The official ``_sample_t`` with antithetic t: one recorded draw per row."""
    return (1 - SAMPLING_EPS) * process.antithetic_from_uniform(jnp.asarray(eps_t), batch) + SAMPLING_EPS


# ----------------------------------------------------------------------------------------- sedd golden


def test_sedd_forward(sedd_case):
    c, g = sedd_case, sedd_case.get("tc1", "fwd")
    z, m = c.z, c.mask_id
    sigma = SCHEDULE.sigma(jnp.asarray(z["fwd_t"]))
    np.testing.assert_allclose(sigma, z["fwd_sigma"], rtol=1e-6)
    np.testing.assert_array_equal(g("sigma_backbone"), z["fwd_sigma"])
    logits = c.models[True](jnp.asarray(z["fwd_xt"]), sigma)
    np.testing.assert_allclose(logits, g("logits"), atol=1e-5)
    # Row sigmas 0.36, 1.9, 0.91: both sides of the official expm1 / exp - 1 switch.
    np.testing.assert_allclose(sedd.sedd_log_score(logits, z["fwd_xt"], sigma, m), g("out"), atol=1e-5)
    np.testing.assert_allclose(sedd.sedd_log_score(jnp.asarray(g("logits")), z["fwd_xt"], z["fwd_sigma"], m),
                               g("out"), atol=2e-6)


@pytest.mark.parametrize("draw", ["loss0", "loss1"])
def test_sedd_loss_from_recorded_draws(sedd_case, draw):
    c, g = sedd_case, sedd_case.get("tc1", draw)
    z, m = c.z, c.mask_id
    x0, attention_mask = jnp.asarray(z["x0"]), jnp.asarray(z["attention_mask"])
    t = sample_t_official(g("eps_t"), x0.shape[0])
    np.testing.assert_array_equal(t, g("t"))
    sigma, dsigma = SCHEDULE(t)
    np.testing.assert_allclose(sigma, g("sigma"), rtol=1e-6)
    np.testing.assert_allclose(dsigma, g("dsigma"), rtol=1e-6)
    np.testing.assert_allclose(sigma, g("score_entropy_sigma")[:, 0], rtol=1e-6)
    xt = process.mask_tokens(x0, SCHEDULE.move_chance(t), m, jnp.asarray(g("u")))
    np.testing.assert_array_equal(xt, g("xt"))
    logits = c.models[True](xt, sigma)
    np.testing.assert_allclose(logits, g("logits"), atol=1e-5)
    log_score = sedd.sedd_log_score(logits, xt, sigma, m)
    np.testing.assert_allclose(log_score, g("model_output"), atol=1e-5)
    # loss1's first row has t = 1e-3: q = 1 / expm1(sigma) ~ 1e3 and the entropy is a cancellation.
    entropy = sedd.score_entropy(log_score, sigma, xt, x0, m)
    np.testing.assert_allclose(entropy, g("score_entropy"), rtol=2e-5, atol=1e-6)
    recorded = sedd.score_entropy(jnp.asarray(g("model_output")), jnp.asarray(g("score_entropy_sigma")),
                                  xt, x0, m)
    np.testing.assert_allclose(recorded, g("score_entropy"), rtol=2e-6, atol=1e-6)
    out = sedd.sedd_loss(log_score, x0, xt, sigma, dsigma, attention_mask, m)
    np.testing.assert_allclose(out.token_loss, g("nlls"), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(out.loss, g("loss_mean"), rtol=2e-6)
    np.testing.assert_allclose(dsigma[:, None] * entropy, g("loss"), rtol=2e-5, atol=1e-6)


# -------------------------------------------------------------------------------------- analytic golden

STEP_CASES = [(SEDD, "tc1"), (SUBS, "tc0"), (SUBS, "tc1")]


@pytest.mark.parametrize("variant", ["tc0", "tc1", "tc0_is", "tc1_cov"])
def test_subs_forward(subs_case, variant):
    c = subs_case
    g, z = c.get(variant, "fwd"), c.z
    tc = c.time_conditioning(variant)
    np.testing.assert_array_equal(g("sigma_backbone"), z["fwd_sigma"] if tc else 0.0)
    logits = c.models[tc](jnp.asarray(z["fwd_xt"]), jnp.asarray(z["fwd_sigma"]))
    np.testing.assert_allclose(logits, g("logits"), atol=1e-5)
    lp = np.asarray(losses.subs_log_probs(logits, jnp.asarray(z["fwd_xt"]), c.mask_id))
    out = g("out")
    np.testing.assert_array_equal(lp <= -1e4, out <= -1e4)  # the official -1e6 is our -inf
    np.testing.assert_allclose(lp[out > -1e4], out[out > -1e4], atol=1e-5)


@pytest.mark.parametrize("section", ["an128", "an8"])
@pytest.mark.parametrize("name,variant", STEP_CASES)
def test_analytic_step(request, name, variant, section):
    c = case_for(request, name)
    g, m = c.get(variant, section), c.mask_id
    x, t, step_size = jnp.asarray(g("x")), jnp.asarray(g("t"))[:, 0], float(g("step_size"))
    np.testing.assert_array_equal(t - step_size, g("next_t")[:, 0])
    sigma = SCHEDULE.sigma(t)
    dsigma = sigma - SCHEDULE.sigma(t - step_size)
    np.testing.assert_allclose(sigma, g("curr_sigma")[:, 0], rtol=1e-6)
    np.testing.assert_allclose(dsigma, g("stag_dsigma")[:, 0], rtol=1e-6)
    score = c.score_fn(variant)(x, sigma)
    np.testing.assert_allclose(score, g("score"), rtol=1e-5)
    np.testing.assert_allclose(analytic.staggered_score(score, dsigma, m), g("stag_score"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analytic.transp_transition(x, dsigma, m, score.shape[-1]), g("transp"), atol=1e-7)
    noise = sampling.official_noise_from_uniforms(jnp.asarray(g("u")))
    x_next, probs = analytic.analytic_step(c.score_fn(variant), x, t, step_size, noise, schedule=SCHEDULE,
                                           mask_id=m)
    np.testing.assert_allclose(probs, g("probs"), atol=1e-6)
    np.testing.assert_array_equal(x_next, g("x_next"))
    # From the recorded score the probabilities agree to float32 rounding.
    recorded = analytic.analytic_probs(jnp.asarray(g("score")), x, jnp.asarray(g("stag_dsigma")), m)
    np.testing.assert_allclose(recorded, g("probs"), atol=5e-7)


@pytest.mark.parametrize("name,variant", STEP_CASES)
def test_denoiser_step(request, name, variant):
    c = case_for(request, name)
    g, m = c.get(variant, "den"), c.mask_id
    x, t = jnp.asarray(g("x")), jnp.asarray(g("t"))[:, 0]
    sigma = SCHEDULE.sigma(t)
    np.testing.assert_allclose(sigma, g("sigma")[:, 0], rtol=1e-6)
    score = c.score_fn(variant)(x, sigma)
    np.testing.assert_allclose(score, g("score"), rtol=1e-5)
    noise = sampling.official_noise_from_uniforms(jnp.asarray(g("u")))
    x_next, probs = analytic.denoiser_step(c.score_fn(variant), x, t, noise, schedule=SCHEDULE, mask_id=m)
    # Official float32 1 - exp(-1e-5) is 2.4e-3 off: a per-row factor, so compare normalized rows.
    probs, official = np.asarray(probs), g("probs")
    np.testing.assert_array_equal(probs[..., m], 0.0)
    np.testing.assert_allclose(probs / probs.sum(-1, keepdims=True), official / official.sum(-1, keepdims=True),
                               atol=1e-6)
    np.testing.assert_allclose(probs, official, rtol=3e-3, atol=1e-7)
    np.testing.assert_array_equal(x_next, g("x_next"))
    assert (np.asarray(x_next) != m).all()


@pytest.mark.parametrize("name,variant", [(SEDD, "tc1"), (SUBS, "tc0")])
def test_sample_chain_replays_official(request, name, variant):
    c = case_for(request, name)
    g, m = c.get(variant, "sample"), c.mask_id
    num_steps, eps = int(g("num_steps")), float(g("eps"))
    assert str(g("predictor")) == "analytic"
    np.testing.assert_array_equal(jnp.linspace(1.0, eps, num_steps + 1)[:-1], g("t_steps")[:, 0, 0])
    np.testing.assert_array_equal(jnp.linspace(1.0, eps, num_steps + 1)[-1], g("final_t")[0, 0])
    x_init = jnp.full(c.z["x0"].shape, m, jnp.int32)
    out = analytic.sample_analytic(c.score_fn(variant), jnp.asarray(g("u")), x_init, schedule=SCHEDULE, mask_id=m,
                                   num_steps=num_steps, eps=eps)
    np.testing.assert_array_equal(out.tokens, g("x_final"))
    assert int(out.nfe) == num_steps + 1
    # Tokens never change once revealed, so reveal_step rebuilds the whole recorded chain.
    steps = np.asarray(out.reveal_step)
    x_steps = np.stack([np.where(steps <= k, np.asarray(out.tokens), m) for k in range(num_steps + 1)])
    np.testing.assert_array_equal(x_steps, g("x_steps"))
    assert steps.min() >= 1


# ------------------------------------------------------------------------ subs IS / CoV loss golden


def importance_t(t, sigma_min, sigma_max, eps):
    """Official ``importance_sampling_transformation`` (README formula), float32."""
    f_T, f_0 = np.log1p(-np.exp(-np.float32(sigma_max))), np.log1p(-np.exp(-np.float32(sigma_min)))
    sigma_t = -jnp.log1p(-jnp.exp(t * f_T + (1 - t) * f_0))
    return -jnp.expm1(-sigma_t) / (1 - eps)


@pytest.mark.parametrize("draw", ["loss0", "loss1"])
@pytest.mark.parametrize("variant", ["tc0_is", "tc1_cov"])
def test_subs_is_and_cov_losses(subs_case, variant, draw):
    """Continuous-time subs with IS or CoV: constant weight -log1p(-exp(-sigma_min)) on -log p(x0)."""
    c, g = subs_case, subs_case.get(variant, draw)
    z, m = c.z, c.mask_id
    sigma_min, sigma_max = z["noise_sigma_min"], z["noise_sigma_max"]
    x0 = jnp.asarray(z["x0"])
    t = sample_t_official(g("eps_t"), x0.shape[0])
    if variant == "tc0_is":
        np.testing.assert_array_equal(t, g("is_t_in"))
        t = importance_t(t, sigma_min, sigma_max, float(z["noise_eps"]))
        np.testing.assert_allclose(t, g("t"), rtol=1e-6)
        move_chance, conditioning = SCHEDULE.move_chance(t), SCHEDULE.sigma(t)
    else:  # CoV: the move chance interpolates log move chances, and the backbone sees t
        np.testing.assert_array_equal(t, g("t"))
        f_T, f_0 = np.log1p(-np.exp(-sigma_max)), np.log1p(-np.exp(-sigma_min))
        move_chance, conditioning = jnp.exp(f_0 + t * (f_T - f_0)), t
    np.testing.assert_allclose(move_chance, g("move_chance")[:, 0], rtol=1e-5)
    np.testing.assert_allclose(conditioning, g("unet_conditioning")[:, 0], rtol=1e-6)
    xt = process.mask_tokens(x0, move_chance, m, jnp.asarray(g("u")))
    np.testing.assert_array_equal(xt, g("xt"))
    logits = c.models[c.time_conditioning(variant)](xt, conditioning)
    np.testing.assert_allclose(logits, g("logits"), atol=1e-5)
    weight = jnp.full(x0.shape[:1], -np.log1p(-np.exp(-sigma_min)))
    np.testing.assert_allclose(weight, 6.9082451, rtol=1e-7)
    per_token = losses.masked_diffusion_loss(logits, x0, xt, weight, jnp.ones(x0.shape), m)
    np.testing.assert_allclose(per_token.token_loss, g("loss"), rtol=1e-5, atol=1e-6)
    out = losses.masked_diffusion_loss(logits, x0, xt, weight, jnp.asarray(z["attention_mask"]), m)
    np.testing.assert_allclose(out.token_loss, g("nlls"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.loss, g("loss_mean"), rtol=1e-6)


# ---------------------------------------------------------------------------------------- math


def entropy_reference(log_score, sigma, xt, x0, mask_id):
    """The official _score_entropy in float64 numpy, with the mask column deleted for the sum."""
    ls = np.asarray(log_score, np.float64)
    q = 1 / np.expm1(np.asarray(sigma, np.float64))[:, None]
    pos = np.exp(np.delete(ls, mask_id, axis=-1)).sum(-1)
    neg = q * np.take_along_axis(ls, np.asarray(x0)[..., None], -1)[..., 0]
    return np.where(np.asarray(xt) == mask_id, pos - neg + q * (np.log(q) - 1), 0.0)


@pytest.mark.parametrize("mask_id", [7, 3])
def test_score_entropy_matches_reference_for_any_mask_column(mask_id):
    vocab, batch, length = 8, 4, 6
    k1, k2, k3, k4 = jax.random.split(jax.random.key(mask_id), 4)
    log_score = jax.random.normal(k1, (batch, length, vocab)) * 2
    real = np.delete(np.arange(vocab), mask_id)
    x0 = jnp.asarray(real)[jax.random.randint(k2, (batch, length), 0, vocab - 1)]
    xt = jnp.where(jax.random.uniform(k3, (batch, length)) < 0.6, mask_id, x0)
    sigma = jax.random.uniform(k4, (batch,), minval=0.01, maxval=5.0)
    entropy = sedd.score_entropy(log_score, sigma, xt, x0, mask_id)
    np.testing.assert_allclose(entropy, entropy_reference(log_score, sigma, xt, x0, mask_id), rtol=2e-5, atol=1e-5)
    assert (np.asarray(entropy) >= -1e-5).all()
    assert (np.asarray(entropy)[np.asarray(xt) != mask_id] == 0).all()


@pytest.mark.parametrize("mask_id", [4, 1])
def test_score_entropy_vanishes_only_at_the_true_score(mask_id):
    """Given x0 the true score is q onehot(x0): entropy 0 there, > 0 anywhere else."""
    with jax.enable_x64(True):
        vocab = 5
        x0 = jnp.asarray([[0, 2, 3, 4] if mask_id == 1 else [0, 1, 2, 3]])
        xt = jnp.full_like(x0, mask_id)
        sigma = jnp.asarray([0.7])
        q = 1 / np.expm1(0.7)
        true = jnp.where(jax.nn.one_hot(x0, vocab, dtype=bool), np.log(q), -jnp.inf).at[..., mask_id].set(0.0)
        np.testing.assert_allclose(sedd.score_entropy(true, sigma, xt, x0, mask_id), 0.0, atol=1e-13)
        for delta in (1e-3, -1e-3):  # move the x0 entry
            moved = jnp.where(jax.nn.one_hot(x0, vocab, dtype=bool), true + delta, true)
            assert (np.asarray(sedd.score_entropy(moved, sigma, xt, x0, mask_id)) > 1e-8).all()
        other = true.at[0, 0, 1 if mask_id != 1 else 2].set(-5.0)  # mass on a wrong token
        assert float(sedd.score_entropy(other, sigma, xt, x0, mask_id)[0, 0]) > 1e-3


def test_expected_score_entropy_is_minimized_by_the_conditional_score():
    """E_{x0 ~ p} entropy is minimized at exp(ls_y) = q p_y, where it equals q H(p) (MDLM's integrand)."""
    with jax.enable_x64(True):
        vocab, mask_id, sigma = 6, 2, jnp.asarray([0.3])
        real = np.delete(np.arange(vocab), mask_id)
        p = np.asarray(jax.random.dirichlet(jax.random.key(0), jnp.ones(vocab - 1), dtype=jnp.float64))
        q = 1 / np.expm1(0.3)
        xt = jnp.full((1, vocab - 1), mask_id)
        x0 = jnp.asarray(real)[None]

        def expected(ls):  # one masked row per candidate x0, weighted by p(x0)
            rows = jnp.broadcast_to(ls, (1, vocab - 1, vocab))
            return (sedd.score_entropy(rows, sigma, xt, x0, mask_id)[0] * p).sum()

        best = jnp.zeros(vocab).at[real].set(np.log(q * p))
        np.testing.assert_allclose(jax.grad(expected)(best)[real], 0.0, atol=1e-12)
        np.testing.assert_allclose(expected(best), -q * (p * np.log(p)).sum(), rtol=1e-12)
        shifted = best.at[real[0]].add(0.1)
        assert float(expected(shifted)) > float(expected(best)) + 1e-6


@pytest.mark.parametrize("mask_id", [3, 1])
def test_exact_score_makes_sedd_nelbo_tight(mask_id):
    """For a tiny data distribution (3 real tokens, L = 3) with the exact score, the SEDD NELBO
    int_0^1 dsigma E_{x_t} sum_l entropy dt equals -log p0(x0) for every x0.

    With loglinear eps = 0 (mc = t) the integrand is a polynomial of degree L - 1 in t, so
    Gauss-Legendre quadrature is exact; the expectation over x_t enumerates the 2^L masks. The
    logits are log p0(x^l | unmasked) + log(V - 1), so ``sedd_log_score`` must remove both
    -log expm1(sigma) and log(V - 1) to reach the exact score q p0(y | unmasked).
    """
    with jax.enable_x64(True):
        n_real, length = 3, 3
        vocab = n_real + 1
        real = np.delete(np.arange(vocab), mask_id)
        p0 = np.asarray(jax.random.dirichlet(jax.random.key(1), jnp.ones(n_real**length), dtype=jnp.float64))
        p0 = p0.reshape((n_real,) * length)
        seqs = list(itertools.product(range(n_real), repeat=length))
        patterns = list(itertools.product([False, True], repeat=length))
        x0s, xts, logits, counts = [], [], [], []
        for seq in seqs:
            for pattern in patterns:
                keep = tuple(slice(None) if masked else s for s, masked in zip(seq, pattern))
                joint = p0[keep]  # p0 over the masked positions, given the unmasked ones
                row = np.zeros((length, vocab))
                axes = [l for l in range(length) if pattern[l]]
                for j, l in enumerate(axes):
                    marginal = joint.sum(axis=tuple(a for a in range(len(axes)) if a != j))
                    row[l, real] = np.log(marginal / marginal.sum()) + np.log(vocab - 1)
                x0s.append(real[list(seq)])
                xts.append(np.where(pattern, mask_id, real[list(seq)]))
                logits.append(row)
                counts.append(sum(pattern))
        x0s, xts, logits, counts = map(np.asarray, (x0s, xts, logits, counts))
        schedule = get_schedule("loglinear", eps=0.0)
        nodes, weights = np.polynomial.legendre.leggauss(4)
        nelbo = np.zeros(len(x0s))
        for node, weight in zip((nodes + 1) / 2, weights / 2):
            t = jnp.full((len(x0s),), node)
            sigma, dsigma = schedule(t)
            ls = sedd.sedd_log_score(jnp.asarray(logits), jnp.asarray(xts), sigma, mask_id)
            entropy = sedd.score_entropy(ls, sigma, jnp.asarray(xts), jnp.asarray(x0s), mask_id)
            prob = node**counts * (1 - node) ** (length - counts)  # q(x_t | x0) with mc = t
            nelbo += weight * prob * np.asarray(dsigma * entropy.sum(-1))
        nelbo = nelbo.reshape(len(seqs), len(patterns)).sum(-1)
        np.testing.assert_allclose(nelbo, -np.log(p0.reshape(-1)), rtol=1e-10)


def test_negative_stay_probability_is_kept_and_rows_sum_to_one():
    """Masked rows: probs_y = expm1(dsigma) s_y, probs_mask = 1 - expm1(dsigma) sum s_y, unclamped."""
    vocab, mask_id = 6, 2
    score = jnp.asarray([[[3.0, 1.0, 1.0, 2.0, 0.5, 4.0], [0.2, 0.1, 1.0, 0.3, 0.1, 0.1]]])
    x, dsigma = jnp.asarray([[mask_id, mask_id]]), jnp.asarray([0.5])
    probs = np.asarray(analytic.analytic_probs(score, x, dsigma, mask_id))
    others = np.delete(np.asarray(score), mask_id, axis=-1)
    np.testing.assert_allclose(np.delete(probs, mask_id, -1), np.expm1(0.5) * others, rtol=1e-6)
    np.testing.assert_allclose(probs[..., mask_id], 1 - np.expm1(0.5) * others.sum(-1), rtol=1e-6)
    assert probs[0, 0, mask_id] < 0 < probs[0, 1, mask_id]
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    # An unmasked row is one-hot at its token (get_score puts e^0 = 1 there), whatever the other entries.
    x = jnp.asarray([[4, 0]])
    score = jnp.where(jax.nn.one_hot(x, vocab, dtype=bool), 1.0, score)
    unmasked = analytic.analytic_probs(score, x, dsigma, mask_id)
    np.testing.assert_allclose(unmasked, jax.nn.one_hot(x, vocab), atol=1e-6)


def test_subs_analytic_step_draws_what_ddpm_draws(subs_case):
    """For subs the analytic probabilities are ddpm's q(x_s | x_t) / move_chance(t)."""
    c, m, z = subs_case, subs_case.mask_id, subs_case.z
    x = jnp.asarray(z["fwd_xt"])
    score_fn = c.score_fn("tc0")
    changed = 0
    for i, (t_val, step_size) in enumerate([(0.9, 0.3), (0.55, 1 / 128), (0.125, 0.125 - 1e-5)]):
        t = jnp.full((x.shape[0],), t_val, jnp.float32)
        noise = sampling.official_noise_from_uniforms(jax.random.uniform(jax.random.key(i), x.shape + (56,)))
        x_an, probs = analytic.analytic_step(score_fn, x, t, step_size, noise, schedule=SCHEDULE, mask_id=m)
        p_x0 = jnp.exp(losses.subs_log_probs(c.models[False](x, SCHEDULE.sigma(t)), x, m))
        mc_t, mc_s = SCHEDULE.move_chance(t), SCHEDULE.move_chance(t - step_size)
        x_ddpm, q = sampling.reverse_step(x, p_x0, mc_t, mc_s, m, noise)
        masked = np.asarray(x == m)
        np.testing.assert_allclose(np.asarray(probs)[masked], (q / mc_t[:, None, None])[masked], rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_array_equal(x_an, x_ddpm)
        changed += int((np.asarray(x_an) != np.asarray(x)).sum())
    assert changed > 20


def test_subs_analytic_sampler_equals_ddpm_sampler(subs_case):
    """Whole chains from one key with the official float32 noise: sample_analytic draws from the
    noise stream of sample(ddpm), so the chains agree token for token (a fixed prefix included)."""
    c, m = subs_case, subs_case.mask_id
    x_init = jnp.full((3, 20), m, jnp.int32).at[:, :4].set(jnp.asarray(c.z["x0"])[:, :4])
    kwargs = dict(schedule=SCHEDULE, mask_id=m, num_steps=16, noise_removal=False, noise="float32")
    rng = jax.random.key(7)
    out = analytic.sample_analytic(c.score_fn("tc0"), rng, x_init, **kwargs)
    ddpm = sampling.sample(c.models[False], rng, x_init, predictor="ddpm", **kwargs)
    np.testing.assert_array_equal(out.tokens, ddpm.tokens)
    np.testing.assert_array_equal(out.reveal_step, ddpm.reveal_step)
    assert int(out.nfe) == int(ddpm.nfe) == 16
    assert (np.asarray(out.tokens) != m).sum() > 40


def test_sample_analytic_with_exact_noise_keeps_given_tokens(sedd_case):
    c, m = sedd_case, sedd_case.mask_id
    x_init = jnp.full((3, 24), m, jnp.int32).at[:, 5:9].set(jnp.asarray(c.z["x0"])[:, 5:9])
    out = analytic.sample_analytic(c.score_fn("tc1"), jax.random.key(3), x_init, schedule=SCHEDULE, mask_id=m,
                                   num_steps=8)
    np.testing.assert_array_equal(out.tokens[:, 5:9], x_init[:, 5:9])
    steps = np.asarray(out.reveal_step)
    assert (steps[:, 5:9] == 0).all() and (steps[x_init != m] == 0).all()
    assert (steps[np.asarray(x_init) == m] >= 1).all() and (np.asarray(out.tokens) != m).all()
    assert int(out.nfe) == 9


def test_sample_analytic_checks_the_uniforms_shape(sedd_case):
    c = sedd_case
    x_init = jnp.full((3, 24), c.mask_id, jnp.int32)
    with pytest.raises(ValueError, match=r"uniforms must have shape \(9, B, L, V\)"):
        analytic.sample_analytic(c.score_fn("tc1"), jnp.zeros((8, 3, 24, 64)), x_init, schedule=SCHEDULE,
                                 mask_id=c.mask_id, num_steps=8)
