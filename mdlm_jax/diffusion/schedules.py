"""Noise schedules of the absorbing-state process (SPEC section 2).

A schedule gives the total noise ``sigma(t)`` and its rate ``dsigma(t) = d sigma / dt``
for ``t`` in [0, 1]. A token is still clean at time t with probability
``alpha(t) = exp(-sigma(t))`` and masked with ``move_chance(t) = -expm1(-sigma(t))``.

Adding a schedule is one function ``f(t, **params) -> (sigma, dsigma)`` plus one line in
``SCHEDULES``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Callable

import jax.numpy as jnp

from mdlm_jax.validation import check_unit_interval


def loglinear(t, eps: float = 1e-3):
    """Log-linear schedule (paper default): alpha(t) = 1 - (1 - eps) t.

    sigma(t) = -log1p(-(1 - eps) t),  dsigma(t) = (1 - eps) / (1 - (1 - eps) t).
    Shapes: t (...,) -> sigma, dsigma (...,).
    """
    sigma = -jnp.log1p(-(1 - eps) * t)
    dsigma = (1 - eps) / (1 - (1 - eps) * t)
    return sigma, dsigma


def cosine(t, eps: float = 1e-3):
    """Cosine schedule: alpha(t) = eps + (1 - eps) cos(pi t / 2).

    sigma(t) = -log(eps + (1 - eps) cos(pi t / 2)),
    dsigma(t) = (pi / 2)(1 - eps) sin(pi t / 2) / ((1 - eps) cos(pi t / 2) + eps).
    Shapes: t (...,) -> sigma, dsigma (...,).
    """
    cos = (1 - eps) * jnp.cos(t * jnp.pi / 2)
    sin = (1 - eps) * jnp.sin(t * jnp.pi / 2)
    return -jnp.log(eps + cos), (jnp.pi / 2) * sin / (cos + eps)


def cosinesqr(t, eps: float = 1e-3):
    """Squared-cosine schedule: alpha(t) = eps + (1 - eps) cos^2(pi t / 2).

    sigma(t) = -log(eps + (1 - eps) cos^2(pi t / 2)),
    dsigma(t) = (pi / 2)(1 - eps) sin(pi t) / ((1 - eps) cos^2(pi t / 2) + eps).
    Shapes: t (...,) -> sigma, dsigma (...,).
    """
    cos = (1 - eps) * jnp.cos(t * jnp.pi / 2) ** 2
    sin = (1 - eps) * jnp.sin(t * jnp.pi)
    return -jnp.log(eps + cos), (jnp.pi / 2) * sin / (cos + eps)


def linear(t, sigma_min: float = 1e-3, sigma_max: float = 7.0):
    """Linear total noise: sigma(t) = sigma_min + t (sigma_max - sigma_min).

    dsigma(t) = sigma_max - sigma_min (broadcast to t's shape).
    Shapes: t (...,) -> sigma, dsigma (...,).
    """
    sigma = sigma_min + t * (sigma_max - sigma_min)
    return sigma, jnp.full_like(sigma, sigma_max - sigma_min)


def geometric(t, sigma_min: float = 1e-4, sigma_max: float = 20.0):
    """Geometric total noise: sigma(t) = sigma_min^(1 - t) sigma_max^t.

    dsigma(t) = sigma(t) (log sigma_max - log sigma_min).
    Shapes: t (...,) -> sigma, dsigma (...,).
    """
    sigma = sigma_min ** (1 - t) * sigma_max**t
    return sigma, sigma * (math.log(sigma_max) - math.log(sigma_min))


def polynomial(t, k: float = 1.0, eps: float = 1e-3):
    """MD4-style polynomial schedule: alpha(t) = 1 - (1 - eps) t^k (k = 1 is loglinear).

    sigma(t) = -log1p(-(1 - eps) t^k),  dsigma(t) = (1 - eps) k t^(k-1) / (1 - (1 - eps) t^k).
    Shapes: t (...,) -> sigma, dsigma (...,).
    """
    tk = t**k
    return -jnp.log1p(-(1 - eps) * tk), (1 - eps) * k * t ** (k - 1) / (1 - (1 - eps) * tk)


SCHEDULES: dict[str, Callable] = {
    "loglinear": loglinear,
    "cosine": cosine,
    "cosinesqr": cosinesqr,
    "linear": linear,
    "geometric": geometric,
    "polynomial": polynomial,
}


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """A named schedule with bound parameters; hashable, so it can be a static jit argument."""

    name: str
    params: tuple = ()

    @property
    def fn(self) -> Callable:
        return SCHEDULES[self.name]

    def __call__(self, t):
        """t (...,) in [0, 1] -> (sigma, dsigma), both (...,) float32."""
        check_unit_interval(t, "t")
        t = jnp.asarray(t, jnp.result_type(t, jnp.float32))
        return self.fn(t, **dict(self.params))

    def sigma(self, t):
        return self(t)[0]

    def dsigma(self, t):
        return self(t)[1]

    def alpha(self, t):
        """Probability that a token is still clean: exp(-sigma(t))."""
        return jnp.exp(-self.sigma(t))

    def move_chance(self, t):
        """Probability that a token is masked: 1 - alpha(t) = -expm1(-sigma(t))."""
        return -jnp.expm1(-self.sigma(t))


def get_schedule(name: str, **params) -> NoiseSchedule:
    """Looks up a schedule by name; unknown names or parameters raise ValueError."""
    if name not in SCHEDULES:
        raise ValueError(f"Unknown noise schedule {name!r}; choose one of {sorted(SCHEDULES)}.")
    allowed = set(inspect.signature(SCHEDULES[name]).parameters) - {"t"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(
            f"Noise schedule {name!r} takes parameters {sorted(allowed)}, got unknown {sorted(unknown)}."
        )
    return NoiseSchedule(name, tuple(sorted((k, float(v)) for k, v in params.items())))

