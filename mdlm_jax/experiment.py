"""The Experiment: everything the modes share, built once from a config (mesh, tokenizer,
objective, model, optimizer, shardings), with the jitted functions as members so each compiles once.

``build(cfg, mode)`` is what every driver (training, evaluation, sampling, zero-shot, the interop
CLI) calls first; it checks the batch sizes ``mode`` uses against the mesh before anything compiles.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding

from mdlm_jax import data, interop, parallel
from mdlm_jax.evals import registry
from mdlm_jax.training import optim, task as task_lib


@dataclasses.dataclass
class Experiment:
    """``task``: the model, objective, mask id and schedule; ``abstract_state``: the TrainState's
    ``jax.ShapeDtypeStruct`` tree with ``shardings``; ``batch_sharding``: global batches over
    data x fsdp. ``train_step`` and ``eval_step`` are jitted on first use; ``samplers`` caches the
    compiled samplers by input shape (``sample.py``)."""

    cfg: Any
    mesh: Mesh
    task: task_lib.Task
    optimizer: Any
    tokenizer: Any
    abstract_state: Any
    shardings: Any
    batch_sharding: NamedSharding
    samplers: dict = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def train_step(self) -> Callable:
        """(state, global batch) -> (state, metrics): ``task.make_train_step`` on this mesh, donated."""
        return task_lib.make_train_step(self.task, self.optimizer, self.mesh, self.shardings)

    @functools.cached_property
    def eval_step(self) -> Callable:
        """(params, global batch, key) -> per-row sums {'loss', 'tokens'} (``task.eval_step``)."""
        return jax.jit(functools.partial(task_lib.eval_step, task=self.task),
                       in_shardings=(self.shardings.params, self.batch_sharding, parallel.replicated(self.mesh)),
                       out_shardings=self.batch_sharding)


def build(cfg, mode: str = "train") -> Experiment:
    """Distributed start-up, mesh, tokenizer, objective and model, optimizer and the state's
    shardings; the batch sizes ``mode`` ('train', 'eval', 'zero_shot', 'sample') uses are checked
    against the mesh here, before anything compiles. With ``model.pretrained`` the model fields
    are first filled (in ``cfg``) from that directory's architecture."""
    parallel.initialize_distributed(cfg.distributed)
    if cfg.model.get("pretrained"):
        interop.apply_pretrained_architecture(cfg)
    mesh = parallel.make_mesh(cfg.mesh)
    if mode == "train":
        parallel.check_batch_size(cfg.train.batch_size, mesh, cfg.train.microbatches, name="train.batch_size")
    reads_batches = {registry.entry_type(n, e) for n, e in registry.enabled(cfg).items()} & {"bound", "zero_shot"}
    if mode in ("eval", "zero_shot") or (mode == "train" and reads_batches):
        parallel.check_batch_size(cfg.eval.batch_size, mesh, name="eval.batch_size")
    tokenizer = data.tokenizer_for(cfg.data)
    vocab_size, mask_id = data.model_vocab(tokenizer)
    task = task_lib.make_task(cfg, vocab_size, mask_id)
    optimizer = optim.make_optimizer(cfg.optim)
    abstract, shardings = task_lib.state_shardings(task, optimizer, mesh, cfg.data.seq_len)
    return Experiment(cfg, mesh, task, optimizer, tokenizer, abstract, shardings, parallel.batch_sharding(mesh))
