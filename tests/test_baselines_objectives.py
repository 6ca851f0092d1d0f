"""The baselines as objectives: chosen by diffusion.parameterization through the registry, fed
the official recorded draws they reproduce the official per-token and mean losses; every
baseline config trains, evaluates and samples; bad combinations are refused by name."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tests_util import BERT_DIR, load_config, needs_bert

from mdlm_jax import checkpoint, config as config_lib, experiment
from mdlm_jax.evals import evaluate, sample
from mdlm_jax.interop import params_from_torch
from mdlm_jax.training import task as task_lib, train

D3PM = "baselines/d3pm_h64_b2_n2_v50_l16.npz"
SEDD = "baselines/sedd_h64_b3_n4_v64_l24_tc1.npz"
SUBS = "baselines/subs_h64_b2_n4_v56_l20.npz"


def golden_task(z, flags, parameterization):
    """A Task for the golden file's architecture and flags, through make_task (the registry)."""
    spec = json.loads(str(z["case_json"]))
    cfg = config_lib.default_config()
    cfg.model.update(hidden_size=spec["hidden"], cond_dim=spec["cond"], n_blocks=spec["blocks"],
                     n_heads=spec["heads"], time_conditioning=flags["time_conditioning"], dtype="float32")
    cfg.diffusion.update(parameterization=parameterization, num_steps=int(z["T"]),
                         subs_masking=bool(flags.get("subs_masking", False)),
                         importance_sampling=bool(flags.get("importance_sampling", False)),
                         change_of_variables=bool(flags.get("change_of_variables", False)))
    task = task_lib.make_task(cfg, int(z["vocab_size"]), int(z["mask_index"]))
    sd = {k[len("state_dict/"):]: z[k] for k in z.files if k.startswith("state_dict/")}
    return task, params_from_torch(sd, task.model)


def recorded_batch(z, r):
    """The golden file's x0 and mask with a section's recorded t and x_t (``r(key)`` reads the section)."""
    return dict(input_ids=jnp.asarray(z["x0"], jnp.int32), attention_mask=jnp.asarray(z["attention_mask"]),
                t=jnp.asarray(r("t")), xt=jnp.asarray(r("xt"), jnp.int32))


@pytest.mark.parametrize("variant", ["sm0_tc1", "sm1_tc1", "sm0_tc0", "sm1_tc0", "sm0_tc1_is", "sm1_tc1_cov"])
@pytest.mark.parametrize("draw", ["loss0", "loss1"])
def test_d3pm_objective_with_recorded_draws_gives_the_official_loss(fixtures_dir, variant, draw):
    z = np.load(fixtures_dir / D3PM)
    flags = next(f for f in json.loads(str(z["case_json"]))["variants"] if f["name"] == variant)
    task, params = golden_task(z, flags, "d3pm")
    r = lambda k: z[f"{variant}/{draw}/{k}"]  # noqa: E731
    batch = recorded_batch(z, r)
    ex = task_lib.prepare(task, batch, jax.random.key(0), jax.random.key(1))
    np.testing.assert_array_equal(ex["sigma"], r("unet_conditioning")[:, 0])  # sigma, or t under CoV
    out = task_lib.token_losses(task, params, ex, train=False)
    np.testing.assert_allclose(out.token_loss, r("nlls"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.loss, r("loss_mean"), rtol=1e-5)


@pytest.mark.parametrize("draw", ["loss0", "loss1"])
def test_sedd_objective_with_recorded_draws_gives_the_official_loss(fixtures_dir, draw):
    z = np.load(fixtures_dir / SEDD)
    (flags,) = json.loads(str(z["case_json"]))["variants"]
    task, params = golden_task(z, flags, "sedd")
    r = lambda k: z[f"tc1/{draw}/{k}"]  # noqa: E731
    batch = recorded_batch(z, r)
    ex = task_lib.prepare(task, batch, jax.random.key(0), jax.random.key(1))
    out = task_lib.token_losses(task, params, ex, train=False)
    np.testing.assert_allclose(out.token_loss, r("nlls"), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.loss, r("loss_mean"), rtol=1e-5)


@pytest.mark.parametrize("variant", ["tc0_is", "tc1_cov"])
@pytest.mark.parametrize("draw", ["loss0", "loss1"])
def test_subs_with_importance_sampling_or_change_of_variables_gives_the_official_loss(fixtures_dir, variant, draw):
    z = np.load(fixtures_dir / SUBS)
    flags = next(f for f in json.loads(str(z["case_json"]))["variants"] if f["name"] == variant)
    task, params = golden_task(z, flags, "subs")
    r = lambda k: z[f"{variant}/{draw}/{k}"]  # noqa: E731
    batch = recorded_batch(z, r)
    ex = task_lib.prepare(task, batch, jax.random.key(0), jax.random.key(1))
    np.testing.assert_allclose(ex["sigma"], r("unet_conditioning")[:, 0], rtol=1e-6)  # t under CoV
    out = task_lib.token_losses(task, params, ex, train=False)
    np.testing.assert_allclose(out.token_loss, r("nlls"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.loss, r("loss_mean"), rtol=1e-5)
    # Drawn rather than recorded: the same law of t and masks (IS: t on the importance grid).
    drawn = task_lib.prepare(task, dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]),
                             jax.random.key(5), jax.random.key(6))
    assert drawn["t"].shape == batch["t"].shape and np.isfinite(np.asarray(drawn["weight"])).all()
    if variant == "tc0_is":  # IS makes the log move chance linear in the (antithetic, evenly spaced) draw
        log_mc = np.sort(np.log(-np.expm1(-np.asarray(drawn["sigma"], np.float64))))
        np.testing.assert_allclose(np.diff(log_mc), np.diff(log_mc)[0], rtol=1e-3)


