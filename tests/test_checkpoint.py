"""Checkpoints: bit-exact round trips, retention, fallback past corrupt steps, failed saves,
init-checkpoint params and sharded restores (8 fake CPU devices, set in conftest.py)."""

import json
import logging
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from mdlm_jax import checkpoint
from mdlm_jax.training.task import TrainState

# A failed tensorstore read leaves sibling reads that later call back into orbax's closed event
# loop ("Event loop is closed"), reported at garbage collection in whichever test runs then.
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
CONFIG = {"model": {"hidden_size": 16, "name": "dit"}, "optim": {"lr": 3e-4}, "seq_len": 8}


def make_state(seed=0):
    """A TrainState after one adamw update: non-trivial mu, nu and count; EMA != params."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    params = {"blocks": {"kernel": jax.random.normal(k1, (16, 32)), "bias": jax.random.normal(k2, (32,))},
              "embed": jax.random.normal(k3, (64, 16))}
    tx = optax.adamw(1e-3)
    grads = jax.tree.map(lambda p: jnp.sin(p * 3.0), params)
    updates, opt_state = tx.update(grads, tx.init(params), params)
    return TrainState(step=jnp.int32(seed + 1), params=optax.apply_updates(params, updates), opt_state=opt_state,
                      ema_params=jax.tree.map(lambda p: 0.9 * p, params),
                      rng=jax.random.key_data(jax.random.key(seed + 7)))


def abstract(tree, sharding_of=lambda x: x.sharding):
    """The restore target: each leaf's shape and dtype, with ``sharding_of(leaf)``."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_of(x)), tree)


def assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def save_steps(workdir, steps, **kwargs):
    ckpt = checkpoint.Checkpointer(str(workdir), **kwargs)
    for s in steps:
        ckpt.save(s, make_state(s), data_state={"position": s}, config=CONFIG)
    ckpt.close()


@pytest.mark.parametrize("async_save", [True, False])
def test_round_trip_is_bit_exact(tmp_path, async_save):
    state = make_state(3)
    data_state = {"position": 123, "seed": 42, "files": ["a", "b"]}
    ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=async_save)
    assert ckpt.restore(abstract(state)) is None and ckpt.latest_step() is None
    assert ckpt.save(5, state, data_state=data_state, config=CONFIG)
    ckpt.close()

    ckpt = checkpoint.Checkpointer(str(tmp_path))
    restored, restored_data, step = ckpt.restore(abstract(state))
    ckpt.close()
    assert step == 5 and restored_data == data_state
    assert isinstance(restored, TrainState) and restored.rng.dtype == jnp.uint32
    assert_identical(restored, state)
    assert checkpoint.restore_numpy(str(tmp_path), ("step",))[1] == CONFIG
    assert checkpoint.restore_numpy(str(tmp_path / "checkpoints" / "5"), ("step",))[1] == CONFIG


def test_typed_prng_keys_are_refused(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
    with pytest.raises(TypeError, match=r"\.rng.*key_data"):
        ckpt.save(1, make_state().replace(rng=jax.random.key(0)))
    ckpt.close()


def test_retention_keeps_last_n_and_every_period(tmp_path):
    save_steps(tmp_path, range(1, 11), max_to_keep=2, keep_period=4)
    assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [4, 8, 9, 10]
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8, 9, 10]


def test_save_interval_unless_forced(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), save_interval_steps=3, async_save=False)
    saved = [s for s in range(1, 8) if ckpt.save(s, make_state(), config=CONFIG)]
    assert saved == [3, 6]
    assert ckpt.save(7, make_state(), force=True)
    assert ckpt.all_steps() == [3, 6, 7]
    ckpt.close()


def _truncate_arrays(step_dir):
    for p in (step_dir / "state").rglob("*"):
        if p.is_file() and "/d/" in str(p):
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _delete_some_files(step_dir):
    for i, p in enumerate(sorted(p for p in step_dir.rglob("*") if p.is_file())):
        if i % 2:
            p.unlink()


CORRUPTIONS = {
    "truncated_arrays": _truncate_arrays,
    "half_the_files_deleted": _delete_some_files,
    "missing_item": lambda d: shutil.rmtree(d / "data_state"),
    "missing_tree_metadata": lambda d: (d / "state" / "_METADATA").unlink(),
    "bad_json": lambda d: (d / "config" / "config.json").write_text('{"model": '),
    "every_file_truncated": lambda d: [p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
                                       for p in d.rglob("*") if p.is_file()],
}


