"""Evaluation: the NELBO perplexity bound (MDLM) or exact perplexity (AR) over a whole split."""

from __future__ import annotations

import logging
import math
from typing import Callable

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from mdlm_jax import data, parallel
from mdlm_jax.evals import registry
from mdlm_jax.training import task as task_lib


def ratio_estimate(row_loss, row_tokens) -> tuple[float, float]:
    """NELBO per token R = sum(l_i) / sum(n_i) and its standard error by the delta method,
    SE = sqrt(N / (N - 1) * sum((l_i - R n_i)^2)) / sum(n_i) over the N rows with n_i > 0.

    Rows of one batch share a stratified t, which makes this SE slightly conservative.
    Shapes: row_loss, row_tokens (N,) -> (R, SE).
    """
    row_loss, row_tokens = np.asarray(row_loss, np.float64), np.asarray(row_tokens, np.float64)
    keep = row_tokens > 0
    loss, tokens = row_loss[keep], row_tokens[keep]
    if not tokens.size:
        raise ValueError("The evaluation split has no tokens: check data.val_fraction and data.seq_len.")
    r = loss.sum() / tokens.sum()
    n = tokens.size
    se = math.sqrt(n / max(n - 1, 1) * np.square(loss - r * tokens).sum()) / tokens.sum()
    return float(r), float(se)


def evaluate(s, state, *, step: int | None = None, batches=None, name: str = "eval",
             stop: Callable[[int], bool] | None = None) -> dict:
    """PPL bound = exp(sum of per-token NELBO / number of tokens) over the validation split.

    Continuous time unless ``diffusion.num_steps`` > 0; ``eval.num_t`` independent time samples
    per sequence (averaged; 1 is the paper's protocol) with the configured time sampler; EMA
    weights unless ``eval.use_ema`` is False (``state``: a TrainState or ``task.Weights``); the
    eval stream of seed ``eval.seed`` so that bounds are comparable across checkpoints. For the AR
    model this is the exact NLL. Returns nelbo (nats/token) with its standard error, ppl, bits_per_token
    (nelbo / ln 2; per token of the model's tokenizer, not per byte), tokens.

    ``batches``: a finite, re-iterable sequence (with ``len``) of this process's slices of global
    batches ``{'input_ids', 'attention_mask'}`` of shape (eval.batch_size / processes, L); by default
    ``data.make_eval_batches`` of ``cfg.data`` (zero-shot evaluation passes other datasets'). ``name``
    labels the progress bar and log line. ``stop(i)`` is polled before batch i (every process in
    step); when it is true the evaluation raises ``registry.Interrupted``.
    """
    cfg = s.cfg
    params = state.ema_params if cfg.eval.use_ema else state.params
    fn = s.eval_step
    key = task_lib.rng_streams(jax.random.key(cfg.eval.seed)).eval
    if batches is None:
        batches = data.make_eval_batches(cfg.data, global_batch_size=cfg.eval.batch_size,
                                         process_index=jax.process_index(), process_count=jax.process_count())
    num_batches = len(batches) if cfg.eval.max_batches < 0 else min(len(batches), cfg.eval.max_batches)
    passes = s.task.objective.eval_passes()
    losses, tokens = [], None
    with jax.set_mesh(s.mesh):
        for r in range(passes):
            rows = []
            for i, batch in enumerate(tqdm.tqdm(batches, total=num_batches, desc=f"{name} pass {r + 1}/{passes}",
                                                disable=jax.process_index() != 0, leave=False)):
                if i >= num_batches:
                    break
                if stop is not None and stop(r * num_batches + i):
                    raise registry.Interrupted(f"{name} interrupted at batch {i} of pass {r + 1}")
                out = fn(params, parallel.make_global_batch(batch, s.batch_sharding),
                         jax.random.fold_in(key, r * num_batches + i))
                rows.append(_gather(out))
            losses.append(np.concatenate([x["loss"] for x in rows]))
            tokens = np.concatenate([x["tokens"] for x in rows])
    nelbo, se = ratio_estimate(np.mean(losses, axis=0), tokens)
    out = dict(nelbo=nelbo, nelbo_se=se, ppl=math.exp(nelbo), bits_per_token=nelbo / math.log(2),
               tokens=float(tokens.sum()),
               sequences=int((tokens > 0).sum()), num_t=passes)
    logging.info("%s%s: %s", name, f" at step {step}" if step is not None else "",
                 ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    return out


def _gather(out: dict) -> dict:
    """Per-row arrays sharded over the batch -> whole numpy arrays on every process."""
    if jax.process_count() == 1:
        return jax.device_get(out)
    return multihost_utils.process_allgather(out, tiled=True)


@registry.register_evaluator("bound")
class Bound(registry.Evaluator):
    """The NELBO bound (or the AR NLL) on the validation split: ``eval/nelbo``, ``eval/ppl``... The
    batches are built when the run starts, so a missing split fails before the first step."""

    def __init__(self, name, entry, exp, workdir):
        super().__init__(name, entry, exp, workdir)
        self.batches = data.make_eval_batches(exp.cfg.data, global_batch_size=exp.cfg.eval.batch_size,
                                              process_index=jax.process_index(), process_count=jax.process_count())
        self.prefix = "eval" if name == "bound" else f"eval/{name}"

    def run(self, state, step, *, stop=None, writer=None):
        self.metrics = evaluate(self.exp, state, step=step, batches=self.batches, stop=stop,
                                name="eval" if self.name == "bound" else self.name)
        return {f"{self.prefix}/{k}": v for k, v in self.metrics.items()}