def test_d3pm_objective_draws_the_official_t_and_masks_from_its_uniforms(fixtures_dir):
    """Without recorded draws the objective draws t itself, on the T-step grid {2/T, ..., 1}, and
    masks x_0 (never changes an unmasked token)."""
    z = np.load(fixtures_dir / D3PM)
    flags = next(f for f in json.loads(str(z["case_json"]))["variants"] if f["name"] == "sm1_tc0")
    task, _ = golden_task(z, flags, "d3pm")
    x0 = jnp.asarray(z["x0"], jnp.int32)
    batch = dict(input_ids=x0, attention_mask=jnp.ones(x0.shape))
    ex = task_lib.prepare(task, batch, jax.random.key(3), jax.random.key(4))
    t = np.asarray(ex["t"])
    assert np.allclose(t * 1000, np.round(t * 1000), atol=1e-3) and (t >= 2e-3).all()  # on the grid {2/T..1}
    masked = np.asarray(ex["xt"]) == int(z["mask_index"])
    np.testing.assert_array_equal(np.asarray(ex["xt"])[~masked], np.asarray(x0)[~masked])


def quick(name, tmp_path):
    cfg = load_config(name, "quick")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.train.update(steps=2, eval_every=2, checkpoint_every=2)
    return cfg


@pytest.mark.parametrize("name", ["lm1b_d3pm", "lm1b_table8_t1000", "lm1b_table8_no_carry_over",
                                  "lm1b_table8_no_zero_masking", "lm1b_sedd", "owt_sedd"])
def test_each_baseline_config_trains_evaluates_and_samples(name, tmp_path):
    cfg = quick(name, tmp_path)
    full = load_config(name)
    assert cfg.diffusion == full.diffusion and cfg.model.time_conditioning == full.model.time_conditioning
    config_lib.validate(cfg, "sample")
    s = experiment.build(cfg)
    metrics = train.train_and_evaluate(cfg, str(tmp_path / "work"), s=s)
    assert np.isfinite(metrics["nelbo"]) and metrics["nelbo"] > 0
    state = train.restore_or_init(s, checkpoint.Checkpointer(str(tmp_path / "work")))[0]
    out = sample.generate(s, state.ema_params)
    assert out.tokens.shape == (cfg.sample.num_samples, cfg.data.seq_len) and out.nfe >= 1
    if not (cfg.diffusion.parameterization == "d3pm" and not cfg.diffusion.subs_masking):
        assert (out.tokens != s.task.mask_id).all()  # without zero masking D3PM may keep the mask (official)
    again = evaluate.evaluate(s, state)
    assert again["nelbo"] == pytest.approx(metrics["nelbo"], rel=1e-6)


