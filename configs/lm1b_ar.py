"""The AR baseline on LM1B (Sahoo et al., 2024, Table 1: test PPL 22.32 at 1M steps).

    python -m mdlm_jax.main --config=configs/lm1b_ar.py --workdir=gs://BUCKET/lm1b_ar \
        --config.data.path=/data/1-billion-word-language-modeling-benchmark-r13output \
        --config.data.tokenizer_path=/models/bert-base-uncased --config.data.cache_dir=/data/cache

Same backbone, data and optimizer as configs/lm1b_mdlm.py with causal attention and no time
conditioning; the loss is the exact next-token NLL.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    c.diffusion.parameterization = "ar"
    # The same data as lm1b_mdlm.py (the caches are shared).
    c.data.update(source="lm1b", tokenizer="bert-base-uncased", seq_len=128, packing="pad")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
