"""The prepared token cache of a dataset part: written once (optionally in shards, by several
hosts), then memory-mapped for random access.

A part lives in ``<cache_dir>/<dataset>/<tokenizer>-<detokenizer>-v<version>/<part>/``:
``tokens.bin`` (every document's tokens back to back, uint16 when the vocabulary fits, else
int32), ``offsets.npy`` (int64, D + 1; document d is ``tokens[offsets[d]:offsets[d + 1]]``) and
``meta.json`` (counts, dtype, the source files it was built from). Each directory is written
under a temporary name and renamed into place, so a killed writer never leaves a half cache.

Shard i of N covers the contiguous units ``[i U / N, (i + 1) U / N)`` of the part and is written
to ``<part>.shards/<i>-of-<N>/``; ``merge_shards`` concatenates complete shards in order, which
is byte-for-byte the single-process cache.
"""

from __future__ import annotations

import array
import json
import os
import shutil
import tempfile
import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from mdlm_jax.data import formats
from mdlm_jax.data.formats import Unit
from mdlm_jax.data.tokenizers import Tokenizer, encode_batch

CACHE_VERSION = 1  # bump when the cached tokens' meaning changes
_BATCH_DOCUMENTS = 512  # documents per tokenizer call
_BATCH_CHARACTERS = 4 << 20  # or this many characters, whichever comes first


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
    os.makedirs(os.path.dirname(final), exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not os.path.isfile(os.path.join(final, "meta.json")):
            raise
        shutil.rmtree(tmp)  # another process finished the same cache first; theirs is identical


def _write_meta(directory: str, meta: dict) -> None:
    with open(os.path.join(directory, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _save_offsets(directory: str, lengths) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(np.frombuffer(lengths, np.int64) if len(lengths) else np.zeros(0, np.int64), out=offsets[1:])
    with open(os.path.join(directory, "offsets.npy"), "wb") as f:
        np.save(f, offsets)
        f.flush()
        os.fsync(f.fileno())
    return offsets


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
    os.makedirs(os.path.dirname(final), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(final), prefix=os.path.basename(final) + ".tmp-")
    dtype = token_dtype(tokenizer.vocab_size)
    stats = formats.ReadStats()
    lengths, empty, n_tokens, batch, batch_chars = array.array("q"), 0, 0, [], 0
    t0 = time.time()
    bar = _Progress(sum(u.size for u in units[start:stop]), f"{meta.get('dataset', '')}/{meta.get('part', '')}"
                    + (f" shard {shard}/{num_shards}" if num_shards > 1 else ""), progress)

    def flush(out) -> None:
        nonlocal n_tokens, batch, batch_chars
        for ids in encode_batch(tokenizer, batch):
            ids = np.asarray(ids)
            if ids.size and (ids.min() < 0 or ids.max() >= tokenizer.vocab_size):
                raise ValueError(f"Tokenizer {tokenizer.name!r} produced ids outside [0, {tokenizer.vocab_size}).")
            out.write(ids.astype(dtype, copy=False).tobytes())
            lengths.append(int(ids.size))
            n_tokens += int(ids.size)
        batch, batch_chars = [], 0

    try:
        with open(os.path.join(tmp, "tokens.bin"), "wb") as out:
            for unit in units[start:stop]:
                for record in formats.read_unit(unit, stats):
                    text = clean(record)
                    if not text.strip():
                        empty += 1
                        if not keep_empty:
                            continue
                        text = ""
                    batch.append(detokenize(text) if text else text)
                    batch_chars += len(text)
                    if len(batch) >= _BATCH_DOCUMENTS or batch_chars >= _BATCH_CHARACTERS:
                        flush(out)
                bar.update(unit.size, documents=len(lengths) + len(batch), tokens=n_tokens)
            flush(out)
            bar.update(0, documents=len(lengths), tokens=n_tokens)
            out.flush()
            os.fsync(out.fileno())
        _save_offsets(tmp, lengths)
        seconds = time.time() - t0
        meta = dict(meta, version=CACHE_VERSION, tokenizer=tokenizer.name, dtype=dtype.name,
                    documents=len(lengths), tokens=n_tokens, empty_documents=empty, kept_empty=keep_empty,
                    invalid_utf8_documents=stats.invalid_utf8, units=[start, stop], num_units=len(units),
                    shard=shard, num_shards=num_shards, seconds=round(seconds, 3),
                    tokens_per_second=round(n_tokens / max(seconds, 1e-9), 1))
        _write_meta(tmp, meta)
        _commit(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
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
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(directory), prefix=os.path.basename(directory) + ".tmp-")
    try:
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
        _commit(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