@pytest.mark.parametrize("corrupt", sorted(CORRUPTIONS))
def test_corrupt_latest_step_falls_back_to_previous(tmp_path, caplog, corrupt):
    save_steps(tmp_path, [1, 2, 3], async_save=False)
    CORRUPTIONS[corrupt](tmp_path / "checkpoints" / "3")
    ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
    with caplog.at_level(logging.WARNING):
        restored, data_state, step = ckpt.restore(abstract(make_state()))
    assert step == 2 and data_state == {"position": 2}
    assert_identical(restored, make_state(2))
    assert any("step 3" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    # Resuming from step 2 saves step 3 again: the unreadable one makes way.
    assert ckpt.save(3, make_state(3), data_state={"position": 3}, config=CONFIG, force=True)
    assert ckpt.restore(abstract(make_state()))[2] == 3
    ckpt.close()


def test_a_save_killed_midway_is_invisible(tmp_path):
    """A killed save leaves only orbax's temporary directory, which is never read."""
    save_steps(tmp_path, [1, 2], async_save=False)
    steps_dir = tmp_path / "checkpoints"
    shutil.copytree(steps_dir / "2", steps_dir / "3.orbax-checkpoint-tmp-1234")
    _delete_some_files(steps_dir / "3.orbax-checkpoint-tmp-1234")
    ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
    assert ckpt.all_steps() == [1, 2]
    assert ckpt.restore(abstract(make_state()))[2] == 2
    assert ckpt.save(3, make_state(3), config=CONFIG)
    assert_identical(ckpt.restore(abstract(make_state()))[0], make_state(3))
    ckpt.close()


def test_every_step_corrupt_raises_naming_the_steps(tmp_path):
    save_steps(tmp_path, [1, 2], async_save=False)
    for s in (1, 2):
        _truncate_arrays(tmp_path / "checkpoints" / str(s))
    with pytest.raises(RuntimeError, match=r"No restorable checkpoint .*tried steps \['2', '1'\]"):
        checkpoint.Checkpointer(str(tmp_path)).restore(abstract(make_state()))


def test_explicit_step_restores_that_step_or_raises(tmp_path):
    save_steps(tmp_path, [1, 2], async_save=False)
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    assert_identical(ckpt.restore(abstract(make_state()), step=1)[0], make_state(1))
    with pytest.raises(FileNotFoundError, match="step 7"):
        ckpt.restore(abstract(make_state()), step=7)
    ckpt.close()


async def _disk_full(*args, **kwargs):
    raise OSError("No space left on device (simulated)")


class _FailingCommit:
    """A commit future that fails in the background, as a dying disk would."""

    def result(self, timeout=None):
        raise OSError("No space left on device (simulated, during the async commit)")


@pytest.mark.parametrize("where", ["blocking", "async_commit"])
def test_failed_save_leaves_earlier_steps_intact(tmp_path, monkeypatch, where):
    ckpt = checkpoint.Checkpointer(str(tmp_path), max_to_keep=2, async_save=True)
    for s in (1, 2):
        ckpt.save(s, make_state(s), data_state={"position": s}, config=CONFIG)
    ckpt.wait()
    if where == "blocking":
        monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", _disk_full)
        with pytest.raises(OSError, match="No space left"):
            ckpt.save(3, make_state(3), config=CONFIG)
    else:
        async def failing_commit(self, directory, *args, **kwargs):
            return [_FailingCommit()]
        monkeypatch.setattr(ocp.JsonCheckpointHandler, "async_save", failing_commit)
        ckpt.save(3, make_state(3), config=CONFIG)
        with pytest.raises(OSError, match="No space left"):
            ckpt.wait()
    monkeypatch.undo()
    # max_to_keep=2 would have dropped step 1 after a successful save of step 3.
    assert ckpt.all_steps() == [1, 2]
    assert {"1", "2"} <= {p.name for p in (tmp_path / "checkpoints").iterdir()}
    restored, data_state, step = ckpt.restore(abstract(make_state()))
    assert step == 2 and data_state == {"position": 2}
    assert_identical(restored, make_state(2))
    # The next save works and garbage collection resumes.
    assert ckpt.save(3, make_state(3), config=CONFIG)
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3]
    ckpt.close()


