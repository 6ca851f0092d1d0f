"""The AR baseline on OpenWebText (Sahoo et al., 2024, Table 2: validation PPL 17.54).

    python -m mdlm_jax.main --config=configs/owt_ar.py --workdir=gs://BUCKET/owt_ar \
        --config.data.cache_dir=/data/cache --config.data.tokenizer_path=/models/gpt2

Same backbone, data and optimizer as configs/owt_mdlm.py with causal attention.

Zero-shot (Table 3, exact PPL for AR): as in configs/owt_mdlm.py,

    python -m mdlm_jax.main --config=configs/owt_ar.py --workdir=gs://BUCKET/owt_ar --mode=zero_shot \
        --config.data.cache_dir=/data/cache --config.data.tokenizer_path=/models/gpt2 \
        --config.eval.zero_shot_paths=ptb=/data/ptb,wikitext2=/data/wikitext-2-raw,lambada=/data/lambada
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    c.diffusion.parameterization = "ar"
    # The same data as owt_mdlm.py (see its docstring for preparing it).
    c.data.update(source="owt", tokenizer="gpt2", seq_len=1024, packing="wrap", owt_val_documents=100_000)
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
