"""Backbones by registry (``model.name``): the DiT (bidirectional for MDLM, causal for the AR
baseline); ``register_model`` adds one."""

from mdlm_jax.models.registry import MODELS, get_model, register_model
from mdlm_jax.models.dit import DiT  # noqa: E402  (registers 'dit')

__all__ = ["DiT", "MODELS", "get_model", "register_model"]