def test_sharded_save_and_restore_into_other_shardings(tmp_path):
    """Saved sharded over a 4x2 mesh, restored replicated and over a 2x4 mesh with other specs."""
    assert jax.device_count() == 8
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    other = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)

    def spec(x, m, swap=False):
        axes = ("fsdp", "data") if swap else ("data", "fsdp")
        return NamedSharding(m, P(*axes[: x.ndim]) if x.ndim == 2 and x.shape[0] % 4 == 0 else P())

    state = make_state(1)
    sharded = jax.tree.map(lambda x: jax.device_put(x, spec(x, mesh)), state)
    assert sharded.params["embed"].sharding.spec == P("data", "fsdp")
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(1, sharded, config=CONFIG)
    ckpt.wait()
    for target in (abstract(state, lambda x: NamedSharding(mesh, P())),
                   abstract(state, lambda x: spec(x, other, swap=True))):
        restored, _, _ = ckpt.restore(target)
        assert_identical(restored, state)
        for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
            assert got.sharding == want.sharding
    ckpt.close()
    params = checkpoint.restore_params(str(tmp_path), abstract(state.params, lambda x: spec(x, other)))
    assert params["embed"].sharding == spec(params["embed"], other)
    assert_identical(params, state.ema_params)


def test_restore_params_from_workdir_checkpoints_dir_and_step_dir(tmp_path):
    save_steps(tmp_path, [1, 2], async_save=False)
    target = abstract(make_state().params)
    for path in (tmp_path, tmp_path / "checkpoints"):
        assert_identical(checkpoint.restore_params(str(path), target), make_state(2).ema_params)
    step_dir = tmp_path / "checkpoints" / "1"
    assert_identical(checkpoint.restore_params(str(step_dir), target, use_ema=False), make_state(1).params)
    # A copied step directory need not be named by its step.
    shutil.copytree(step_dir, tmp_path / "exported")
    assert_identical(checkpoint.restore_params(str(tmp_path / "exported"), target), make_state(1).ema_params)


def test_restore_params_falls_back_past_a_corrupt_step(tmp_path, caplog):
    save_steps(tmp_path, [1, 2], async_save=False)
    _truncate_arrays(tmp_path / "checkpoints" / "2")
    with caplog.at_level(logging.WARNING):
        params = checkpoint.restore_params(str(tmp_path), abstract(make_state().params))
    assert_identical(params, make_state(1).ema_params)
    assert any("step 2" in r.getMessage() for r in caplog.records)


def test_restore_params_errors_name_the_path(tmp_path):
    target = abstract(make_state().params)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing")):
        checkpoint.restore_params(str(tmp_path / "nothing"), target)
    ckpt = checkpoint.Checkpointer(str(tmp_path / "bare"), async_save=False)
    ckpt.save(1, {"params": make_state().params})  # a state without EMA params
    ckpt.close()
    with pytest.raises(ValueError, match=r"bare/checkpoints/1 has no 'ema_params'.*\['params'\]"):
        checkpoint.restore_params(str(tmp_path / "bare"), target)
    assert_identical(checkpoint.restore_params(str(tmp_path / "bare"), target, use_ema=False), make_state().params)
    grown = dict(target, head=jax.ShapeDtypeStruct((16,), jnp.float32, sharding=target["embed"].sharding))
    with pytest.raises(ValueError, match=r"does not match the model: \['head: saved nothing, wanted \(16,\)"):
        checkpoint.restore_params(str(tmp_path / "bare"), grown, use_ema=False)


def test_saved_config(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(1, make_state(), config={"a": 1})
    ckpt.save(2, make_state(), config={"a": 2, "odd": pathlib.Path("/x")})  # non-JSON values become strings
    ckpt.save(3, make_state())
    ckpt.close()

    def config(step):
        return checkpoint.restore_numpy(str(tmp_path), ("step",), step=step)[1]
    assert config(2) == {"a": 2, "odd": repr(pathlib.Path("/x"))}
    assert config(1) == {"a": 1}
    assert config(3) is None
    json.loads((tmp_path / "checkpoints" / "2" / "config" / "config.json").read_text())  # plain JSON on disk
