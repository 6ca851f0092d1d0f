"""The data pipeline: documents -> tokens (cached) -> blocks (wrap, pad or chunk) -> shuffled,
per-process batches.

``data.source`` names either an in-memory corpus in ``SOURCES`` ('embedded', 'files': split by
``val_fraction``, cached by content) or a paper dataset in ``datasets.DATASETS`` ('lm1b', 'owt',
'text8', the zero-shot sets: found in local files, prepared once into ``cache.py``'s cache, split
by the dataset's own rule). Every batch is a dict ``{'input_ids': int32 (B, L), 'attention_mask': float32 (B, L)}``. The
training order is a pure function of (seed, position), so an iterator's state is one integer.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
from typing import Callable, Iterator

import grain
import numpy as np

from mdlm_jax.data import cache, sources
from mdlm_jax.data.datasets import DATASETS, Dataset, DatasetNotFoundError, Selection
from mdlm_jax.data.detokenizers import get_detokenizer
# The packings are re-exported: pipeline.make_blocks and friends are part of its API.
from mdlm_jax.data.packing import PACKINGS, Batch, Blocks, ChunkBlocks, PadBlocks, WrapBlocks, make_blocks  # noqa: F401
from mdlm_jax.data.tokenizers import Tokenizer, get_tokenizer, model_vocab, reads_files

_CACHE_VERSION = 1  # bump when the cached arrays' meaning changes
# Batches are small to build; a few threads and a short buffer hide the latency without holding
# hundreds of batches in memory (grain's defaults are 16 threads and 500 elements).
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


# --------------------------------------------------------------------------- documents and tokens

# In-memory corpora (the paper datasets are in datasets.DATASETS).
SOURCES: dict[str, Callable[..., sources.Corpus]] = {
    "embedded": lambda cfg: sources.embedded_corpus(),
    "files": lambda cfg: sources.text_files(cfg.files, jsonl_field=cfg.jsonl_field,
                                            invalid_utf8=invalid_utf8_for(cfg),
                                            txt_split=_field(cfg, "txt_split", "blank_lines")),
}


def _field(data_config, name: str, default):
    # Configs built by hand (tests, notebooks) may predate a field; the schema is mdlm_jax.config.
    return getattr(data_config, name, default)


def invalid_utf8_for(data_config) -> str:
    """``data.invalid_utf8`` ('warn' when absent), checked to be 'warn' or 'error'."""
    return sources.check_invalid_utf8(_field(data_config, "invalid_utf8", "warn"))


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


def _all_sources() -> list[str]:
    return sorted(SOURCES) + sorted(DATASETS)


def load_corpus(data_config) -> sources.Corpus:
    """All documents of an in-memory ``data_config.source``, before the train/validation split."""
    if data_config.source not in SOURCES:
        if data_config.source in DATASETS:
            raise ValueError(f"{data_config.source!r} is a prepared dataset, not an in-memory corpus; "
                             "use build_blocks / prepared_split.")
        raise ValueError(f"Unknown data source {data_config.source!r}; choose one of {_all_sources()}.")
    return SOURCES[data_config.source](data_config)


# --------------------------------------------------------------------------- prepared datasets


def dataset_for(data_config) -> Dataset | None:
    """The paper dataset named by ``data.source``, or None for an in-memory corpus."""
    if data_config.source in DATASETS:
        return DATASETS[data_config.source]
    if data_config.source not in SOURCES:
        raise ValueError(f"Unknown data source {data_config.source!r}; choose one of {_all_sources()}.")
    return None


def detokenizer_for(data_config, dataset: Dataset) -> str:
    """``data.detokenizer``, or the dataset's official one when it is empty."""
    name = _field(data_config, "detokenizer", "") or dataset.detokenizer
    get_detokenizer(name)  # raises for an unknown name
    return name


def eval_split_for(data_config) -> str:
    """The split evaluation reads: ``data.eval_split``, else the paper's (LM1B, text8, AG News,
    LAMBADA: 'test'; the rest: 'validation')."""
    dataset = dataset_for(data_config)
    default = "validation" if dataset is None else dataset.eval_split
    return _field(data_config, "eval_split", "") or default


def part_directory(data_config, tokenizer: Tokenizer, part: str) -> str:
    """The cache directory of one part of the paper dataset ``data.source``."""
    dataset = dataset_for(data_config)
    return cache.part_dir(cache_dir_for(data_config), dataset.name, tokenizer.name,
                          detokenizer_for(data_config, dataset), part)


def prepare_part(data_config, part: str, *, tokenizer: Tokenizer | None = None, shard: int = 0,
                 num_shards: int = 1, progress: bool = False) -> dict:
    """Builds (or finds) the cache of one part of a paper dataset, or shard ``shard`` of it; returns
    its meta.json. Raises if the cache exists but was built from other source files."""
    return _prepare(data_config, part, tokenizer or tokenizer_for(data_config), shard, num_shards, progress)[1]


