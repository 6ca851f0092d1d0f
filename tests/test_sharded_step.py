"""One jitted train step on every mesh gives the same numbers; microbatching changes nothing."""

import functools

import jax
import numpy as np
import pytest

from mdlm_jax import config as config_lib, parallel
from mdlm_jax.training import optim, task as task_lib

VOCAB, MASK, LENGTH, BATCH = 61, 60, 16, 16


def small_config(parameterization="subs", microbatches=1, mesh=(1, 1, 1)):
    cfg = config_lib.default_config()
    cfg.model.update(n_blocks=2, hidden_size=64, n_heads=4, cond_dim=32, dtype="float32", dropout=0.0)
    cfg.diffusion.parameterization = parameterization
    cfg.train.update(batch_size=BATCH, microbatches=microbatches)
    cfg.optim.warmup_steps = 0
    cfg.mesh.update(data=mesh[0], fsdp=mesh[1], tensor=mesh[2])
    return cfg


def run_steps(cfg, num_steps=2, seed=0):
    """Inits on the config's mesh and runs ``num_steps`` steps on fixed batches; host copies out."""
    devices = jax.devices()[: int(np.prod([cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]))]
    mesh = parallel.make_mesh(cfg.mesh, devices)
    task = task_lib.make_task(cfg, VOCAB, MASK)
    optimizer = optim.make_optimizer(cfg.optim)
    _, shardings = task_lib.state_shardings(task, optimizer, mesh, LENGTH)
    state = task_lib.init_state(task, optimizer, mesh, shardings, seed, LENGTH)
    step = task_lib.make_train_step(task, optimizer, mesh, shardings)
    rng = np.random.default_rng(seed)
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(num_steps):
            batch = {"input_ids": rng.integers(0, MASK, (BATCH, LENGTH)).astype(np.int32),
                     "attention_mask": (rng.random((BATCH, LENGTH)) < 0.9).astype(np.float32)}
            state, metrics = step(state, parallel.make_global_batch(batch, parallel.batch_sharding(mesh)))
            losses.append(float(metrics["loss"]))
    return np.array(losses), jax.tree_util.tree_map(np.asarray, jax.device_get(state))


def assert_same(a, b, tol=1e-5):
    np.testing.assert_allclose(a[0], b[0], rtol=tol, atol=tol)
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=tol, atol=tol), a[1].params, b[1].params)
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=tol, atol=tol), a[1].ema_params,
                           b[1].ema_params)


@pytest.mark.parametrize("parameterization", ["subs", "ar"])
def test_same_loss_and_update_on_every_mesh(parameterization):
    reference = run_steps(small_config(parameterization, mesh=(1, 1, 1)))
    assert np.isfinite(reference[0]).all()
    for mesh in [(8, 1, 1), (4, 2, 1), (2, 2, 2)]:
        assert_same(run_steps(small_config(parameterization, mesh=mesh)), reference)


def test_same_step_on_a_mesh_with_dropout_on():
    """The paper's dropout 0.1: the masks are drawn alike however the batch and weights are split."""
    def with_dropout(mesh):
        cfg = small_config("subs", mesh=mesh)
        cfg.model.dropout = 0.1
        return cfg

    reference = run_steps(with_dropout((1, 1, 1)), num_steps=3)
    assert_same(run_steps(with_dropout((2, 2, 2)), num_steps=3), reference)
    no_dropout = run_steps(small_config("subs", mesh=(1, 1, 1)), num_steps=3)
    moved = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b),
                                                             no_dropout[1].params, reference[1].params))
    assert any(moved)  # dropout was on: it changed the update


def test_params_are_born_sharded():
    cfg = small_config(mesh=(2, 2, 2))
    mesh = parallel.make_mesh(cfg.mesh)
    task = task_lib.make_task(cfg, VOCAB + 3, MASK)  # 64 entries: the vocab splits over tensor
    optimizer = optim.make_optimizer(cfg.optim)
    _, shardings = task_lib.state_shardings(task, optimizer, mesh, LENGTH)
    state = task_lib.init_state(task, optimizer, mesh, shardings, 0, LENGTH)
    qkv = state.params["blocks_0"]["attn"]["attn_qkv"]
    assert qkv.sharding.spec == jax.sharding.PartitionSpec("fsdp", None, "tensor", None)
    assert qkv.addressable_shards[0].data.shape == (32, 3, 2, 16)
    mu = state.opt_state[1][0].mu["blocks_0"]["mlp"]["mlp_0"]["kernel"]
    assert mu.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


