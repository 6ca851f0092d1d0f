"""The data pipeline: a dataset's tokens (cached) -> blocks (wrap, pad or chunk) -> shuffled,
per-process batches.

``data.source`` names a dataset in the registry (``registry.DATASETS``): 'embedded' and 'files'
(split by ``data.val_fraction``), the paper datasets ('lm1b', 'owt', 'text8', the zero-shot sets:
found in local files, split by the dataset's own rule), or one added with ``register_dataset``.
Every dataset's tokens come from the one token cache (``cache.py``). Every batch is a dict
``{'input_ids': int32 (B, L), 'attention_mask': float32 (B, L)}``. The training order is a pure
function of (seed, position), so an iterator's state is one integer.
"""

from __future__ import annotations

import math
from typing import Iterator

import grain
import numpy as np

# Importing these registers the built-in datasets: 'embedded' and 'files', and the paper datasets.
from mdlm_jax.data import sources
from mdlm_jax.data.datasets import PaperDataset
from mdlm_jax.data.packing import Batch, Blocks, make_blocks
from mdlm_jax.data.registry import get_dataset
from mdlm_jax.data.tokenizers import Tokenizer, get_tokenizer, model_vocab, reads_files

# Batches are small to build; a few threads and a short buffer hide the latency without holding
# hundreds of batches in memory (grain's defaults are 16 threads and 500 elements).
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


# --------------------------------------------------------------------------- tokens


def _field(data_config, name: str, default):
    # Configs built by hand (tests, notebooks) may predate a field; the schema is mdlm_jax.config.
    return getattr(data_config, name, default)


def tokenizer_for(data_config) -> Tokenizer:
    """The tokenizer named by ``data_config.tokenizer``, with its files from ``data.tokenizer_path``
    (or the local Hugging Face cache; downloaded only if ``data.allow_download``)."""
    path = _field(data_config, "tokenizer_path", "")
    if reads_files(data_config.tokenizer):
        return get_tokenizer(data_config.tokenizer, path=path,
                             allow_download=bool(_field(data_config, "allow_download", False)))
    if path:
        raise ValueError(f"data.tokenizer_path is set but the tokenizer {data_config.tokenizer!r} reads no files.")
    return get_tokenizer(data_config.tokenizer)


def eval_split_for(data_config) -> str:
    """The split evaluation reads: ``data.eval_split``, else the dataset's (LM1B, text8, AG News,
    LAMBADA: 'test'; the rest: 'validation')."""
    return _field(data_config, "eval_split", "") or get_dataset(data_config.source).eval_split


def prepare_part(data_config, part: str, *, tokenizer: Tokenizer | None = None, shard: int = 0,
                 num_shards: int = 1, progress: bool = False) -> dict:
    """Builds (or finds) the cache of one part of the paper dataset ``data.source``, or shard
    ``shard`` of it; returns its meta.json. Raises if the cache exists but was built from other
    source files."""
    dataset = get_dataset(data_config.source)
    if not isinstance(dataset, PaperDataset):
        raise ValueError(f"{dataset.title or dataset.name} is not prepared ahead: its token cache is built on "
                         "first use.")
    return dataset.prepare(data_config, part, tokenizer=tokenizer or tokenizer_for(data_config), shard=shard,
                           num_shards=num_shards, progress=progress)


