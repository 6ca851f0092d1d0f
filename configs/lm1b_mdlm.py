"""MDLM on LM1B, the paper's unpacked protocol (Sahoo et al., 2024, Table 1: test PPL <= 27.04 at 1M steps).

    python -m mdlm_jax.main --config=configs/lm1b_mdlm.py --workdir=gs://BUCKET/lm1b_mdlm \
        --config.data.path=/data/1-billion-word-language-modeling-benchmark-r13output \
        --config.data.tokenizer_path=/models/bert-base-uncased --config.data.cache_dir=/data/cache

Data: LM1B's original files (training-monolingual.tokenized.shuffled/news.en-*, evaluated on the
test split = all 50 heldout-monolingual.tokenized.shuffled/news.en.heldout-* files, as tfds and HF
define it), or the local HF `lm1b` cache when data.path is empty; the tokenizer directory holds
bert-base-uncased's vocab.txt (or tokenizer.json). Prepare the cache ahead, in parallel if wanted:
`python -m mdlm_jax.data prepare --dataset lm1b --source DIR --out CACHE --tokenizer-path TOK`.

bert-base-uncased, each sentence detokenized (official `lm1b_detokenizer`), `[CLS] ... [SEP]`,
truncated and padded with `[PAD]` to 128 (pads masked out of the loss), not packed
(`--config.data.packing=wrap` is the packed variant, about 31.8 instead); small DiT, global batch
512, AdamW 3e-4 with 2,500 warmup steps, EMA 0.9999, loglinear noise, antithetic t, continuous
time, no time conditioning.
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    # Set data.path (LM1B files) and data.tokenizer_path (bert-base-uncased) on the command line.
    c.data.update(source="lm1b", tokenizer="bert-base-uncased", seq_len=128, packing="pad")
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
