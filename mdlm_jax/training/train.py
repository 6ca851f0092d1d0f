"""The training loop: restore or init, jitted sharded steps, logging, eval, checkpoints, preemption."""

from __future__ import annotations

import logging
import math
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from mdlm_jax import checkpoint, data, evals, interop, parallel
from mdlm_jax.evals import sample
from mdlm_jax.training import flops, summary, task as task_lib
from mdlm_jax.experiment import Experiment, build
from mdlm_jax.training.metrics_writer import MetricsWriter


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN or inf."""


class StartupError(ValueError):
    """A problem found before the first step (data, checkpoint, batch sizes), named with its fix."""


def restore_or_init(s: Experiment, ckpt: checkpoint.Checkpointer):
    """Resume order: the workdir's latest good checkpoint, else ``train.init_checkpoint``'s
    params (a fresh optimizer), else ``model.pretrained``'s, else a fresh init. Returns (state,
    data_state or None)."""
    restored = ckpt.restore(s.abstract_state)
    if restored is not None:
        state, data_state, step = restored
        logging.info("Resumed from step %d", step)
        return state, data_state
    # The init weights are read before the fresh state is built: a missing or mismatched source
    # fails before any init compiles or allocates.
    source, params = s.cfg.train.init_checkpoint or s.cfg.model.get("pretrained"), None
    if s.cfg.train.init_checkpoint:
        params = checkpoint.restore_params(s.cfg.train.init_checkpoint, s.abstract_state.params)
    elif source:
        params = pretrained_params(s)
    state = task_lib.init_state(s.task, s.optimizer, s.mesh, s.shardings, s.cfg.seed, s.cfg.data.seq_len)
    if params is not None:
        logging.info("Initialised params from %s", source)
        # Separate buffers: the train step donates params and ema_params.
        state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params),
                              opt_state=jax.jit(s.optimizer.init, out_shardings=s.shardings.opt_state)(params))
    return state, None


def pretrained_params(s: Experiment):
    """``model.pretrained``'s weights on the mesh, in the experiment's parameter shardings; a
    StartupError names a missing or mismatched directory."""
    try:
        tree = interop.pretrained_for(s.cfg.model.name).load(s.cfg.model.pretrained, s.task.model)
    except (OSError, ValueError) as e:
        raise StartupError(f"model.pretrained: {e}") from e
    return jax.device_put(tree, s.shardings.params)


class PreemptionGuard:
    """Turns SIGTERM (a TPU preemption notice) into "save at the next step and exit cleanly".

    Multi-host: every ``check_every`` steps the hosts agree (any host signalled -> all stop at
    the same step); one process checks every step.
    """

    def __init__(self, check_every: int):
        self.signalled = False
        self.check_every = check_every if jax.process_count() > 1 else 1
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint at the next step, then exiting.")
        self.signalled = True

    def should_stop(self, step: int) -> bool:
        if step % self.check_every:
            return False
        if jax.process_count() == 1:
            return self.signalled
        return bool(np.any(multihost_utils.process_allgather(np.array(self.signalled))))

    def close(self):
        signal.signal(signal.SIGTERM, self._previous)


def _check_finite(pending: list, ckpt: checkpoint.Checkpointer) -> None:
    """Raises TrainingDiverged naming the first bad step and the last good checkpoint."""
    for step, metrics in pending:
        values = jax.device_get(metrics)
        if not (math.isfinite(float(values["loss"])) and math.isfinite(float(values["grad_norm"]))):
            ckpt.wait()
            last = ckpt.latest_step()
            where = f"step {last} in {ckpt.directory}" if last is not None else "none (no checkpoint saved yet)"
            raise TrainingDiverged(f"Loss {float(values['loss'])} / grad norm {float(values['grad_norm'])} "
                                   f"at step {step}: stopping. Last good checkpoint: {where}.")


def _window_scalars(window: list) -> dict:
    """The logged training scalars of the steps since the last log line: loss and gradient norm
    averaged over the window, the learning rate of its last step. With diffusion times ``t``
    also the loss by t, ``loss_by_t/0.0-0.1`` ...: sum(row_loss) / sum(row_tokens) over the
    window's rows with t in each tenth of [0, 1] (bins without tokens left out), and ``t``, the
    window's times (an array, written as a histogram)."""
    values = jax.device_get(window)
    out = dict(loss=float(np.mean([v["loss"] for v in values])),
               grad_norm=float(np.mean([v["grad_norm"] for v in values])), lr=float(values[-1]["lr"]))
    if "t" not in values[0]:
        return out
    t, row_loss, row_tokens = (np.concatenate([v[k] for v in values]) for k in ("t", "row_loss", "row_tokens"))
    n = 10
    bins = np.minimum((t * n).astype(int), n - 1)  # t = 1 falls in the last bin
    loss, tokens = (np.bincount(bins, weights=w, minlength=n) for w in (row_loss, row_tokens))
    for i in np.flatnonzero(tokens):
        out[f"loss_by_t/{i / n:.1f}-{(i + 1) / n:.1f}"] = float(loss[i] / tokens[i])
    out["t"] = t
    return out


def _open_run(s: Experiment, workdir: str, ckpt: checkpoint.Checkpointer):
    """Everything a run reads before its first step, checked before anything compiles: the
    state (restored or fresh), the train iterator at its saved position, and the evaluators of
    ``cfg.evals`` (each reads its data and checks its settings when built). Problems are
    StartupErrors naming the fix."""
    cfg, t = s.cfg, s.cfg.train
    try:
        state, data_state = restore_or_init(s, ckpt)
        train_iter = data.make_train_iterator(cfg.data, global_batch_size=t.batch_size, seed=cfg.seed,
                                              process_index=jax.process_index(), process_count=jax.process_count())
        if data_state is not None:
            train_iter.set_state(data_state)
        evaluators = evals.make_evaluators(s, workdir)
    except (ValueError, FileNotFoundError) as e:
        raise StartupError(f"{e} (nothing was trained; train.eval_every=0 turns evaluation off)"
                           if "split" in str(e) else str(e)) from e
    return state, train_iter, evaluators


