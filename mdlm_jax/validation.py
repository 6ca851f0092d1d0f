"""Input checks shared by the pure functions: they run only on concrete (non-traced) values.

Inside ``jit`` the values are tracers and the checks are skipped; callers validate at the
edges (data pipeline, CLI) where the values are concrete.
"""

from __future__ import annotations

import jax
import numpy as np


def _concrete(x):
    """Returns x as a numpy array, or None when x is being traced."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def check_unit_interval(t, name: str = "t") -> None:
    """Raises ValueError if a concrete t has entries outside [0, 1] (or is NaN)."""
    a = _concrete(t)
    if a is not None and a.size and not ((a >= 0) & (a <= 1)).all():
        bad = a[~((a >= 0) & (a <= 1))].ravel()[:3]
        raise ValueError(f"{name} must lie in [0, 1]; got values such as {bad.tolist()}.")


def check_token_ids(tokens, vocab_size: int, name: str = "tokens") -> None:
    """Raises ValueError if concrete token ids fall outside [0, vocab_size)."""
    a = _concrete(tokens)
    if a is None or not a.size:
        return
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integer token ids, got dtype {a.dtype}.")
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} must lie in [0, {vocab_size}); got min {lo}, max {hi}.")


def check_choice(value: str, choices, name: str) -> None:
    """Raises ValueError naming the argument if value is not one of choices."""
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {sorted(choices)}.")