@pytest.mark.parametrize("change, message", [
    (dict(parameterization="d3pm", num_steps=0), r"'d3pm' is discrete time: set diffusion.num_steps"),
    (dict(parameterization="subs", subs_masking=True), r"diffusion.subs_masking is the d3pm ablation"),
    (dict(parameterization="sedd", importance_sampling=True), r"diffusion.importance_sampling is supported for"),
    (dict(parameterization="subs", num_steps=1000, change_of_variables=True),
     r"diffusion.change_of_variables is supported for 'd3pm' and for 'subs' in continuous time"),
    (dict(parameterization="d4pm"), r"Unknown diffusion.parameterization 'd4pm'"),
    (dict(parameterization="d3pm", num_steps=100, sampling_eps=1e-3),
     r"diffusion.sampling_eps 0.001 puts t in the first of diffusion.num_steps 100 bins, where the d3pm bound is NaN"),
    (dict(parameterization="d3pm", num_steps=10, sampling_eps=0.1, importance_sampling=True),
     r"first of diffusion.num_steps 10 bins after importance sampling"),
])
def test_bad_combinations_are_named(change, message):
    cfg = config_lib.default_config()
    cfg.diffusion.update(**change)
    with pytest.raises(ValueError, match=message):
        config_lib.validate(cfg)
        task_lib.make_task(cfg, 11, 10)


def test_sedd_without_time_conditioning_and_analytic_ar_are_refused():
    cfg = config_lib.default_config()
    cfg.diffusion.parameterization = "sedd"
    with pytest.raises(ValueError, match=r"'sedd' needs model.time_conditioning=True"):
        task_lib.make_task(cfg, 11, 10)
    cfg = config_lib.default_config()
    cfg.diffusion.parameterization = "ar"
    cfg.sample.predictor = "analytic"
    with pytest.raises(ValueError, match=r"sample.predictor 'analytic' is SEDD's sampler"):
        config_lib.validate(cfg, "sample")
    cfg = config_lib.default_config()
    cfg.sample.update(predictor="analytic", temperature=0.8)
    with pytest.raises(ValueError, match=r"the analytic and d3pm samplers take neither"):
        config_lib.validate(cfg, "sample")


@needs_bert
@pytest.mark.parametrize("parameterization", ["subs", "ar", "d3pm", "sedd"])
def test_every_objective_trains_with_bert_s_mask_inside_the_vocabulary(parameterization, tmp_path):
    """bert-base-uncased keeps V = 30,522 and masks with [MASK] = 103, not the last id: every
    objective trains, evaluates and samples, and never generates the mask where it cannot."""
    cfg = quick("quickstart", tmp_path)
    cfg.data.update(tokenizer="bert-base-uncased", tokenizer_path=BERT_DIR, packing="pad")
    cfg.diffusion.parameterization = parameterization
    if parameterization == "d3pm":
        cfg.diffusion.update(num_steps=1000, subs_masking=True)
        cfg.sample.predictor = "ddpm"
    if parameterization == "sedd":
        cfg.model.time_conditioning = True
        cfg.sample.predictor = "analytic"
    config_lib.validate(cfg, "sample")
    s = experiment.build(cfg)
    assert (s.task.mask_id, s.task.model.vocab_size) == (103, 30522)
    metrics = train.train_and_evaluate(cfg, str(tmp_path / "work"), s=s)
    assert np.isfinite(metrics["nelbo"]) and metrics["nelbo"] > 0
    state = train.restore_or_init(s, checkpoint.Checkpointer(str(tmp_path / "work")))[0]
    out = sample.generate(s, state.ema_params)
    assert (out.tokens != 103).all() and (out.tokens < 30522).all()


@pytest.mark.parametrize("parameterization, predictor, num_steps, nfe", [
    ("subs", "analytic", 6, 7), ("d3pm", "ddpm_cache", 6, None), ("d3pm", "ddpm", 6, 7), ("sedd", "analytic", 6, 7)])
def test_each_objective_samples_with_each_of_its_samplers_through_generate(parameterization, predictor, num_steps,
                                                                          nfe, tmp_path):
    cfg = quick("quickstart", tmp_path)
    cfg.diffusion.parameterization = parameterization
    cfg.sample.update(predictor=predictor, num_steps=num_steps)
    if parameterization == "d3pm":
        cfg.diffusion.update(num_steps=1000, subs_masking=True)
    if parameterization == "sedd":
        cfg.model.time_conditioning = True
    config_lib.validate(cfg, "sample")
    s = experiment.build(cfg, "sample")
    state = task_lib.init_state(s.task, s.optimizer, s.mesh, s.shardings, cfg.seed, cfg.data.seq_len)
    out = sample.generate(s, state.ema_params)
    assert out.tokens.shape == (cfg.sample.num_samples, cfg.data.seq_len)
    assert (out.tokens != s.task.mask_id).all()
    assert out.nfe == nfe if nfe else 1 <= out.nfe <= num_steps + 1  # T steps + the final denoiser
    assert (out.reveal_step[:, 1:] >= 1).all()  # every generated position was revealed at some step