def _prepare(data_config, part: str, tokenizer: Tokenizer, shard: int, num_shards: int, progress: bool):
    """``prepare_part``'s work: (the cached arrays when they were already there, else None; meta)."""
    dataset = dataset_for(data_config)
    detok = detokenizer_for(data_config, dataset)
    directory = part_directory(data_config, tokenizer, part)
    try:
        located = dataset.locate(data_config)
    except DatasetNotFoundError:
        arrays = cache.open_part(directory)
        if arrays is not None:  # prepared elsewhere; the raw files need not be on this host
            return arrays, arrays.meta
        raise
    if part not in located.parts:
        raise DatasetNotFoundError(f"{dataset.title}: {located.origin} ({located.root}) has no files for the "
                                   f"{part!r} part (found {sorted(located.parts)}; expected {dataset.layout}).")
    units = located.parts[part]
    source = cache.fingerprint(units, located.root)
    if num_shards == 1:
        existing = cache.open_part(directory)  # merges complete shards when there are some
    else:
        existing = cache.load_dir(directory) or cache.load_dir(cache.shard_dir(directory, shard, num_shards))
    if existing is not None:
        if existing.meta.get("source_files") != source:
            raise ValueError(f"The cache {directory} was built from other {dataset.title} files "
                             f"({existing.meta.get('source_root')}) than {located.root}; delete it or set "
                             "data.cache_dir elsewhere.")
        return existing, existing.meta
    logging.info("Preparing %s/%s from %s (%s) into %s", dataset.name, part, located.root, located.origin, directory)
    meta = dict(dataset=dataset.name, part=part, detokenizer=detok, source_root=located.root,
                origin=located.origin, source_files=source)
    return None, cache.build_part(units, directory, tokenizer=tokenizer, detokenize=get_detokenizer(detok),
                                  clean=dataset.clean, keep_empty=dataset.keep_empty, meta=meta, shard=shard,
                                  num_shards=num_shards, progress=progress)


def select(tokens: np.ndarray, offsets: np.ndarray, selection: Selection, *,
           what: str = "the split") -> tuple[np.ndarray, np.ndarray]:
    """The (tokens, offsets) view of ``selection`` over a part; no copy of the tokens."""
    num_docs, num_tokens = len(offsets) - 1, int(offsets[-1])
    total = num_docs if selection.by == "documents" else num_tokens
    for bound in (selection.start, selection.stop):
        if bound is not None and bound < 0 and -bound >= total:
            raise ValueError(f"{what} takes the last {-bound} {selection.by} of a part that has only {total}; "
                             "nothing would remain for the other split (for OpenWebText lower "
                             "data.owt_val_documents).")
    start, stop, _ = slice(selection.start, selection.stop).indices(total)
    stop = max(start, stop)
    if selection.by == "documents":
        return tokens[offsets[start]:offsets[stop]], offsets[start:stop + 1] - offsets[start]
    inner = offsets[(offsets > start) & (offsets < stop)]
    return tokens[start:stop], np.concatenate([[start], inner, [stop]]).astype(np.int64) - start


def prepared_split(data_config, split: str, *, tokenizer: Tokenizer | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets) of ``split`` of a paper dataset, preparing its part's cache if needed."""
    dataset = dataset_for(data_config)
    tokenizer = tokenizer or tokenizer_for(data_config)
    selection = dataset.selection(data_config, split)
    arrays, _ = _prepare(data_config, selection.part, tokenizer, 0, 1, False)
    if arrays is None:  # just built
        arrays = cache.open_part(part_directory(data_config, tokenizer, selection.part))
    return select(arrays.tokens, arrays.offsets, selection, what=f"The {split!r} split of {dataset.title}")


