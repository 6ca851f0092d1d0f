"""The AR baseline on OpenWebText (Sahoo et al., 2024, Table 2: validation PPL 17.54).

    python -m mdlm_jax.main --config=configs/owt_ar.py --workdir=gs://BUCKET/owt_ar

Same backbone, data and optimizer as configs/owt_mdlm.py with causal attention.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    c.diffusion.parameterization = "ar"
    c.data.update(source="owt", tokenizer="gpt2", seq_len=1024, packing="wrap")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
