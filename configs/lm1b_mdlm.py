"""MDLM on LM1B, the paper's unpacked protocol (Sahoo et al., 2024, Table 1: test PPL <= 27.04 at 1M steps).

    python -m mdlm_jax.main --config=configs/lm1b_mdlm.py --workdir=gs://BUCKET/lm1b_mdlm

bert-base-uncased, each sentence detokenized, `[CLS] ... [SEP]`, truncated and padded to 128, not
packed (packing gives about 31.8 instead); small DiT, global batch 512, AdamW 3e-4 with 2,500 warmup
steps, EMA 0.9999, loglinear noise, antithetic t, continuous time, no time conditioning.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    c.data.update(source="lm1b", tokenizer="bert-base-uncased", seq_len=128, packing="pad")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
