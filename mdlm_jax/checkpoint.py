"""Checkpoints: one orbax step holds the train state, the data iterator's state and the config.

Every orbax call of the project lives in this module (orbax is moving to a v1 API: one file to
port). Layout: ``workdir/checkpoints/<step>/{state, data_state, config}``; ``workdir`` may be
local or ``gs://``. Orbax writes each step to a temporary directory and renames it (or writes a
commit marker on GCS) only once every process has finished, and deletes old steps only after
that, so a run killed at any moment leaves its earlier steps whole.

The state must hold raw ``uint32`` PRNG key data (``jax.random.key_data``), not typed keys
(``jax.random.key``): that is what the TrainState stores, and it keeps the files readable by
any tool. Typed keys are refused with a message saying so.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mdlm_jax import parallel

STATE, DATA, CONFIG = "state", "data_state", "config"
_MAX_ERROR_CHARS = 400  # tensorstore errors quote whole specs; the head says what broke


def _handler_registry():
    return ocp.handlers.create_default_handler_registry(**{
        STATE: ocp.StandardCheckpointHandler(),
        DATA: ocp.JsonCheckpointHandler(filename="data_state.json"),
        CONFIG: ocp.JsonCheckpointHandler(filename="config.json"),
    })


def _partial_checkpointer():
    """A checkpointer whose plain PyTree handler for "state" takes placeholders for subtrees to skip."""
    registry = ocp.handlers.create_default_handler_registry(**{
        STATE: ocp.PyTreeCheckpointHandler(), DATA: ocp.JsonCheckpointHandler(filename="data_state.json"),
        CONFIG: ocp.JsonCheckpointHandler(filename="config.json")})
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler(handler_registry=registry))


class Checkpointer:
    """Saves and restores ``(state, data_state, config)`` under ``workdir/checkpoints``.

    Keeps the last ``max_to_keep`` steps (``None``: all) plus every step divisible by
    ``keep_period``. Call ``save``/``restore`` on every process: orbax coordinates them.
    """

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, keep_period: int | None = None,
                 save_interval_steps: int = 1, async_save: bool = True):
        self.directory = _absolute(workdir) / "checkpoints"
        keep = [ocp.checkpoint_managers.LatestN(max_to_keep)]
        if keep_period:
            keep.append(ocp.checkpoint_managers.EveryNSteps(keep_period))
        # Orbax's default policy would also save the first step it sees, whatever the interval.
        when = [ocp.checkpoint_managers.FixedIntervalPolicy(save_interval_steps),
                ocp.checkpoint_managers.PreemptionCheckpointingPolicy()]
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=async_save,
            save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(when),
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(keep))
        self._manager = ocp.CheckpointManager(self.directory, options=options, handler_registry=_handler_registry())
        self._unreadable: list[int] = []  # steps newer than the one restored, which failed to restore
        self._pending: int | None = None  # the step an async save may still be writing

    def save(self, step: int, state, *, data_state: dict | None = None, config: dict | None = None,
             force: bool = False) -> bool:
        """Saves one step (asynchronously if so configured); returns whether it saved.

        Honours ``save_interval_steps`` unless ``force``. Raises if this save, or the previous
        asynchronous one, failed; the steps saved before it are left untouched either way.
        """
        _refuse_typed_keys(state)
        data_state = json.loads(json.dumps(data_state))  # a private copy: the write may be async
        config = json.loads(json.dumps(config, default=repr))  # a stray non-JSON value must not kill a run
        self.wait()
        self._drop_unreadable()
        args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state),
                                     CONFIG: ocp.args.JsonSave(config)})
        try:
            saved = self._manager.save(step, args=args, force=force)
        except Exception:
            self._after_failed_save(step)
            raise
        self._pending = step if saved else None
        return saved

    def wait(self):
        """Blocks until an asynchronous save is on disk; raises if it failed."""
        try:
            self._manager.wait_until_finished()
        except Exception:
            self._after_failed_save(self._pending)
            raise
        finally:
            self._pending = None

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, abstract_state, *, step: int | None = None):
        """Returns ``(state, data_state, step)`` restored into ``abstract_state``'s shardings,
        or None if there is no checkpoint.

        ``abstract_state``: the state's pytree of ``jax.ShapeDtypeStruct`` (or arrays), each with
        a sharding. Without ``step``, an unreadable newest step (truncated or missing files, a
        missing item) is skipped with a warning for the one before it, and so on; the skipped
        steps are deleted at the next save, which supersedes them. An explicit ``step`` is
        restored or raises.
        """
        self.wait()
        target = _restore_target(abstract_state)
        steps = self.all_steps()
        if step is not None and step not in steps:
            raise FileNotFoundError(f"No checkpoint step {step} in {self.directory} (steps: {steps})")
        if not steps:
            return None
        args = ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target), DATA: ocp.args.JsonRestore(),
                                     CONFIG: ocp.args.JsonRestore()})

        def restore_one(s):
            self._check_tree(s, target)
            return self._manager.restore(s, args=args)

        good, restored, self._unreadable = _newest_restorable(
            sorted([step] if step is not None else steps, reverse=True), restore_one, self.directory)
        return restored[STATE], restored[DATA], good

    def _check_tree(self, step: int, target) -> None:
        """A checkpoint of another model (another size, objective or vocabulary) is named as such,
        with the fix, instead of orbax's tree-mismatch traceback."""
        checkpointer = _partial_checkpointer()
        try:
            try:
                tree = checkpointer.metadata(self.directory / str(step)).item_metadata[STATE].tree
            except Exception:  # unreadable metadata: let the restore report the corruption
                return
            _check_same_arrays(tree, target, f"{self.directory / str(step)}",
                               fix="it holds another model: train in another workdir, or delete its "
                                   "checkpoints/ to start over")
        finally:
            checkpointer.close()

    def close(self):
        """Waits for the last save, then releases orbax's threads."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def _drop_unreadable(self):
        # Training resumed before these steps; leaving them would block saving the same steps again.
        for step in self._unreadable:
            if step in self._manager.all_steps():
                logging.warning("Deleting unreadable checkpoint step %d in %s: this run supersedes it.",
                                step, self.directory)
                self._manager.delete(step)
        self._unreadable = []

    def _after_failed_save(self, step):
        # Orbax has already dropped the steps it meant to delete from its list (not from disk).
        self._manager.reload()
        logging.error("Checkpoint save of step %s in %s failed; earlier steps are untouched: %s",
                      step, self.directory, self.all_steps())


def restore_params(path: str, abstract_params, *, use_ema: bool = True, step: int | None = None):
    """The EMA params (``use_ema``) or raw params of a checkpoint, restored into
    ``abstract_params``' shardings, without the optimizer state: for evaluation, sampling and
    fine-tuning from an init checkpoint.

    ``path``: a workdir, its ``checkpoints`` directory, or one step directory. Without ``step`` it
    falls back past unreadable steps as ``Checkpointer.restore`` does; an explicit ``step`` is
    restored or raises FileNotFoundError listing the steps there. A tree that differs from
    ``abstract_params`` raises a ValueError naming the step directory.
    """
    key = "ema_params" if use_ema else "params"
    target = _restore_target(abstract_params)
    checkpointer = _partial_checkpointer()

    def restore_one(step_dir):
        def args(saved):
            _check_same_arrays(saved, target, f"{step_dir} '{key}'")
            return target, ocp.checkpoint_utils.construct_restore_args(target)

        return _restore_entries(checkpointer, step_dir, (key,), args)

    try:
        _, restored, _ = _newest_restorable(_select_steps(path, step), restore_one, path)
    finally:
        checkpointer.close()
    return restored[STATE][key]


def has_checkpoint(path: str) -> bool:
    """Whether ``path`` (a workdir, its checkpoints directory or a step directory) holds a finalized
    checkpoint step; creates nothing."""
    return bool(_step_dirs(path, missing_ok=True))


def saved_config(path: str, *, step: int | None = None) -> tuple[dict | None, int]:
    """(the config saved with a checkpoint step, or None if it has none; the step): the newest
    readable step unless ``step``. Raises FileNotFoundError when ``path`` holds no checkpoint (or
    not that step); creates nothing."""
    checkpointer = _partial_checkpointer()

    def read(step_dir):
        if not (step_dir / CONFIG).is_dir():
            return None
        return checkpointer.restore(step_dir, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))[CONFIG]

    try:
        step_dir, config, _ = _newest_restorable(_select_steps(path, step), read, path, agree=False)
    finally:
        checkpointer.close()
    return config, _step_number(step_dir)


def _select_steps(path, step: int | None) -> list[epath.Path]:
    """The step directories to try, newest first: all of them, or only ``step``."""
    step_dirs = _step_dirs(path)
    if step is None:
        return step_dirs
    found = [d for d in step_dirs if d.name == str(step)]
    if not found:
        steps = sorted(int(d.name) for d in step_dirs if d.name.isdigit())
        raise FileNotFoundError(f"No checkpoint step {step} in {path} (steps: {steps}).")
    return found


def _step_number(step_dir: epath.Path) -> int:
    return int(step_dir.name) if step_dir.name.isdigit() else -1


def restore_numpy(path: str, keys=("ema_params",), *, step: int | None = None) -> tuple[dict, dict | None, int]:
    """Top-level entries ``keys`` of a checkpoint's state as host numpy arrays (no device arrays:
    for export on a machine without, or beside, an accelerator), with the config saved in the
    same step. Returns ``({key: tree}, config or None, step)``.

    ``path``: a workdir, its ``checkpoints`` directory or one step directory. Without ``step`` the
    newest readable step (falling back past unreadable ones); an explicit ``step`` is restored or
    raises FileNotFoundError listing the steps there. Runs on the calling process only.
    """
    step_dirs = _select_steps(path, step)
    checkpointer = _partial_checkpointer()

    def as_numpy(saved):
        return saved, jax.tree.map(lambda m: ocp.RestoreArgs(restore_type=np.ndarray, dtype=m.dtype), saved)

    def restore_one(step_dir):
        return _restore_entries(checkpointer, step_dir, keys, as_numpy, json_items=(DATA, CONFIG))

    try:
        step_dir, restored, _ = _newest_restorable(step_dirs, restore_one, path, agree=False)
    finally:
        checkpointer.close()
    config = restored[CONFIG] if CONFIG in restored.keys() else None
    return {k: restored[STATE][k] for k in keys}, config, _step_number(step_dir)


def _restore_entries(checkpointer, step_dir, keys, make_args: Callable, json_items=()):
    """Restores only the state entries ``keys`` of one step (placeholders skip the rest), plus the
    JSON items named in ``json_items`` that the step has. ``make_args(saved metadata tree) ->
    (item, restore_args)`` for each key."""
    tree = checkpointer.metadata(step_dir).item_metadata[STATE].tree
    missing = [k for k in keys if k not in tree]
    if missing:
        raise _NotInCheckpoint(f"The checkpoint {step_dir} has no {', '.join(map(repr, missing))} in its state "
                               f"(it holds {sorted(tree)}).")
    item = jax.tree.map(lambda _: ocp.PLACEHOLDER, tree)
    restore_args = dict(item)
    for k in keys:
        item[k], restore_args[k] = make_args(tree[k])
    items = {STATE: ocp.args.PyTreeRestore(item=item, restore_args=restore_args)}
    names = {d.name for d in step_dir.iterdir()}
    items.update({name: ocp.args.JsonRestore() for name in json_items if name in names})
    return checkpointer.restore(step_dir, args=ocp.args.Composite(**items))


def _check_same_arrays(saved, target, where, fix: str = ""):
    """Saved array metadata vs the target: the same key paths and shapes."""
    have = {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(saved)}
    want = {_path(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(target)}
    if have != want:
        diff = sorted(f"{k}: saved {have.get(k, 'nothing')}, wanted {want.get(k, 'nothing')}"
                      for k in have.keys() | want.keys() if have.get(k) != want.get(k))
        more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
        raise _NotInCheckpoint(f"The checkpoint {where} does not match the model: {diff[:8]}{more}"
                               + (f"; {fix}." if fix else ""))


def _path(key_path) -> str:
    """'ema_params/blocks_0/attn/attn_qkv': the same for a dataclass field and the dict key orbax's
    metadata has in its place."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in key_path)


