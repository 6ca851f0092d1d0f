"""Absorbing D3PM on LM1B with MDLM's backbone and recipe: Table 1's D3PM (absorb) row, trained as the
MDLM paper trains its baselines (Sahoo et al., 2024, Table 1: D3PM absorb <= 76.90 in D3PM's own run;
the same objective with MDLM's recipe is Table 8's "& w/o zero masking", <= 28.51).

    python -m mdlm_jax.main --config=configs/lm1b_d3pm.py --workdir=gs://BUCKET/lm1b_d3pm \
        --config.data.path=/data/1-billion-word-language-modeling-benchmark-r13output \
        --config.data.tokenizer_path=/models/bert-base-uncased --config.data.cache_dir=/data/cache

Differs from configs/lm1b_mdlm.py in the objective (official parameterization=d3pm, T = 1000):
log-probs over all V with no carry-over and no zero masking, the reconstruction term on every
token, the time-conditioned backbone of D3PM, and the ddpm sampler (D3PM's own noise removal).
"""

from mdlm_jax.config import apply_arg, sibling_config


def get_config(arg=None):
    c = sibling_config(__file__, "lm1b_mdlm")
    c.diffusion.update(parameterization="d3pm", num_steps=1000, subs_masking=False)
    c.model.time_conditioning = True
    c.sample.predictor = "ddpm"
    return apply_arg(c, arg)
