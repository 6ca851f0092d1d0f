"""The token cache of every dataset: each part written once (a paper dataset's optionally in
shards, by several hosts), then memory-mapped for random access.

A part lives in ``<cache_dir>/<dataset>/<tokenizer>-<detokenizer>-v<version>/<part>/``:
``tokens.bin`` (every document's tokens back to back, uint16 when the vocabulary fits, else
int32), ``offsets.npy`` (int64, D + 1; document d is ``tokens[offsets[d]:offsets[d + 1]]``) and
``meta.json`` (counts, dtype, what it was built from). Each directory is written under a
temporary name and renamed into place, so a killed writer never leaves a half cache.

A paper dataset's part is built from its source units (``build_part``) and records their
fingerprint. A dataset given as documents (``registry.DocumentDataset``) has one part per split,
named ``<split>-<documents_key>`` (``build_documents``): a digest of the documents' text, so
changed documents get a part of their own.

Shard i of N covers the contiguous units ``[i U / N, (i + 1) U / N)`` of the part and is written
to ``<part>.shards/<i>-of-<N>/``; ``merge_shards`` concatenates complete shards in order, which
is byte-for-byte the single-process cache.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from mdlm_jax.data import formats
from mdlm_jax.data.formats import Unit
from mdlm_jax.data.tokenizers import Tokenizer, encode_batch

CACHE_VERSION = 1  # bump when the cached tokens' meaning changes
_BATCH_DOCUMENTS = 512  # documents per tokenizer call
_BATCH_CHARACTERS = 4 << 20  # or this many characters, whichever comes first


def cache_dir_for(data_config) -> str:
    """``data.cache_dir``, or ``~/.cache/mdlm_jax`` when it is empty."""
    return os.path.expanduser(data_config.cache_dir or "~/.cache/mdlm_jax")


class TokenArrays(NamedTuple):
    """A part's tokens (N,) (memory-mapped), offsets (D + 1,) int64 and its meta.json."""

    tokens: np.ndarray
    offsets: np.ndarray
    meta: dict


def part_dir(cache_dir: str, dataset: str, tokenizer: str, detokenizer: str, part: str) -> str:
    """Where a part's cache lives (it need not exist)."""
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s)  # noqa: E731
    return os.path.join(os.path.expanduser(cache_dir), safe(dataset),
                        f"{safe(tokenizer)}-{safe(detokenizer)}-v{CACHE_VERSION}", safe(part))


def shard_dir(directory: str, shard: int, num_shards: int) -> str:
    return os.path.join(directory + ".shards", f"{shard:05d}-of-{num_shards:05d}")


def shard_range(num_units: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Units [start, stop) of ``shard``: contiguous and balanced, covering all units once."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard must lie in [0, num_shards); got shard {shard} of {num_shards}.")
    return shard * num_units // num_shards, (shard + 1) * num_units // num_shards


def fingerprint(units: Sequence[Unit], root: str) -> list[list]:
    """The source's identity: each unit's path (relative to ``root``), byte range, kind and file size."""
    return [[os.path.relpath(u.path, root), u.start, u.stop, u.kind, os.path.getsize(u.path)] for u in units]


