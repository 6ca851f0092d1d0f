"""mdlm-jax: Masked Diffusion Language Models (Sahoo et al., NeurIPS 2024) in JAX/Flax."""

__version__ = "0.1.0"
