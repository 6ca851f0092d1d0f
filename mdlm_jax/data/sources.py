"""Text sources: documents as lists of strings, and the deterministic train/validation split."""

from __future__ import annotations

import glob
import json
import math
import os
from typing import Iterable, NamedTuple

SPLITS = ("train", "validation")


class Corpus(NamedTuple):
    """The non-empty documents of a source, in order, and how many empty ones were skipped."""

    documents: list[str]
    skipped_empty: int


def _is_empty(text: str) -> bool:
    # Whitespace-only documents carry no signal but would still cost a BOS/EOS pair.
    return not text.strip()


def _corpus(texts: Iterable[str]) -> Corpus:
    documents, skipped = [], 0
    for text in texts:
        if _is_empty(text):
            skipped += 1
        else:
            documents.append(text)
    return Corpus(documents, skipped)


def embedded_corpus() -> Corpus:
    """Python's own ``pydoc_data.topics`` help texts (79 documents, about 0.5 MB of English).

    Ships with every CPython, so the quickstart and the tests never download anything.
    """
    from pydoc_data.topics import topics  # pylint: disable=import-outside-toplevel

    return _corpus(topics[key] for key in sorted(topics))


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Paths in the given order, each glob expanded in sorted order.

    Raises FileNotFoundError naming a missing file or a glob that matches nothing.
    """
    out = []
    for path in paths:
        path = os.path.expanduser(str(path))
        if glob.has_magic(path):
            matches = sorted(glob.glob(path))
            if not matches:
                raise FileNotFoundError(f"No files match the pattern {path!r}.")
            out.extend(matches)
        elif not os.path.isfile(path):
            raise FileNotFoundError(f"Data file not found: {path!r}.")
        else:
            out.append(path)
    return out


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def _read_jsonl(path: str, field: str) -> Iterable[str]:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg}).") from e
            if not isinstance(record, dict) or field not in record:
                raise ValueError(f"{path}:{line_no}: the record has no field {field!r} "
                                 "(set data.jsonl_field to the field that holds the text).")
            yield str(record[field])


def _read_file(path: str, jsonl_field: str) -> Iterable[str]:
    if path.endswith(".txt"):
        return [_read_text(path)]
    if path.endswith(".jsonl"):
        return _read_jsonl(path, jsonl_field)
    raise ValueError(f"Unsupported data file {path!r}: use .txt (one document per file) "
                     "or .jsonl (one document per line).")


def text_files(paths: Iterable[str], *, jsonl_field: str = "text") -> Corpus:
    """Documents from ``.txt`` files (one per file) and ``.jsonl`` files (one per line).

    ``paths`` may hold globs. Invalid UTF-8 becomes U+FFFD; empty documents are skipped and
    counted in ``Corpus.skipped_empty``.
    """
    files = expand_paths(paths)
    if not files:
        raise ValueError("No data files given: set data.files to .txt / .jsonl paths or globs.")
    return _corpus(text for path in files for text in _read_file(path, jsonl_field))


def split_documents(documents: list[str], val_fraction: float, split: str) -> list[str]:
    """The ``split`` part of ``documents``: validation is the last ceil(val_fraction * n).

    At least one validation document when val_fraction > 0; ValueError if no training
    documents would remain.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1); got {val_fraction}.")
    n = len(documents)
    # Rounding first keeps float error from adding a document (0.07 * 100 = 7.000000000000001).
    n_val = max(1, math.ceil(round(val_fraction * n, 9))) if val_fraction > 0 else 0
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} of {n} documents leaves no training documents; "
                         "add documents or lower data.val_fraction.")
    return list(documents[:n - n_val]) if split == "train" else list(documents[n - n_val:])
