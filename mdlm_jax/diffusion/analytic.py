"""SEDD's analytic sampler (Tweedie tau-leaping, Lou et al. 2024) for the absorbing process,
with the sedd or the subs parameterisation (SPEC sections 9, 14; official ``_analytic_update``,
``_denoiser_update``).

A step from t to s = t - h draws every position from

    probs = staggered_score(score(x, sigma(t)), dsigma) * transp_transition(x, dsigma),
    dsigma = sigma(t) - sigma(s).

At a masked position this is ``expm1(dsigma) s_y`` for y != mask and ``1 - expm1(dsigma) sum s_y``
for the mask (not clamped: it can be negative, and then never wins the draw); an unmasked row is
one-hot at its token, so no copy flag is needed. For subs, whose score is p(x_0 | x_t) / expm1(sigma),
these are ``ddpm``'s reverse probabilities divided by move_chance(t): given the same noise both
samplers draw the same tokens.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mdlm_jax.diffusion.losses import subs_log_probs
from mdlm_jax.diffusion.sampling import (NOISES, SampleOutput, categorical_noise, official_noise_from_uniforms,
                                         sample_categorical)
from mdlm_jax.diffusion.schedules import NoiseSchedule
from mdlm_jax.diffusion.sedd import sedd_log_score
from mdlm_jax.validation import check_choice

PARAMETERIZATIONS = ("sedd", "subs")


def _column(x):
    """(B,) or (B, 1) -> (B, 1, 1), to broadcast a per-row value over (B, L, V)."""
    return jnp.reshape(x, (-1, 1, 1))


def subs_score(log_probs, x, sigma, mask_id: int):
    """Official ``get_score`` for subs: the concrete score implied by p(x_0 | x_t).

    With log_k = -log(expm1(sigma)): masked rows exp(log p + log_k) with 1 at the mask column;
    unmasked rows 1 at x, expm1(sigma) = exp(-log_k) at the mask column, 0 elsewhere. The official
    code blends the two rows arithmetically, which needs its finite -1e6; a select gives the same
    numbers and accepts -inf log-probs. ``sigma`` is the raw noise level, also when the backbone
    saw zeros. Shapes: log_probs (B, L, V), x (B, L) int, sigma (B,) or (B, 1) -> (B, L, V).
    """
    vocab = log_probs.shape[-1]
    log_k = -jnp.log(jnp.expm1(_column(sigma).astype(log_probs.dtype)))
    is_mask_col = jnp.arange(vocab) == mask_id
    masked_row = jnp.where(is_mask_col, 0.0, log_probs + log_k)
    unmasked_row = jnp.where(jax.nn.one_hot(x, vocab, dtype=jnp.bool_), 0.0, -jnp.inf)
    unmasked_row = jnp.where(is_mask_col, -log_k, unmasked_row)
    return jnp.exp(jnp.where((x == mask_id)[..., None], masked_row, unmasked_row))


def sedd_score(logits, x, sigma_backbone, mask_id: int):
    """Official ``get_score`` for sedd: exp(sedd_log_score). ``sigma_backbone`` is the sigma the DiT
    saw (see ``sedd_log_score``). Shapes: logits (B, L, V), x (B, L) int, sigma (B,) -> (B, L, V)."""
    return jnp.exp(sedd_log_score(logits, x, sigma_backbone, mask_id))


def make_score_fn(denoise_fn: Callable, parameterization: str, *, mask_id: int,
                  time_conditioning: bool) -> Callable:
    """``score_fn(x (B, L) int, sigma (B,) raw) -> score (B, L, V)`` from ``denoise_fn(x, sigma) -> logits``.

    ``time_conditioning`` says whether the backbone sees sigma (the sedd log-score divides by the
    sigma it saw); subs uses the raw sigma either way.
    """
    check_choice(parameterization, PARAMETERIZATIONS, "parameterization")

    def score_fn(x, sigma):
        logits = denoise_fn(x, sigma)
        if parameterization == "subs":
            return subs_score(subs_log_probs(logits, x, mask_id), x, sigma, mask_id)
        return sedd_score(logits, x, sigma if time_conditioning else jnp.zeros_like(sigma), mask_id)

    return score_fn


def staggered_score(score, dsigma, mask_id: int):
    """Official ``_staggered_score``: s e^dsigma, plus (1 - e^dsigma) sum_y s_y on the mask column.

    The sum runs over all V columns of the unscaled score. Shapes: score (B, L, V), dsigma (B,) or
    (B, 1) -> (B, L, V).
    """
    dsigma = _column(dsigma).astype(score.dtype)
    extra = -jnp.expm1(dsigma)[..., 0] * score.sum(-1)
    return (score * jnp.exp(dsigma)).at[..., mask_id].add(extra)


def transp_transition(x, sigma, mask_id: int, vocab_size: int):
    """Official ``_transp_transition``: the absorbing forward kernel read from x's side,
    e^-sigma onehot(x) + [x == mask] (1 - e^-sigma) on every column (1 at a masked row's mask column).

    Shapes: x (B, L) int, sigma (B,) or (B, 1) -> (B, L, V) float32.
    """
    sigma = _column(sigma).astype(jnp.float32)
    onehot = jax.nn.one_hot(x, vocab_size, dtype=jnp.float32)
    return jnp.exp(-sigma) * onehot + (x == mask_id)[..., None] * -jnp.expm1(-sigma)


def analytic_probs(score, x, dsigma, mask_id: int):
    """Unnormalized step probabilities staggered_score(score, dsigma) * transp_transition(x, dsigma).

    Shapes: score (B, L, V), x (B, L) int, dsigma (B,) -> (B, L, V); masked rows sum to 1.
    """
    return staggered_score(score, dsigma, mask_id) * transp_transition(x, dsigma, mask_id, score.shape[-1])


def analytic_step(score_fn: Callable, x, t, step_size: float, noise, *, schedule: NoiseSchedule,
                  mask_id: int):
    """One official ``_analytic_update`` from t to t - step_size (float32), drawn at every position.

    ``score_fn(x, sigma (B,) raw) -> score``; ``noise`` (B, L, V) is the race noise of
    ``sample_categorical``. Shapes: x (B, L) int, t (B,) -> (x_next (B, L) int32, probs (B, L, V)).
    """
    sigma = schedule.sigma(t)
    dsigma = sigma - schedule.sigma(t - step_size)
    probs = analytic_probs(score_fn(x, sigma), x, dsigma, mask_id)
    return sample_categorical(probs, noise), probs


def denoiser_step(score_fn: Callable, x, t, noise, *, schedule: NoiseSchedule, mask_id: int):
    """Official ``_denoiser_update``: the step from t to 0 (dsigma = sigma(t)) with the mask column
    zeroed, so every position takes a real token (for subs, masked rows are proportional to p(x_0 | x_t)).

    Shapes: x (B, L) int, t (B,), noise (B, L, V) -> (x_next (B, L) int32, probs (B, L, V)).
    """
    sigma = schedule.sigma(t)
    probs = analytic_probs(score_fn(x, sigma), x, sigma, mask_id).at[..., mask_id].set(0.0)
    return sample_categorical(probs, noise), probs


def _is_uniforms(rng_or_uniforms) -> bool:
    return hasattr(rng_or_uniforms, "dtype") and jnp.issubdtype(rng_or_uniforms.dtype, jnp.floating)


def sample_analytic(score_fn: Callable, rng_or_uniforms, x_init, *, schedule: NoiseSchedule, mask_id: int,
                    num_steps: int, eps: float = 1e-5, noise_removal: bool = True,
                    noise: str = "exact") -> SampleOutput:
    """SEDD's analytic sampler (official ``_sample`` with predictor 'analytic') from x_init.

    Grid t_k = linspace(1, eps, T + 1), dt = (1 - eps) / T; step k is ``analytic_step`` from t_k,
    then, with ``noise_removal``, ``denoiser_step`` at t = eps. ``rng_or_uniforms`` is a PRNG key
    (race noise ``categorical_noise(noise, fold_in(rng, k), ...)``: with noise 'float32' the draws
    of ``sample(predictor='ddpm')`` under the same key) or recorded official uniforms
    (T + 1, B, L, V) (T without noise removal), turned into the official noise to replay its chain.
    Given positions are carried (their rows are one-hot). nfe = T (+ 1 with noise removal);
    reveal_step is the step (T + 1: noise removal) at which a position changed. ``score_fn(x (B, L) int, sigma (B,) raw) -> score (B, L, V)``
    (``make_score_fn``). Shapes: x_init (B, L) int -> SampleOutput.
    """
    check_choice(noise, NOISES, "noise")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    x_init = jnp.asarray(x_init, jnp.int32)
    batch = x_init.shape[0]
    draws = num_steps + int(noise_removal)
    if _is_uniforms(rng_or_uniforms):
        uniforms = jnp.asarray(rng_or_uniforms)
        vocab = uniforms.shape[-1]
        if uniforms.shape != (draws,) + x_init.shape + (vocab,):
            raise ValueError(f"uniforms must have shape ({draws}, B, L, V) for {num_steps} steps "
                             f"(noise_removal={noise_removal}), got {uniforms.shape}.")

        def race(k):
            return official_noise_from_uniforms(uniforms[k])
    else:
        vocab = jax.eval_shape(score_fn, x_init, jnp.zeros((batch,), jnp.float32)).shape[-1]

        def race(k):
            return categorical_noise(noise, jax.random.fold_in(rng_or_uniforms, k), x_init.shape + (vocab,))

    timesteps = jnp.linspace(1.0, eps, num_steps + 1)
    dt = (1.0 - eps) / num_steps

    def body(i, carry):
        x, reveal = carry
        t = jnp.full((batch,), timesteps[i])
        x_next, _ = analytic_step(score_fn, x, t, dt, race(i), schedule=schedule, mask_id=mask_id)
        return x_next, jnp.where(x_next != x, i + 1, reveal)

    x, reveal = jax.lax.fori_loop(0, num_steps, body, (x_init, jnp.zeros_like(x_init)))
    if noise_removal:
        t = jnp.full((batch,), timesteps[-1])
        x_next, _ = denoiser_step(score_fn, x, t, race(num_steps), schedule=schedule, mask_id=mask_id)
        reveal = jnp.where(x_next != x, num_steps + 1, reveal)
        x = x_next
    return SampleOutput(x, jnp.array(draws, jnp.int32), reveal)
