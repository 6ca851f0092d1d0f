"""MDLM on text8 (Sahoo et al., 2024, the text8 bits-per-character comparison).

    python -m mdlm_jax.main --config=configs/text8_mdlm.py --workdir=gs://BUCKET/text8_mdlm \
        --config.data.path=/data/text8.zip   # or --config.data.allow_download=True

27 characters (a-z and space) with the official special ids (0-7; characters 8-34, mask 4),
256-character chunks without BOS/EOS and without overlap, the last partial chunk dropped, from the
90M / 5M / 5M split (evaluated on the last 5M, the test split, as the official code does); small
DiT, global batch 512, AdamW 3e-4, 2,500 warmup steps.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    # Set data.path to text8.zip (or allow the download) on the command line.
    c.data.update(source="text8", tokenizer="text8", seq_len=256, packing="chunk")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
