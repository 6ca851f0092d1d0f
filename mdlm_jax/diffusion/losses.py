"""SUBS parameterisation and the training objectives (SPEC sections 4, 5).

Minus infinity is a true ``-inf`` here (the official code uses -1e6 / -1000); every product with
a log-probability goes through ``jnp.where`` so that ``0 * -inf`` never reaches a loss.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from mdlm_jax.diffusion import process
from mdlm_jax.diffusion.schedules import NoiseSchedule


class LossOutput(NamedTuple):
    """loss: () reduced NELBO in nats/token; token_loss: (B, L) weighted per-token loss
    (already multiplied by the attention mask); num_tokens: () sum of the attention mask;
    weights: (B, L) the mask the loss was reduced over (per-row token counts are its row sums)."""

    loss: jax.Array
    token_loss: jax.Array
    num_tokens: jax.Array
    weights: jax.Array


def _excluded_columns(num_columns: int, mask_id: int, vocab_size: int | None):
    """(V_out,) bool: the mask column and, for a padded output layer, the pad columns >= vocab_size."""
    cols = jnp.arange(num_columns)
    excluded = cols == mask_id
    return excluded if vocab_size is None else excluded | (cols >= vocab_size)


def _mask_column(logits, mask_id: int, vocab_size: int | None = None):
    """Sets the mask-token logit (and the pad columns from ``vocab_size`` on) to -inf (zero-masking).
    Shapes: (..., V_out) -> (..., V_out) at least float32 (bfloat16 logits are promoted; float64
    ones, in x64 tests, are kept)."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return jnp.where(_excluded_columns(logits.shape[-1], mask_id, vocab_size), -jnp.inf, logits)


def subs_log_probs(logits, xt, mask_id: int):
    """SUBS log p_theta(x_0 | x_t): zero-masking, log-softmax, then carry-over.

    log p = log_softmax(logits with logit[mask] = -inf) where x_t == mask;
    where x_t != mask the row is 0 at x_t and -inf elsewhere.
    Shapes: logits (B, L, V), xt (B, L) int -> (B, L, V) float32 (float64 for float64 logits).
    """
    logp = jax.nn.log_softmax(_mask_column(logits, mask_id), axis=-1)
    carried = jnp.where(jax.nn.one_hot(xt, logits.shape[-1], dtype=jnp.bool_), 0.0, -jnp.inf)
    return jnp.where((xt != mask_id)[..., None], carried, logp)


def token_nll(logits, targets, mask_id: int, vocab_size: int | None = None):
    """-log softmax(logits with the mask column removed)[target], without the (B, L, V) log-probs.

    ``vocab_size``: the logits of a padded output layer (``models.vocab``) have more columns than
    the vocabulary; those from ``vocab_size`` on are excluded like the mask column, never sliced off.
    Shapes: logits (B, L, V_out), targets (B, L) int -> (B, L) float32 (float64 for float64 logits).
    """
    logits = _mask_column(logits, mask_id, vocab_size)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - target_logit


def chunked_token_nll(hidden, project: Callable, targets, mask_id: int, chunk: int, vocab_size: int | None = None):
    """``token_nll`` of the logits ``project(hidden)`` (the output layer), ``chunk`` positions at a time.

    The output projection and the cross-entropy are fused per chunk under ``jax.checkpoint``, so
    neither pass holds more than (B, chunk, V) logits (the backward recomputes each chunk's) where
    the unfused loss keeps (B, L, V) float32 logits and their gradient: 1.6 GB each at B = 8,
    L = 1024, V = 50,258. Chunking changes no number beyond float rounding.
    Shapes: hidden (B, L, D), project (..., D) -> (..., V_out), targets (B, L) int -> (B, L) float32.
    """
    batch, length, dim = hidden.shape
    n = -(-length // chunk)
    pad = n * chunk - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(batch, n, chunk, dim).swapaxes(0, 1)
    targets = jnp.pad(targets, ((0, 0), (0, pad))).reshape(batch, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one_chunk(args):
        h, t = args
        return token_nll(project(h), t, mask_id, vocab_size)

    nll = jax.lax.map(one_chunk, (hidden, targets))  # (n, B, chunk)
    return nll.swapaxes(0, 1).reshape(batch, n * chunk)[:, :length]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4, 5))
