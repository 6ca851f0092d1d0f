"""SEDD (Lou et al. 2024) with the absorbing process, as the MDLM paper's baseline (SPEC section 14;
official ``parameterization='sedd'``): the backbone's output is a log score (scaled by the noise
level, zero at the current token) trained with the score-entropy loss in continuous time, and
sampled with the analytic (Tweedie tau-leaping) sampler."""

from __future__ import annotations

import jax.numpy as jnp

from mdlm_jax.diffusion import analytic, losses, sedd
from mdlm_jax.objectives.base import Apply, Objective, register_objective


@register_objective
class ScoreEntropy(Objective):
    """``diffusion.parameterization = 'sedd'``: loss dsigma(t) * score_entropy on masked tokens."""

    name = "sedd"
    predictors = ("analytic",)

    def __init__(self, cfg, *, mask_id, schedule):
        super().__init__(cfg, mask_id=mask_id, schedule=schedule)
        if not cfg.model.time_conditioning:
            # The official code zeroes sigma before log(expm1(sigma)): every loss is +inf.
            raise ValueError("diffusion.parameterization 'sedd' needs model.time_conditioning=True: its log score "
                             "is scaled by the noise level the model sees (the official code returns +inf losses "
                             "without it).")
        if cfg.diffusion.num_steps:
            raise ValueError("diffusion.parameterization 'sedd' is continuous time: set diffusion.num_steps=0.")
        if cfg.model.loss_chunk:
            raise ValueError("sedd needs the whole output over V: set model.loss_chunk=0.")

    def prepare(self, batch, rng, sobol_rng, sobol_offset=0):
        d = self.cfg.diffusion
        x0, am = batch["input_ids"], batch["attention_mask"].astype(jnp.float32)
        c = losses.corrupt(rng, x0, schedule=self.schedule, mask_id=self.mask_id, time_sampler=d.time_sampler,
                           sampling_eps=d.sampling_eps, sobol_rng=sobol_rng, sobol_offset=sobol_offset,
                           t=batch.get("t"), xt=batch.get("xt"))
        return dict(x0=x0, am=am, xt=c.xt, sigma=c.sigma, t=c.t)

    def token_losses(self, apply: Apply, ex):
        logits, _ = apply(ex["xt"], ex["sigma"])
        log_score = sedd.sedd_log_score(logits, ex["xt"], ex["sigma"], self.mask_id)
        entropy = sedd.score_entropy(log_score, ex["sigma"], ex["xt"], ex["x0"], self.mask_id)
        _, dsigma = self.schedule(ex["t"])
        return losses.reduce_loss(dsigma[:, None] * entropy, ex["am"])

    def block_sampler(self, model, num_given):
        c = self.cfg.sample

        def score(params):
            return analytic.make_score_fn(lambda x, sigma: model.apply({"params": params}, x, sigma), "sedd",
                                          mask_id=self.mask_id, time_conditioning=True)

        return lambda p, k, x: analytic.sample_analytic(  # noqa: E731
            score(p), k, x, schedule=self.schedule, mask_id=self.mask_id, num_steps=c.num_steps, noise=c.noise)

    def describe_sampler(self):
        return f"analytic T={self.cfg.sample.num_steps}"
