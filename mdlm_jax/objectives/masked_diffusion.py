"""MDLM's objective (SPEC sections 4, 5): absorbing-state corruption, the SUBS denoiser and the
continuous-time (or T-step) NELBO; sampled with ``ddpm``, ``ddpm_cache``, ``first_hitting`` or
SEDD's ``analytic`` sampler (which, for SUBS, draws what ``ddpm`` draws: BASELINES.md)."""

from __future__ import annotations

import jax.numpy as jnp

from mdlm_jax.diffusion import analytic, d3pm, losses, sampling
from mdlm_jax.objectives.base import Apply, Objective, register_objective


@register_objective
class MaskedDiffusion(Objective):
    """``diffusion.parameterization = 'subs'``: one t per sequence (``diffusion.time_sampler``),
    tokens masked with probability move_chance(t), loss -log p(x_0 | x_t) on masked tokens times
    the NELBO weight (``diffusion.num_steps`` = 0: continuous time, else T steps).

    A batch may carry recorded draws: ``t`` (B,) and, optionally, ``xt`` (B, L); they replace the
    drawn ones, so a run can be replayed against another implementation step for step.
    """

    name = "subs"
    predictors = sampling.ALL_PREDICTORS + ("analytic",)
    token_nll_loss = True

    def prepare(self, batch, rng, sobol_rng, sobol_offset=0):
        d = self.cfg.diffusion
        x0, am = batch["input_ids"], batch["attention_mask"].astype(jnp.float32)
        if d.get("importance_sampling", False) or d.get("change_of_variables", False):
            return self._prepare_official_variant(batch, rng, sobol_rng, sobol_offset)
        c = losses.corrupt(rng, x0, schedule=self.schedule, mask_id=self.mask_id, time_sampler=d.time_sampler,
                           sampling_eps=d.sampling_eps, num_steps=d.num_steps, sobol_rng=sobol_rng,
                           sobol_offset=sobol_offset, t=batch.get("t"), xt=batch.get("xt"))
        return dict(x0=x0, am=am, xt=c.xt, sigma=c.sigma, weight=c.weight, t=c.t)

    def _prepare_official_variant(self, batch, rng, sobol_rng, sobol_offset):
        """The official continuous-time ``training.importance_sampling`` / ``change_of_variables``
        (BASELINES.md): t transformed so the log move chance is linear in t (IS), or the move chance
        exp(f_0 + t (f_T - f_0)) with the backbone seeing t (CoV); both weigh every masked token by
        the constant -log1p(-exp(-sigma_min)) instead of dsigma / expm1(sigma)."""
        d = self.cfg.diffusion
        eps = float(dict(d.schedule_params).get("eps", 1e-3))
        x0, am = batch["input_ids"], batch["attention_mask"].astype(jnp.float32)
        t, xt, sigma = d3pm.official_draws(
            rng, sobol_rng, x0, time_sampler=d.time_sampler, sampling_eps=d.sampling_eps, sobol_offset=sobol_offset,
            num_steps=0, importance_sampling=d.importance_sampling, change_of_variables=d.change_of_variables,
            mask_id=self.mask_id, eps=eps, t=batch.get("t"), xt=batch.get("xt"))
        sigma_min, _ = d3pm.loglinear_sigma_range(eps)
        weight = jnp.full(x0.shape[:1], -jnp.log1p(-jnp.exp(-sigma_min)))
        return dict(x0=x0, am=am, xt=xt, sigma=sigma, weight=weight, t=t)

    def token_losses(self, apply: Apply, ex):
        out, nll = apply(ex["xt"], ex["sigma"])
        return losses.masked_diffusion_loss(out, ex["x0"], ex["xt"], ex["weight"], ex["am"], self.mask_id, nll=nll)

    def block_sampler(self, model, num_given):
        c = self.cfg.sample
        shaping = dict(temperature=c.temperature, top_p=c.top_p, noise=c.noise)

        def denoise(params):
            return lambda x, sigma: model.apply({"params": params}, x, sigma)

        if c.predictor == "analytic":
            return lambda p, k, x: analytic.sample_analytic(  # noqa: E731
                analytic.make_score_fn(denoise(p), "subs", mask_id=self.mask_id,
                                       time_conditioning=model.time_conditioning),
                k, x, schedule=self.schedule, mask_id=self.mask_id, num_steps=c.num_steps, noise=c.noise)
        if c.predictor == "first_hitting":
            return lambda p, k, x: sampling.sample_first_hitting(  # noqa: E731
                denoise(p), k, x, schedule=self.schedule, mask_id=self.mask_id, **shaping)
        return lambda p, k, x: sampling.sample(  # noqa: E731
            denoise(p), k, x, schedule=self.schedule, mask_id=self.mask_id, num_steps=c.num_steps,
            predictor=c.predictor, time_conditioning=model.time_conditioning, **shaping)

    def describe_sampler(self):
        c = self.cfg.sample
        parts = [c.predictor] + ([f"T={c.num_steps}"] if c.predictor != "first_hitting" else [])
        parts += [f"semi-AR {c.num_strides}x{c.stride}"] * bool(c.num_strides)
        return " ".join(parts + [super().describe_sampler()]).strip()
