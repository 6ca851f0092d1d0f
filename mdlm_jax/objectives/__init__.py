"""Training objectives by registry: ``diffusion.parameterization`` picks one (see ``base.Objective``).

Importing this package registers the built-in ones: ``subs`` (MDLM, ``masked_diffusion``), ``ar``
(the autoregressive baseline), ``d3pm`` (absorbing D3PM, ``absorbing_d3pm``) and ``sedd`` (score
entropy, ``score_entropy``). A new objective is one module whose class is decorated with
``register_objective``.
"""

from mdlm_jax.objectives import absorbing_d3pm, autoregressive, masked_diffusion, score_entropy  # noqa: F401
from mdlm_jax.objectives.base import OBJECTIVES, Objective, get_objective, register_objective

__all__ = ["OBJECTIVES", "Objective", "get_objective", "register_objective"]
