"""The reverse process: ancestral (``ddpm``) and cached (``ddpm_cache``) samplers (SPEC section 9).

Both run in one ``lax.fori_loop`` so a single jit compiles the whole sampler. Categorical draws use
the exponential race ``argmax_v q_v / E_v`` with E_v ~ Exp(1), which is Gumbel-max with
``g = -log E``. The official float32 Gumbel noise caps g at about 16.6 and so silently lowers the
temperature; here E is float64 when x64 is enabled, and otherwise a float32 draw assembled from
three 24-bit words that resolves E down to 2^-72 (g up to 49.9): a draw differs from the exact
one with probability below 2^-72 per entry.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mdlm_jax.diffusion.losses import subs_log_probs
from mdlm_jax.diffusion.schedules import NoiseSchedule
from mdlm_jax.validation import check_choice

PREDICTORS = ("ddpm", "ddpm_cache")


class SampleOutput(NamedTuple):
    """tokens: (B, L) int32 final samples; nfe: () int32 number of denoiser calls."""

    tokens: jax.Array
    nfe: jax.Array


def x64_enabled() -> bool:
    return jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64


def exponential_noise(rng, shape):
    """E ~ Exp(1) with an untruncated small-E tail (see the module docstring). -> shape, float."""
    if x64_enabled():
        return jax.random.exponential(rng, shape, jnp.float64)
    words = jax.random.bits(rng, (3,) + tuple(shape), jnp.uint32) >> 8
    w = words.astype(jnp.float32)
    v = jnp.where(words[0] > 0, w[0] * 2.0**-24,
                  jnp.where(words[1] > 0, w[1] * 2.0**-48, w[2] * 2.0**-72))
    return -jnp.log1p(-v)


def official_noise_from_uniforms(u):
    """The official ``_sample_categorical`` noise 1e-10 - log(u + 1e-10), for parity with recorded u."""
    return 1e-10 - jnp.log(u + 1e-10)


def sample_categorical(q, noise):
    """Index of max q_v / E_v over the last axis: a draw from q / sum(q) (q >= 0, unnormalized).

    Shapes: q (..., V), noise (..., V) -> (...,) int32. Zero-probability entries never win.
    """
    dtype = noise.dtype
    q = q.astype(dtype)
    score = jnp.where(q > 0, q / noise, jnp.zeros((), dtype))
    return jnp.argmax(score, axis=-1).astype(jnp.int32)


def reverse_probs(p_x0, mc_t, mc_s, mask_id: int):
    """Unnormalized q(x_s | x_t, x_0 ~ p): p_x0 (mc_t - mc_s) on real tokens, mc_s on the mask.

    Shapes: p_x0 (B, L, V), mc_t / mc_s (B,) -> (B, L, V).
    """
    q = p_x0 * (mc_t - mc_s)[:, None, None]
    return q.at[..., mask_id].set(jnp.broadcast_to(mc_s[:, None], q.shape[:2]))


def reverse_step(x, p_x0, mc_t, mc_s, mask_id: int, noise):
    """One ancestral step: sample masked positions from ``reverse_probs``, carry the rest.

    Shapes: x (B, L) int, p_x0 (B, L, V), mc_t / mc_s (B,), noise (B, L, V) -> (x_next, q).
    """
    q = reverse_probs(p_x0, mc_t, mc_s, mask_id)
    sampled = sample_categorical(q, noise)
    return jnp.where(x != mask_id, x, sampled.astype(x.dtype)), q


def sample(denoise_fn: Callable, rng, x_init, *, schedule: NoiseSchedule, mask_id: int,
           num_steps: int, predictor: str = "ddpm", eps: float = 1e-5,
           noise_removal: bool = True) -> SampleOutput:
    """Ancestral sampling from x_init (all-mask for unconditional; fixed tokens are carried over).

    Grid t_k = linspace(1, eps, T + 1), dt = (1 - eps) / T; step k moves t_k -> t_k - dt.
    ``ddpm`` uses mc = move_chance(t); ``ddpm_cache`` (official; loglinear schedule, a denoiser
    that ignores sigma) uses mc(t) = t and reuses p(x_0 | x_t) while x did not change, so most
    steps at T >> L call no network. ``noise_removal`` replaces the masks left at t = eps by
    argmax p(x_0 | x_t). ``denoise_fn(x (B, L) int, sigma (B,)) -> logits (B, L, V)``.
    Shapes: x_init (B, L) int -> SampleOutput(tokens (B, L) int32, nfe ()).
    """
    check_choice(predictor, PREDICTORS, "predictor")
    if predictor == "ddpm_cache" and schedule.name != "loglinear":
        raise ValueError("predictor 'ddpm_cache' assumes the loglinear schedule (move chance t); "
                         f"got schedule {schedule.name!r}: use predictor 'ddpm'.")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    x_init = jnp.asarray(x_init, jnp.int32)
    batch = x_init.shape[0]
    timesteps = jnp.linspace(1.0, eps, num_steps + 1)
    dt = (1.0 - eps) / num_steps

    def probs(x, t):
        sigma = schedule.sigma(jnp.full((batch,), t))
        return jnp.exp(subs_log_probs(denoise_fn(x, sigma), x, mask_id))

    def body(i, carry):
        x, cache, valid, nfe = carry
        t = timesteps[i]
        tb = jnp.full((batch,), t)
        if predictor == "ddpm":
            p_x0 = probs(x, t)
            mc_t, mc_s = schedule.move_chance(tb), schedule.move_chance(tb - dt)
            nfe = nfe + 1
        else:
            p_x0 = jax.lax.cond(valid, lambda: cache, lambda: probs(x, t))
            nfe = nfe + jnp.where(valid, 0, 1)
            mc_t, mc_s = tb, tb - dt
            cache = p_x0
        noise = exponential_noise(jax.random.fold_in(rng, i), x.shape + (p_x0.shape[-1],))
        x_next, _ = reverse_step(x, p_x0, mc_t, mc_s, mask_id, noise)
        return x_next, cache, jnp.all(x_next == x), nfe

    # Only the cached predictor carries p(x_0 | x_t) (B, L, V) between steps.
    if predictor == "ddpm_cache":
        vocab = jax.eval_shape(denoise_fn, x_init, jnp.zeros((batch,), jnp.float32)).shape[-1]
        cache0 = jnp.zeros(x_init.shape + (vocab,), jnp.float32)
    else:
        cache0 = jnp.zeros((), jnp.float32)
    x, _, _, nfe = jax.lax.fori_loop(0, num_steps, body, (x_init, cache0, jnp.array(False), jnp.array(0, jnp.int32)))
    if noise_removal:
        sigma = schedule.sigma(jnp.full((batch,), timesteps[-1]))
        best = jnp.argmax(subs_log_probs(denoise_fn(x, sigma), x, mask_id), axis=-1)
        x = jnp.where(x == mask_id, best.astype(x.dtype), x)
        nfe = nfe + 1
    return SampleOutput(x, nfe)


def sample_ar(logits_fn: Callable, rng, x_init, *, mask_id: int) -> SampleOutput:
    """Ancestral sampling of the AR baseline: x[:, l] ~ softmax(logits(x)[:, l - 1]) for l >= 1.

    ``x_init[:, 0]`` (usually BOS) is kept; the mask token is never drawn. One full causal forward
    per position (L - 1 calls). Shapes: x_init (B, L) int -> SampleOutput.
    """
    x_init = jnp.asarray(x_init, jnp.int32)
    length = x_init.shape[1]

    def body(i, x):
        logits = logits_fn(x)[:, i - 1].astype(jnp.float32)
        q = jax.nn.softmax(logits.at[:, mask_id].set(-jnp.inf), axis=-1)
        token = sample_categorical(q, exponential_noise(jax.random.fold_in(rng, i), q.shape))
        return x.at[:, i].set(token)

    x = jax.lax.fori_loop(1, length, body, x_init)
    return SampleOutput(x, jnp.array(length - 1, jnp.int32))