def prepared_split(data_config, split: str, *, tokenizer: Tokenizer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets) of ``split`` of ``data.source``, from the token cache (built on first use)."""
    return get_dataset(data_config.source).tokens(data_config, split, tokenizer or tokenizer_for(data_config))


def build_blocks(data_config, split: str, *, tokenizer: Tokenizer | None = None) -> Blocks:
    """The blocks of one split of ``data.source`` ('train', 'validation', and for some datasets
    'test'): its cached tokens, packed by ``data.packing`` into ``data.seq_len``. ``tokenizer``
    saves loading ``data.tokenizer`` again."""
    sources.invalid_utf8_for(data_config)  # a bad value is refused even where only 'files' reads it
    tokenizer = tokenizer or tokenizer_for(data_config)
    tokens, offsets = prepared_split(data_config, split, tokenizer=tokenizer)
    return make_blocks(tokens, offsets, seq_len=data_config.seq_len, packing=data_config.packing,
                       tokenizer=tokenizer)


def _dataset_name(data_config) -> str:
    if data_config.source == "files":
        return f"files {list(data_config.files)}"
    return f"the {data_config.source!r} source"


def _nonempty_blocks(data_config, split: str) -> Blocks:
    blocks = build_blocks(data_config, split)
    if not len(blocks):
        s = blocks.stats()
        hint = ("raise data.val_fraction" if split == "validation" and not s["documents"]
                and isinstance(get_dataset(data_config.source), sources.CorpusDataset)
                else "use a smaller data.seq_len or more data")
        raise ValueError(f"The {split} split of {_dataset_name(data_config)} has no blocks of length "
                         f"{data_config.seq_len} ({s['documents']} documents, {s['tokens']} tokens, "
                         f"packing {data_config.packing!r}); {hint}.")
    return blocks


def describe(data_config) -> dict:
    """Statistics for logging: tokenizer, vocabulary, the evaluation split, and for the train and
    evaluation splits (those the dataset has) the documents, tokens, blocks and tokens dropped by
    packing (``'train/blocks'`` etc.)."""
    tokenizer = tokenizer_for(data_config)
    vocab_size, mask_id = model_vocab(tokenizer)
    eval_split = eval_split_for(data_config)
    out = dict(source=data_config.source, tokenizer=tokenizer.name, model_vocab_size=vocab_size, mask_id=mask_id,
               seq_len=data_config.seq_len, packing=data_config.packing, eval_split=eval_split)
    available = get_dataset(data_config.source).splits(data_config)
    for split in dict.fromkeys(s for s in ("train", eval_split) if s in available):
        for key, value in build_blocks(data_config, split, tokenizer=tokenizer).stats().items():
            out[f"{split}/{key}"] = value
    return out


# --------------------------------------------------------------------------- batching


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
    if global_batch_size <= 0:
        raise ValueError(f"global_batch_size must be positive; got {global_batch_size}.")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, process_count={process_count}).")
    if global_batch_size % process_count:
        raise ValueError(f"Global batch size ({global_batch_size}) must be divisible by the number of "
                         f"processes ({process_count}).")
    return global_batch_size // process_count


def _shuffle_seed(seed: int) -> int:
    # grain reshuffles epoch e with seed + e, so seeds 0 and 1 would share orders one epoch apart;
    # hashing the user's seed first makes neighbouring runs unrelated.
    if seed < 0:
        raise ValueError(f"The data seed must be non-negative; got {seed}.")
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint32)[0])


def make_train_iterator(data_config, *, global_batch_size: int, seed: int, process_index: int = 0,
                        process_count: int = 1) -> grain.DatasetIterator:
    """An endless iterator of this process's training batches, int32 / float32 (local_batch, L).

    Blocks are shuffled by (seed, epoch), a new permutation each epoch; global batch k is the next
    ``global_batch_size`` blocks, and process p reads only its rows [p * local, (p + 1) * local),
    so the global batch does not depend on ``process_count``. ``get_state()`` is
    ``{'next_index': global batches consumed}`` (JSON-serializable); ``set_state`` resumes exactly.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    blocks = _nonempty_blocks(data_config, "train")
    ds = grain.MapDataset.source(blocks).shuffle(seed=_shuffle_seed(seed)).repeat()
    # Chunk c of `local` rows is rows [(c % P) * local, ...) of global batch c // P.
    ds = ds.batch(local, drop_remainder=True)[process_index::process_count]
    return iter(ds.to_iter_dataset(_READ_OPTIONS))


class EvalBatches:
    """A finite, re-iterable sequence of this process's evaluation batches (``len`` = batches)."""

    def __init__(self, dataset: grain.MapDataset):
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._dataset.to_iter_dataset(_READ_OPTIONS))


def make_eval_batches(data_config, *, global_batch_size: int, process_index: int = 0,
                      process_count: int = 1, split: str = "") -> EvalBatches:
    """The evaluation split's blocks in order (``split``, else ``eval_split_for``: the dataset's
    evaluation split), as this process's slices of global batches.

    The last global batch is filled with PAD rows whose attention mask is 0, so every process
    yields ceil(blocks / global_batch_size) batches of shape (local_batch, L).
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    blocks = _nonempty_blocks(data_config, split or eval_split_for(data_config))
    n = len(blocks)
    filler = {"input_ids": np.full(blocks.seq_len, blocks.pad_id, np.int32),
              "attention_mask": np.zeros(blocks.seq_len, np.float32)}
    padded = math.ceil(n / global_batch_size) * global_batch_size
    ds = grain.MapDataset.range(padded).map(lambda i: blocks[i] if i < n else filler)
    return EvalBatches(ds.batch(local)[process_index::process_count])
