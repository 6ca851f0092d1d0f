"""Absorbing D3PM in discrete time, the paper's "w/o continuous time" baseline (SPEC section 14).

Official semantics (reference/BASELINES.md): log-softmax over all V with no carry-over, the
D3PM bound with alpha_t = 1 - t whatever the schedule, and a reconstruction term on every token.
The schedule is loglinear (the official code asserts it). Minus infinity is the official finite
-1e6 here: the loss reads exp(lp[mask]), and -1e6 gives the same exact zero as -inf would.
Float32 order follows the official code where it moves a token or a 1e-4 tolerance.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mdlm_jax.diffusion import losses, process, schedules

NEG_INFINITY = -1e6  # official Diffusion.neg_infinity
T_MAX = 1 - 1e-4  # _d3pm_loss clamps t here (t = 1 is the last bin)


def d3pm_log_probs(logits, mask_id: int, subs_masking: bool):
    """log p_theta(x_0 | x_t) = log_softmax(logits + NEG_INFINITY e_mask [subs_masking]) over all V.

    No carry-over: unmasked positions get a full distribution too, and without ``subs_masking``
    the mask token keeps p > 0. Shapes: logits (B, L, V) -> (B, L, V) float32 (float64 for
    float64 logits).
    """
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    if subs_masking:
        logits = logits.at[..., mask_id].add(NEG_INFINITY)
    return jax.nn.log_softmax(logits, axis=-1)


def d3pm_token_loss(log_probs, xt, x0, t, mask_id: int, num_steps: int):
    """T KL(q(x_s | x_t, x_0) || p_theta(x_s | x_t)) per token, s = t - 1/T, on masked tokens.

    With dt = 1/T, t clamped to 1 - 1e-4, alpha_t = 1 - t, alpha_s = 1 - (t - dt), pm = p(mask):
    nr = log(alpha_t pm / t + 1),
    L = dt/t (nr - lp[x_0]) + (1 - dt/t) (nr - log(alpha_s pm / (t - dt) + 1)),
    loss = T L where x_t == mask, else 0. p_theta(x_s | x_t) is D3PM's
    q(x_t | x_s) sum_{x_0} q(x_s | x_0) p_theta(x_0 | x_t), normalised (the mask counted as a
    possible x_0). The reconstruction term is separate (``reconstruction_loss``). At t = 1/T,
    t - dt = 0 and the loss is NaN: ``d3pm_time`` never gives it when sampling_eps >= 1/T.
    Shapes: log_probs (B, L, V), xt / x0 (B, L) int, t (B,) on the grid {2/T, ..., 1} -> (B, L).
    """
    dt = 1.0 / num_steps
    t = jnp.clip(t[:, None], 0.0, T_MAX)
    alpha_t, alpha_s = 1 - t, 1 - (t - dt)
    pm = jnp.exp(log_probs[..., mask_id])
    lp_x0 = jnp.take_along_axis(log_probs, x0[..., None], axis=-1)[..., 0]
    nr = jnp.log(alpha_t * pm / t + 1)
    # torch's reciprocal(t) * dt is 1 ulp off this division in a quarter of the cases: measured
    # 3e-7 relative in the loss, far inside the 1e-4 tolerance.
    dt_over_t = dt / t
    bound = dt_over_t * (nr - lp_x0) + (1 - dt_over_t) * (nr - jnp.log(alpha_s * pm / (t - dt) + 1))
    return jnp.where(xt == mask_id, num_steps * bound, 0.0)


def reconstruction_loss(log_probs_clean, x0):
    """-log p_theta(x_0 | x_0, sigma = 0) at every token (masked or not).

    Shapes: log_probs_clean (B, L, V) from the forward pass on x0 at sigma 0, x0 (B, L) -> (B, L).
    """
    return -jnp.take_along_axis(log_probs_clean, x0[..., None], axis=-1)[..., 0]


def loglinear_sigma_range(eps: float = 1e-3):
    """The official LogLinearNoise's (sigma_min, sigma_max) as float32: eps + sigma(0) = eps, and
    sigma(1) = -log1p(-(1 - eps)) = 6.9077682 for eps 1e-3 (not -log(eps) = 6.9077553).

    Shapes: -> (), () float32.
    """
    sigma_max = schedules.loglinear(jnp.float32(1.0), eps)[0]
    return jnp.float32(eps), sigma_max


def _log_move_chance_range(eps: float):
    """(f_0, f_T) = log1p(-exp(-sigma)) at (sigma_min, sigma_max): log move chance at both ends."""
    sigma_min, sigma_max = loglinear_sigma_range(eps)
    return jnp.log1p(-jnp.exp(-sigma_min)), jnp.log1p(-jnp.exp(-sigma_max))


def importance_sampling_t(t, eps: float = 1e-3):
    """Importance-sampling transformation of t, log move chance linear in t:

    sigma_t = -log1p(-exp(t f_T + (1 - t) f_0)),  t' = -expm1(-sigma_t) / (1 - eps),
    with f = log1p(-exp(-sigma)) at sigma_max (f_T) and sigma_min (f_0).
    Shapes: t (B,) -> (B,) float32.
    """
    f_0, f_T = _log_move_chance_range(eps)
    sigma_t = -jnp.log1p(-jnp.exp(t * f_T + (1 - t) * f_0))
    return -jnp.expm1(-sigma_t) / (1 - eps)


def cov_move_chance(t, eps: float = 1e-3):
    """Change-of-variables move chance exp(f_0 + t (f_T - f_0)) (f as in ``importance_sampling_t``).

    Shapes: t (B,) -> (B,) float32.
    """
    f_0, f_T = _log_move_chance_range(eps)
    return jnp.exp(f_0 + t * (f_T - f_0))


def d3pm_time(t, num_steps: int, *, importance_sampling: bool = False, eps: float = 1e-3):
    """The official t of a training step from t ~ U[sampling_eps, 1): the importance-sampling
    transformation (if on), then ``process.discretize_t`` onto {2/T, ..., 1}.

    Shapes: t (B,) -> (B,) float32.
    """
    if importance_sampling:
        t = importance_sampling_t(t, eps)
    return process.discretize_t(t, num_steps)


class D3PMCorrupted(NamedTuple):
    """move_chance: (B,) masking probability; xt: (B, L); conditioning: (B,) what the backbone
    is given (sigma(t), or t itself under change of variables)."""

    move_chance: jax.Array
    xt: jax.Array
    conditioning: jax.Array


def d3pm_corrupt(x0, t, u, mask_id: int, *, change_of_variables: bool = False,
                 eps: float = 1e-3) -> D3PMCorrupted:
    """Official q(x_t | x_0) of a training step from uniforms u: mask where u < move chance.

    The move chance is 1 - exp(-sigma(t)) (official order, not -expm1) with the backbone seeing
    sigma(t); under change of variables it is ``cov_move_chance(t)`` and the backbone sees t.
    t is the unclamped discretised t. Shapes: x0 (B, L) int, t (B,), u (B, L) -> D3PMCorrupted.
    """
    if change_of_variables:
        move_chance, conditioning = cov_move_chance(t, eps), t
    else:
        sigma = schedules.loglinear(t, eps)[0]
        move_chance, conditioning = 1 - jnp.exp(-sigma), sigma
    return D3PMCorrupted(move_chance, process.mask_tokens(x0, move_chance, mask_id, u), conditioning)


def official_draws(rng, sobol_rng, x0, *, time_sampler: str, sampling_eps: float, sobol_offset, num_steps: int,
                   importance_sampling: bool, change_of_variables: bool, mask_id: int, eps: float = 1e-3,
                   t=None, xt=None):
    """One training step's t and x_t in the official order (used by d3pm, and by subs with IS/CoV):
    t ~ ``process.sample_t``, importance-sampled if on, T-discretised if ``num_steps``; masks from
    fresh uniforms by ``d3pm_corrupt``. A given ``t`` (B,) / ``xt`` (B, L) (recorded draws) is used
    instead. Shapes: x0 (B, L) int -> (t (B,), xt (B, L), conditioning (B,))."""
    t_rng, u_rng = jax.random.split(rng)
    if t is None:
        t = process.sample_t(sobol_rng if time_sampler == "sobol" else t_rng, x0.shape[0], sampler=time_sampler,
                             sampling_eps=sampling_eps, offset=sobol_offset)
        if num_steps:
            t = d3pm_time(t, num_steps, importance_sampling=importance_sampling, eps=eps)
        elif importance_sampling:
            t = importance_sampling_t(t, eps)
    c = d3pm_corrupt(x0, t, jax.random.uniform(u_rng, x0.shape), mask_id, change_of_variables=change_of_variables,
                     eps=eps)
    return t, c.xt if xt is None else xt, c.conditioning


def d3pm_loss(denoise_fn: Callable, x0, attention_mask, t, u, *, mask_id: int, num_steps: int,
              subs_masking: bool, change_of_variables: bool = False, eps: float = 1e-3) -> losses.LossOutput:
    """Official d3pm training loss of one batch: reconstruction + T-step bound, per token.

    ``denoise_fn(tokens (B, L) int, sigma (B,)) -> logits (B, L, V)`` is called twice: on x_t
    and on the clean x0 at sigma 0. ``t`` comes from ``d3pm_time``, ``u`` ~ U[0, 1) (B, L).
    Shapes: x0 (B, L) int, attention_mask (B, L) -> LossOutput.
    """
    c = d3pm_corrupt(x0, t, u, mask_id, change_of_variables=change_of_variables, eps=eps)
    lp = d3pm_log_probs(denoise_fn(c.xt, c.conditioning), mask_id, subs_masking)
    lp_clean = d3pm_log_probs(denoise_fn(x0, jnp.zeros_like(t)), mask_id, subs_masking)
    token_loss = reconstruction_loss(lp_clean, x0) + d3pm_token_loss(lp, c.xt, x0, t, mask_id, num_steps)
    return losses.reduce_loss(token_loss, attention_mask)
