"""MDLM "w/o continuous time & w/o carry-over" (Table 8: test PPL <= 28.56): absorbing D3PM at T = 1000
with zero masking (-inf on the mask logit) but no carry-over of unmasked tokens, plus its reconstruction term.

    python -m mdlm_jax.main --config=configs/lm1b_table8_no_carry_over.py \
        --workdir=gs://BUCKET/lm1b_table8_no_carry_over \
        --config.data.path=/data/1-billion-word-language-modeling-benchmark-r13output \
        --config.data.tokenizer_path=/models/bert-base-uncased --config.data.cache_dir=/data/cache

Table 8 ablates MDLM one rule at a time on LM1B; every other setting is configs/lm1b_mdlm.py's (the
table's first row, <= 27.04), time conditioning off included.
"""

from mdlm_jax.config import apply_arg, sibling_config


def get_config(arg=None):
    c = sibling_config(__file__, "lm1b_mdlm")
    c.diffusion.update(parameterization="d3pm", num_steps=1000, subs_masking=True)
    c.sample.predictor = "ddpm"
    return apply_arg(c, arg)
