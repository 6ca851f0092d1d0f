"""Quickstart: a small MDLM on Python's own documentation (embedded, no download), on a laptop CPU.

    python -m mdlm_jax.main --config=configs/quickstart.py --workdir=/tmp/mdlm_quickstart

Trains a 4-block byte-level DiT for a few minutes, evaluates the NELBO perplexity bound on held-out
documents, and prints samples from the cached ancestral sampler. Not a paper recipe: a larger
learning rate and a short warmup so that something is learned in minutes.
"""

from mdlm_jax.config import apply_arg, default_config


def get_config(arg=None):
    c = default_config()
    c.model.update(n_blocks=4, hidden_size=192, n_heads=4, cond_dim=64, dropout=0.0,
                   dtype="float32")  # bfloat16 matmuls are slow on CPUs
    c.data.update(source="embedded", tokenizer="bytes", seq_len=128, packing="wrap", val_fraction=0.05)
    c.optim.update(lr=1e-3, warmup_steps=100)
    c.train.update(batch_size=32, steps=400, log_every=50, eval_every=400, checkpoint_every=200,
                   keep_checkpoints=2, sample_at_end=True)
    c.eval.update(batch_size=32, max_batches=-1)
    c.sample.update(num_samples=3, num_steps=128, predictor="ddpm_cache")
    return apply_arg(c, arg)
