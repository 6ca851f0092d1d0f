"""Denoisers: the DiT (bidirectional, MDLM) and its causal AR twin."""

from mdlm_jax.models.dit import DiT

__all__ = ["DiT"]
