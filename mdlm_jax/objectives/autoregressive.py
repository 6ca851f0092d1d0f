"""The AR baseline on the same backbone (SPEC section 5): causal attention, no sigma, next-token
NLL (an exact perplexity, not a bound); sampled left to right from BOS."""

from __future__ import annotations

import jax.numpy as jnp

from mdlm_jax.diffusion import losses, sampling
from mdlm_jax.objectives.base import Apply, Objective, register_objective


@register_objective
class Autoregressive(Objective):
    """``diffusion.parameterization = 'ar'``: position l predicts x_0[l + 1]; the loss counts the
    L - 1 predicted tokens of each row (``attention_mask[:, 1:]``). Nothing is random, so
    evaluation makes one pass whatever ``eval.num_t``."""

    name = "ar"
    causal = True
    uses_sigma = False
    bound = False
    starts_with_bos = True
    token_nll_loss = True

    def prepare(self, batch, rng, sobol_rng, sobol_offset=0):
        return dict(x0=batch["input_ids"], am=batch["attention_mask"].astype(jnp.float32))

    def token_losses(self, apply: Apply, ex):
        out, nll = apply(ex["x0"], None)
        return losses.ar_loss(out, ex["x0"], ex["am"], self.mask_id, nll=nll)

    def eval_passes(self):
        return 1

    def block_sampler(self, model, num_given):
        c = self.cfg.sample
        return lambda p, k, x: sampling.sample_ar(  # noqa: E731
            lambda y: model.apply({"params": p}, y), k, x, mask_id=self.mask_id, start=num_given,
            temperature=c.temperature, top_p=c.top_p, noise=c.noise)

    def describe_sampler(self):
        return " ".join(["ar", super().describe_sampler()]).strip()
