"""The MDLM math as pure jnp functions: schedules, forward process, losses, samplers, and the
paper's baselines (``d3pm``: absorbing D3PM; ``sedd``: score entropy; ``analytic``: SEDD's sampler)."""

from mdlm_jax.diffusion.d3pm import d3pm_log_probs, d3pm_token_loss
from mdlm_jax.diffusion.sedd import score_entropy, sedd_log_score

__all__ = ["d3pm_log_probs", "d3pm_token_loss", "score_entropy", "sedd_log_score"]
