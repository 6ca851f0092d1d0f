"""The train step's wiring, checked from its behaviour: fresh draws every step, the Sobol sequence
continuing across steps, the EMA counting updates from one, clipping before AdamW, independent RNG
streams, and losses reduced as ratios of sums over the right tokens."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mdlm_jax import config as config_lib, parallel
from mdlm_jax.evals import evaluate
from mdlm_jax.training import optim, task as task_lib
from mdlm_jax.diffusion import losses

VOCAB, MASK, LENGTH, BATCH = 61, 60, 16, 8


def small_config(**diffusion):
    cfg = config_lib.default_config()
    cfg.model.update(n_blocks=1, hidden_size=32, n_heads=2, cond_dim=16, dtype="float32", dropout=0.0)
    cfg.diffusion.update(diffusion)
    cfg.train.update(batch_size=BATCH)
    cfg.optim.update(warmup_steps=0)
    cfg.mesh.update(data=1, fsdp=1, tensor=1)
    return cfg


def run(cfg, num_steps, batch=None, seed=0):
    """``num_steps`` jitted steps on one device; per step (metrics, params) as host copies."""
    mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:1])
    task = task_lib.make_task(cfg, VOCAB, MASK)
    optimizer = optim.make_optimizer(cfg.optim)
    _, shardings = task_lib.state_shardings(task, optimizer, mesh, LENGTH)
    state = task_lib.init_state(task, optimizer, mesh, shardings, seed, LENGTH)
    step = task_lib.make_train_step(task, optimizer, mesh, shardings)
    if batch is None:
        rng = np.random.default_rng(seed)
        batch = {"input_ids": rng.integers(0, MASK, (BATCH, LENGTH)).astype(np.int32),
                 "attention_mask": np.ones((BATCH, LENGTH), np.float32)}
    history = [(None, jax.device_get(state.params))]
    with jax.set_mesh(mesh):
        for _ in range(num_steps):
            state, metrics = step(state, batch)
            history.append((jax.device_get(metrics), jax.device_get(state.params)))
    return history, jax.device_get(state)


def test_every_step_draws_new_times_and_masks():
    cfg = small_config()
    cfg.optim.lr = 0.0  # the params never move, so only the draws can change the loss
    history, _ = run(cfg, 3)
    times = [m["t"] for m, _ in history[1:]]
    loss = [float(m["loss"]) for m, _ in history[1:]]
    for i in range(3):
        for j in range(i):
            assert not np.allclose(times[i], times[j]), (i, j, times)
            assert loss[i] != loss[j], loss


def test_sobol_times_continue_one_sequence_across_steps():
    """4 steps of 8 rows are the first 32 points of one shifted Sobol sequence: one in each of 32 strata."""
    cfg = small_config(time_sampler="sobol")
    history, _ = run(cfg, 4)
    eps = cfg.diffusion.sampling_eps
    e = (np.concatenate([m["t"] for m, _ in history[1:]]) - eps) / (1 - eps)
    assert np.array_equal(np.sort(np.floor(e * 32).astype(int)), np.arange(32)), np.sort(e)


def test_ema_follows_the_official_rule_counting_updates_from_one():
    cfg = small_config()
    cfg.train.ema = 0.9999
    history, state = run(cfg, 4)
    shadow = history[0][1]
    for n, (_, params) in enumerate(history[1:], start=1):
        d = min(0.9999, (1 + n) / (10 + n))
        shadow = jax.tree_util.tree_map(lambda s, p: s - (1 - d) * (s - p), shadow, params)
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
                           state.ema_params, shadow)


def test_optimizer_clips_the_global_norm_before_adamw():
    """Against AdamW written out in numpy, on gradients of norms 10, 0.1 and 5 (clip at 1): clipping
    changes the relative size of the steps' gradients, which Adam's moments remember."""
    cfg = config_lib.default_config().optim
    cfg.update(lr=0.1, warmup_steps=0, grad_clip=1.0, weight_decay=0.01)
    optimizer = optim.make_optimizer(cfg)
    rng = np.random.default_rng(0)
    params = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=(5,))}
    state = optimizer.init(jax.tree_util.tree_map(jnp.asarray, params))
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    current = jax.tree_util.tree_map(jnp.asarray, params)
    for step, norm in enumerate([10.0, 0.1, 5.0], start=1):
        g = {k: rng.normal(size=x.shape) for k, x in params.items()}
        scale = norm / np.sqrt(sum(np.square(x).sum() for x in g.values()))
        g = {k: x * scale for k, x in g.items()}
        updates, state = optimizer.update(jax.tree_util.tree_map(jnp.asarray, g), state, current)
        current = jax.tree_util.tree_map(lambda a, u: a + u, current, updates)
        clip = min(1.0, cfg.grad_clip / norm)
        for k in p:
            gk = g[k] * clip
            m[k] = cfg.beta1 * m[k] + (1 - cfg.beta1) * gk
            v2[k] = cfg.beta2 * v2[k] + (1 - cfg.beta2) * gk**2
            mhat, vhat = m[k] / (1 - cfg.beta1**step), v2[k] / (1 - cfg.beta2**step)
            p[k] = p[k] - cfg.lr * (mhat / (np.sqrt(vhat) + cfg.eps) + cfg.weight_decay * p[k])
    for k in p:
        np.testing.assert_allclose(np.asarray(current[k]), p[k], rtol=1e-5, atol=1e-5)


def test_rng_streams_never_share_a_key():
    rng = jax.random.key_data(jax.random.key(0))
    streams = task_lib.rng_streams(rng)
    keys = [streams.init, streams.sobol, streams.eval, streams.step]
    keys += [k for step in range(200) for k in task_lib.step_keys(rng, step)]
    data = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in keys}
    assert len(data) == len(keys)
    assert tuple(np.asarray(rng).tolist()) not in data  # the seed's key itself is the parent of all, used by none


def _ar_setup():
    cfg = small_config(parameterization="ar")
    cfg.optim.lr = 0.0
    cfg.eval.update(batch_size=BATCH, max_batches=-1)
    return cfg


def _padded_batch(seed=1):
    """Rows of very different lengths (2 to 16 tokens), the rest padding."""
    rng = np.random.default_rng(seed)
    lengths = np.array([2, 16, 3, 9, 16, 5, 12, 2])
    am = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.float32)
    ids = np.where(am > 0, rng.integers(0, MASK, (BATCH, LENGTH)), 0).astype(np.int32)
    return {"input_ids": ids, "attention_mask": am}


def _exact_ar_nll(task, params, batch):
    """Float64 per-row sums of -log p(x_l | x_<l) over l = 1 .. n - 1 and the row token counts."""
    logits = np.asarray(task.model.apply({"params": params}, jnp.asarray(batch["input_ids"])), np.float64)
    logits[..., task.mask_id] = -np.inf
    logp = special.log_softmax(logits, axis=-1)
    ids, am = batch["input_ids"], batch["attention_mask"]
    nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0] * am[:, 1:]
    return nll.sum(-1), am[:, 1:].sum(-1)


def _perturbed(params, seed=3):
    """Random weights (the zero-initialised output layer would make every token equally likely)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return tree.unflatten([0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def test_ar_perplexity_is_the_exact_ratio_of_sums_over_l_minus_1_tokens():
    from mdlm_jax import experiment

    cfg = _ar_setup()
    cfg.mesh.data = -1  # the batch sharded over all 8 devices
    s = experiment.build(cfg, "eval")
    params = _perturbed(nn.meta.unbox(s.task.model.init(jax.random.key(0), jnp.zeros((1, LENGTH), jnp.int32))
                                      ["params"]))
    batch = _padded_batch()
    row_nll, row_tokens = _exact_ar_nll(s.task, params, batch)
    out = evaluate.evaluate(s, task_lib.Weights(params=None, ema_params=params), batches=[batch])
    assert out["tokens"] == row_tokens.sum() == (batch["attention_mask"].sum() - BATCH)
    np.testing.assert_allclose(out["nelbo"], row_nll.sum() / row_tokens.sum(), rtol=2e-6)
    assert abs(np.mean(row_nll / row_tokens) - row_nll.sum() / row_tokens.sum()) > 0.05  # the test can tell


def test_train_loss_is_the_ratio_of_sums_over_the_batch():
    cfg = _ar_setup()
    batch = _padded_batch()
    mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:1])
    task = task_lib.make_task(cfg, VOCAB, MASK)
    optimizer = optim.make_optimizer(cfg.optim)
    _, shardings = task_lib.state_shardings(task, optimizer, mesh, LENGTH)
    state = task_lib.init_state(task, optimizer, mesh, shardings, 0, LENGTH)
    state = state.replace(params=_perturbed(state.params))
    row_nll, row_tokens = _exact_ar_nll(task, jax.device_get(state.params), batch)
    with jax.set_mesh(mesh):
        _, metrics = task_lib.make_train_step(task, optimizer, mesh, shardings)(state, batch)
    assert float(metrics["tokens"]) == row_tokens.sum()
    np.testing.assert_allclose(float(metrics["loss"]), row_nll.sum() / row_tokens.sum(), rtol=2e-6)


def test_reduce_loss_is_a_ratio_of_sums():
    token_loss = jnp.array([[1.0, 1.0, 7.0], [3.0, 0.0, 5.0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    out = losses.reduce_loss(token_loss, mask)
    assert float(out.loss) == pytest.approx(5.0 / 3.0) and float(out.num_tokens) == 3.0
