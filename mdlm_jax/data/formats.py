"""Raw on-disk formats: read documents out of line files, JSON lines, CSV, Parquet, Arrow, archives,
and the ArrayRecord shards of TensorFlow Datasets copies (``tfds_source``).

A source is cut into ``Unit``s, pieces that can be read independently and in any process: a
whole file, or a byte range of a line-per-record file. Reading the units in order gives the
documents in order, so that hosts can each tokenize a contiguous range of units and the results
concatenate to exactly what one process would have produced.

Text is decoded as UTF-8; invalid bytes become U+FFFD and the documents they touched are counted.
Line files are read with Python's text-mode newline rule (``\\r\\n`` and ``\\r`` become ``\\n``),
as the official loaders read them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import os
import tarfile
import zipfile
from typing import Callable, Iterator, NamedTuple

DEFAULT_UNIT_BYTES = 64 << 20  # line files larger than this are read as several units


class Unit(NamedTuple):
    """One independently readable piece of a source.

    ``kind`` names a reader in ``READERS``; ``start``/``stop`` bound a byte range for line-based
    kinds (a record belongs to the unit where its first byte lies; stop -1 = end of file), or a
    record range of one shard for ``tfds``;
    ``field`` is the record field that holds the text; ``size`` is in bytes, for progress bars.
    """

    kind: str
    path: str
    start: int = 0
    stop: int = -1
    field: str = ""
    size: int = 0


class SourceError(ValueError):
    """A problem in a source file, with a message that names the file (and line)."""


class ReadStats:
    """Counters a reader updates: documents that held invalid UTF-8."""

    def __init__(self):
        self.invalid_utf8 = 0

    def decode(self, data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid_utf8 += 1
            return data.decode("utf-8", errors="replace")


def text_mode_newlines(text: str) -> str:
    """Python's universal-newline translation: ``\\r\\n`` and lone ``\\r`` become ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _byte_ranges(path: str, unit_bytes: int) -> list[tuple[int, int, int]]:
    size = os.path.getsize(path)
    if size <= unit_bytes:
        return [(0, -1, size)]
    starts = list(range(0, size, unit_bytes))
    return [(s, min(s + unit_bytes, size), min(s + unit_bytes, size) - s) for s in starts]


def line_units(kind: str, path: str, *, field: str = "", unit_bytes: int = DEFAULT_UNIT_BYTES) -> list[Unit]:
    """Units of a line-per-record file: the whole file, or byte ranges of about ``unit_bytes``."""
    return [Unit(kind, path, start, stop, field, size) for start, stop, size in _byte_ranges(path, unit_bytes)]


def file_unit(kind: str, path: str, *, field: str = "") -> Unit:
    """The whole of ``path`` as one unit."""
    return Unit(kind, path, 0, -1, field, os.path.getsize(path))


def _raw_lines(unit: Unit) -> Iterator[bytes]:
    """The byte lines (``\\n`` kept) whose first byte lies in [start, stop); a ``.gz`` file is
    decompressed and read whole (its units are whole files: a byte offset cannot be seeked)."""
    if unit.path.endswith(".gz"):
        with gzip.open(unit.path, "rb") as f:
            yield from f
        return
    with open(unit.path, "rb") as f:
        pos = unit.start
        if pos > 0:
            # Finish the line that holds byte start - 1: it belongs to the previous unit.
            f.seek(pos - 1)
            pos += len(f.readline()) - 1
        for line in f:
            if unit.stop >= 0 and pos >= unit.stop:
                return
            pos += len(line)
            yield line


