"""Time sampling for the loss and the forward (masking) process q(x_t | x_0) (SPEC sections 3, 4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mdlm_jax.validation import check_choice

TIME_SAMPLERS = ("uniform", "antithetic", "sobol")


def _bit_reverse32(i):
    """Reverses the 32 bits of a uint32 array (the base-2 radical inverse, times 2^32)."""
    i = ((i >> 1) & 0x55555555) | ((i & 0x55555555) << 1)
    i = ((i >> 2) & 0x33333333) | ((i & 0x33333333) << 2)
    i = ((i >> 4) & 0x0F0F0F0F) | ((i & 0x0F0F0F0F) << 4)
    i = ((i >> 8) & 0x00FF00FF) | ((i & 0x00FF00FF) << 8)
    return (i >> 16) | (i << 16)


def sobol_1d(rng, n: int, offset=0):
    """Points offset .. offset + n - 1 of a randomly digitally shifted 1-D Sobol sequence.

    The first Sobol dimension is the base-2 van der Corput sequence
    ``e_i = bitreverse(i) / 2^32``; a random 32-bit XOR shift drawn from ``rng`` makes every
    point marginally U[0, 1) while keeping the stratification: any 2^k consecutive points
    starting at a multiple of 2^k fall one in each interval [j / 2^k, (j + 1) / 2^k).
    Keep ``rng`` fixed across steps and advance ``offset`` by n to continue one sequence.
    Shapes: -> (n,) float32 in [0, 1).
    """
    shift = jax.random.bits(rng, (), jnp.uint32)
    idx = jnp.asarray(offset, jnp.uint32) + jnp.arange(n, dtype=jnp.uint32)
    bits = _bit_reverse32(idx) ^ shift
    # Keep the top 24 bits so the float32 conversion is exact and strictly below 1.
    return (bits >> 8).astype(jnp.float32) * (1.0 / (1 << 24))


def sample_t(rng, batch_size: int, *, sampler: str = "antithetic", sampling_eps: float = 1e-3,
             num_steps: int = 0, offset=0):
    """One diffusion time per sequence, t = (1 - sampling_eps) e + sampling_eps.

    - ``uniform``: e ~ U[0, 1) i.i.d.
    - ``antithetic``: e_i = (u / n + i / n) mod 1 with one shared u ~ U[0, 1); stratified over the
      whole (global) batch of n, which is at least as good as the official per-device version.
    - ``sobol``: randomized 1-D Sobol points ``offset .. offset + n - 1`` (see ``sobol_1d``).
    With ``num_steps = T > 0`` (discrete time) t is snapped to ``floor(t T) / T + 1 / T``.
    Shapes: -> t (batch_size,) float32.
    """
    check_choice(sampler, TIME_SAMPLERS, "time sampler")
    if sampler == "uniform":
        e = jax.random.uniform(rng, (batch_size,))
    elif sampler == "antithetic":
        u = jax.random.uniform(rng, ())
        e = antithetic_from_uniform(u, batch_size)
    else:
        e = sobol_1d(rng, batch_size, offset)
    t = (1 - sampling_eps) * e + sampling_eps
    if num_steps:
        t = discretize_t(t, num_steps)
    return t


def antithetic_from_uniform(u, n: int):
    """Stratified points e_i = (u_i / n + i / n) mod 1, i = 0..n-1.

    ``u`` of shape () is one shared draw (systematic sampling, our default); ``u`` of shape (n,)
    is the official per-row draw (stratified sampling). Both give marginally uniform e_i.
    Shapes: u () or (n,) -> (n,).
    """
    return jnp.mod(u / n + jnp.arange(n, dtype=jnp.float32) / n, 1.0)


def discretize_t(t, num_steps: int):
    """Discrete-time snapping, the official t <- float32(k) / float32(T) + float32(1 / T) with
    k = floor(t T): bitwise the official float32 grid on {1/T, ..., 1 + 1/T}.

    Computed as the formula is, XLA evaluates k / T as k * (1 / T) and fuses the add under jit,
    1 ulp off in some bins (t = 1.0000001 for the last one, which moves dsigma by 1.2e-4), so the
    T + 1 grid values come from numpy, correctly rounded (in float64 for float64 t).
    Shapes: t (any) -> same shape, float32 (float64).
    """
    dtype = np.dtype(jnp.promote_types(jnp.result_type(t), jnp.float32))
    grid = np.arange(num_steps + 1, dtype=dtype) / dtype.type(num_steps) + dtype.type(1 / num_steps)
    k = jnp.floor(t * num_steps).astype(jnp.int32)
    return jnp.asarray(grid)[k]


def mask_tokens(x0, move_chance, mask_id: int, u):
    """Forward process from given uniforms: x_t = where(u < move_chance, mask_id, x_0).

    Shapes: x0 (B, L) int, move_chance (B,) or (B, 1) or (B, L), u (B, L) -> x_t (B, L).
    """
    move_chance = jnp.asarray(move_chance)
    if move_chance.ndim == 1:
        move_chance = move_chance[:, None]
    return jnp.where(u < move_chance, jnp.asarray(mask_id, x0.dtype), x0)


def forward_process(rng, x0, move_chance, mask_id: int):
    """Samples x_t ~ q(x_t | x_0): each token independently masked with probability move_chance.

    Shapes: x0 (B, L) int, move_chance (B,) -> x_t (B, L).
    """
    u = jax.random.uniform(rng, x0.shape)
    return mask_tokens(x0, move_chance, mask_id, u)
