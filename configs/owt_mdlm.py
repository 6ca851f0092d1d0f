"""MDLM on OpenWebText (Sahoo et al., 2024, Table 2: validation PPL <= 23.21; 23.05 without time
conditioning, which is this config and the released checkpoint).

    python -m mdlm_jax.data prepare --dataset owt --source /data/openwebtext --out /data/cache \
        --tokenizer-path /models/gpt2 [--shard I --num-shards N]   # once; shards in parallel, then `merge`
    python -m mdlm_jax.main --config=configs/owt_mdlm.py --workdir=gs://BUCKET/owt_mdlm \
        --config.data.cache_dir=/data/cache --config.data.tokenizer_path=/models/gpt2

Data: the extracted openwebtext.tar.xz (openwebtext/urlsf_subset*.xz, documents in the HF
`openwebtext` order), a folder of .txt / .jsonl / .parquet documents, or the local HF
`openwebtext` cache (data.path empty). GPT-2 tokenizer (tokenizer.json, vocab.json + merges.txt, or
encoder.json + vocab.bpe; mask token appended: V = 50,258), documents joined with EOS and wrapped
into 1,024-token blocks `[BOS] + 1,022 tokens + [EOS]`; the last 100,000 documents are the
validation set. Small DiT, global batch 512, AdamW 3e-4, 2,500 warmup steps, EMA 0.9999, 1M steps.

Zero-shot (Table 3): the checkpoint's EMA weights on PTB, WikiText, LM1B, LAMBADA, AG News, PubMed
and arXiv (eval.zero_shot_sets), each with its official detokenizer and the paper's split, wrapped
to 1,024 with the GPT-2 tokenizer; prints the table and writes DIR/zero_shot.json. A set without a
path is looked up in the local HF caches; one not found is reported (with the flag that fixes it)
and the others still run:

    python -m mdlm_jax.main --config=configs/owt_mdlm.py --workdir=gs://BUCKET/owt_mdlm --mode=zero_shot \
        --config.data.cache_dir=/data/cache --config.data.tokenizer_path=/models/gpt2 \
        --config.eval.zero_shot_paths=ptb=/data/ptb,wikitext2=/data/wikitext-2-raw,lambada=/data/lambada

One set as the evaluation split instead: `--mode=eval --config.data.source=wikitext103
--config.data.path=/data/wikitext-103-raw` (sources ptb, wikitext2, wikitext103, lm1b, lambada,
ag_news, pubmed, arxiv).
"""

from mdlm_jax.config import apply_arg, default_config, set_model_size


def get_config(arg=None):
    c = default_config()
    set_model_size(c, "small")
    # Set data.path (or a prepared data.cache_dir) and data.tokenizer_path on the command line.
    c.data.update(source="owt", tokenizer="gpt2", seq_len=1024, packing="wrap", owt_val_documents=100_000)
    c.train.update(batch_size=512, steps=1_000_000, eval_every=10_000, checkpoint_every=5_000)
    return apply_arg(c, arg)
