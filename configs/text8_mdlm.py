"""MDLM on text8 (Sahoo et al., 2024, the text8 bits-per-character comparison).

    python -m mdlm_jax.main --config=configs/text8_mdlm.py --workdir=gs://BUCKET/text8_mdlm

27 characters (a-z and space) with the official special ids, 256-character chunks without overlap
from the 90M / 5M / 5M split; small DiT, global batch 512, AdamW 3e-4, 2,500 warmup steps.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    c.data.update(source="text8", tokenizer="text8", seq_len=256, packing="chunk")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
