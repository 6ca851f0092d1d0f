"""Absorbing D3PM (Austin et al. 2021) in discrete time, as the MDLM paper's baseline and its
Table 8 ablations (SPEC section 14; official ``parameterization='d3pm'``).

The model's logits become log-probs over all V (``diffusion.subs_masking`` adds -1e6 to the mask
column: Table 8's "w/o carry-over" row; off, the mask keeps probability: "w/o zero masking", the
D3PM-equivalent row); there is no carry-over. The loss is the official ``_d3pm_loss`` on masked
tokens plus the reconstruction term -log p(x_0 | x_0, sigma = 0) on every token, from a second
forward pass on the clean tokens. ``diffusion.importance_sampling`` and ``change_of_variables``
are the official ``training.*`` options (BASELINES.md); t and the masks follow the official
float32 order, so a batch fed recorded draws reproduces the official losses.
"""

from __future__ import annotations

import jax.numpy as jnp

from mdlm_jax.diffusion import d3pm, losses, sampling
from mdlm_jax.objectives.base import Apply, Objective, register_objective


@register_objective
class AbsorbingD3PM(Objective):
    """``diffusion.parameterization = 'd3pm'``: T = ``diffusion.num_steps`` (> 0; the paper: 1000)."""

    name = "d3pm"
    predictors = ("ddpm", "ddpm_cache")

    def __init__(self, cfg, *, mask_id, schedule):
        super().__init__(cfg, mask_id=mask_id, schedule=schedule)
        d = cfg.diffusion
        if d.num_steps < 1:
            raise ValueError("diffusion.parameterization 'd3pm' is discrete time: set diffusion.num_steps "
                             "(the paper's D3PM rows use 1000).")
        if schedule.name != "loglinear":
            raise ValueError(f"d3pm's reconstruction term assumes the loglinear schedule (sigma(0) = 0), as the "
                             f"official code does; got diffusion.schedule {schedule.name!r}.")
        self._eps = float(dict(d.schedule_params).get("eps", 1e-3))
        t_min = float(d3pm.d3pm_time(jnp.full((1,), d.sampling_eps, jnp.float32), d.num_steps,
                                     importance_sampling=d.importance_sampling, eps=self._eps)[0])
        if t_min * d.num_steps < 1.5:  # the first bin t = 1/T: t - 1/T = 0 and the bound is NaN
            raise ValueError(
                f"diffusion.sampling_eps {d.sampling_eps} puts t in the first of diffusion.num_steps {d.num_steps} "
                f"bins{' after importance sampling' if d.importance_sampling else ''}, where the d3pm bound is "
                "NaN (s = t - 1/T = 0): raise sampling_eps to at least 1/T or raise num_steps.")
        if cfg.model.loss_chunk:
            raise ValueError("d3pm needs the whole log-softmax over V (the mask column included): set "
                             "model.loss_chunk=0.")

    def prepare(self, batch, rng, sobol_rng, sobol_offset=0):
        d = self.cfg.diffusion
        x0, am = batch["input_ids"], batch["attention_mask"].astype(jnp.float32)
        t, xt, sigma = d3pm.official_draws(
            rng, sobol_rng, x0, time_sampler=d.time_sampler, sampling_eps=d.sampling_eps, sobol_offset=sobol_offset,
            num_steps=d.num_steps, importance_sampling=d.importance_sampling,
            change_of_variables=d.change_of_variables, mask_id=self.mask_id, eps=self._eps, t=batch.get("t"),
            xt=batch.get("xt"))
        return dict(x0=x0, am=am, xt=xt, sigma=sigma, t=t)

    def token_losses(self, apply: Apply, ex):
        d = self.cfg.diffusion
        logits, _ = apply(ex["xt"], ex["sigma"])
        log_probs = d3pm.d3pm_log_probs(logits, self.mask_id, d.subs_masking)
        diffusion = d3pm.d3pm_token_loss(log_probs, ex["xt"], ex["x0"], ex["t"], self.mask_id, d.num_steps)
        clean, _ = apply(ex["x0"], jnp.zeros_like(ex["sigma"]))
        recon = d3pm.reconstruction_loss(d3pm.d3pm_log_probs(clean, self.mask_id, d.subs_masking), ex["x0"])
        return losses.reduce_loss(recon + diffusion, ex["am"])

    def block_sampler(self, model, num_given):
        c, d = self.cfg.sample, self.cfg.diffusion

        def log_probs(params):
            return lambda x, sigma: d3pm.d3pm_log_probs(model.apply({"params": params}, x, sigma), self.mask_id,
                                                         d.subs_masking)

        return lambda p, k, x: sampling.sample(  # noqa: E731
            log_probs(p), k, x, schedule=self.schedule, mask_id=self.mask_id, num_steps=c.num_steps,
            predictor=c.predictor, time_conditioning=model.time_conditioning, noise=c.noise,
            parameterization="d3pm")

    def describe_sampler(self):
        c = self.cfg.sample
        return " ".join([c.predictor, f"T={c.num_steps}", "d3pm", super().describe_sampler()]).strip()

