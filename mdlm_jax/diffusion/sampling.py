"""The reverse process (SPEC section 9): ancestral (``ddpm``) and cached (``ddpm_cache``) grid samplers,
the exact first-hitting sampler, and ancestral sampling of the AR baseline.

Each runs in one ``lax`` loop so a single jit compiles the whole sampler. Categorical draws use
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
from mdlm_jax.diffusion.schedules import NoiseSchedule, get_schedule
from mdlm_jax.validation import check_choice

PREDICTORS = ("ddpm", "ddpm_cache")  # the time-grid samplers of ``sample``
ALL_PREDICTORS = PREDICTORS + ("first_hitting",)  # what a user may pick; first_hitting is ``sample_first_hitting``
# 'exact': see exponential_noise. 'float32': the official float32 Gumbel noise, kept only to
# measure the low-entropy bias it causes (SPEC section 8); never the default.
NOISES = ("exact", "float32")


class SampleOutput(NamedTuple):
    """tokens: (B, L) int32 samples; nfe: () int32 denoiser calls; reveal_step: (B, L) int32, the
    1-based step at which each position was unmasked (0 for positions given in x_init); each
    sampler says what its steps are, and ``semi_autoregressive`` numbers them across its blocks."""

    tokens: jax.Array
    nfe: jax.Array
    reveal_step: jax.Array


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


def categorical_noise(kind: str, rng, shape):
    """Race noise E for ``sample_categorical``: 'exact' (``exponential_noise``) or 'float32'
    (the official ``1e-10 - log(u + 1e-10)``, u ~ U[0, 1) float32, which caps g = -log E near 16.6)."""
    check_choice(kind, NOISES, "noise")
    if kind == "exact":
        return exponential_noise(rng, shape)
    return official_noise_from_uniforms(jax.random.uniform(rng, shape, jnp.float32))


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


def unmask_step(x, p_x0, mc_t, mc_s, rng, mask_id: int):
    """One ancestral step drawn in two stages, in the same distribution as ``reverse_step``: each
    masked position races "unmask" (weight mc_t - mc_s) against "stay masked" (weight mc_s), and
    only if some position unmasks is a token drawn from p_x0 (sum 1 over real tokens). At T >> L
    most steps unmask nothing and skip the (B, L, V) categorical noise.

    Shapes: x (B, L) int, p_x0 (B, L, V), mc_t / mc_s (B,) -> x_next (B, L).
    """
    k_move, k_token = jax.random.split(rng)
    race = exponential_noise(k_move, x.shape + (2,))
    unmask = (x == mask_id) & ((mc_t - mc_s)[:, None] * race[..., 1] > mc_s[:, None] * race[..., 0])

    def draw(x):
        token = sample_categorical(p_x0, exponential_noise(k_token, p_x0.shape))
        return jnp.where(unmask, token.astype(x.dtype), x)

    return jax.lax.cond(unmask.any(), draw, lambda x: x, x)


def nucleus(log_probs, top_p: float):
    """Top-p filtering: keeps the smallest set of most likely entries whose mass reaches top_p.

    Entries outside the nucleus get -inf; ties at the boundary are kept. Shapes: (..., V) -> (..., V).
    """
    sorted_lp = jnp.sort(log_probs, axis=-1)[..., ::-1]
    mass_before = jnp.cumsum(jnp.exp(sorted_lp), axis=-1) - jnp.exp(sorted_lp)
    # The smallest log-prob still in the nucleus: the last sorted entry whose preceding mass < top_p.
    kept = jnp.where(mass_before < top_p, sorted_lp, jnp.inf).min(axis=-1, keepdims=True)
    return jnp.where(log_probs >= kept, log_probs, -jnp.inf)


def shaped_probs(logits, x, mask_id: int, temperature: float = 1.0, top_p: float = 1.0):
    """SUBS probabilities p(x_0 | x_t) with temperature and nucleus applied to masked positions.

    Shapes: logits (B, L, V), x (B, L) -> (B, L, V) float32 (one-hot rows where x is not masked).
    """
    if temperature <= 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature must be > 0 and top_p in (0, 1]; got {temperature}, {top_p}.")
    logits = logits.astype(jnp.float32) / temperature
    log_probs = subs_log_probs(logits, x, mask_id)
    if top_p < 1:
        log_probs = jax.nn.log_softmax(nucleus(log_probs, top_p), axis=-1)
    return jnp.exp(log_probs)


def sample(denoise_fn: Callable, rng, x_init, *, schedule: NoiseSchedule, mask_id: int,
           num_steps: int, predictor: str = "ddpm", eps: float = 1e-5, noise_removal: bool = True,
           temperature: float = 1.0, top_p: float = 1.0, noise: str = "exact",
           time_conditioning: bool = False, parameterization: str = "subs", uniforms=None) -> SampleOutput:
    """Ancestral sampling from x_init (all-mask for unconditional; fixed tokens are carried over).

    Grid t_k = linspace(1, eps, T + 1), dt = (1 - eps) / T; step k moves t_k -> t_k - dt and calls
    the denoiser at sigma(t_k). ``ddpm`` uses mc = move_chance(t); ``ddpm_cache`` (official;
    loglinear schedule) uses mc(t) = t and, for a denoiser that ignores sigma, reuses
    p(x_0 | x_t) while x did not change, so most steps at T >> L call no network. With
    ``time_conditioning`` the denoiser's output depends on sigma, which changes every step, so
    ``ddpm_cache`` calls it at every step (as the official code does; NFEs count every step);
    ``ddpm`` calls it at every step anyway. ``noise_removal`` replaces the masks left at t = eps by
    argmax p(x_0 | x_t). ``temperature`` and ``top_p`` reshape p(x_0 | x_t) (see ``shaped_probs``);
    ``noise`` picks the categorical noise (``categorical_noise``): 'exact' steps with
    ``unmask_step``, 'float32' with the official one-race ``reverse_step``.
    ``denoise_fn(x (B, L) int, sigma (B,)) -> logits (B, L, V)``.

    ``parameterization='d3pm'`` (the absorbing D3PM baseline, official semantics): ``denoise_fn``
    returns log p(x_0 | x_t) over all V (no carry-over, the mask column possibly > 0); each step
    draws from ``reverse_probs`` of exp(log-probs) (the mask column overwritten by mc_s), and noise
    removal rewrites every position with the argmax over all V, unmasked ones included.

    ``uniforms`` (T, B, L, V), for parity with a recorded official chain: step i races with
    ``official_noise_from_uniforms(uniforms[i])`` instead of a draw from ``rng``; it needs
    ``noise='float32'``, the noise those uniforms make (noise removal draws nothing).
    Shapes: x_init (B, L) int -> SampleOutput.
    """
    check_choice(parameterization, ("subs", "d3pm"), "parameterization")
    d3pm = parameterization == "d3pm"
    if d3pm and (temperature != 1 or top_p != 1):
        raise ValueError("temperature and top_p reshape SUBS probabilities; the d3pm sampler takes neither.")
    check_choice(predictor, ALL_PREDICTORS, "predictor")
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor {predictor!r} has no time grid: call sample_first_hitting(...) instead of "
                         "sample(...).")
    check_choice(noise, NOISES, "noise")
    if predictor == "ddpm_cache" and schedule.name != "loglinear":
        raise ValueError("predictor 'ddpm_cache' assumes the loglinear schedule (move chance t); "
                         f"got schedule {schedule.name!r}: use predictor 'ddpm'.")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    x_init = jnp.asarray(x_init, jnp.int32)
    if uniforms is not None:
        uniforms = jnp.asarray(uniforms, jnp.float32)
        if noise != "float32":
            raise ValueError(f"uniforms are draws of the official float32 noise: pass noise='float32', "
                             f"got {noise!r}.")
        if uniforms.ndim != 4 or uniforms.shape[:3] != (num_steps,) + x_init.shape:
            raise ValueError(f"uniforms must have shape (num_steps, B, L, V) = ({num_steps}, {x_init.shape[0]}, "
                             f"{x_init.shape[1]}, V); got {uniforms.shape}.")
    batch = x_init.shape[0]
    timesteps = jnp.linspace(1.0, eps, num_steps + 1)
    dt = (1.0 - eps) / num_steps
    # The cache is exact only while the output cannot change: same x and a denoiser blind to sigma.
    reuse = predictor == "ddpm_cache" and not time_conditioning
    move_chance = (lambda t: t) if predictor == "ddpm_cache" else schedule.move_chance

    def probs(x, t):
        sigma = schedule.sigma(jnp.full((batch,), t))
        if d3pm:
            return jnp.exp(denoise_fn(x, sigma).astype(jnp.float32))
        return shaped_probs(denoise_fn(x, sigma), x, mask_id, temperature, top_p)

    def body(i, carry):
        x, cache, valid, nfe, reveal = carry
        t = timesteps[i]
        tb = jnp.full((batch,), t)
        if reuse:
            p_x0 = jax.lax.cond(valid, lambda: cache, lambda: probs(x, t))
            nfe = nfe + jnp.where(valid, 0, 1)
            cache = p_x0
        else:
            p_x0 = probs(x, t)
            nfe = nfe + 1
        mc_t, mc_s = move_chance(tb), move_chance(tb - dt)
        if noise == "exact" and not d3pm:
            x_next = unmask_step(x, p_x0, mc_t, mc_s, jax.random.fold_in(rng, i), mask_id)
        else:  # the official one-race step, to reproduce its float32 noise exactly
            if uniforms is None:
                race = categorical_noise(noise, jax.random.fold_in(rng, i), x.shape + (p_x0.shape[-1],))
            else:
                race = official_noise_from_uniforms(uniforms[i])
            x_next, _ = reverse_step(x, p_x0, mc_t, mc_s, mask_id, race)
        reveal = jnp.where(x_next != x, i + 1, reveal)
        return x_next, cache, jnp.all(x_next == x), nfe, reveal

    # Only a reusing predictor carries p(x_0 | x_t) (B, L, V) between steps.
    if reuse:
        vocab = jax.eval_shape(denoise_fn, x_init, jnp.zeros((batch,), jnp.float32)).shape[-1]
        cache0 = jnp.zeros(x_init.shape + (vocab,), jnp.float32)
    else:
        cache0 = jnp.zeros((), jnp.float32)
    carry = (x_init, cache0, jnp.array(False), jnp.array(0, jnp.int32), jnp.zeros_like(x_init))
    x, _, _, nfe, reveal = jax.lax.fori_loop(0, num_steps, body, carry)
    if noise_removal:
        sigma = schedule.sigma(jnp.full((batch,), timesteps[-1]))
        out = denoise_fn(x, sigma)
        best = jnp.argmax(out if d3pm else subs_log_probs(out, x, mask_id), axis=-1).astype(x.dtype)
        rewritten = jnp.ones_like(x, bool) if d3pm else x == mask_id
        reveal = jnp.where(rewritten & (best != x), num_steps + 1, reveal)
        x = jnp.where(rewritten, best, x)
        nfe = nfe + 1
    return SampleOutput(x, nfe, reveal)


def sample_first_hitting(denoise_fn: Callable, rng, x_init, *, mask_id: int,
                         schedule: NoiseSchedule = get_schedule("loglinear"), temperature: float = 1.0,
                         top_p: float = 1.0, noise: str = "exact") -> SampleOutput:
    """Exact first-hitting sampler (Zheng et al., 2024), with or without time conditioning.

    In the forward process a token is masked at time t iff its threshold U ~ U[0, 1] is below
    move_chance(t), so, whatever the schedule, a token still masked at move chance m has U uniform
    on [0, m], and the reverse process reveals it when the move chance falls below U. With n masked
    tokens in a row the next event is the largest of n such thresholds,

        m' = m u^(1/n), u ~ U(0, 1), i.e. log m' = log m - E / n with E ~ Exp(1),

    where one masked position, uniformly at random, takes a token from p(x_0 | x_t) computed at
    the sigma of that noise level, sigma' = -log(1 - m') (what the model saw in training). Each row
    starts from m = schedule.move_chance(1) and keeps its own m and n (prefixes / infill leave
    fewer masks). The schedule matters only through move_chance(1); it defaults to loglinear, the
    paper's: pass the model's own schedule for a time-conditioned model. One denoiser call per
    event: nfe is the largest number of masks in a row, and reveal_step the event (1-based) at which
    a position was revealed (0 for given positions).
    ``denoise_fn(x (B, L) int, sigma (B,)) -> logits (B, L, V)``. Shapes: x_init (B, L) int -> SampleOutput.
    """
    check_choice(noise, NOISES, "noise")
    x_init = jnp.asarray(x_init, jnp.int32)
    batch = x_init.shape[0]
    # m is tracked in log space: near m = 1 (sigma(1) large) 1 - m would round to 0 in float32.
    log_m0 = jnp.log(schedule.move_chance(jnp.ones((batch,), jnp.float32)))

    def body(carry):
        x, log_m, nfe, reveal = carry
        masked = x == mask_id
        count = masked.sum(axis=-1)
        update = count > 0
        # Three streams: the event's noise level, the revealed position, its token.
        k_time, k_pos, k_tok = jax.random.split(jax.random.fold_in(rng, nfe), 3)
        drop = exponential_noise(k_time, (batch,)).astype(log_m.dtype) / jnp.maximum(count, 1)
        log_m = jnp.where(update, log_m - drop, log_m)
        # -log1p(-m'), exact near m' = 1; 0 for a row with nothing to reveal (m may round to 1 there).
        sigma = jnp.where(update, -jnp.log(-jnp.expm1(log_m)), 0.0)
        p_x0 = shaped_probs(denoise_fn(x, sigma), x, mask_id, temperature, top_p)
        # A uniformly random masked position per row: the masked entry with the largest random key.
        pos = jnp.argmax(jnp.where(masked, jax.random.uniform(k_pos, x.shape), -1.0), axis=-1)
        probs_at = jnp.take_along_axis(p_x0, pos[:, None, None], axis=1)[:, 0]
        token = sample_categorical(probs_at, categorical_noise(noise, k_tok, probs_at.shape))
        rows = jnp.arange(batch)
        x = x.at[rows, pos].set(jnp.where(update, token, x[rows, pos]))
        reveal = reveal.at[rows, pos].set(jnp.where(update, nfe + 1, reveal[rows, pos]))
        return x, log_m, nfe + 1, reveal

    carry = (x_init, log_m0, jnp.array(0, jnp.int32), jnp.zeros_like(x_init))
    x, _, nfe, reveal = jax.lax.while_loop(lambda c: jnp.any(c[0] == mask_id), body, carry)
    return SampleOutput(x, nfe, reveal)


def sample_ar(logits_fn: Callable, rng, x_init, *, mask_id: int, temperature: float = 1.0, top_p: float = 1.0,
              noise: str = "exact", start: int = 1) -> SampleOutput:
    """Ancestral sampling of the AR baseline: x[:, l] ~ shaped softmax(logits(x)[:, l - 1]) for l >= start.

    Positions < ``start`` of ``x_init`` (BOS, then an encoded prefix) are kept; the mask token is
    never drawn. ``temperature``, ``top_p`` and ``noise`` mean what they mean for the diffusion
    samplers (``shaped_probs``, ``categorical_noise``). One full causal forward per drawn position:
    nfe = L - start; reveal_step is 0 for kept positions and l - start + 1 for position l.
    ``logits_fn(x (B, L) int) -> logits (B, L, V)``, causal. Shapes: x_init (B, L) int -> SampleOutput.
    """
    check_choice(noise, NOISES, "noise")
    x_init = jnp.asarray(x_init, jnp.int32)
    batch, length = x_init.shape
    if not 1 <= start <= length:
        raise ValueError(f"start must lie in [1, {length}] (the sequence length): position 0 holds BOS and each "
                         f"drawn token needs one before it; got {start}.")
    unknown = jnp.full((batch, 1), mask_id, jnp.int32)

    def body(i, x):
        logits = jax.lax.dynamic_index_in_dim(logits_fn(x), i - 1, axis=1)  # (B, 1, V)
        # The next token is an unknown slot: SUBS zero-masking is the AR head's softmax without the mask.
        q = shaped_probs(logits, unknown, mask_id, temperature, top_p)[:, 0]
        token = sample_categorical(q, categorical_noise(noise, jax.random.fold_in(rng, i), q.shape))
        return x.at[:, i].set(token)

    x = jax.lax.fori_loop(start, length, body, x_init)
    positions = jnp.arange(length, dtype=jnp.int32)
    reveal = jnp.broadcast_to(jnp.maximum(positions - start + 1, 0), x.shape)
    return SampleOutput(x, jnp.array(length - start, jnp.int32), reveal)


def semi_autoregressive(sample_block: Callable, rng, x_init, *, stride: int, num_strides: int,
                        mask_id: int, on_block: Callable | None = None) -> SampleOutput:
    """Generation beyond the model length (official ``sample_subs_guidance``).

    ``sample_block(rng, x_init (B, L)) -> SampleOutput`` samples one block. After the first block,
    the last ``L - stride`` tokens become the fixed prefix of the next block and ``stride`` new
    positions are generated, ``num_strides`` times: the result has L + num_strides * stride tokens
    and no committed token ever changes. Step numbers run on across blocks: a block's reveal steps
    are offset by the largest step committed before it (over the whole batch), so every step of
    block k exceeds every step of blocks 0..k-1 and 0 still marks given tokens. ``nfe`` sums the
    blocks'. ``on_block(k, out)``, if given, is called on the host after block k (0 .. num_strides)
    with the output so far (tokens, nfe and reveal_step of blocks 0..k).
    Shapes: x_init (B, L) -> SampleOutput (B, L + n * stride).
    """
    length = x_init.shape[1]
    if not 0 < stride <= length:
        raise ValueError(f"stride must lie in [1, {length}] (the block length), got {stride}.")
    out = sample_block(jax.random.fold_in(rng, 0), x_init)
    if on_block is not None:
        on_block(0, out)
    tokens, nfe, reveal = out.tokens, out.nfe, out.reveal_step
    new = jnp.full((x_init.shape[0], stride), mask_id, tokens.dtype)
    for i in range(1, num_strides + 1):
        block = jnp.concatenate([tokens[:, tokens.shape[1] - (length - stride):], new], axis=1)
        out = sample_block(jax.random.fold_in(rng, i), block)
        steps = out.reveal_step[:, -stride:]
        tokens = jnp.concatenate([tokens, out.tokens[:, -stride:]], axis=1)
        reveal = jnp.concatenate([reveal, jnp.where(steps > 0, steps + reveal.max(), 0)], axis=1)
        nfe = nfe + out.nfe
        if on_block is not None:
            on_block(i, SampleOutput(tokens, nfe, reveal))
    return SampleOutput(tokens, nfe, reveal)
