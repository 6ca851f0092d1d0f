"""The paper's optimizer (SPEC section 7) and the official EMA rule, as pure functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def learning_rate_schedule(cfg) -> optax.Schedule:
    """Linear warmup from 0 to ``cfg.lr`` over ``cfg.warmup_steps``, then constant or cosine.

    ``cfg``: lr, warmup_steps, schedule ('constant' | 'cosine'), decay_steps, end_lr_factor.
    """
    if cfg.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, cfg.lr, max(cfg.warmup_steps, 1)), optax.constant_schedule(cfg.lr)],
            [cfg.warmup_steps])
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.decay_steps,
                                                  end_value=cfg.lr * cfg.end_lr_factor)
    raise ValueError(f"Unknown optim.schedule {cfg.schedule!r}; choose 'constant' or 'cosine'.")


def make_optimizer(cfg) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (lr 3e-4, betas (0.9, 0.999), eps 1e-8, wd 0 in the paper)."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip else optax.identity(),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
                    weight_decay=cfg.weight_decay),
    )


def ema_decay(num_updates, decay: float):
    """Official warmup: d = min(decay, (1 + n) / (10 + n)), n counting updates from 1."""
    n = jnp.asarray(num_updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + n) / (10.0 + n))


def ema_update(shadow, params, num_updates, decay: float):
    """shadow <- shadow - (1 - d)(shadow - param) for every leaf, d = ema_decay(num_updates)."""
    one_minus_d = 1.0 - ema_decay(num_updates, decay)
    return jax.tree_util.tree_map(lambda s, p: s - one_minus_d * (s - p), shadow, params)