class _NotInCheckpoint(ValueError):
    """The checkpoint is readable but does not hold what was asked for."""


def _refuse_typed_keys(state):
    typed = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(state)
             if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
    if typed:
        raise TypeError(f"Typed PRNG keys at {typed}: store raw key data (jax.random.key_data) in the state "
                        "and wrap it (jax.random.wrap_key_data) where it is used.")


def _restore_target(abstract):
    """``jax.ShapeDtypeStruct`` leaves with shardings, so orbax restores each array in place."""
    _refuse_typed_keys(abstract)
    unsharded = [jax.tree_util.keystr(p) for p, x in jax.tree_util.tree_leaves_with_path(abstract)
                 if getattr(x, "sharding", None) is None]
    if unsharded:
        raise ValueError(f"Restore targets need a sharding (jax.ShapeDtypeStruct(..., sharding=...)); "
                         f"none at {unsharded[:5]}{' ...' if len(unsharded) > 5 else ''}")
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), abstract)


def _newest_restorable(candidates: list, restore_one: Callable[[Any], Any], where, *, agree: bool = True):
    """Tries ``restore_one`` on the candidates (steps or step dirs) newest first; returns
    ``(candidate, result, newer candidates that failed)`` for the first one that succeeds."""
    failed = []
    for candidate in candidates:
        try:
            result, error = restore_one(candidate), None
        except _NotInCheckpoint:
            raise  # read from metadata every process sees alike: no other step will differ
        except Exception as e:  # corruption shows as ValueError, KeyError, JSONDecodeError or a bare Exception
            result, error = None, e
        ok = parallel.all_processes_ok(error is None) if agree else error is None
        if ok:
            return candidate, result, [c for c, _ in failed]
        why = f"{type(error).__name__}: {str(error)[:_MAX_ERROR_CHARS]}" if error else "failed on another process"
        logging.warning("Checkpoint step %s in %s cannot be restored (%s); trying the previous step.",
                        _name(candidate), where, why)
        failed.append((candidate, error))
    newest = next((e for _, e in failed if e is not None), None)
    raise RuntimeError(f"No restorable checkpoint in {where}: tried steps {[_name(c) for c, _ in failed]}; "
                       f"the newest failed with: {newest!r}"[:2000]) from newest


def _name(candidate) -> str:
    return candidate.name if isinstance(candidate, epath.Path) else str(candidate)


def _absolute(path) -> epath.Path:
    """Orbax refuses relative paths: resolve them against the working directory."""
    path = epath.Path(path)
    return path if path.is_absolute() else path.absolute()


def _step_dirs(path, *, missing_ok: bool = False) -> list[epath.Path]:
    """The finalized step directories under a workdir, a checkpoints directory or one step
    directory, newest first."""
    path = _absolute(path)
    for root in (path / "checkpoints", path):
        if root.is_dir():
            found = [d for d in ocp.utils.checkpoint_steps_paths(root) if d.name.isdigit()]
            if found:
                return sorted(found, key=lambda d: int(d.name), reverse=True)
    if (path / STATE).is_dir():
        return [path]
    if missing_ok:
        return []
    raise FileNotFoundError(f"No checkpoint in {path}: expected a workdir, its checkpoints/ directory or a step "
                            "directory (holding state/).")
