"""Data: tokenizers, text sources and the paper datasets, the token cache, and the grain pipeline
(tokenize -> pack -> batch -> shard). ``python -m mdlm_jax.data prepare`` builds a cache ahead."""

from mdlm_jax.data.datasets import DATASETS, Dataset, DatasetNotFoundError, Selection, get_dataset
from mdlm_jax.data.detokenizers import DETOKENIZERS, get_detokenizer
from mdlm_jax.data.pipeline import (
    PACKINGS,
    SOURCES,
    ChunkBlocks,
    EvalBatches,
    PadBlocks,
    WrapBlocks,
    build_blocks,
    cache_dir_for,
    cached_tokens,
    dataset_for,
    describe,
    eval_split_for,
    load_corpus,
    make_blocks,
    make_eval_batches,
    make_train_iterator,
    prepare_part,
    prepared_split,
    tokenize_documents,
    tokenizer_for,
)
from mdlm_jax.data.sources import Corpus, embedded_corpus, expand_paths, split_documents, text_files
from mdlm_jax.data.tokenizers import (
    TOKENIZERS,
    ByteTokenizer,
    Text8Tokenizer,
    Tokenizer,
    bert_tokenizer,
    get_tokenizer,
    gpt2_tokenizer,
    model_vocab,
)

__all__ = [
    "DATASETS", "DETOKENIZERS", "PACKINGS", "SOURCES", "TOKENIZERS", "ByteTokenizer", "ChunkBlocks", "Corpus",
    "Dataset", "DatasetNotFoundError", "EvalBatches", "PadBlocks", "Selection", "Text8Tokenizer", "Tokenizer",
    "WrapBlocks", "bert_tokenizer", "build_blocks", "cache_dir_for", "cached_tokens", "dataset_for", "describe",
    "embedded_corpus", "eval_split_for", "expand_paths", "get_dataset", "get_detokenizer", "get_tokenizer",
    "gpt2_tokenizer", "load_corpus", "make_blocks", "make_eval_batches", "make_train_iterator", "model_vocab",
    "prepare_part", "prepared_split", "split_documents", "text_files", "tokenize_documents", "tokenizer_for",
]
