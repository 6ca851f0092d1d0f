"""Data: datasets by registry (``data.source``; ``register_dataset`` adds one), tokenizers, the
token cache and the grain pipeline (tokenize -> cache -> pack -> batch -> shard).
``python -m mdlm_jax.data prepare`` builds a paper dataset's cache ahead.

Importing it registers the built-in datasets (``pipeline`` imports ``sources`` and ``datasets``).
Here is what drivers and users need; the rest is imported from its submodule (``pipeline``,
``registry``, ``cache``, ``packing``, ``sources``, ``datasets``, ``tokenizers``, ...).
"""

from mdlm_jax.data.pipeline import (
    build_blocks,
    describe,
    eval_split_for,
    make_eval_batches,
    make_train_iterator,
    prepare_part,
    tokenizer_for,
)
from mdlm_jax.data.registry import (
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    DocumentDataset,
    get_dataset,
    register_dataset,
)
from mdlm_jax.data.tokenizers import Tokenizer, get_tokenizer, model_vocab

__all__ = [
    "DATASETS", "Dataset", "DatasetNotFoundError", "DocumentDataset", "Tokenizer", "build_blocks", "describe",
    "eval_split_for", "get_dataset", "get_tokenizer", "make_eval_batches", "make_train_iterator", "model_vocab",
    "prepare_part", "register_dataset", "tokenizer_for",
]
