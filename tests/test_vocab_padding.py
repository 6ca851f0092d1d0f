"""The padded vocabulary (model.vocab_multiple): a padded model trains, scores and samples as the
unpadded one, its pad rows stay zero, a tensor axis shards it, and configs saved before the field
keep reading their checkpoints. The interop round trips of every format run padded in
test_interop_cli.py (the default pads) and check that the files hold the real rows."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mdlm_jax import config as config_lib, parallel, run_config
from mdlm_jax.models import vocab
from mdlm_jax.training import optim, task as task_lib

VOCAB, MASK, LENGTH, BATCH = 61, 60, 16, 8
PADDED = 128


def small_config(multiple, **diffusion):
    cfg = config_lib.default_config()
    cfg.model.update(n_blocks=1, hidden_size=32, n_heads=2, cond_dim=16, dtype="float32", dropout=0.0,
                     vocab_multiple=multiple)
    cfg.diffusion.update(diffusion)
    cfg.train.update(batch_size=BATCH)
    # weight decay and clipping: both would move a pad row that had a gradient or a value
    cfg.optim.update(warmup_steps=0, lr=1e-2, weight_decay=0.1, grad_clip=1.0)
    cfg.mesh.update(data=1, fsdp=1, tensor=1)
    return cfg


@functools.lru_cache(maxsize=None)
def trained(multiple, objective="subs"):
    """(task, per-step losses, final state as host copies) of 3 steps (one compile per case)."""
    cfg = small_config(multiple, parameterization=objective)
    cfg.model.time_conditioning = objective == "sedd"
    return train(cfg)


def train(cfg, steps=3):
    mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:1])
    task = task_lib.make_task(cfg, VOCAB, MASK)
    optimizer = optim.make_optimizer(cfg.optim)
    _, shardings = task_lib.state_shardings(task, optimizer, mesh, LENGTH)
    state = task_lib.init_state(task, optimizer, mesh, shardings, 0, LENGTH)
    step = task_lib.make_train_step(task, optimizer, mesh, shardings)
    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(0, MASK, (BATCH, LENGTH)).astype(np.int32),
             "attention_mask": np.ones((BATCH, LENGTH), np.float32)}
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(steps):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
    return task, losses, jax.device_get(state)


def vocab_leaves(tree, model):
    """(path, array) of every leaf of a params-shaped tree (params, EMA, Adam moments) that has a
    vocabulary axis, with that axis."""
    axes = vocab.vocab_axes(model)
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(nn.meta.unbox(tree)):
        path = tuple(k.key for k in key_path if isinstance(k, jax.tree_util.DictKey))
        for suffix, axis in axes.items():
            if path[-len(suffix):] == suffix and np.ndim(leaf):
                yield jax.tree_util.keystr(key_path), np.asarray(leaf), axis


@pytest.mark.parametrize("objective", ["subs", "ar", "sedd"])
def test_padded_model_trains_as_the_unpadded_one_and_its_pad_rows_stay_zero(objective):
    plain_task, plain_losses, plain = trained(1, objective)
    padded_task, padded_losses, padded = trained(PADDED, objective)
    assert padded_task.model.padded_vocab == PADDED and plain_task.model.padded_vocab == VOCAB
    assert plain_losses[0] != plain_losses[-1]  # it trains
    np.testing.assert_allclose(padded_losses, plain_losses, rtol=2e-6)
    cut = vocab.unpad_params(padded.params, padded_task.model)
    for a, b in zip(jax.tree.leaves(cut), jax.tree.leaves(nn.meta.unbox(plain.params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    found = 0
    for tree in (padded.params, padded.ema_params, padded.opt_state):
        for path, leaf, axis in vocab_leaves(tree, padded_task.model):
            assert leaf.shape[axis] == PADDED, path
            pad = np.take(leaf, np.arange(VOCAB, PADDED), axis=axis)
            assert not pad.any(), f"{path}: pad rows moved"
            found += 1
    assert found == 4 * 3  # params, EMA and both Adam moments of each of the 3 vocabulary tensors


def test_padded_model_samples_as_the_unpadded_one():
    runs = [trained(m) for m in (1, PADDED)]
    x_init = jnp.full((4, LENGTH), MASK, jnp.int32)
    for predictor in ("ddpm_cache", "first_hitting"):
        outs = []
        for task, _, state in runs:
            task.cfg.sample.update(predictor=predictor, num_steps=32)  # read when the sampler is built
            sampler = task.objective.block_sampler(task.model, 0)
            outs.append(np.asarray(jax.jit(sampler)(state.params, jax.random.key(3), x_init).tokens))
        assert (outs[0] != MASK).all() and len(np.unique(outs[0])) > 5
        np.testing.assert_array_equal(outs[0], outs[1])


def test_a_tensor_axis_shards_the_padded_vocabulary():
    """GPT-2's 50,258 rows do not split over 4 tensor shards; padded to 50,304 they do."""
    gpt2 = 50258
    for multiple, sharded in ((1, False), (PADDED, True)):
        cfg = small_config(multiple)
        cfg.mesh.update(data=1, fsdp=2, tensor=4)
        mesh = parallel.make_mesh(cfg.mesh, jax.devices()[:8])
        task = task_lib.make_task(cfg, gpt2, gpt2 - 1)
        abstract, shardings = task_lib.state_shardings(task, optim.make_optimizer(cfg.optim), mesh, LENGTH)
        rows = abstract.params["vocab_embed"].shape[0]
        assert rows == vocab.padded_size(gpt2, multiple) == (50304 if multiple > 1 else gpt2)
        for path in (("vocab_embed",), ("output_layer", "linear", "kernel"), ("output_layer", "linear", "bias")):
            spec = traverse_util.flatten_dict(shardings.params)[path].spec
            assert ("tensor" in jax.tree.leaves(tuple(spec))) == sharded, (multiple, path, spec)


def test_configs_saved_before_the_field_keep_their_unpadded_checkpoints():
    saved = config_lib.default_config().to_dict()
    del saved["model"]["vocab_multiple"]
    cfg, unknown = config_lib.from_saved(saved)
    assert cfg.model.vocab_multiple == 1 and not unknown
    requested = config_lib.default_config()  # a --config file that does not name the field
    resolved = run_config.resolve("train", requested, {}, saved, config_given=True)
    assert resolved.cfg.model.vocab_multiple == 1
    named = config_lib.default_config()
    named.model.vocab_multiple = 256
    with pytest.raises(run_config.ConfigMismatch, match="model.vocab_multiple: checkpoint 1"):
        run_config.resolve("train", named, {"model.vocab_multiple": 256}, saved, config_given=True)
    current = config_lib.default_config().to_dict()  # saved with the field: its value stands
    assert config_lib.from_saved(current)[0].model.vocab_multiple == PADDED


def test_bad_vocab_multiple_is_refused_before_any_compile():
    cfg = config_lib.default_config()
    cfg.model.vocab_multiple = 0
    with pytest.raises(ValueError, match="model.vocab_multiple must be an integer >= 1"):
        config_lib.validate(cfg)
