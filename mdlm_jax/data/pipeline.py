"""The data pipeline: documents -> tokens (cached) -> blocks (wrap or pad) -> shuffled, per-process batches.

Every batch is a dict ``{'input_ids': int32 (B, L), 'attention_mask': float32 (B, L)}``. The
training order is a pure function of (seed, position), so an iterator's state is one integer.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import math
import os
import re
import tempfile
from typing import Callable, Iterator

import grain
import numpy as np

from mdlm_jax.data import sources
from mdlm_jax.data.tokenizers import Tokenizer, get_tokenizer, model_vocab

Batch = dict[str, np.ndarray]

_CACHE_VERSION = 1  # bump when the cached arrays' meaning changes
# Batches are small to build; a few threads and a short buffer hide the latency without holding
# hundreds of batches in memory (grain's defaults are 16 threads and 500 elements).
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)


# --------------------------------------------------------------------------- documents and tokens

SOURCES: dict[str, Callable[..., sources.Corpus]] = {
    "embedded": lambda cfg: sources.embedded_corpus(),
    "files": lambda cfg: sources.text_files(cfg.files, jsonl_field=cfg.jsonl_field),
}


def tokenizer_for(data_config) -> Tokenizer:
    """The tokenizer named by ``data_config.tokenizer``."""
    return get_tokenizer(data_config.tokenizer)


def load_corpus(data_config) -> sources.Corpus:
    """All documents of ``data_config.source``, before the train/validation split."""
    if data_config.source not in SOURCES:
        raise ValueError(f"Unknown data source {data_config.source!r}; choose one of {sorted(SOURCES)}.")
    return SOURCES[data_config.source](data_config)


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


# --------------------------------------------------------------------------- packing


class _Blocks(abc.ABC):
    """Random-access rows over cached tokens (grain ``RandomAccessDataSource``-compatible).

    ``self[k]`` is ``{'input_ids': int32 (L,), 'attention_mask': float32 (L,)}``.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, tokenizer: Tokenizer):
        if seq_len < 3:
            raise ValueError(f"seq_len must be at least 3 (BOS + one token + EOS); got {seq_len}.")
        self.tokens, self.offsets, self.seq_len = tokens, np.asarray(offsets, np.int64), seq_len
        self.bos_id, self.eos_id, self.pad_id = tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id
        self.num_documents = len(self.offsets) - 1
        self.num_tokens = int(self.offsets[-1])

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of blocks."""

    @abc.abstractmethod
    def _row(self, index: int) -> Batch:
        """Block ``index``, already bounds-checked."""

    def __getitem__(self, index: int) -> Batch:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"Block {index} out of range for {len(self)} blocks.")
        return self._row(index)

    def stats(self) -> dict[str, int]:
        """Documents, tokens (without specials), blocks and tokens dropped by the packing."""
        return dict(documents=self.num_documents, tokens=self.num_tokens, blocks=len(self),
                    dropped_tokens=self.dropped_tokens)


class WrapBlocks(_Blocks):
    """SPEC section 7 wrapping: every document's tokens then EOS, concatenated, cut into pieces of
    L - 2 (the remainder dropped); block k is ``[BOS] + piece_k + [EOS]``, all attended."""

    def __init__(self, tokens, offsets, seq_len, tokenizer):
        super().__init__(tokens, offsets, seq_len, tokenizer)
        self.piece = seq_len - 2
        # The stream has N + D entries; document d's EOS sits at stream position offsets[d+1] + d.
        self._eos_pos = self.offsets[1:] + np.arange(self.num_documents, dtype=np.int64)
        stream = self.num_tokens + self.num_documents
        self._len = stream // self.piece
        self.dropped_tokens = stream - self._len * self.piece

    def __len__(self) -> int:
        return self._len

    def _row(self, index: int) -> Batch:
        pos = np.arange(index * self.piece, (index + 1) * self.piece, dtype=np.int64)
        doc = np.searchsorted(self._eos_pos, pos, side="left")  # the document each position is in
        is_eos = self._eos_pos[doc] == pos
        piece = np.full(self.piece, self.eos_id, np.int32)
        piece[~is_eos] = self.tokens[(pos - doc)[~is_eos]]  # earlier EOSes shift tokens right by doc
        ids = np.concatenate([[self.bos_id], piece, [self.eos_id]]).astype(np.int32)
        return {"input_ids": ids, "attention_mask": np.ones(self.seq_len, np.float32)}


class PadBlocks(_Blocks):
    """One document per block: ``[BOS] + tokens[:L-2] + [EOS]`` right-padded with PAD to L;
    attention mask 1 on BOS, tokens and EOS, 0 on pads (the LM1B protocol of SPEC section 7)."""

    def __init__(self, tokens, offsets, seq_len, tokenizer):
        super().__init__(tokens, offsets, seq_len, tokenizer)
        lengths = np.diff(self.offsets)
        self.dropped_tokens = int(np.maximum(lengths - (seq_len - 2), 0).sum())

    def __len__(self) -> int:
        return self.num_documents

    def _row(self, index: int) -> Batch:
        start, stop = self.offsets[index], self.offsets[index + 1]
        body = self.tokens[start:min(stop, start + self.seq_len - 2)]
        n = len(body) + 2
        ids = np.full(self.seq_len, self.pad_id, np.int32)
        ids[0], ids[1:n - 1], ids[n - 1] = self.bos_id, body, self.eos_id
        mask = np.zeros(self.seq_len, np.float32)
        mask[:n] = 1.0
        return {"input_ids": ids, "attention_mask": mask}


PACKINGS: dict[str, type[_Blocks]] = {"wrap": WrapBlocks, "pad": PadBlocks}


def make_blocks(tokens: np.ndarray, offsets: np.ndarray, *, seq_len: int, packing: str,
                tokenizer: Tokenizer) -> _Blocks:
    """Blocks of length ``seq_len`` over tokens (N,) with offsets (D + 1,), packed by ``packing``."""
    if packing not in PACKINGS:
        raise ValueError(f"Unknown packing {packing!r}; choose one of {sorted(PACKINGS)}.")
    return PACKINGS[packing](tokens, offsets, seq_len, tokenizer)


def build_blocks(data_config, split: str, *, corpus: sources.Corpus | None = None) -> _Blocks:
    """The blocks of one split: load (or reuse ``corpus``), split, tokenize with the cache, pack."""
    corpus = load_corpus(data_config) if corpus is None else corpus
    documents = sources.split_documents(corpus.documents, data_config.val_fraction, split)
    tokenizer = tokenizer_for(data_config)
    tokens, offsets = cached_tokens(documents, tokenizer, cache_dir=cache_dir_for(data_config), split=split)
    return make_blocks(tokens, offsets, seq_len=data_config.seq_len, packing=data_config.packing,
                       tokenizer=tokenizer)


def _dataset_name(data_config) -> str:
    if data_config.source == "files":
        return f"files {list(data_config.files)}"
    return f"the {data_config.source!r} source"


def _nonempty_blocks(data_config, split: str) -> _Blocks:
    blocks = build_blocks(data_config, split)
    if not len(blocks):
        s = blocks.stats()
        hint = ("raise data.val_fraction" if split == "validation" and not s["documents"]
                else "use a smaller data.seq_len or more data")
        raise ValueError(f"The {split} split of {_dataset_name(data_config)} has no blocks of length "
                         f"{data_config.seq_len} ({s['documents']} documents, {s['tokens']} tokens, "
                         f"packing {data_config.packing!r}); {hint}.")
    return blocks


def describe(data_config) -> dict:
    """Statistics for logging: tokenizer, vocabulary, and per split the documents, tokens, blocks
    and tokens dropped by packing (``'train/blocks'`` etc.)."""
    corpus = load_corpus(data_config)
    tokenizer = tokenizer_for(data_config)
    vocab_size, mask_id = model_vocab(tokenizer)
    out = dict(source=data_config.source, tokenizer=tokenizer.name, model_vocab_size=vocab_size, mask_id=mask_id,
               seq_len=data_config.seq_len, packing=data_config.packing, skipped_empty=corpus.skipped_empty)
    for split in sources.SPLITS:
        for key, value in build_blocks(data_config, split, corpus=corpus).stats().items():
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
                      process_count: int = 1) -> EvalBatches:
    """The validation blocks in order, as this process's slices of global batches.

    The last global batch is filled with PAD rows whose attention mask is 0, so every process
    yields ceil(blocks / global_batch_size) batches of shape (local_batch, L).
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    blocks = _nonempty_blocks(data_config, "validation")
    n = len(blocks)
    filler = {"input_ids": np.full(blocks.seq_len, blocks.pad_id, np.int32),
              "attention_mask": np.zeros(blocks.seq_len, np.float32)}
    padded = math.ceil(n / global_batch_size) * global_batch_size
    ds = grain.MapDataset.range(padded).map(lambda i: blocks[i] if i < n else filler)
    return EvalBatches(ds.batch(local)[process_index::process_count])
