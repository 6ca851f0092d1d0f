"""PyTorch <-> JAX interop: the official MDLM DiT key layout (numpy only; torch is optional)."""

from mdlm_jax.interop.params import params_from_torch, params_to_torch, torch_param_names

__all__ = ["params_from_torch", "params_to_torch", "torch_param_names"]