def projected_token_nll(project: Callable, params, hidden, targets, mask_id: int, vocab_size: int | None = None):
    """``token_nll(project(params, hidden), targets, mask_id, vocab_size)`` with the cross-entropy's
    gradient written out: d nll / d logits = softmax - onehot(target) over the kept columns.

    Autodiff of ``token_nll`` on cut logits runs the gradient through a scatter (the target gather),
    a copy and a pad back to the padded width before the output layer's matmuls; here it is one
    elementwise pass over the (N, V_out) logits, which the projection's pullback takes as is (on
    a 2-core CPU the small model's step at L = 1024 runs about 4% faster: docs/BENCHMARKS.md).
    Same numbers as ``token_nll`` up to float rounding. ``project(params, hidden)`` -> logits.
    Shapes: hidden (B, L, D), targets (B, L) int -> (B, L) float32.
    """
    return _projected_nll_fwd(project, params, hidden, targets, mask_id, vocab_size)[0]


def _projected_nll_fwd(project, params, hidden, targets, mask_id, vocab_size):
    logits, pullback = jax.vjp(project, params, hidden)
    masked = _mask_column(logits, mask_id, vocab_size)
    top = jnp.max(masked, axis=-1, keepdims=True)
    # exp(masked - max) is 0 on the excluded columns and kept for the backward pass (softmax =
    # e / sum e): one exp pass in all, and no second select after it
    e = jnp.exp(masked - top)
    total = jnp.sum(e, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return top[..., 0] + jnp.log(total) - target_logit, (pullback, e, total, targets)


def _projected_nll_bwd(project, mask_id, vocab_size, residuals, g):
    del project, mask_id, vocab_size
    pullback, e, total, targets = residuals
    cols = jnp.arange(e.shape[-1])
    dlogits = g[..., None] * (e / total[..., None] - (cols == targets[..., None]))
    dparams, dhidden = pullback(dlogits.astype(e.dtype))
    return dparams, dhidden, None


projected_token_nll.defvjp(_projected_nll_fwd, _projected_nll_bwd)


def continuous_weight(sigma, dsigma):
    """Continuous-time NELBO weight dsigma(t) / expm1(sigma(t)) (= 1/t for loglinear).

    Shapes: (B,) -> (B,).
    """
    return dsigma / jnp.expm1(sigma)


def discrete_weight(schedule: NoiseSchedule, t, num_steps: int):
    """Discrete-time (T steps) NELBO weight T (alpha(s) - alpha(t)) / (1 - alpha(t)), s = t - 1/T.

    Shapes: t (B,) -> (B,).
    """
    s = jnp.clip(t - 1.0 / num_steps, 0.0, 1.0)
    alpha_t, alpha_s = schedule.alpha(t), schedule.alpha(s)
    return num_steps * (alpha_s - alpha_t) / schedule.move_chance(t)


def reduce_loss(token_loss, attention_mask) -> LossOutput:
    """sum(token_loss * mask) / sum(mask) over everything given. Shapes: (B, L), (B, L) -> LossOutput."""
    attention_mask = attention_mask.astype(jnp.float32)
    token_loss = token_loss * attention_mask
    num_tokens = attention_mask.sum()
    return LossOutput(token_loss.sum() / jnp.maximum(num_tokens, 1.0), token_loss, num_tokens, attention_mask)


def masked_diffusion_loss(logits, x0, xt, weight, attention_mask, mask_id: int,
                          nll: Callable | None = None) -> LossOutput:
    """NELBO from denoiser logits: loss_l = weight * -log p(x0_l | x_t) where x_t is masked, else 0.

    ``nll(logits, targets) -> (B, L)`` replaces ``token_nll`` (the fused loss passes the output
    layer's input as ``logits`` and ``chunked_token_nll``).
    Shapes: logits (B, L, V), x0 / xt (B, L) int, weight (B,), attention_mask (B, L) -> LossOutput.
    """
    nll = nll(logits, x0) if nll else token_nll(logits, x0, mask_id)
    per_token = jnp.where(xt == mask_id, nll * weight[:, None], 0.0)
    return reduce_loss(per_token, attention_mask)


class Corrupted(NamedTuple):
    """xt: (B, L) noised tokens; sigma: (B,) total noise given to the denoiser; weight: (B,) NELBO
    weight; t: (B,) the diffusion times drawn."""

    xt: jax.Array
    sigma: jax.Array
    weight: jax.Array
    t: jax.Array


def corrupt(rng, x0, *, schedule: NoiseSchedule, mask_id: int, time_sampler: str = "antithetic",
            sampling_eps: float = 1e-3, num_steps: int = 0, sobol_rng=None, sobol_offset=0, t=None,
            xt=None) -> Corrupted:
    """Draws one t per sequence and x_t ~ q(x_t | x_0), with the matching NELBO weight.

    ``num_steps = 0`` is continuous time (weight dsigma / expm1(sigma)), otherwise discrete time with
    T = num_steps. For the ``sobol`` sampler pass a ``sobol_rng`` fixed across steps and an
    increasing ``sobol_offset``. A given ``t`` (B,) and ``xt`` (B, L) (recorded draws, to replay
    another run) are used instead of drawing them. Shapes: x0 (B, L) int -> Corrupted.
    """
    t_rng, mask_rng = jax.random.split(rng)
    if time_sampler == "sobol" and sobol_rng is not None:
        t_rng = sobol_rng
    if t is None:
        t = process.sample_t(t_rng, x0.shape[0], sampler=time_sampler, sampling_eps=sampling_eps,
                             num_steps=num_steps, offset=sobol_offset)
    t = jnp.asarray(t, jnp.float32)
    sigma, dsigma = schedule(t)
    if xt is None:
        xt = process.forward_process(mask_rng, x0, schedule.move_chance(t), mask_id)
    if num_steps:
        weight = discrete_weight(schedule, t, num_steps)
    else:
        weight = continuous_weight(sigma, dsigma)
    return Corrupted(xt, sigma, weight, t)


def diffusion_loss(denoise_fn: Callable, x0, attention_mask, rng, *, schedule: NoiseSchedule,
                   mask_id: int, **corrupt_kwargs) -> LossOutput:
    """Monte-Carlo NELBO of MDLM for one batch: one t per sequence, one mask draw per token.

    ``denoise_fn(xt (B, L) int, sigma (B,)) -> logits (B, L, V)``; ``corrupt_kwargs`` go to ``corrupt``.
    Shapes: x0 (B, L) int, attention_mask (B, L) -> LossOutput.
    """
    c = corrupt(rng, x0, schedule=schedule, mask_id=mask_id, **corrupt_kwargs)
    return masked_diffusion_loss(denoise_fn(c.xt, c.sigma), x0, c.xt, c.weight, attention_mask, mask_id)


def ar_log_probs(logits, mask_id: int):
    """AR output: log-softmax over V with the mask column at -inf. Shapes: (B, L, V) -> (B, L, V)."""
    return jax.nn.log_softmax(_mask_column(logits, mask_id), axis=-1)


def ar_loss(logits, x0, attention_mask, mask_id: int, nll: Callable | None = None) -> LossOutput:
    """Next-token NLL: position l predicts x0[l + 1], weighted by attention_mask[:, 1:].

    ``logits`` come from the causal model run on the whole x0; with causal attention the first
    L - 1 positions equal the official run on x0[:, :-1]. ``nll`` as in ``masked_diffusion_loss``.
    Shapes: logits (B, L, V), x0 (B, L), attention_mask (B, L) -> LossOutput over (B, L - 1).
    """
    logits, targets = logits[:, :-1], x0[:, 1:]
    nll = nll(logits, targets) if nll else token_nll(logits, targets, mask_id)
    return reduce_loss(nll, attention_mask[:, 1:])
