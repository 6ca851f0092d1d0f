"""The d3pm grid samplers (sampling.sample(parameterization='d3pm')) against the official
_ddpm_update, _ddpm_caching_update and _sample outputs in
fixtures/baselines/d3pm_h64_b2_n2_v50_l16.npz, fed the recorded uniforms.

Tolerances are those of fixtures/baselines/README.md: tokens exact; q_xs 2.5e-6 relative (measured
<= 1.5e-6, almost all of it our log-probs' round-off: 1.7e-7 from the official log-probs); DiT
logits and log-probs 1e-5 (measured <= 1.5e-6 absolute), entries <= -1e4 counting as -inf.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.diffusion import d3pm, sampling
from mdlm_jax.diffusion.schedules import get_schedule
from mdlm_jax.interop import params_from_torch
from mdlm_jax.models import DiT

FILE = "baselines/d3pm_h64_b2_n2_v50_l16.npz"
STEPS = [("sm0_tc1", "ddpm"), ("sm1_tc1", "ddpm"), ("sm0_tc0", "ddpm"), ("sm1_tc0", "ddpm"),
         ("sm0_tc1", "cache"), ("sm1_tc0", "cache")]
CHAINS = ["sm0_tc1", "sm1_tc0"]  # ddpm, 8 steps; ddpm_cache, 16 steps (one cache reuse)
NET = dict(rtol=1e-5, atol=1e-5)
Q_XS = dict(rtol=2.5e-6, atol=0)
SCHEDULE = get_schedule("loglinear", eps=1e-3)


@pytest.fixture(scope="module")
def case(fixtures_dir):
    """The file and, per variant with a sampler section, (flags, logits_fn, log_probs_fn)."""
    z = np.load(fixtures_dir / FILE)
    spec = json.loads(str(z["case_json"]))
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    mask_id = int(z["mask_index"])
    models = {}
    for flags in spec["variants"]:
        if "steps" not in flags:
            continue
        model = DiT(vocab_size=spec["vocab"], hidden_size=spec["hidden"], cond_dim=spec["cond"],
                    n_blocks=spec["blocks"], n_heads=spec["heads"], time_conditioning=flags["time_conditioning"])
        params = params_from_torch(sd, model)
        logits = jax.jit(lambda x, s, m=model, p=params: m.apply({"params": p}, x, s))
        log_probs = jax.jit(lambda x, s, f=logits, sm=flags["subs_masking"]: d3pm.d3pm_log_probs(f(x, s), mask_id, sm))
        models[flags["name"]] = (flags, logits, log_probs)
    assert sorted(models) == sorted({v for v, _ in STEPS})
    return z, models


def assert_logprobs_close(ours, theirs, neg_inf=-1e4):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    np.testing.assert_array_equal(ours <= neg_inf, theirs <= neg_inf)
    np.testing.assert_allclose(ours[ours > neg_inf], theirs[theirs > neg_inf], **NET)


def official_step(log_probs, x, t, dt, u, mask_id, cache):
    """One official step: ``_ddpm_update`` (mc = move chance) or ``_ddpm_caching_update`` (mc(t) = t),
    the network called at sigma(t). Shapes: x (B, L), t (B,), u (B, L, V) -> (x_next, q_xs)."""
    p_x0 = jnp.exp(log_probs(x, SCHEDULE.sigma(t)))
    mc_t, mc_s = (t, t - dt) if cache else (SCHEDULE.move_chance(t), SCHEDULE.move_chance(t - dt))
    return sampling.reverse_step(x, p_x0, mc_t, mc_s, mask_id, sampling.official_noise_from_uniforms(u))


def run_sample(case, chain, network, noise_removal):
    """Our sampler on the recorded chain ``chain`` (predictor, steps, eps and uniforms) from
    all-mask, with the network (and time_conditioning) of variant ``network``."""
    z, models = case
    flags, _, log_probs = models[network]
    r = lambda k: z[f"{chain}/sample/{k}"]  # noqa: E731
    mask_id = int(z["mask_index"])
    x_init = jnp.full(z["x0"].shape, mask_id, jnp.int32)
    return sampling.sample(log_probs, jax.random.key(0), x_init, schedule=SCHEDULE, mask_id=mask_id,
                           num_steps=int(r("num_steps")), predictor=str(r("predictor")), eps=float(r("eps")),
                           noise_removal=noise_removal, noise="float32", time_conditioning=flags["time_conditioning"],
                           parameterization="d3pm", uniforms=r("u"))


def x_steps_from(out, num_steps, mask_id):
    """x before each step, and after the last, from a run without noise removal: a position holds
    its final token from its reveal step on (d3pm steps carry unmasked tokens over).
    Shapes: out.tokens / out.reveal_step (B, L) -> (S + 1, B, L)."""
    tokens, reveal = np.asarray(out.tokens), np.asarray(out.reveal_step)
    return np.stack([np.where((reveal >= 1) & (reveal <= k), tokens, mask_id) for k in range(num_steps + 1)])


@pytest.mark.parametrize("variant,section", STEPS)
def test_step(case, variant, section):
    """One _ddpm_update / _ddpm_caching_update step at the recorded x, t, dt and u."""
    z, models = case
    flags, logits_fn, log_probs = models[variant]
    r = lambda k: z[f"{variant}/{section}/{k}"]  # noqa: E731
    mask_id = int(z["mask_index"])
    x, t, dt = jnp.asarray(r("x")), jnp.asarray(r("t"))[:, 0], float(r("dt"))
    sigma = SCHEDULE.sigma(t)
    np.testing.assert_allclose(sigma, r("unet_conditioning").reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(r("sigma_backbone"), sigma * flags["time_conditioning"], rtol=1e-6)
    np.testing.assert_allclose(logits_fn(x, sigma), r("logits"), **NET)
    assert_logprobs_close(log_probs(x, sigma), r("model_output"))
    if section == "cache":
        np.testing.assert_allclose(jnp.exp(log_probs(x, sigma)), r("p_x0"), rtol=0, atol=1e-6)

    x_next, q = official_step(log_probs, x, t, dt, jnp.asarray(r("u")), mask_id, cache=section == "cache")
    np.testing.assert_allclose(q, r("q_xs"), **Q_XS)
    noise = sampling.official_noise_from_uniforms(jnp.asarray(r("u")))
    np.testing.assert_array_equal(sampling.sample_categorical(q, noise), r("sampled"))
    np.testing.assert_array_equal(x_next, r("x_next"))
    assert (r("x_next") != r("x")).sum() == 1  # the recorded step unmasks one token


@pytest.mark.parametrize("variant", CHAINS)
def test_sample_chain(case, variant):
    """The full official _sample from all-mask: every intermediate x, the final tokens after
    d3pm noise removal (which rewrites unmasked tokens too) and, for ddpm_cache, the forward calls."""
    z, models = case
    r = lambda k: z[f"{variant}/sample/{k}"]  # noqa: E731
    mask_id, num_steps, eps = int(z["mask_index"]), int(r("num_steps")), float(r("eps"))
    assert r("u").shape[0] == num_steps  # no draw for the argmax noise removal
    # Our float32 grid is within 1 ulp of torch.linspace's (2 of the 16 points differ); dt is the same float.
    np.testing.assert_allclose(jnp.linspace(1.0, eps, num_steps + 1)[:num_steps], r("t_steps")[:, 0, 0],
                               rtol=1.2e-7, atol=0)
    assert (1.0 - eps) / num_steps == float(r("dt"))

    steps = run_sample(case, variant, variant, noise_removal=False)
    np.testing.assert_array_equal(x_steps_from(steps, num_steps, mask_id), r("x_steps"))
    out = run_sample(case, variant, variant, noise_removal=True)
    x_last = r("x_steps")[-1]
    np.testing.assert_allclose(SCHEDULE.sigma(jnp.full(len(x_last), jnp.float32(eps))), r("final_sigma")[:, 0],
                               rtol=1e-6)
    assert_logprobs_close(models[variant][2](jnp.asarray(x_last), jnp.asarray(r("final_sigma"))[:, 0]),
                          r("final_model_output"))
    np.testing.assert_array_equal(out.tokens, r("x_final"))
    rewritten = r("x_final") != x_last
    assert rewritten[x_last != mask_id].any()  # the quirk is exercised: unmasked tokens rewritten
    np.testing.assert_array_equal(np.asarray(out.reveal_step)[rewritten], num_steps + 1)

    if str(r("predictor")) == "ddpm_cache":
        x_steps = r("x_steps")
        unchanged = np.concatenate([[False], (x_steps[1:-1] == x_steps[:-2]).all(axis=(1, 2))])
        np.testing.assert_array_equal(r("cache_reused"), unchanged)  # reuse iff the last step kept x
        assert r("cache_reused").any()
        assert int(steps.nfe) == num_steps - r("cache_reused").sum()
        assert int(out.nfe) == int(r("n_forward_calls"))
    else:
        assert int(out.nfe) == num_steps + 1


def test_cache_with_time_conditioning_calls_the_network_every_step(case):
    """ddpm_cache with a time-conditioned network (sm0_tc1) on sm1_tc0's 16 recorded draws: the
    official loop drops the cache whenever time_conditioning is set, so it is the recorded
    _ddpm_caching_update (test_step) at every step even where x did not change, then the argmax."""
    z, models = case
    log_probs = models["sm0_tc1"][2]
    r = lambda k: z[f"sm1_tc0/sample/{k}"]  # noqa: E731
    mask_id, dt = int(z["mask_index"]), float(r("dt"))
    x, unchanged = jnp.full(z["x0"].shape, mask_id, jnp.int32), []
    for t, u in zip(r("t_steps")[:, :, 0], r("u")):
        x_next, _ = official_step(log_probs, x, jnp.asarray(t), dt, jnp.asarray(u), mask_id, cache=True)
        unchanged.append(bool((x_next == x).all()))
        x = x_next
    assert any(unchanged)  # a step where a cache could wrongly be reused
    sigma_eps = SCHEDULE.sigma(jnp.full(len(x), jnp.float32(float(r("eps")))))
    expected = jnp.argmax(log_probs(x, sigma_eps), axis=-1)

    out = run_sample(case, "sm1_tc0", "sm0_tc1", noise_removal=True)
    np.testing.assert_array_equal(out.tokens, expected)
    assert int(out.nfe) == len(unchanged) + 1


@pytest.mark.parametrize("predictor", ["ddpm", "ddpm_cache"])
def test_mask_mass_holds_tokens_back_and_noise_removal_can_output_the_mask(case, predictor):
    """d3pm keeps p(mask) in p_x0 (no SUBS renormalisation): with the mask logit raised by 50
    (subs_masking False, p(real) ~ 1e-20) no step unmasks anything, and the argmax over all V
    of noise removal returns the mask token itself (quirk 4 of the README)."""
    z, models = case
    logits_fn = models["sm0_tc1"][1]
    mask_id = int(z["mask_index"])

    def sure_of_mask(x, sigma):
        return d3pm.d3pm_log_probs(logits_fn(x, sigma).at[..., mask_id].add(50.0), mask_id, False)

    x_init = jnp.full(z["x0"].shape, mask_id, jnp.int32)
    args = dict(schedule=SCHEDULE, mask_id=mask_id, num_steps=8, predictor=predictor, noise="float32",
                time_conditioning=True, parameterization="d3pm")
    steps = sampling.sample(sure_of_mask, jax.random.key(1), x_init, noise_removal=False, **args)
    np.testing.assert_array_equal(steps.tokens, mask_id)
    out = sampling.sample(sure_of_mask, jax.random.key(1), x_init, **args)
    np.testing.assert_array_equal(out.tokens, mask_id)
    assert int(out.nfe) == 9


@pytest.mark.parametrize("predictor", ["ddpm", "ddpm_cache"])
def test_uniforms_replay_the_float32_draws(case, predictor):
    """Feeding the uniforms that noise='float32' draws from rng (step i: fold_in(rng, i)) gives the
    same chain: the recorded-draw path indexes the steps as the rng path does."""
    z, models = case
    flags, _, log_probs = models["sm0_tc0"]
    mask_id, num_steps, rng = int(z["mask_index"]), 12, jax.random.key(3)
    x_init = jnp.asarray(z["fwd_xt"], jnp.int32)  # carried tokens too
    shape = x_init.shape + (int(z["vocab_size"]),)
    uniforms = jnp.stack([jax.random.uniform(jax.random.fold_in(rng, i), shape, jnp.float32)
                          for i in range(num_steps)])
    args = dict(schedule=SCHEDULE, mask_id=mask_id, num_steps=num_steps, predictor=predictor, noise="float32",
                time_conditioning=flags["time_conditioning"], parameterization="d3pm")
    drawn = sampling.sample(log_probs, rng, x_init, **args)
    fed = sampling.sample(log_probs, jax.random.key(0), x_init, uniforms=uniforms, **args)
    for a, b in zip(drawn, fed):
        np.testing.assert_array_equal(a, b)
    assert (np.asarray(drawn.reveal_step) > 0).sum() > 1  # the chain moved

    with pytest.raises(ValueError, match="noise='float32'"):
        sampling.sample(log_probs, rng, x_init, uniforms=uniforms, **{**args, "noise": "exact"})
    with pytest.raises(ValueError, match="num_steps, B, L, V"):
        sampling.sample(log_probs, rng, x_init, uniforms=uniforms[1:], **args)