@pytest.mark.parametrize("parameterization", ["subs", "ar"])
def test_gradient_accumulation_equals_one_big_batch(parameterization):
    big = run_steps(small_config(parameterization, microbatches=1, mesh=(2, 1, 1)))
    accumulated = run_steps(small_config(parameterization, microbatches=4, mesh=(2, 1, 1)))
    assert_same(accumulated, big)


def test_mesh_and_batch_errors_are_clear():
    with pytest.raises(ValueError, match="needs 16 devices, but 8"):
        parallel.make_mesh(small_config(mesh=(4, 4, 1)).mesh)
    with pytest.raises(ValueError, match="at most one may be -1"):
        parallel.make_mesh(small_config(mesh=(-1, -1, 1)).mesh)
    with pytest.raises(ValueError, match="3 does not divide 8"):
        parallel.make_mesh(small_config(mesh=(-1, 3, 1)).mesh)
    mesh = parallel.make_mesh(small_config(mesh=(8, 1, 1)).mesh)
    with pytest.raises(ValueError, match=r"Global batch size \(12\)"):
        parallel.check_batch_size(12, mesh)


@pytest.mark.parametrize("parameterization", ["subs", "ar"])
@pytest.mark.parametrize("loss_chunk", [5, 0])
def test_fused_loss_and_scanned_blocks_give_the_same_step(parameterization, loss_chunk):
    """The output layer fused with the cross-entropy, 5 positions at a time (model.loss_chunk: a
    padded tail at L = 16, and L - 1 = 15 for AR) or whole with its gradient written out
    (model.fused_loss), and model.scan_blocks scanning the blocks over their stacked, fsdp/tensor-
    sharded params: loss and update on a 2x2x2 mesh match the plain step (autodiff through the
    model's logits) on one device."""
    cfg = small_config(parameterization, mesh=(2, 2, 2))
    cfg.model.update(loss_chunk=loss_chunk, fused_loss=True, scan_blocks=True)
    plain = small_config(parameterization)
    plain.model.fused_loss = False
    assert_same(run_steps(cfg), run_steps(plain))


@pytest.mark.parametrize("name", ["dit", "bert"])
def test_activation_shardings_are_in_the_lowered_step(name):
    """On a 2 x 2 x 2 mesh the step carries the logical activation constraints: the residual stream
    and logits over the batch axes, q/k/v and the MLP's hidden layer over tensor as well (the
    numbers are the unsharded step's: test_same_loss_and_update_on_every_mesh)."""
    cfg = small_config(mesh=(2, 2, 2))
    cfg.model.name = name
    cfg.data.seq_len = LENGTH
    mesh = parallel.make_mesh(cfg.mesh)
    task = task_lib.make_task(cfg, 61, 60)  # padded to 128 rows (model.vocab_multiple), which the tensor axis divides
    optimizer = optim.make_optimizer(cfg.optim)
    abstract, shardings = task_lib.state_shardings(task, optimizer, mesh, LENGTH)
    step = task_lib.make_train_step(task, optimizer, mesh, shardings)
    batch = {"input_ids": jax.ShapeDtypeStruct((BATCH, LENGTH), np.int32, sharding=parallel.batch_sharding(mesh)),
             "attention_mask": jax.ShapeDtypeStruct((BATCH, LENGTH), np.float32,
                                                    sharding=parallel.batch_sharding(mesh))}
    with jax.set_mesh(mesh):
        text = step.lower(abstract, batch).as_text()
    constraints = [line for line in text.splitlines() if "sharding_constraint" in line]
    batch_only = '[{"data", "fsdp"}, {}, {}]'
    heads = '[{"data", "fsdp"}, {}, {"tensor"}, {}]'
    vocab = '[{"data", "fsdp"}, {}, {"tensor"}]'
    assert sum(batch_only in c for c in constraints) >= cfg.model.n_blocks, constraints
    assert any(vocab in c and "x128x" in c for c in constraints)  # the (B, L, V padded) logits
    if name == "dit":
        assert sum(heads in c for c in constraints) >= 4 * cfg.model.n_blocks  # q, k, v, out
