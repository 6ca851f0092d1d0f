"""Training objectives by registry: ``diffusion.parameterization`` picks one (see ``base.Objective``).

Importing this package registers the built-in ones: ``subs`` (MDLM, ``masked_diffusion``) and
``ar`` (the autoregressive baseline). A new objective is one module whose class is decorated with
``register_objective``.
"""

from mdlm_jax.objectives import autoregressive, masked_diffusion  # noqa: F401  (registers them)
from mdlm_jax.objectives.base import OBJECTIVES, Objective, get_objective, register_objective

__all__ = ["OBJECTIVES", "Objective", "get_objective", "register_objective"]
