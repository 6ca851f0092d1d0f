"""Text sources: documents as lists of strings, the deterministic train/validation split, and the
two datasets built on them: 'embedded' (Python's help texts) and 'files' (``data.files``).

The user's own files (``text_files``) are refused when they look binary or hold no text, and
their invalid UTF-8 is reported per file or refused (``data.invalid_utf8``).
"""

from __future__ import annotations

import abc
import glob
import gzip
import json
import logging
import math
import os
import re
from typing import Iterable, NamedTuple

from mdlm_jax.data.registry import DocumentDataset, register_dataset

SPLITS = ("train", "validation")
INVALID_UTF8_MODES = ("warn", "error")
SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")  # what a data directory contributes
# How a .txt file is cut into documents: 'blank_lines' (runs of lines between blank lines), 'file'
# (the whole file is one document), or any other string: a line holding just that separates documents.
TXT_SPLITS = ("blank_lines", "file")
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")

# The first block of a data file is checked for signs of binary content.
_HEAD_BYTES = 64 << 10
# C0 controls that real text does use: whitespace, backspace (overstruck man pages) and ESC (ANSI
# colours in logs). The rest, and DEL, are counted as signs of binary content.
_BINARY_CONTROLS = bytes(c for c in range(1, 32) if chr(c) not in "\t\n\v\f\r\b\x1b") + b"\x7f"
_NOT_BINARY_CONTROLS = bytes(sorted(set(range(256)) - set(_BINARY_CONTROLS)))
_MAX_CONTROL_FRACTION = 0.1
# errors="surrogateescape" turns each invalid byte into one of these; valid UTF-8 never decodes to them.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


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
    """The data files of ``paths`` in the given order: each entry may be a comma-separated list
    (``--config.data.files=a.txt,b.txt``), a file, a glob (sorted) or a directory (every
    ``SUFFIXES`` file below it, sorted by path).

    Raises FileNotFoundError naming a missing path, a glob that matches nothing, or a directory
    without data files.
    """
    out = []
    for entry in paths:
        for path in (p.strip() for p in str(entry).split(",")):
            if not path:
                continue
            path = os.path.expanduser(path)
            if glob.has_magic(path):
                matches = sorted(glob.glob(path))
                if not matches:
                    raise FileNotFoundError(f"No files match the pattern {path!r}.")
                out.extend(matches)
            elif os.path.isdir(path):
                found = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names
                               if name.endswith(SUFFIXES))
                if not found:
                    raise FileNotFoundError(f"The data directory {path!r} holds no {' / '.join(SUFFIXES)} files.")
                out.extend(found)
            elif not os.path.isfile(path):
                raise FileNotFoundError(f"Data file not found: {path!r}.")
            else:
                out.append(path)
    return out


def split_text(text: str, how: str = "blank_lines") -> list[str]:
    """The documents of one .txt file's text (``TXT_SPLITS``): 'blank_lines' cuts at every run of
    blank (or whitespace-only) lines, 'file' keeps the whole text, any other string cuts at the
    lines that hold just it (e.g. '<|endoftext|>'). Empty pieces are left for the caller to drop."""
    if how == "file":
        return [text]
    if how == "blank_lines":
        return _BLANK_LINES.split(text)
    return re.split(rf"^[^\S\n]*{re.escape(how)}[^\S\n]*(?:\n|$)", text, flags=re.M)


def _open(path: str):
    """A binary file object of ``path``, decompressed when it ends in .gz."""
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def check_invalid_utf8(mode: str) -> str:
    """``mode`` if it is one of ``INVALID_UTF8_MODES``; ValueError naming ``data.invalid_utf8`` otherwise."""
    if mode not in INVALID_UTF8_MODES:
        raise ValueError(f"data.invalid_utf8 must be one of {INVALID_UTF8_MODES}; got {mode!r}. Use 'warn' to "
                         "replace invalid UTF-8 by U+FFFD and report it, or 'error' to refuse such files.")
    return mode


def invalid_utf8_for(data_config) -> str:
    """``data.invalid_utf8`` ('warn' when absent), checked to be 'warn' or 'error'."""
    return check_invalid_utf8(getattr(data_config, "invalid_utf8", "warn"))


