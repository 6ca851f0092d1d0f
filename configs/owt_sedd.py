"""SEDD (absorbing) on OpenWebText, the paper's baseline (Sahoo et al., 2024, Table 2: validation
PPL <= 24.10 for SEDD retrained with MDLM's recipe; MDLM <= 23.21).

    python -m mdlm_jax.main --config=configs/owt_sedd.py --workdir=gs://BUCKET/owt_sedd \
        --config.data.cache_dir=/data/cache --config.data.tokenizer_path=/models/gpt2

Differs from configs/owt_mdlm.py only in the objective: score entropy (official
parameterization=sedd) with the time-conditioned backbone, sampled with the analytic sampler.
"""

from mdlm_jax.config import apply_arg, sibling_config


def get_config(arg=None):
    c = sibling_config(__file__, "owt_mdlm")
    c.diffusion.parameterization = "sedd"
    c.model.time_conditioning = True
    c.sample.predictor = "analytic"
    return apply_arg(c, arg)
