"""Data: tokenizers, text sources, and the grain pipeline (tokenize -> pack -> batch -> shard)."""

from mdlm_jax.data.pipeline import (
    PACKINGS,
    SOURCES,
    EvalBatches,
    PadBlocks,
    WrapBlocks,
    build_blocks,
    cache_dir_for,
    cached_tokens,
    describe,
    load_corpus,
    make_blocks,
    make_eval_batches,
    make_train_iterator,
    tokenize_documents,
    tokenizer_for,
)
from mdlm_jax.data.sources import Corpus, embedded_corpus, expand_paths, split_documents, text_files
from mdlm_jax.data.tokenizers import TOKENIZERS, ByteTokenizer, Tokenizer, get_tokenizer, model_vocab

__all__ = [
    "PACKINGS", "SOURCES", "TOKENIZERS", "ByteTokenizer", "Corpus", "EvalBatches", "PadBlocks", "Tokenizer",
    "WrapBlocks", "build_blocks", "cache_dir_for", "cached_tokens", "describe", "embedded_corpus",
    "expand_paths", "get_tokenizer", "load_corpus", "make_blocks", "make_eval_batches",
    "make_train_iterator", "model_vocab", "split_documents", "text_files", "tokenize_documents",
    "tokenizer_for",
]
