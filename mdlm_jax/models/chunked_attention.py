"""Memory-efficient attention in pure JAX (``model.attention_impl='chunked'``): the keys are visited
in blocks with an online softmax (Rabe & Staats 2021; the flash-attention recurrence), and the
backward pass recomputes each block's probabilities from the saved log-sum-exp instead of storing
the (B, H, L, L) scores. Memory is O(B H L block) whatever L; for platforms and shapes without a
fused kernel (CPU, TPU lengths splash does not take, long contexts).

Forward, over key blocks j with running max m, normaliser l and accumulator a (per query):
    s_j = q k_j^T / sqrt(D) (masked to -inf),   m' = max(m, max s_j),
    l' = l e^(m - m') + sum exp(s_j - m'),        a' = a e^(m - m') + exp(s_j - m') v_j,
    out = a / l,   lse = m + log l.
Backward, with p_j = exp(s_j - lse) and d = sum(dout * out):
    dv_j = p_j^T dout,   ds_j = p_j (dout v_j^T - d),   dq = sum_j ds_j k_j / sqrt(D),
    dk_j = ds_j^T q / sqrt(D).
A query with no key to attend to (every key masked) outputs zeros.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 128


def _block_mask(q_pos, k_pos, key_mask_block, causal: bool, mask_fn):
    """(B, 1, Lq, bk) bool: which (query, key) pairs of one key block may attend."""
    ok = key_mask_block[:, None, None, :]
    if causal:
        ok = ok & (k_pos[None, None, None, :] <= q_pos[None, None, :, None])
    if mask_fn is not None:
        ok = ok & mask_fn(q_pos[:, None], k_pos[None, :])[None, None]
    return ok


def _scores(q, k_block, scale):
    """(B, H, Lq, bk) float32 scores of all queries against one key block."""
    return jnp.einsum("bqhd,bkhd->bhqk", q, k_block, preferred_element_type=jnp.float32) * scale


def _blocks(x, block: int):
    """(B, L, ...) -> (L / block, B, block, ...): the scan's leading axis."""
    b, n = x.shape[0], x.shape[1] // block
    return jnp.moveaxis(x.reshape((b, n, block) + x.shape[2:]), 1, 0)


def _forward(q, k, v, key_mask, causal: bool, mask_fn, block: int):
    scale = 1.0 / math.sqrt(q.shape[-1])
    b, lq, h, d = q.shape
    q_pos = jnp.arange(lq)

    def step(carry, xs):
        m, l, acc = carry
        k_j, v_j, mask_j, k_pos = xs
        ok = _block_mask(q_pos, k_pos, mask_j, causal, mask_fn)
        s = jnp.where(ok, _scores(q, k_j, scale), -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # no key yet: keep exp() finite
        p = jnp.exp(s - m_safe[..., None])
        correction = jnp.exp(jnp.where(jnp.isfinite(m), m - m_safe, -jnp.inf))
        l = l * correction + p.sum(-1)
        acc = acc * correction[..., None] + jnp.einsum("bhqk,bkhd->bhqd", p.astype(v.dtype), v_j,
                                                       preferred_element_type=jnp.float32)
        return (m_new, l, acc), None

    init = (jnp.full((b, h, lq), -jnp.inf, jnp.float32), jnp.zeros((b, h, lq), jnp.float32),
            jnp.zeros((b, h, lq, d), jnp.float32))
    k_pos = jnp.arange(k.shape[1]).reshape(-1, block)
    (m, l, acc), _ = jax.lax.scan(step, init, (_blocks(k, block), _blocks(v, block), _blocks(key_mask, block), k_pos))
    empty = l == 0
    out = jnp.where(empty[..., None], 0.0, acc / jnp.where(empty, 1.0, l)[..., None])
    lse = jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))  # inf: p = 0 in the backward pass
    return jnp.moveaxis(out, 1, 2).astype(q.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, key_mask, causal: bool, mask_fn, block: int):
    return _forward(q, k, v, key_mask, causal, mask_fn, block)[0]


def _attention_fwd(q, k, v, key_mask, causal, mask_fn, block):
    out, lse = _forward(q, k, v, key_mask, causal, mask_fn, block)
    return out, (q, k, v, key_mask, out, lse)


def _attention_bwd(causal, mask_fn, block, residuals, dout):
    q, k, v, key_mask, out, lse = residuals
    scale = 1.0 / math.sqrt(q.shape[-1])
    q_pos = jnp.arange(q.shape[1])
    do = dout.astype(jnp.float32)
    delta = jnp.einsum("bqhd,bqhd->bhq", do, out.astype(jnp.float32))

    def step(dq, xs):
        k_j, v_j, mask_j, k_pos = xs
        ok = _block_mask(q_pos, k_pos, mask_j, causal, mask_fn)
        p = jnp.where(ok, jnp.exp(_scores(q, k_j, scale) - lse[..., None]), 0.0)
        dv_j = jnp.einsum("bhqk,bqhd->bkhd", p, do)
        dp = jnp.einsum("bqhd,bkhd->bhqk", do, v_j.astype(jnp.float32))
        ds = p * (dp - delta[..., None])
        dq = dq + jnp.einsum("bhqk,bkhd->bqhd", ds, k_j.astype(jnp.float32)) * scale
        dk_j = jnp.einsum("bhqk,bqhd->bkhd", ds, q.astype(jnp.float32)) * scale
        return dq, (dk_j, dv_j)

    k_pos = jnp.arange(k.shape[1]).reshape(-1, block)
    dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(q.shape, jnp.float32),
                                (_blocks(k, block), _blocks(v, block), _blocks(key_mask, block), k_pos))

    def unblock(x):  # (n, B, block, H, D) -> (B, n * block, H, D)
        x = jnp.moveaxis(x, 0, 1)
        return x.reshape((x.shape[0], -1) + x.shape[3:])

    return (dq.astype(q.dtype), unblock(dk).astype(k.dtype), unblock(dv).astype(v.dtype),
            jnp.zeros(key_mask.shape, jax.dtypes.float0))


_attention.defvjp(_attention_fwd, _attention_bwd)


def chunked_attention(q, k, v, *, causal: bool = False, key_mask: Optional[jax.Array] = None,
                      mask_fn: Optional[Callable] = None, block: int = DEFAULT_BLOCK):
    """softmax(q k^T / sqrt(D) [+ causal] [+ key padding] [+ block mask]) v without the (L, L) scores.

    q (B, Lq, H, D), k, v (B, Lk, H, D); key_mask (B, Lk) bool (True = attend) or None; mask_fn a
    hashable function ``(query positions (Lq, 1), key positions (1, bk)) -> bool`` (e.g. block
    diffusion's block-causal mask) or None; ``block`` keys at a time (Lk is padded to a multiple with
    masked keys). Returns (B, Lq, H, D) in q's dtype; gradients flow to q, k and v (custom VJP,
    recomputing each block).
    """
    lk = k.shape[1]
    key_mask = jnp.ones(k.shape[:2], bool) if key_mask is None else jnp.asarray(key_mask, bool)
    if key_mask.shape != k.shape[:2]:
        raise ValueError(f"key_mask has shape {key_mask.shape}; the keys are {k.shape[:2]} (batch, length).")
    block = min(block, lk)
    pad = -lk % block
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        k, v = jnp.pad(k, widths), jnp.pad(v, widths)
        key_mask = jnp.pad(key_mask, ((0, 0), (0, pad)))
    return _attention(q, k, v, key_mask, causal, mask_fn, block)