def _compile_step(s: Experiment, state, batch):
    """The train step compiled ahead of the first step, with its time and memory logged."""
    start = time.perf_counter()
    compiled = s.train_step.lower(state, batch).compile()
    logging.info("Compiled the train step in %.1f s; %s", time.perf_counter() - start,
                 summary.memory_line(compiled))
    return compiled


def train_and_evaluate(cfg, workdir: str, s: Experiment | None = None) -> dict:
    """Trains to ``cfg.train.steps`` (resuming if the workdir has a checkpoint); returns the last
    eval metrics (empty if none ran). ``s``: the run's ``experiment.build(cfg)`` if already built.

    The evaluators of ``cfg.evals`` run at their periods; a step that is evaluated is saved
    first, so an evaluation that fails or is interrupted by SIGTERM (which saves and exits) loses
    no training. ``train.log_every``, ``eval_every`` and ``checkpoint_every`` of 0 turn logging,
    the evaluators without a period of their own and periodic saving off (the last step and a
    preemption are still saved)."""
    s = s or build(cfg)
    t = cfg.train
    ckpt = checkpoint.Checkpointer(workdir, max_to_keep=t.keep_checkpoints, keep_period=t.keep_period or None,
                                   async_save=t.async_checkpoints)
    try:
        state, train_iter, evaluators = _open_run(s, workdir, ckpt)
    except StartupError:
        ckpt.close()
        raise
    tokens_per_step = t.batch_size * cfg.data.seq_len
    m = s.task.model
    counted = all(hasattr(m, f) for f in ("n_blocks", "hidden_size", "mlp_ratio"))  # the DiT's FLOP count
    flops_per_step = tokens_per_step * flops.train_flops_per_token(
        n_blocks=m.n_blocks, hidden_size=m.hidden_size, mlp_ratio=m.mlp_ratio, vocab_size=m.vocab_size,
        seq_len=cfg.data.seq_len) if counted else 0.0
    writer = MetricsWriter(workdir, total_steps=t.steps, tokens_per_step=tokens_per_step, flops_per_step=flops_per_step,
                           peak_flops=flops.total_peak_flops(cfg.train.peak_tflops) if counted else None)
    writer.write_text("config", cfg.to_json_best_effort(indent=2))
    guard = PreemptionGuard(t.preemption_check_every)
    start = int(jax.device_get(state.step))
    eval_metrics: dict = {}
    pending: list = []  # (step, metrics) not yet checked for NaN
    window: list = []   # metrics since the last log line
    if jax.process_index() == 0:
        logging.info("Training a %s model (objective %r) from step %d to %d on %d devices (%d processes), mesh %s; "
                     "evaluators: %s", cfg.model.name, cfg.diffusion.parameterization, start, t.steps,
                     jax.device_count(), jax.process_count(), dict(s.mesh.shape),
                     ", ".join(f"{e.name} every {every}" for e, every in evaluators) or "none")
        for line in summary.param_overview(s.abstract_state.params):
            logging.info("%s", line)
    try:
        with jax.set_mesh(s.mesh):
            step_fn = None
            for step in range(start + 1, t.steps + 1):
                batch = parallel.make_global_batch(next(train_iter), s.batch_sharding)
                if step_fn is None:
                    step_fn = _compile_step(s, state, batch)
                    writer.restart_clock(start)
                state, metrics = step_fn(state, batch)
                pending.append((step, metrics))
                window.append(metrics)
                preempted = guard.should_stop(step)
                last = step == t.steps or preempted
                due = [] if preempted else [e for e, every in evaluators if evals.registry.due(every, step, t.steps)]
                if (t.log_every and step % t.log_every == 0) or last:
                    _check_finite(pending, ckpt)
                    writer.write_scalars(step, _window_scalars(window))
                    pending, window = [], []
                if (t.checkpoint_every and step % t.checkpoint_every == 0) or last or due:
                    # A step that is evaluated is saved first: an evaluation that fails or is
                    # interrupted loses no training.
                    _check_finite(pending, ckpt)
                    pending = []
                    ckpt.save(step, state, data_state=train_iter.get_state(), config=cfg.to_dict(), force=True)
                    logging.info("Saving checkpoint step %d in %s", step, ckpt.directory)
                for evaluator in due:
                    try:
                        scalars = evaluator.run(state, step, stop=guard.should_stop, writer=writer)
                    except evals.Interrupted as e:
                        logging.warning("SIGTERM during evaluation (%s): step %d is saved; exiting.", e, step)
                        preempted = True
                        break
                    writer.write_scalars(step, scalars)
                    if evaluator.name == "bound":
                        eval_metrics = evaluator.metrics
                if due:
                    writer.restart_clock(step)  # steps/s counts training steps only
                if preempted:
                    logging.warning("Preempted: saved step %d; exiting.", step)
                    break
        if t.sample_at_end and not guard.signalled:
            sample.print_samples(s, state)
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()
        guard.close()
    if jax.process_index() == 0:
        samples = epath.Path(workdir) / "samples"
        logging.info("Done: checkpoints in %s, TensorBoard events in %s (tensorboard --logdir=%s)%s. Next: "
                     "python -m mdlm_jax.main --workdir=%s --mode=eval (or --mode=sample).", ckpt.directory,
                     writer.logdir, writer.logdir, f", samples in {samples}" if samples.exists() else "", workdir)
    return eval_metrics
