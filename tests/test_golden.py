"""Parity with the official MDLM code on the golden cases in tests/fixtures (shared/reference).

Tolerance 1e-4 (reference/README.md); log-prob entries <= -1e4 count as -inf on both sides
because the official code uses finite -1e6 / -1000 where we use -inf.
"""

import json

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdlm_jax.diffusion import losses, process, sampling
from mdlm_jax.diffusion.schedules import get_schedule
from mdlm_jax.interop import params_from_torch, params_to_torch, torch_param_names
from mdlm_jax.models import DiT
from mdlm_jax.training.optim import ema_update

TOL = dict(rtol=1e-4, atol=1e-4)
NOISE_CONFIGS = {
    "loglinear": {"eps": 1e-3},
    "cosine": {"eps": 1e-3},
    "cosinesqr": {"eps": 1e-3},
    "linear": {"sigma_min": 1e-3, "sigma_max": 7.0},
    "geometric": {"sigma_min": 1e-4, "sigma_max": 20.0},
}


def load_case(fixtures_dir, name):
    z = np.load(fixtures_dir / f"{name}.npz")
    case = json.loads(str(z["case_json"]))
    model = DiT(vocab_size=case["vocab"], hidden_size=case["hidden"], cond_dim=case["cond"],
                n_blocks=case["blocks"], n_heads=case["heads"], causal=case["backbone"] == "ar",
                time_conditioning=case["time_conditioning"])
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    return z, model, params_from_torch(sd, model), sd


@pytest.fixture(scope="module")
def dit(fixtures_dir):
    return load_case(fixtures_dir, "dit_h64_b2_n2_v50_l16_tc0")


@pytest.fixture(scope="module")
def ar(fixtures_dir):
    return load_case(fixtures_dir, "ar_h64_b2_n2_v50_l16")


