"""Evaluation: the NELBO perplexity bound (MDLM) or exact perplexity (AR) over a whole split."""

from __future__ import annotations

import functools
import logging
import math

import jax
from mdlm_jax import data, parallel, task as task_lib


def evaluate(s, state, *, step: int | None = None) -> dict:
    """PPL bound = exp(sum of per-token NELBO / number of tokens) over the validation split.

    Continuous time unless ``diffusion.num_steps`` > 0; one time sample per sequence with the
    configured sampler; EMA weights unless ``eval.use_ema`` is False; the seed is ``eval.seed``
    so that bounds are comparable across checkpoints. Returns nelbo (nats/token), ppl, bpd, tokens.
    """
    cfg = s.cfg
    params = state.ema_params if cfg.eval.use_ema else state.params
    fn = _eval_fn(s)
    key = jax.random.key(cfg.eval.seed)
    total, tokens, batches = 0.0, 0.0, 0
    for i, batch in enumerate(data.make_eval_batches(cfg.data, global_batch_size=cfg.eval.batch_size,
                                                     process_index=jax.process_index(),
                                                     process_count=jax.process_count())):
        if 0 <= cfg.eval.max_batches <= i:
            break
        sums = jax.device_get(fn(params, parallel.make_global_batch(batch, s.batch_sharding),
                                 jax.random.fold_in(key, i)))
        total += float(sums["loss_sum"])
        tokens += float(sums["tokens"])
        batches += 1
    if not tokens:
        raise ValueError("The evaluation split has no tokens: check data.val_fraction and data.seq_len.")
    nelbo = total / tokens
    out = dict(nelbo=nelbo, ppl=math.exp(nelbo), bpd=nelbo / math.log(2), tokens=tokens, batches=batches)
    logging.info("eval%s: %s", f" at step {step}" if step is not None else "",
                 ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    return out


def _eval_fn(s):
    """One compiled eval step per setup, however often evaluation runs during training."""
    if "eval" not in s.compiled:
        s.compiled["eval"] = jax.jit(
            functools.partial(task_lib.eval_step, task=s.task),
            in_shardings=(s.shardings.params, s.batch_sharding, parallel.replicated(s.mesh)),
            out_shardings=parallel.replicated(s.mesh))
    return s.compiled["eval"]
