"""SEDD (absorbing) on LM1B, the paper's baseline row (Sahoo et al., 2024, Table 1: test PPL <= 32.79,
SEDD retrained with MDLM's recipe on the same backbone and data).

    python -m mdlm_jax.main --config=configs/lm1b_sedd.py --workdir=gs://BUCKET/lm1b_sedd \
        --config.data.path=/data/1-billion-word-language-modeling-benchmark-r13output \
        --config.data.tokenizer_path=/models/bert-base-uncased --config.data.cache_dir=/data/cache

Differs from configs/lm1b_mdlm.py only in the objective: score entropy on the absorbing process
(official parameterization=sedd), which needs the time-conditioned backbone, sampled with SEDD's
analytic sampler.
"""

from mdlm_jax.config import apply_arg, sibling_config


def get_config(arg=None):
    c = sibling_config(__file__, "lm1b_mdlm")
    c.diffusion.parameterization = "sedd"
    c.model.time_conditioning = True
    c.sample.predictor = "analytic"
    return apply_arg(c, arg)
