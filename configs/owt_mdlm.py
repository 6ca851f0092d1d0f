"""MDLM on OpenWebText (Sahoo et al., 2024, Table 2: validation PPL <= 23.21; 23.05 without time
conditioning, which is this config and the released checkpoint).

    python -m mdlm_jax.main --config=configs/owt_mdlm.py --workdir=gs://BUCKET/owt_mdlm

GPT-2 tokenizer (mask token appended: V = 50,258), documents joined with EOS and wrapped into
1,024-token blocks `[BOS] + 1,022 tokens + [EOS]`; the last 100,000 documents are the validation
set. Small DiT, global batch 512, AdamW 3e-4, 2,500 warmup steps, EMA 0.9999, 1M steps.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    c.data.update(source="owt", tokenizer="gpt2", seq_len=1024, packing="wrap")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
