"""SEDD absorbing baseline (Lou et al. 2024): log-score parameterisation and score entropy (SPEC section 14).

The model's output is a log concrete score ``ls_y = log p_t(x with x^l = y) / p_t(x)`` per
position and candidate y. Two sigmas are involved (official quirk 6): ``sedd_log_score`` takes
the sigma the backbone saw (zeros without time conditioning, which makes the score +inf: SEDD
needs ``time_conditioning=True``); ``score_entropy`` takes the raw noise level.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mdlm_jax.diffusion.losses import LossOutput, reduce_loss


def sedd_log_score(logits, xt, sigma, mask_id: int):
    """Official ``_sedd_parameterization``: log score from DiT logits.

    ls = logits - log(expm1(sigma)) - log(V - 1), then ls[..., x_t] = 0 (the mask column at masked
    positions, the token itself elsewhere; unmasked rows stay unconstrained).
    ``sigma`` is the backbone's (processed) sigma.
    Shapes: logits (B, L, V), xt (B, L) int, sigma (B,) or (B, 1) -> (B, L, V) float32.
    """
    vocab = logits.shape[-1]
    if not 0 <= mask_id < vocab:
        raise ValueError(f"mask_id must lie in [0, {vocab}), got {mask_id}.")
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    sigma = jnp.reshape(sigma, (-1, 1, 1)).astype(logits.dtype)
    # The official switch between expm1 and exp - 1; it changes only the float rounding.
    esigm1 = jnp.where(sigma < 0.5, jnp.expm1(sigma), jnp.exp(sigma) - 1)
    log_score = logits - jnp.log(esigm1) - math.log(vocab - 1)
    return jnp.where(jax.nn.one_hot(xt, vocab, dtype=jnp.bool_), 0.0, log_score)


def score_entropy(log_score, sigma, xt, x0, mask_id: int):
    """Denoising score entropy of the absorbing process at masked positions (official ``_score_entropy``).

    With q = 1 / expm1(sigma) (the transition ratio towards x0 from a mask),
    entropy = sum_{y != mask} exp(ls_y) - q ls[x0] + q (log q - 1) where x_t is masked, else 0.
    It is >= 0, and 0 iff exp(ls) = q onehot(x0). ``sigma`` is the raw noise level; the mask id
    may be any column (the last, or inside the vocabulary like bert-base-uncased's 103).
    Shapes: log_score (B, L, V), sigma (B,) or (B, 1), xt / x0 (B, L) int -> (B, L).
    """
    masked = xt == mask_id
    # Unmasked rows are unconstrained and may overflow exp: keep them out of values and gradients.
    log_score = jnp.where(masked[..., None], log_score, 0.0)
    q = 1.0 / jnp.expm1(jnp.reshape(sigma, (-1, 1)).astype(log_score.dtype))
    not_mask = jnp.arange(log_score.shape[-1]) != mask_id
    pos = jnp.where(not_mask, jnp.exp(log_score), 0.0).sum(-1)
    neg = q * jnp.take_along_axis(log_score, x0[..., None], axis=-1)[..., 0]
    const = q * (jnp.log(q) - 1)
    return jnp.where(masked, pos - neg + const, 0.0)


def sedd_loss(log_score, x0, xt, sigma, dsigma, attention_mask, mask_id: int) -> LossOutput:
    """SEDD's continuous-time NELBO: token loss dsigma(t) * score_entropy, reduced over attention_mask.

    ``sigma`` and ``dsigma`` are the raw noise level and its rate at each row's t.
    Shapes: log_score (B, L, V), x0 / xt (B, L) int, sigma / dsigma (B,), attention_mask (B, L) -> LossOutput.
    """
    entropy = score_entropy(log_score, sigma, xt, x0, mask_id)
    return reduce_loss(jnp.reshape(dsigma, (-1, 1)) * entropy, attention_mask)