def assert_logprobs_close(ours, theirs, neg_inf=-1e4):
    """The official -1e6 (SUBS) and -1000 (AR) stand-ins count as -inf below ``neg_inf``."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    ninf_ours, ninf_theirs = ours <= neg_inf, theirs <= neg_inf
    np.testing.assert_array_equal(ninf_ours, ninf_theirs)
    np.testing.assert_allclose(ours[~ninf_ours], theirs[~ninf_theirs], **TOL)


@pytest.mark.parametrize("name", ["dit", "ar"])
def test_weight_mapping_round_trip_and_order(name, request):
    z, model, params, sd = request.getfixturevalue(name)
    back = params_to_torch(params, model)
    assert list(back) == [str(k) for k in z["state_dict_keys"]]
    for key, value in back.items():
        np.testing.assert_array_equal(value, sd[key])
    assert torch_param_names(model) == [str(k) for k in z["ema_param_names"]]
    prefixed = {"backbone." + k: v for k, v in sd.items()}
    jax.tree_util.tree_map(np.testing.assert_array_equal, params_from_torch(prefixed, model), params)


def test_dit_logits(dit):
    z, model, params, _ = dit
    logits = model.apply({"params": params}, jnp.asarray(z["xt"]), jnp.asarray(z["sigma"]))
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, z["logits"], **TOL)
    raw = model.clone(time_conditioning=True).apply({"params": params}, jnp.asarray(z["xt"]),
                                                     jnp.asarray(z["sigma"]))
    np.testing.assert_allclose(raw, z["logits_raw_sigma"], **TOL)


def test_subs_log_probs(dit):
    z, model, params, _ = dit
    logits = model.apply({"params": params}, jnp.asarray(z["xt"]), jnp.asarray(z["sigma"]))
    lp = losses.subs_log_probs(logits, jnp.asarray(z["xt"]), int(z["mask_index"]))
    assert_logprobs_close(lp, z["subs_logprobs"])


@pytest.mark.parametrize("prefix,num_steps", [("ct", 0), ("dt", 1000)])
def test_diffusion_losses(dit, prefix, num_steps):
    z, model, params, _ = dit
    mask_id = int(z["mask_index"])
    schedule = get_schedule("loglinear", eps=1e-3)
    g = lambda k: jnp.asarray(z[f"{prefix}_{k}"])  # noqa: E731
    e = process.antithetic_from_uniform(g("eps_t"), 2)  # official: one u per row
    t = (1 - 1e-3) * e + 1e-3
    if num_steps:
        t = process.discretize_t(t, num_steps)
    np.testing.assert_allclose(t, g("t"), rtol=0 if num_steps else 1e-6)
    sigma, dsigma = schedule(t)
    np.testing.assert_allclose(sigma, g("sigma"), **TOL)
    np.testing.assert_allclose(dsigma, g("dsigma"), **TOL)
    move_chance = schedule.move_chance(t)
    np.testing.assert_allclose(move_chance, g("move_chance")[:, 0], **TOL)
    xt = process.mask_tokens(jnp.asarray(z["x0"]), move_chance, mask_id, g("u"))
    np.testing.assert_array_equal(xt, g("xt"))
    logits = model.apply({"params": params}, xt, sigma)
    assert_logprobs_close(losses.subs_log_probs(logits, xt, mask_id), g("logprobs"))
    if num_steps:
        weight = losses.discrete_weight(schedule, t, num_steps)
    else:
        weight = losses.continuous_weight(sigma, dsigma)
    out = losses.masked_diffusion_loss(logits, jnp.asarray(z["x0"]), xt, weight,
                                       jnp.asarray(z["attention_mask"]), mask_id)
    np.testing.assert_allclose(out.token_loss, g("nlls"), **TOL)
    np.testing.assert_allclose(out.loss, g("loss_mean"), **TOL)


def test_diffusion_loss_end_to_end_matches_official_given_same_draws(dit):
    """``diffusion_loss`` wires sampler, schedule, masking and weights like the official _loss."""
    z, model, params, _ = dit
    mask_id = int(z["mask_index"])
    schedule = get_schedule("loglinear", eps=1e-3)
    x0, am = jnp.asarray(z["x0"]), jnp.asarray(z["attention_mask"])
    out = losses.diffusion_loss(lambda x, s: model.apply({"params": params}, x, s), x0, am,
                                jax.random.key(0), schedule=schedule, mask_id=mask_id)
    t_rng, mask_rng = jax.random.split(jax.random.key(0))
    t = process.sample_t(t_rng, 2)
    xt = process.forward_process(mask_rng, x0, schedule.move_chance(t), mask_id)
    nll = -jnp.take_along_axis(losses.subs_log_probs(model.apply({"params": params}, xt, schedule.sigma(t)),
                                                     xt, mask_id), x0[..., None], -1)[..., 0]
    expected = jnp.where(xt == mask_id, nll / t[:, None], 0.0)
    np.testing.assert_allclose(out.token_loss, expected, rtol=1e-5)


def test_ar_log_probs_and_loss(ar):
    z, model, params, _ = ar
    mask_id = int(z["mask_index"])
    logits = model.apply({"params": params}, jnp.asarray(z["x0"]))
    np.testing.assert_allclose(logits[..., :mask_id], z["logits"][..., :mask_id], **TOL)
    assert_logprobs_close(losses.ar_log_probs(logits, mask_id), z["backbone_out"], neg_inf=-900)
    out = losses.ar_loss(logits, jnp.asarray(z["x0"]), jnp.asarray(z["attention_mask"]), mask_id)
    np.testing.assert_allclose(out.token_loss, z["ar_nlls"], **TOL)
    np.testing.assert_allclose(out.loss, z["ar_loss_mean"], **TOL)


@pytest.mark.parametrize("kind", ["cache", "ddpm"])
def test_sampler_step(dit, kind):
    z, model, params, _ = dit
    mask_id = int(z["mask_index"])
    schedule = get_schedule("loglinear", eps=1e-3)
    x = jnp.asarray(z["samp_x"])
    t = jnp.asarray(z["samp_t"])[:, 0]
    dt = float(z["samp_dt"])
    logits = model.apply({"params": params}, x, schedule.sigma(t))
    p_x0 = jnp.exp(losses.subs_log_probs(logits, x, mask_id))
    if kind == "cache":
        np.testing.assert_allclose(p_x0, z["cache_p_x0"], atol=1e-6)
        mc_t, mc_s = t, t - dt
    else:
        mc_t, mc_s = schedule.move_chance(t), schedule.move_chance(t - dt)
    noise = sampling.official_noise_from_uniforms(jnp.asarray(z["samp_u_gumbel"]))
    x_next, q = sampling.reverse_step(x, p_x0, mc_t, mc_s, mask_id, noise)
    prefix = "cache" if kind == "cache" else "ddpm"
    np.testing.assert_allclose(q, z[f"{prefix}_q_xs"], atol=1e-6)
    np.testing.assert_array_equal(sampling.sample_categorical(q, noise), z[f"{prefix}_sampled"])
    np.testing.assert_array_equal(x_next, z[f"{prefix}_x_next"])


@pytest.mark.parametrize("name", list(NOISE_CONFIGS))
def test_noise_tables(dit, name):
    z = dit[0]
    schedule = get_schedule(name, **NOISE_CONFIGS[name])
    sigma, dsigma = schedule(jnp.asarray(z["noise/t"]))
    np.testing.assert_allclose(sigma, z[f"noise/{name}/sigma"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dsigma, z[f"noise/{name}/dsigma"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("key", ["d09999", "d09"])
def test_ema_rule(fixtures_dir, key):
    z = np.load(fixtures_dir / "ema_rule.npz")
    shadow = jnp.asarray(z[f"{key}/params_init"])
    for params, expected, n in zip(z[f"{key}/params_seq"], z[f"{key}/shadow_seq"], z[f"{key}/num_updates_seq"]):
        shadow = ema_update(shadow, jnp.asarray(params), int(n), float(z[f"{key}/decay"]))
        np.testing.assert_allclose(shadow, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["dit", "ar"])
def test_official_init(name, request):
    """Fresh init follows the official one: exact zeros/ones, else U(+-1/sqrt(fan_in)).

    The recorded official [min, max] must fit the same bound, which pins down fan_in.
    """
    z, model, _, _ = request.getfixturevalue(name)
    boxed = model.init(jax.random.key(1), jnp.zeros((1, 16), jnp.int32), jnp.zeros((1,)))["params"]
    ours = params_to_torch(flax.linen.meta.unbox(boxed), model, include_buffers=False)
    for key, value in ours.items():
        lo, hi, _, _ = z[f"init_stats/{key}"]
        if lo == hi:  # constant init (zeros or ones)
            np.testing.assert_array_equal(value, lo, err_msg=key)
            continue
        weight = ours[key.replace(".bias", ".weight")] if key.endswith(".bias") else value
        bound = 1.0 / np.sqrt(weight.shape[1])
        assert max(-lo, hi) <= bound * (1 + 1e-6), key
        assert np.abs(value).max() <= bound * (1 + 1e-6), key
        if value.size >= 1000:
            assert np.abs(value).max() > 0.95 * bound and max(-lo, hi) > 0.95 * bound, key
