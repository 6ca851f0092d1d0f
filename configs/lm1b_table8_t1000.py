"""MDLM "w/o continuous time" (Table 8: test PPL <= 27.19): the discrete-time NELBO with T = 1000.

    python -m mdlm_jax.main --config=configs/lm1b_table8_t1000.py --workdir=gs://BUCKET/lm1b_table8_t1000 \
        --config.data.path=/data/1-billion-word-language-modeling-benchmark-r13output \
        --config.data.tokenizer_path=/models/bert-base-uncased --config.data.cache_dir=/data/cache

Table 8 ablates MDLM one rule at a time on LM1B; every other setting is configs/lm1b_mdlm.py's (the
table's first row, <= 27.04), time conditioning off included.
"""

from mdlm_jax.config import apply_arg, sibling_config


def get_config(arg=None):
    c = sibling_config(__file__, "lm1b_mdlm")
    c.diffusion.num_steps = 1000
    return apply_arg(c, arg)
