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
A query with no key to attend to (every key masked) outputs zeros. Inside, q, k and v are
head-major (B, H, L, D), so no block's matmul needs a transpose, and without a mask of any kind the
masking passes over the scores are left out (on CPU both cut the forward + backward by a quarter).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

DEFAULT_BLOCK = 128


def _block_mask(q_pos, k_pos, key_mask_block, causal: bool, mask_fn):
    """(B or 1, 1, Lq, bk) bool, or None where every pair may attend (no mask of any kind: the
    mask's passes over the scores are left out at trace time)."""
    masks = [] if key_mask_block is None else [key_mask_block[:, None, None, :]]
    if causal:
        masks.append((k_pos[None, :] <= q_pos[:, None])[None, None])
    if mask_fn is not None:
        masks.append(mask_fn(q_pos[:, None], k_pos[None, :])[None, None])
    return functools.reduce(jnp.logical_and, masks) if masks else None


def _scores(q, k_block, scale):
    """(B, H, Lq, bk) float32 scores of the queries (B, H, Lq, D) against one key block (B, H, bk, D)."""
    return jnp.einsum("bhqd,bhkd->bhqk", q, k_block, preferred_element_type=jnp.float32) * scale


def _key_blocks(x, block: int):
    """(B, L, H, D) -> (L / block, B, H, block, D): the scan's leading axis, heads before positions
    (each block's matmuls then need no transpose)."""
    b, n, h, d = x.shape[0], x.shape[1] // block, x.shape[2], x.shape[3]
    return x.reshape(b, n, block, h, d).transpose(1, 0, 3, 2, 4)


def _unblock(x):
    """(n, B, H, block, D) -> (B, n * block, H, D), ``_key_blocks``' inverse."""
    n, b, h, block, d = x.shape
    return x.transpose(1, 0, 3, 2, 4).reshape(b, n * block, h, d)


def _scan_inputs(k, v, key_mask, block: int):
    """Per key block: keys, values, key mask (or None) and positions, stacked on a leading axis."""
    mask = None if key_mask is None else jnp.moveaxis(key_mask.reshape(key_mask.shape[0], -1, block), 1, 0)
    return _key_blocks(k, block), _key_blocks(v, block), mask, jnp.arange(k.shape[1]).reshape(-1, block)


def _forward(q, k, v, key_mask, causal: bool, mask_fn, block: int):
    """q (B, Lq, H, D) -> (out (B, H, Lq, D) float32, lse (B, H, Lq) float32)."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    b, lq, h, d = q.shape
    qh = jnp.swapaxes(q, 1, 2)
    q_pos = jnp.arange(lq)
    masked = key_mask is not None or causal or mask_fn is not None

    def step(carry, xs):
        m, l, acc = carry
        k_j, v_j, mask_j, k_pos = xs
        s = _scores(qh, k_j, scale)
        if masked:
            s = jnp.where(_block_mask(q_pos, k_pos, mask_j, causal, mask_fn), s, -jnp.inf)
        m_new = jnp.maximum(m, s.max(-1))
        if masked:  # a query that has seen no key yet keeps m = -inf: keep exp() finite
            m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            correction = jnp.exp(jnp.where(jnp.isfinite(m), m - m_safe, -jnp.inf))
        else:  # every score is finite, so is m_new; exp(-inf - m_new) = 0 at the first block
            m_safe, correction = m_new, jnp.exp(m - m_new)
        p = jnp.exp(s - m_safe[..., None])
        l = l * correction + p.sum(-1)
        acc = acc * correction[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p.astype(v_j.dtype), v_j,
                                                       preferred_element_type=jnp.float32)
        return (m_new, l, acc), None

    init = (jnp.full((b, h, lq), -jnp.inf, jnp.float32), jnp.zeros((b, h, lq), jnp.float32),
            jnp.zeros((b, h, lq, d), jnp.float32))
    (m, l, acc), _ = jax.lax.scan(step, init, _scan_inputs(k, v, key_mask, block))
    if not masked:
        return acc / l[..., None], m + jnp.log(l)
    empty = l == 0
    out = jnp.where(empty[..., None], 0.0, acc / jnp.where(empty, 1.0, l)[..., None])
    lse = jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))  # inf: p = 0 in the backward pass
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _attention(q, k, v, key_mask, causal: bool, mask_fn, block: int):
    return jnp.swapaxes(_forward(q, k, v, key_mask, causal, mask_fn, block)[0], 1, 2).astype(q.dtype)


def _attention_fwd(q, k, v, key_mask, causal, mask_fn, block):
    out, lse = _forward(q, k, v, key_mask, causal, mask_fn, block)
    return jnp.swapaxes(out, 1, 2).astype(q.dtype), (q, k, v, key_mask, out.astype(q.dtype), lse)


def _attention_bwd(causal, mask_fn, block, residuals, dout):
    q, k, v, key_mask, out, lse = residuals
    scale = 1.0 / math.sqrt(q.shape[-1])
    q_pos = jnp.arange(q.shape[1])
    qh = jnp.swapaxes(q, 1, 2).astype(jnp.float32)
    do = jnp.swapaxes(dout, 1, 2).astype(jnp.float32)
    delta = jnp.einsum("bhqd,bhqd->bhq", do, out.astype(jnp.float32))

    def step(dq, xs):
        k_j, v_j, mask_j, k_pos = xs
        p = jnp.exp(_scores(qh, k_j.astype(jnp.float32), scale) - lse[..., None])
        ok = _block_mask(q_pos, k_pos, mask_j, causal, mask_fn)
        if ok is not None:
            p = jnp.where(ok, p, 0.0)
        dv_j = jnp.einsum("bhqk,bhqd->bhkd", p, do)
        ds = p * (jnp.einsum("bhqd,bhkd->bhqk", do, v_j.astype(jnp.float32)) - delta[..., None])
        dq = dq + jnp.einsum("bhqk,bhkd->bhqd", ds, k_j.astype(jnp.float32))
        dk_j = jnp.einsum("bhqk,bhqd->bhkd", ds, qh) * scale
        return dq, (dk_j, dv_j)

    dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(qh.shape, jnp.float32), _scan_inputs(k, v, key_mask, block))
    dkm = None if key_mask is None else jnp.zeros(key_mask.shape, jax.dtypes.float0)
    return (jnp.swapaxes(dq * scale, 1, 2).astype(q.dtype), _unblock(dk).astype(k.dtype),
            _unblock(dv).astype(v.dtype), dkm)


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
    if key_mask is not None:
        key_mask = jnp.asarray(key_mask, bool)
        if key_mask.shape != k.shape[:2]:
            raise ValueError(f"key_mask has shape {key_mask.shape}; the keys are {k.shape[:2]} (batch, length).")
    block = min(block, lk)
    pad = -lk % block
    if pad:
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        k, v = jnp.pad(k, widths), jnp.pad(v, widths)
        key_mask = jnp.pad(jnp.ones((k.shape[0], lk), bool) if key_mask is None else key_mask,
                           ((0, 0), (0, pad)))
    return _attention(q, k, v, key_mask, causal, mask_fn, block)