def read_lines(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """Each line as a record, newline kept, in text mode (a lone ``\\r`` also ends a line)."""
    for raw in _raw_lines(unit):
        line = text_mode_newlines(stats.decode(raw))
        if "\n" in line[:-1]:  # a lone \r inside: text mode would have yielded several lines
            yield from _split_keep(line)
        else:
            yield line


def _split_keep(text: str) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _field_text(record, field: str, where: str) -> str:
    # ``field`` may list alternatives, first match wins: "article|article_text".
    names = field.split("|")
    name = next((n for n in names if isinstance(record, dict) and n in record), None)
    if name is None:
        raise SourceError(f"{where}: the record has no field {' or '.join(map(repr, names))}.")
    value = record[name]
    if isinstance(value, list):  # scientific papers' article_text: a list of paragraphs
        return "\n".join(str(v) for v in value)
    return "" if value is None else str(value)


def read_jsonl(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """JSON lines: ``record[field]`` of each non-blank line (a list of strings is joined by newlines)."""
    for line_no, raw in enumerate(_raw_lines(unit), start=1):
        line = stats.decode(raw).strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            where = f"{unit.path} (line {line_no} of the unit at byte {unit.start})" if unit.start else \
                f"{unit.path}:{line_no}"
            raise SourceError(f"{where}: not valid JSON ({e.msg}); is the file truncated?") from e
        yield _field_text(record, unit.field, f"{unit.path}:{line_no}")


def read_text_file(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """The whole file as one document (text-mode newlines)."""
    with open(unit.path, "rb") as f:
        yield text_mode_newlines(stats.decode(f.read()))


def read_ag_news_csv(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """AG News CSV rows ``"class","title","description"`` (no header) -> ``title + " " + description``."""
    with open(unit.path, "rb") as f:
        text = text_mode_newlines(stats.decode(f.read()))
    reader = csv.reader(io.StringIO(text), quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL,
                        skipinitialspace=True)
    for row_no, row in enumerate(reader, start=1):
        if len(row) != 3:
            raise SourceError(f"{unit.path}:{row_no}: expected 3 columns (class, title, description), got {len(row)}.")
        yield row[1] + " " + row[2]


def read_parquet(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """Column ``field`` of a Parquet file."""
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    table = pq.ParquetFile(unit.path)
    if unit.field not in table.schema_arrow.names:
        raise SourceError(f"{unit.path}: no column {unit.field!r} (columns: {table.schema_arrow.names}).")
    for batch in table.iter_batches(columns=[unit.field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            yield "" if value is None else value


def read_arrow(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """Column ``field`` of an Arrow IPC stream file (the Hugging Face ``datasets`` cache format)."""
    import pyarrow as pa  # pylint: disable=import-outside-toplevel

    with pa.memory_map(unit.path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            batches = iter(reader)
        for batch in batches:
            if unit.field not in batch.schema.names:
                raise SourceError(f"{unit.path}: no column {unit.field!r} (columns: {batch.schema.names}).")
            for value in batch.column(unit.field).to_pylist():
                yield "" if value is None else value


def read_owt_subset(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """One OpenWebText subset archive (``urlsf_subsetNN-M_data.xz``, an xz-compressed tar of .txt
    documents): its documents in sorted member-name order, each text-mode decoded."""
    # Decompress the whole subset first (a few MB): xz cannot seek back cheaply, and reading to
    # the end-of-stream marker is what detects a truncated download.
    with lzma.open(unit.path) as f:
        payload = f.read()
    members = []
    with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".txt"):
                members.append((member.name, tar.extractfile(member).read()))
    members.sort(key=lambda m: m[0])
    for _, data in members:
        yield text_mode_newlines(stats.decode(data))


def read_zip_member(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """The zip member named ``field`` (text8.zip holds one member, ``text8``) as one document."""
    with zipfile.ZipFile(unit.path) as archive:
        try:
            data = archive.read(unit.field)
        except KeyError as e:
            raise SourceError(f"{unit.path}: no member {unit.field!r} (members: {archive.namelist()[:5]}).") from e
    yield stats.decode(data)


def read_tfds(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """Examples ``[start, stop)`` of one ArrayRecord shard of a TensorFlow Datasets copy (``tfds_source``)."""
    from mdlm_jax.data import tfds_source  # pylint: disable=import-outside-toplevel

    yield from tfds_source.read_tfds(unit, stats)


READERS: dict[str, Callable[[Unit, ReadStats], Iterator[str]]] = {
    "lines": read_lines,
    "jsonl": read_jsonl,
    "text": read_text_file,
    "ag_news_csv": read_ag_news_csv,
    "parquet": read_parquet,
    "arrow": read_arrow,
    "owt_subset": read_owt_subset,
    "zip_member": read_zip_member,
    "tfds": read_tfds,
}


def read_unit(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """The raw records of ``unit``; read errors (truncated or corrupt files) name the file."""
    try:
        yield from READERS[unit.kind](unit, stats)
    except (SourceError, FileNotFoundError):
        raise
    except Exception as e:  # pylint: disable=broad-except  # lzma, tarfile, zipfile, pyarrow, csv all differ
        raise SourceError(f"Cannot read {unit.path} as {unit.kind} ({type(e).__name__}: {e}); the file may be "
                          "truncated or corrupt: download or copy it again.") from e
