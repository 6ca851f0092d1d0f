"""Datasets prepared by TensorFlow Datasets in the ArrayRecord format, read with tfds's random-access
data source (``builder_from_directory(...).as_data_source(split)``, the last step of
``tfds.data_source``).

Reading needs no TensorFlow: tfds reads ArrayRecord shards with the ``array_record`` package and
decodes ``Text`` features with numpy. Building the dataset does (the official ``lm1b`` builder
calls ``tf.io.gfile``), so it is done once on a machine with TensorFlow::

    tfds build lm1b --file_format=array_record --data_dir=DIR

A copy in tfds's default TFRecord format can only be read through ``tf.data``; it is refused with
that command (or ``tfds convert_format``) in the message.

A split's examples are cut into ``Unit``s of kind ``tfds``: a record range ``[start, stop)`` of one
shard file, so that ``cache.py`` fingerprints, shards and tokenizes them like any other file. The
order is tfds's (its shards, each shuffled by example key at build time), not the raw files'.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from typing import Iterator, NamedTuple

from mdlm_jax.data.formats import DEFAULT_UNIT_BYTES, ReadStats, SourceError, Unit

ARRAY_RECORD = "array_record"
_READ_BATCH = 1024  # examples per data-source call
_VERSION = re.compile(r"\d+\.\d+\.\d+")


class TfdsName(NamedTuple):
    """A dataset's name in TensorFlow Datasets: the builder, the config directories that hold the
    text ('' = a builder without configs; older tfds releases put LM1B under ``plain_text``), the
    text feature(s) (several are joined by a space: AG News's title and description), and
    part -> tfds split."""

    name: str
    fields: tuple[str, ...]
    parts: dict[str, str]
    configs: tuple[str, ...] = ("",)

    def build_command(self, data_dir: str = "DIR") -> str:
        full = f"{self.name}/{self.configs[0]}" if self.configs[0] else self.name
        return f"tfds build {full} --file_format={ARRAY_RECORD} --data_dir={data_dir}"


class Prepared(NamedTuple):
    """A prepared copy: its version directory, version and the file formats its shards exist in."""

    directory: str
    version: tuple[int, ...]
    formats: frozenset[str]


def default_data_dir() -> str:
    """tfds's default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def data_dir_for(data_config) -> tuple[str, bool]:
    """(``data.tfds_data_dir`` or tfds's default, whether it was set explicitly)."""
    explicit = str(getattr(data_config, "tfds_data_dir", "") or "")
    return (os.path.expanduser(explicit) if explicit else default_data_dir()), bool(explicit)


def _formats(info_path: str) -> frozenset[str]:
    # dataset_info.json is the DatasetInfo proto as JSON; copies from before tfds wrote the
    # field are TFRecord, its default.
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    return frozenset([info.get("fileFormat") or "tfrecord", *info.get("alternativeFileFormats", [])])


def find(spec: TfdsName, data_dir: str) -> list[Prepared]:
    """The prepared copies of ``spec`` under ``data_dir`` (``<name>[/<config>]/<version>/`` with a
    ``dataset_info.json``; tfds renames a build into place when it completes), newest first."""
    found = []
    for config in spec.configs:
        root = os.path.join(data_dir, spec.name, config)
        if not os.path.isdir(root):
            continue
        for version in os.listdir(root):
            info_path = os.path.join(root, version, "dataset_info.json")
            if _VERSION.fullmatch(version) and os.path.isfile(info_path):
                found.append(Prepared(os.path.join(root, version), tuple(map(int, version.split("."))),
                                      _formats(info_path)))
    return sorted(found, key=lambda p: p.version, reverse=True)


def _tfds():
    try:
        import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError("Reading a TensorFlow Datasets copy needs `pip install tensorflow-datasets array-record` "
                          f"(not TensorFlow): {e}") from e
    return tfds


@functools.lru_cache(maxsize=None)
def _builder(directory: str):
    return _tfds().builder_from_directory(directory, file_format=ARRAY_RECORD)


@functools.lru_cache(maxsize=None)
def _shards(directory: str) -> dict[str, tuple[str, int]]:
    """Shard file name -> (split, index of its first example in the split's data source)."""
    out = {}
    for split, split_info in _builder(directory).info.splits.items():
        offset = 0
        for instruction in split_info.file_instructions:
            out[os.path.basename(os.fspath(instruction.filename))] = (split, offset - instruction.skip)
            offset += instruction.take
    return out


@functools.lru_cache(maxsize=None)
def _data_source(directory: str, split: str):
    return _builder(directory).as_data_source(split=split)


def units(prepared: Prepared, spec: TfdsName, *, unit_bytes: int = DEFAULT_UNIT_BYTES) -> dict[str, list[Unit]]:
    """The units of every part whose split the copy holds: record ranges of about ``unit_bytes``
    of each ArrayRecord shard. Raises ValueError if the copy lacks the text feature(s)."""
    info = _builder(prepared.directory).info
    names = list(info.features.keys()) if info.features is not None else []
    missing = [f for f in spec.fields if f not in names]
    if missing:
        raise ValueError(f"The TensorFlow Datasets copy {prepared.directory} has no feature "
                         f"{' or '.join(map(repr, missing))} (features: {names}); it is not the plain-text "
                         f"{spec.name}.")
    parts = {}
    for part, split in spec.parts.items():
        if split not in info.splits:
            continue
        found = []
        for instruction in info.splits[split].file_instructions:
            path = os.fspath(instruction.filename)
            size = os.path.getsize(path)
            start, stop = instruction.skip, instruction.skip + instruction.take
            step = max(1, math.ceil(instruction.examples_in_shard * unit_bytes / max(size, 1)))
            for a in range(start, stop, step):
                b = min(a + step, stop)
                found.append(Unit("tfds", path, a, b, "+".join(spec.fields),
                                  size * (b - a) // max(instruction.examples_in_shard, 1)))
        if found:
            parts[part] = found
    return parts


def _text(value, stats: ReadStats) -> str:
    if isinstance(value, bytes):
        return stats.decode(value)
    if hasattr(value, "item"):  # a numpy scalar
        return _text(value.item(), stats)
    return "" if value is None else str(value)


def read_tfds(unit: Unit, stats: ReadStats) -> Iterator[str]:
    """Examples ``[start, stop)`` of one shard, through tfds's data source: the ``field``
    feature(s) (``a+b``: joined by a space), UTF-8 decoded."""
    directory = os.path.dirname(unit.path)
    name = os.path.basename(unit.path)
    shards = _shards(directory)
    if name not in shards:
        raise SourceError(f"{unit.path} is not a shard of the TensorFlow Datasets copy in {directory}.")
    split, offset = shards[name]
    source = _data_source(directory, split)
    fields = unit.field.split("+")
    for a in range(unit.start, unit.stop, _READ_BATCH):
        keys = list(range(offset + a, offset + min(a + _READ_BATCH, unit.stop)))
        for example in source.__getitems__(keys):
            yield " ".join(_text(example[f], stats) for f in fields)
