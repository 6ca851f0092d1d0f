"""Datasets by registry: ``data.source`` names one; ``register_dataset`` adds one.

A dataset gives the pipeline the tokens of each of its splits; the pipeline packs them into
blocks. A dataset added from outside is usually a ``DocumentDataset``: documents per split, which
the pipeline detokenizes and tokenizes once into the token cache (``cache.py``). One module and
one registry line add one::

    @register_dataset
    class Poems(DocumentDataset):
        name = "poems"  # --config.data.source=poems

        def documents(self, data_config, split):
            return read_poems("poems/" + split)

The built-in entries register themselves: 'embedded' and 'files' (``sources.py``: one corpus,
split into train and validation by ``data.val_fraction``) and the paper datasets
(``datasets.py``: found in local files, each part prepared into the cache once).
"""

from __future__ import annotations

import abc
import logging
from typing import Collection, Iterable

import numpy as np

from mdlm_jax.data import cache
from mdlm_jax.data.detokenizers import get_detokenizer
from mdlm_jax.data.tokenizers import Tokenizer


class DatasetNotFoundError(FileNotFoundError):
    """No local copy of a dataset; the message says what was tried and what to set."""


class Dataset(abc.ABC):
    """What the pipeline needs of a ``data.source``.

    ``name``: the ``data.source`` value that selects it; ``title``: its name in messages (empty:
    ``name``); ``eval_split``: the split evaluation reads unless ``data.eval_split`` is set;
    ``detokenizer``: the ``detokenizers.DETOKENIZERS`` entry applied to each document before
    tokenizing unless ``data.detokenizer`` is set.
    """

    name: str = ""
    title: str = ""
    eval_split: str = "validation"
    detokenizer: str = "none"

    @abc.abstractmethod
    def splits(self, data_config) -> Collection[str]:
        """The names of the splits it has under ``data_config``."""

    @abc.abstractmethod
    def tokens(self, data_config, split: str, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (N,), offsets int64 (D + 1,)) of ``split`` from the token cache, built on first
        use; document d is ``tokens[offsets[d]:offsets[d + 1]]``."""

    def check_split(self, data_config, split: str) -> None:
        """Raises ValueError naming the splits it has when ``split`` is not one of them."""
        splits = self.splits(data_config)
        if split not in splits:
            raise ValueError(f"{self.title or self.name} has no {split!r} split; it has {sorted(splits)}"
                             + (" (it is an evaluation-only set)." if "train" not in splits else "."))

    def detokenizer_for(self, data_config) -> str:
        """``data.detokenizer``, or the dataset's own when it is empty (checked to exist)."""
        name = getattr(data_config, "detokenizer", "") or self.detokenizer
        get_detokenizer(name)  # raises for an unknown name
        return name


class DocumentDataset(Dataset):
    """A dataset given as documents per split: subclass it, set ``name``, implement ``documents``
    (and ``splits`` when they are not train and validation) and register it.

    Each string is one document; whitespace-only ones are skipped (and counted in the cache's
    meta.json). The documents are read on every use, before the cache is looked up: the cache is
    keyed by their text with the tokenizer, detokenizer and split, so changed documents are
    tokenized afresh, and whatever reading them raises or warns about does so on a cache hit too.
    """

    def splits(self, data_config) -> Collection[str]:
        return ("train", "validation")

    @abc.abstractmethod
    def documents(self, data_config, split: str) -> Iterable[str]:
        """The documents of ``split``, in order."""

    def tokens(self, data_config, split: str, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
        self.check_split(data_config, split)
        documents = list(self.documents(data_config, split))
        detokenizer = self.detokenizer_for(data_config)
        part = f"{split}-{cache.documents_key(documents, tokenizer.name, detokenizer, split)}"
        directory = cache.part_dir(cache.cache_dir_for(data_config), self.name, tokenizer.name, detokenizer, part)
        arrays = cache.load_dir(directory)
        if arrays is None:
            logging.info("Tokenizing %d %s documents of %s with %r into %s", len(documents), split,
                         self.title or self.name, tokenizer.name, directory)
            cache.build_documents(documents, directory, tokenizer=tokenizer, detokenize=get_detokenizer(detokenizer),
                                  meta=dict(dataset=self.name, part=part, split=split, detokenizer=detokenizer))
            arrays = cache.load_dir(directory)
        return arrays.tokens, arrays.offsets


DATASETS: dict[str, Dataset] = {}


def register_dataset(entry: Dataset | type[Dataset]) -> Dataset | type[Dataset]:
    """Registers a dataset as ``data.source == entry.name`` and returns ``entry``: a ``Dataset``, or
    a ``Dataset`` subclass that takes no arguments (so that it works as a class decorator).

    Refuses an entry without a name, and a name that is already registered.
    """
    dataset = entry() if isinstance(entry, type) else entry
    if not isinstance(dataset, Dataset):
        raise TypeError(f"register_dataset takes a Dataset (e.g. a DocumentDataset subclass); got {entry!r}.")
    if not dataset.name:
        raise ValueError(f"{type(dataset).__name__} needs a name: the data.source value that selects it.")
    if dataset.name in DATASETS:
        raise ValueError(f"A dataset named {dataset.name!r} is already registered "
                         f"({type(DATASETS[dataset.name]).__qualname__}); give this one another name.")
    DATASETS[dataset.name] = dataset
    return entry


def get_dataset(name: str) -> Dataset:
    """The dataset registered as ``name`` (a ``data.source`` value)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown data.source {name!r}; choose one of {sorted(DATASETS)} (or register one with "
                         "mdlm_jax.data.register_dataset).")
    return DATASETS[name]