def documents_key(documents: Iterable[str], *labels: str) -> str:
    """A digest of the documents' text and the ``labels`` (tokenizer, detokenizer, split): any
    changed document or label gives another key."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for text in (*labels, *documents):
        data = text.encode("utf-8", errors="replace")
        digest.update(len(data).to_bytes(8, "little"))  # length prefixes keep boundaries unambiguous
        digest.update(data)
    return digest.hexdigest()[:24]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


# --------------------------------------------------------------------------- reading


def load_dir(directory: str) -> TokenArrays | None:
    """The cache written in ``directory`` (a part or one shard), or None if it is not complete."""
    meta_path = os.path.join(directory, "meta.json")
    if not os.path.isfile(meta_path):
        return None
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    dtype, n = np.dtype(meta["dtype"]), int(meta["tokens"])
    tokens_path = os.path.join(directory, "tokens.bin")
    size = os.path.getsize(tokens_path) if os.path.exists(tokens_path) else -1
    if size != n * dtype.itemsize:
        raise ValueError(f"The token cache {directory} is damaged: tokens.bin holds {size} bytes, meta.json "
                         f"promises {n * dtype.itemsize}. Delete the directory and prepare it again.")
    tokens = np.memmap(tokens_path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    offsets = np.load(os.path.join(directory, "offsets.npy"))
    if len(offsets) != meta["documents"] + 1 or offsets[-1] != n:
        raise ValueError(f"The token cache {directory} is damaged (offsets do not match meta.json); delete it.")
    return TokenArrays(tokens, offsets, meta)


def shard_status(directory: str) -> tuple[int, list[int]]:
    """(num_shards, complete shard indices) found beside ``directory``; (0, []) when none."""
    root = directory + ".shards"
    if not os.path.isdir(root):
        return 0, []
    totals, done = set(), []
    for name in sorted(os.listdir(root)):
        parts = name.split("-of-")
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            totals.add(int(parts[1]))
            if os.path.isfile(os.path.join(root, name, "meta.json")):
                done.append(int(parts[0]))
    if len(totals) > 1:
        raise ValueError(f"{root} mixes shard counts {sorted(totals)}; delete the stale shards.")
    return (totals.pop() if totals else 0), done


def open_part(directory: str) -> TokenArrays | None:
    """The part cached in ``directory``; merges complete shards first. None if there is neither."""
    arrays = load_dir(directory)
    if arrays is not None:
        return arrays
    num_shards, done = shard_status(directory)
    if num_shards and len(done) == num_shards:
        merge_shards(directory)
        return load_dir(directory)
    return None


# --------------------------------------------------------------------------- writing


def _commit(tmp: str, final: str) -> None:
    try:
        os.rename(tmp, final)
    except OSError:
        if not os.path.isfile(os.path.join(final, "meta.json")):
            raise
        shutil.rmtree(tmp)  # another process finished the same cache first; theirs is identical


@contextlib.contextmanager
def _staged(final: str) -> Iterator[str]:
    """A temporary directory beside ``final``, renamed to ``final`` when the block completes and
    deleted when it raises (or is interrupted)."""
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=os.path.basename(final) + ".tmp-")
    try:
        yield tmp
        _commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_meta(directory: str, meta: dict) -> None:
    with open(os.path.join(directory, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _save_offsets(directory: str, lengths) -> None:
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(np.frombuffer(lengths, np.int64) if len(lengths) else np.zeros(0, np.int64), out=offsets[1:])
    with open(os.path.join(directory, "offsets.npy"), "wb") as f:
        np.save(f, offsets)
        f.flush()
        os.fsync(f.fileno())


class _TokenFile:
    """Documents tokenized in batches into ``<directory>/tokens.bin``; on a clean exit of its
    ``with`` block the file is synced and ``offsets.npy`` written."""

    def __init__(self, directory: str, tokenizer: Tokenizer):
        self.directory, self.tokenizer = directory, tokenizer
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.lengths, self.tokens = array.array("q"), 0
        self._batch, self._chars = [], 0
        self._out = open(os.path.join(directory, "tokens.bin"), "wb")

    @property
    def documents(self) -> int:
        return len(self.lengths) + len(self._batch)

    def add(self, text: str) -> None:
        self._batch.append(text)
        self._chars += len(text)
        if len(self._batch) >= _BATCH_DOCUMENTS or self._chars >= _BATCH_CHARACTERS:
            self._flush()

    def _flush(self) -> None:
        for ids in encode_batch(self.tokenizer, self._batch):
            ids = np.asarray(ids)
            if ids.size and (ids.min() < 0 or ids.max() >= self.tokenizer.vocab_size):
                raise ValueError(f"Tokenizer {self.tokenizer.name!r} produced ids outside "
                                 f"[0, {self.tokenizer.vocab_size}).")
            self._out.write(ids.astype(self.dtype, copy=False).tobytes())
            self.lengths.append(int(ids.size))
            self.tokens += int(ids.size)
        self._batch, self._chars = [], 0

    def __enter__(self) -> _TokenFile:
        return self

    def __exit__(self, kind, *_) -> None:
        with self._out:
            if kind is None:
                self._flush()
                self._out.flush()
                os.fsync(self._out.fileno())
        if kind is None:
            _save_offsets(self.directory, self.lengths)

    def with_counts(self, meta: dict, started: float, **counts) -> dict:
        """``meta`` with the version, tokenizer, dtype, the counts and the speed since ``started``."""
        seconds = time.time() - started
        return dict(meta, version=CACHE_VERSION, tokenizer=self.tokenizer.name, dtype=self.dtype.name,
                    documents=len(self.lengths), tokens=self.tokens, **counts, seconds=round(seconds, 3),
                    tokens_per_second=round(self.tokens / max(seconds, 1e-9), 1))


class _Progress:
    def __init__(self, total_bytes: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm  # pylint: disable=import-outside-toplevel

            self.bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, dynamic_ncols=True)

    def update(self, n: int, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_part(units: Sequence[Unit], directory: str, *, tokenizer: Tokenizer, detokenize: Callable[[str], str],
               clean: Callable[[str], str], keep_empty: bool, meta: dict, shard: int = 0, num_shards: int = 1,
               progress: bool = False) -> dict:
    """Reads, cleans, detokenizes and tokenizes ``units`` (shard ``shard`` of ``num_shards`` of
    them) into the cache at ``directory`` (or its shard directory); returns the written meta.

    Empty documents are skipped and counted (``empty_documents``), or kept as zero-token
    documents when ``keep_empty``; documents with invalid UTF-8 are decoded with U+FFFD and
    counted (``invalid_utf8_documents``). ``meta`` adds identifying fields (dataset, part, source).
    """
    start, stop = shard_range(len(units), shard, num_shards)
    final = directory if num_shards == 1 else shard_dir(directory, shard, num_shards)
    stats, empty, started = formats.ReadStats(), 0, time.time()
    bar = _Progress(sum(u.size for u in units[start:stop]), f"{meta.get('dataset', '')}/{meta.get('part', '')}"
                    + (f" shard {shard}/{num_shards}" if num_shards > 1 else ""), progress)
    try:
        with _staged(final) as tmp:
            with _TokenFile(tmp, tokenizer) as out:
                for unit in units[start:stop]:
                    for record in formats.read_unit(unit, stats):
                        text = clean(record)
                        if not text.strip():
                            empty += 1
                            if not keep_empty:
                                continue
                            text = ""
                        out.add(detokenize(text) if text else text)
                    bar.update(unit.size, documents=out.documents, tokens=out.tokens)
            bar.update(0, documents=out.documents, tokens=out.tokens)
            meta = out.with_counts(meta, started, empty_documents=empty, kept_empty=keep_empty,
                                   invalid_utf8_documents=stats.invalid_utf8, units=[start, stop],
                                   num_units=len(units), shard=shard, num_shards=num_shards)
            _write_meta(tmp, meta)
    finally:
        bar.close()
    return meta


def build_documents(documents: Iterable[str], directory: str, *, tokenizer: Tokenizer,
                    detokenize: Callable[[str], str], meta: dict) -> dict:
    """Detokenizes and tokenizes ``documents``, each string one document, into the cache at
    ``directory``; returns the written meta. Whitespace-only documents are skipped and counted
    (``empty_documents``); ``meta`` adds identifying fields (dataset, part, split)."""
    empty, started = 0, time.time()
    with _staged(directory) as tmp:
        with _TokenFile(tmp, tokenizer) as out:
            for text in documents:
                if text.strip():
                    out.add(detokenize(text))
                else:
                    empty += 1
        meta = out.with_counts(meta, started, empty_documents=empty)
        _write_meta(tmp, meta)
    return meta


def merge_shards(directory: str) -> dict:
    """Concatenates the complete shards of ``directory`` in shard order into ``directory``.

    Raises ValueError naming the missing shards, or shards built from other sources. The shard
    directories are left in place (delete ``<part>.shards`` once the merge is done).
    """
    num_shards, done = shard_status(directory)
    if not num_shards:
        raise ValueError(f"No shards to merge beside {directory} (expected {directory}.shards/).")
    missing = sorted(set(range(num_shards)) - set(done))
    if missing:
        raise ValueError(f"Cannot merge {directory}: shards {missing} of {num_shards} are not complete; run "
                         f"`prepare ... --shard I --num-shards {num_shards}` for them first.")
    shards = [load_dir(shard_dir(directory, i, num_shards)) for i in range(num_shards)]
    first = shards[0].meta
    for s in shards[1:]:
        for key in ("dataset", "part", "tokenizer", "detokenizer", "dtype", "source_files", "num_units", "version"):
            if s.meta.get(key) != first.get(key):
                raise ValueError(f"Cannot merge {directory}: shard {s.meta['shard']} differs from shard 0 in "
                                 f"{key!r} ({s.meta.get(key)!r} != {first.get(key)!r}); rebuild the stale shard.")
    with _staged(directory) as tmp:
        lengths = array.array("q")
        with open(os.path.join(tmp, "tokens.bin"), "wb") as out:
            for i in range(num_shards):
                with open(os.path.join(shard_dir(directory, i, num_shards), "tokens.bin"), "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
                lengths.extend(np.diff(shards[i].offsets).astype(np.int64).tolist())
            out.flush()
            os.fsync(out.fileno())
        _save_offsets(tmp, lengths)
        total = lambda key: sum(s.meta[key] for s in shards)  # noqa: E731
        seconds = max(s.meta["seconds"] for s in shards)
        meta = dict(first, documents=total("documents"), tokens=total("tokens"),
                    empty_documents=total("empty_documents"), invalid_utf8_documents=total("invalid_utf8_documents"),
                    units=[0, first["num_units"]], shard=0, num_shards=1, merged_from=num_shards,
                    seconds=round(sum(s.meta["seconds"] for s in shards), 3),
                    tokens_per_second=round(total("tokens") / max(seconds, 1e-9), 1))
        _write_meta(tmp, meta)
    return meta