def tokenize_documents(documents: list[str], tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of all documents: (flat int32 (N,), offsets int64 (D + 1,)); document d is
    ``tokens[offsets[d]:offsets[d + 1]]``."""
    pieces = [np.asarray(tokenizer.encode(doc), dtype=np.int32) for doc in documents]
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= tokenizer.vocab_size):
        raise ValueError(f"Tokenizer {tokenizer.name!r} produced ids outside [0, {tokenizer.vocab_size}): "
                         f"min {tokens.min()}, max {tokens.max()}.")
    return tokens, offsets


def _cache_key(documents: list[str], tokenizer: Tokenizer, split: str) -> str:
    digest = hashlib.sha256(f"v{_CACHE_VERSION}|{tokenizer.name}|{split}|".encode())
    for doc in documents:
        data = doc.encode("utf-8", errors="replace")
        digest.update(len(data).to_bytes(8, "little"))  # length prefixes keep boundaries unambiguous
        digest.update(data)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", tokenizer.name)
    return f"{name}-{split}-{digest.hexdigest()[:24]}"


def _save_atomic(path: str, array: np.ndarray) -> None:
    # Write beside the target and rename: a killed process leaves a stray .tmp, never a torn .npy.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cache_dir_for(data_config) -> str:
    """``data_config.cache_dir``, or ``~/.cache/mdlm_jax`` when it is empty."""
    return os.path.expanduser(data_config.cache_dir or "~/.cache/mdlm_jax")


def cached_tokens(documents: list[str], tokenizer: Tokenizer, *, cache_dir: str,
                  split: str) -> tuple[np.ndarray, np.ndarray]:
    """``tokenize_documents``, computed once and memory-mapped from ``cache_dir`` afterwards.

    The cache is keyed by the documents' contents, the tokenizer's name and the split. The
    offsets file is written last, so its presence means both files are complete.
    """
    os.makedirs(cache_dir, exist_ok=True)
    stem = os.path.join(cache_dir, _cache_key(documents, tokenizer, split))
    tokens_path, offsets_path = stem + ".tokens.npy", stem + ".offsets.npy"
    if not (os.path.exists(tokens_path) and os.path.exists(offsets_path)):
        logging.info("Tokenizing %d %s documents with %r into %s", len(documents), split, tokenizer.name, stem)
        tokens, offsets = tokenize_documents(documents, tokenizer)
        _save_atomic(tokens_path, tokens)
        _save_atomic(offsets_path, offsets)
    return np.load(tokens_path, mmap_mode="r"), np.load(offsets_path)


def build_blocks(data_config, split: str, *, corpus: sources.Corpus | None = None,
                 tokenizer: Tokenizer | None = None) -> Blocks:
    """The blocks of one split: load (or reuse ``corpus``), split, tokenize with the cache, pack.

    For a paper dataset (``data.source`` in DATASETS) the split is one of the dataset's own
    ('train', 'validation', 'test') and its part is prepared into the cache on first use.
    ``tokenizer`` saves loading ``data.tokenizer`` again.
    """
    invalid_utf8_for(data_config)  # a bad value is refused even where only 'files' reads it
    tokenizer = tokenizer or tokenizer_for(data_config)
    if dataset_for(data_config) is not None:
        tokens, offsets = prepared_split(data_config, split, tokenizer=tokenizer)
    else:
        # The files are read and decoded (here, or by the caller that passes ``corpus``) before
        # the cache key, a hash of their decoded text, is known: invalid UTF-8 is warned about on a
        # cache hit too, and 'error' refuses before cached tokens could be reused. 'warn' and
        # 'error' never yield different documents, so the option need not be part of the key.
        corpus = load_corpus(data_config) if corpus is None else corpus
        documents = sources.split_documents(corpus.documents, data_config.val_fraction, split)
        tokens, offsets = cached_tokens(documents, tokenizer, cache_dir=cache_dir_for(data_config), split=split)
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
                and dataset_for(data_config) is None else "use a smaller data.seq_len or more data")
        raise ValueError(f"The {split} split of {_dataset_name(data_config)} has no blocks of length "
                         f"{data_config.seq_len} ({s['documents']} documents, {s['tokens']} tokens, "
                         f"packing {data_config.packing!r}); {hint}.")
    return blocks


def describe(data_config) -> dict:
    """Statistics for logging: tokenizer, vocabulary, and per split the documents, tokens, blocks
    and tokens dropped by packing (``'train/blocks'`` etc.). For a paper dataset: the splits it
    has among train and the evaluation split."""
    tokenizer = tokenizer_for(data_config)
    vocab_size, mask_id = model_vocab(tokenizer)
    out = dict(source=data_config.source, tokenizer=tokenizer.name, model_vocab_size=vocab_size, mask_id=mask_id,
               seq_len=data_config.seq_len, packing=data_config.packing)
    dataset = dataset_for(data_config)
    if dataset is None:
        corpus = load_corpus(data_config)
        out["skipped_empty"] = corpus.skipped_empty
        splits = [(split, dict(corpus=corpus)) for split in sources.SPLITS]
    else:
        available = dataset.splits(data_config)
        names = dict.fromkeys(s for s in ("train", eval_split_for(data_config)) if s in available)
        splits = [(split, {}) for split in names]
        out["eval_split"] = eval_split_for(data_config)
    for split, kwargs in splits:
        for key, value in build_blocks(data_config, split, tokenizer=tokenizer, **kwargs).stats().items():
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
    """The evaluation split's blocks in order (``split``, else ``eval_split_for``: 'validation' for
    in-memory corpora, the paper's split for the paper datasets), as this process's slices of
    global batches.

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