def _check_not_binary(path: str, head: bytes) -> None:
    """Raises ValueError if ``head``, the first bytes of ``path``, look binary.

    The rule: a NUL byte, or more than 1 byte in 10 being a C0 control other than whitespace,
    backspace and ESC (or DEL). UTF-8 text never holds NUL, and text, even a log full of ANSI
    colours or an overstruck man page, holds such controls only as rare strays; binary formats
    (archives, images, arrays, pickles) hold NULs within their first block.
    """
    if b"\0" in head:
        reason = f"it holds a NUL byte (at byte {head.index(0)}), which UTF-8 text never does"
    else:
        controls = len(head.translate(None, _NOT_BINARY_CONTROLS))
        if controls <= _MAX_CONTROL_FRACTION * len(head):
            return
        reason = (f"{controls} of its first {len(head)} bytes ({controls / len(head):.0%}) are control "
                  "characters, which text holds only as rare strays")
    raise ValueError(f"{path} looks binary, not text: {reason}. data.files takes UTF-8 text (.txt: one document "
                     "per file; .jsonl: one JSON record per line): remove the file from data.files, or if it is "
                     "UTF-16 / UTF-32 text convert it first (iconv -f UTF-16 -t UTF-8 IN > OUT).")


class _InvalidUtf8:
    """The invalid UTF-8 of one file: bytes replaced by U+FFFD, lines they lie on, and the first one's place."""

    def __init__(self):
        self.n_bytes = self.n_lines = 0
        self.first_byte = self.first_line = -1

    def decode(self, data: bytes, *, offset: int, line: int, path: str, mode: str) -> str:
        """``data`` (which starts at byte ``offset``, on line ``line``, of ``path``) decoded as
        ``errors="replace"`` does; the invalid bytes are counted, or refused when ``mode`` is 'error'."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as e:
            if mode == "error":
                at, where = offset + e.start, line + data.count(b"\n", 0, e.start)
                raise ValueError(f"{path}: invalid UTF-8 at byte {at} (line {where}): {data[e.start:e.start + 4]!r}. "
                                 "Re-encode the file as UTF-8 (if it is Latin-1: iconv -f LATIN1 -t UTF-8 IN > OUT), "
                                 "or set data.invalid_utf8='warn' to replace invalid bytes by U+FFFD.") from None
        escaped = data.decode("utf-8", errors="surrogateescape")
        last_line, at_char, at_line = -1, 0, line
        for match in _ESCAPED_BYTE.finditer(escaped):
            at_line += escaped.count("\n", at_char, match.start())
            at_char = match.start()
            if self.first_byte < 0:
                self.first_line = at_line
                self.first_byte = offset + len(escaped[:at_char].encode("utf-8", errors="surrogateescape"))
            self.n_bytes += 1
            if at_line != last_line:
                self.n_lines, last_line = self.n_lines + 1, at_line
        return data.decode("utf-8", errors="replace")

    def report(self, path: str, lines_are: str) -> None:
        """One warning for the file, if it held invalid UTF-8; ``lines_are`` names what its lines are."""
        if self.n_bytes:
            logging.warning(
                "%s: %d bytes of invalid UTF-8 on %d %s (the first at byte %d, line %d) were replaced by U+FFFD. "
                "Re-encode the file as UTF-8 (if it is Latin-1: iconv -f LATIN1 -t UTF-8 IN > OUT), or set "
                "data.invalid_utf8='error' to refuse it.", path, self.n_bytes, self.n_lines, lines_are, self.first_byte,
                self.first_line)


def _read_text(path: str, mode: str, how: str) -> list[str]:
    with _open(path) as f:
        data = f.read()
    _check_not_binary(path, data[:_HEAD_BYTES])
    invalid = _InvalidUtf8()
    text = invalid.decode(data, offset=0, line=1, path=path, mode=mode)
    invalid.report(path, "line(s)")
    return split_text(text, how)


def _read_jsonl(path: str, field: str, mode: str) -> list[str]:
    texts, invalid, offset = [], _InvalidUtf8(), 0
    with _open(path) as f:
        _check_not_binary(path, f.read(_HEAD_BYTES))
        f.seek(0)
        for line_no, raw in enumerate(f, start=1):
            line = invalid.decode(raw, offset=offset, line=line_no, path=path, mode=mode).strip()
            offset += len(raw)
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg}).") from e
            if not isinstance(record, dict) or field not in record:
                raise ValueError(f"{path}:{line_no}: the record has no field {field!r} "
                                 "(set data.jsonl_field to the field that holds the text).")
            texts.append(str(record[field]))
    invalid.report(path, "line(s), each a record")
    return texts


def _read_file(path: str, jsonl_field: str, mode: str, how: str) -> list[str]:
    if path.endswith((".txt", ".txt.gz")):
        return _read_text(path, mode, how)
    if path.endswith((".jsonl", ".jsonl.gz")):
        return _read_jsonl(path, jsonl_field, mode)
    raise ValueError(f"Unsupported data file {path!r}: use .txt (documents separated by blank lines, see "
                     "data.txt_split) or .jsonl (one document per line), optionally gzipped (.gz).")


def _no_text(path: str, jsonl_field: str) -> str:
    if os.path.getsize(path) == 0:
        what = "is empty (0 bytes)"
    elif path.endswith((".txt", ".txt.gz")):
        what = "holds only whitespace"
    else:
        what = f"has no record with a non-empty {jsonl_field!r} field"
    # Even among many files, one that adds nothing is most likely a failed copy or export or a
    # wrong glob, so it is refused rather than skipped.
    return f"The data file {path} {what}; fill it or remove it from data.files."


def text_files(paths: Iterable[str], *, jsonl_field: str = "text", invalid_utf8: str = "warn",
               txt_split: str = "blank_lines") -> Corpus:
    """Documents from ``.txt`` files (cut by ``split_text(txt_split)``) and ``.jsonl`` files (one
    per line), either optionally gzipped.

    ``paths`` may hold comma-separated lists, globs and directories (``expand_paths``). Raises
    ValueError naming the file for one that looks binary or holds no non-empty document. Invalid UTF-8
    becomes U+FFFD with one warning per file (``invalid_utf8='warn'``), or raises naming the file and
    byte (``'error'``). Empty
    records of ``.jsonl`` files are skipped and counted in ``Corpus.skipped_empty``.
    """
    check_invalid_utf8(invalid_utf8)
    if not txt_split:
        raise ValueError(f"data.txt_split must be one of {TXT_SPLITS} or a separator line; got an empty string.")
    files = expand_paths(paths)
    if not files:
        raise ValueError("No data files given: set data.files to .txt / .jsonl files, globs or directories.")
    documents, skipped = [], 0
    for path in files:
        corpus = _corpus(_read_file(path, jsonl_field, invalid_utf8, txt_split))
        if not corpus.documents:
            raise ValueError(_no_text(path, jsonl_field))
        documents.extend(corpus.documents)
        skipped += corpus.skipped_empty
    return Corpus(documents, skipped)


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


class CorpusDataset(DocumentDataset):
    """A corpus read whole, then split: validation is its last ``data.val_fraction`` of documents
    (``split_documents``), train the rest."""

    @abc.abstractmethod
    def corpus(self, data_config) -> Corpus:
        """All documents, before the split."""

    def documents(self, data_config, split: str) -> list[str]:
        return split_documents(self.corpus(data_config).documents, data_config.val_fraction, split)


@register_dataset
class EmbeddedCorpus(CorpusDataset):
    """``embedded_corpus``: the quickstart's and the tests' data, on every machine."""

    name, title = "embedded", "the embedded corpus (pydoc_data.topics)"

    def corpus(self, data_config) -> Corpus:
        return embedded_corpus()


@register_dataset
class OwnFiles(CorpusDataset):
    """``text_files`` of ``data.files``, with ``data.jsonl_field``, ``data.txt_split`` and
    ``data.invalid_utf8``."""

    name, title = "files", "data.files"

    def corpus(self, data_config) -> Corpus:
        return text_files(data_config.files, jsonl_field=data_config.jsonl_field,
                          invalid_utf8=invalid_utf8_for(data_config),
                          txt_split=getattr(data_config, "txt_split", "blank_lines"))
