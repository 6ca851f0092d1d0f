"""The GLUE tasks of the MDLM paper's Table 4 (WNLI excluded, as the paper does) and a reader of
their labelled splits, from either layout found under a root directory:

- 'tsv': the GLUE distribution as ``download_glue_data.py`` unpacks it: ``root/CoLA/train.tsv``,
  ``root/MNLI/dev_matched.tsv``, ... (the ``dev*.tsv`` files are the validation splits);
- 'parquet': the Hugging Face hub's ``nyu-mll/glue``: ``root/cola/train-00000-of-00001.parquet``,
  ``root/mnli/validation_matched-00000-of-00001.parquet``, ... (any shard count).

Labels are the hub's class ids (the order of ``TaskSpec.labels``) as int32; STS-B's are its
similarity scores, float32 in [0, 5]. The test splits hold no labels and are not read.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re

import numpy as np

LAYOUTS = ("tsv", "parquet")
_SHARD = re.compile(r"-(\d+)-of-(\d+)\.parquet$")
_SHOWN_LINES = 5  # malformed line numbers a warning lists


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: where its text and labels are in each layout, and how it is scored."""

    name: str  # the registry key and the hub config (``root/<name>/`` in the parquet layout)
    tsv_dir: str  # the GLUE folder (``root/<tsv_dir>/`` in the TSV layout)
    text_columns: tuple[str, ...]  # the parquet text column(s): one, or a pair
    tsv_text_columns: tuple[str, ...]  # the same texts' TSV header names
    tsv_label_column: str
    labels: tuple[str, ...]  # class names in the hub's id order; () for regression
    metrics: tuple[str, ...]  # the names ``metrics.task_metrics`` reports, as HF run_glue does
    eval_splits: tuple[str, ...] = ("validation",)
    tsv_header: tuple[str, ...] | None = None  # the column names of a headerless TSV (CoLA)
    tsv_label_names: bool = False  # the TSV spells labels as class names (not ids)
    score_range: tuple[float, float] | None = None  # regression targets' closed range

    @property
    def is_regression(self) -> bool:
        return not self.labels

    @property
    def num_labels(self) -> int:
        """Classifier outputs: the number of classes, or 1 for regression."""
        return len(self.labels) or 1

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",) + self.eval_splits


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("cola", "CoLA", ("sentence",), ("sentence",), "label", ("unacceptable", "acceptable"),
             ("matthews_correlation",), tsv_header=("source", "label", "original_label", "sentence")),
    TaskSpec("sst2", "SST-2", ("sentence",), ("sentence",), "label", ("negative", "positive"), ("accuracy",)),
    TaskSpec("mrpc", "MRPC", ("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality",
             ("not_equivalent", "equivalent"), ("accuracy", "f1")),
    TaskSpec("qqp", "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate",
             ("not_duplicate", "duplicate"), ("accuracy", "f1")),
    TaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", (),
             ("pearson", "spearmanr"), score_range=(0.0, 5.0)),
    TaskSpec("mnli", "MNLI", ("premise", "hypothesis"), ("sentence1", "sentence2"), "gold_label",
             ("entailment", "neutral", "contradiction"), ("accuracy",),
             eval_splits=("validation_matched", "validation_mismatched"), tsv_label_names=True),
    TaskSpec("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label",
             ("entailment", "not_entailment"), ("accuracy",), tsv_label_names=True),
    TaskSpec("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
             ("entailment", "not_entailment"), ("accuracy",), tsv_label_names=True),
)}


def get_task(task: str) -> TaskSpec:
    """The ``TASKS`` entry of ``task``; ValueError naming the known tasks otherwise."""
    if task not in TASKS:
        hint = " (WNLI is left out, as the MDLM paper does)" if task == "wnli" else ""
        raise ValueError(f"Unknown GLUE task {task!r}{hint}; the tasks are {sorted(TASKS)}.")
    return TASKS[task]


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """The examples of one split, in file order. ``text_b`` is None for single-sentence tasks;
    ``labels`` is int32 class ids, or float32 scores for regression. ``skipped`` counts the
    malformed TSV lines left out; ``files`` are the files read."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    skipped: int = 0
    files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.text_a)


def tsv_path(root: str, task: str, split: str) -> str:
    """The TSV layout's file of a split: ``root/MNLI/dev_matched.tsv`` for mnli's 'validation_matched'."""
    name = "dev" + split[len("validation"):] if split.startswith("validation") else split
    return os.path.join(root, get_task(task).tsv_dir, name + ".tsv")


def parquet_paths(root: str, task: str, split: str) -> list[str]:
    """The parquet layout's shards of a split (``root/<task>/<split>-*-of-*.parquet``) in shard
    order; [] when there are none. FileNotFoundError naming the missing ones when incomplete."""
    folder = os.path.join(root, get_task(task).name)
    if not os.path.isdir(folder):
        return []
    shards = {}
    for name in os.listdir(folder):
        match = _SHARD.search(name)
        if match and name[:match.start()] == split:
            shards[int(match.group(1))] = (int(match.group(2)), os.path.join(folder, name))
    if not shards:
        return []
    counts = {count for count, _ in shards.values()}
    expected = set(range(max(counts)))
    if len(counts) > 1 or set(shards) != expected:
        missing = [f"{split}-{i:05d}-of-{max(counts):05d}.parquet" for i in sorted(expected - set(shards))]
        raise FileNotFoundError(f"GLUE {task} {split}: the parquet shards in {folder} are incomplete or mixed "
                                f"(found {sorted(os.path.basename(p) for _, p in shards.values())}; missing "
                                f"{missing}).")
    return [shards[i][1] for i in sorted(shards)]


def _not_found(root: str, task: str, split: str, why: str) -> FileNotFoundError:
    parquet = os.path.join(root, task, f"{split}-00000-of-00001.parquet")
    return FileNotFoundError(
        f"GLUE {task} {split}: {why} under {root!r}. Expected either the GLUE TSV layout's "
        f"{tsv_path(root, task, split)} or the Hugging Face nyu-mll/glue parquet layout's {parquet} "
        f"(any shard count: {split}-*-of-*.parquet).")


def read_split(root: str, task: str, split: str, layout: str | None = None) -> Examples:
    """The labelled examples of ``split`` ('train', 'validation'; for mnli 'validation_matched'
    and 'validation_mismatched') of ``task``, read from ``layout`` ('tsv' or 'parquet'; None:
    whichever of the two ``root`` holds for this split).

    Raises FileNotFoundError naming the task, the split and the files expected in both layouts
    when neither is there; ValueError for an unknown task or split, both layouts present with
    ``layout=None``, a missing column, or a label outside the task's set (naming the file, the
    line or row, and the value). Malformed TSV lines (the wrong number of fields, as QQP's and
    MNLI's real files have a few of) are skipped, counted in ``Examples.skipped`` and warned of.
    """
    spec = get_task(task)
    if split not in spec.splits:
        raise ValueError(f"GLUE {task} has no labelled split {split!r}; its splits are {list(spec.splits)}.")
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"GLUE layout must be one of {LAYOUTS} or None (detect); got {layout!r}.")
    tsv = tsv_path(root, task, split)
    shards = parquet_paths(root, task, split) if layout != "tsv" else []
    present = [name for name, found in zip(LAYOUTS, (os.path.isfile(tsv), bool(shards))) if found]
    if layout is None:
        if len(present) == 2:
            raise ValueError(f"GLUE {task} {split}: {root!r} holds both {tsv} and {shards[0]}; pass layout='tsv' "
                             "or layout='parquet'.")
        if not present:
            raise _not_found(root, task, split, "no split file")
        layout = present[0]
    elif layout not in present:
        raise _not_found(root, task, split, f"no {layout} split file")
    return _read_tsv(tsv, spec) if layout == "tsv" else _read_parquet(shards, spec)


def _label(spec: TaskSpec, value, where: str) -> float | int:
    """The label id (or score) of one raw TSV string or parquet value; ValueError naming ``where``."""
    if spec.is_regression:
        low, high = spec.score_range
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if not low <= score <= high:  # also refuses NaN
            raise ValueError(f"GLUE {spec.name}: {where}: the score {value!r} is not a number in [{low}, {high}].")
        return score
    if isinstance(value, str):
        allowed = spec.labels if spec.tsv_label_names else tuple(str(i) for i in range(spec.num_labels))
        ok = value in allowed
    else:  # parquet: the hub's int ids (-1 marks its unlabelled test rows)
        allowed = tuple(range(spec.num_labels))
        ok = isinstance(value, int) and not isinstance(value, bool) and value in allowed
    if not ok:
        names = ", ".join(f"{i} {name}" for i, name in enumerate(spec.labels))
        raise ValueError(f"GLUE {spec.name}: {where}: the label {value!r} is not one of {allowed} ({names}).")
    return allowed.index(value)


def _examples(spec: TaskSpec, texts: list[list[str]], labels: list, skipped: int, files) -> Examples:
    if not texts[0]:
        raise ValueError(f"GLUE {spec.name}: no examples in {list(files)}.")
    dtype = np.float32 if spec.is_regression else np.int32
    return Examples(texts[0], texts[1] if spec.is_pair else None, np.asarray(labels, dtype), skipped, tuple(files))


def _read_tsv(path: str, spec: TaskSpec) -> Examples:
    texts, labels, malformed = [[] for _ in spec.text_columns], [], []
    with open(path, "rb") as f:
        lines = enumerate(f, start=1)  # binary lines split at b"\n" only: a stray \r stays inside its field
        header = spec.tsv_header
        if header is None:
            first = next(lines, (1, b""))[1]
            header = tuple(_fields(first, path, 1, bom=True))
        wanted = spec.tsv_text_columns + (spec.tsv_label_column,)
        missing = [name for name in wanted if name not in header]
        if missing:
            raise ValueError(f"GLUE {spec.name}: {path} has no column(s) {missing}; its header is {list(header)}.")
        columns = [header.index(name) for name in wanted]
        for number, raw in lines:
            fields = _fields(raw, path, number)
            if len(fields) != len(header):
                malformed.append(number)
                continue
            for out, column in zip(texts, columns):
                out.append(fields[column])
            labels.append(_label(spec, fields[columns[-1]], f"{path} line {number}"))
    if malformed:
        shown = ", ".join(map(str, malformed[:_SHOWN_LINES])) + (", ..." if len(malformed) > _SHOWN_LINES else "")
        logging.warning("GLUE %s: %s: skipped %d malformed line(s) with other than %d tab-separated fields "
                        "(lines %s).", spec.name, path, len(malformed), len(header), shown)
    return _examples(spec, texts, labels, len(malformed), [path])


def _fields(raw: bytes, path: str, number: int, bom: bool = False) -> list[str]:
    """The tab-separated fields of one line. No CSV quoting: GLUE's texts hold bare quote characters."""
    try:
        text = raw.decode("utf-8-sig" if bom else "utf-8")  # MRPC's header opens with a BOM
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} line {number}: invalid UTF-8 ({e.reason} at byte {e.start} of the line).") from None
    return text.rstrip("\r\n").split("\t")


def _read_parquet(paths: list[str], spec: TaskSpec) -> Examples:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    wanted = spec.text_columns + ("label",)
    texts, labels = [[] for _ in spec.text_columns], []
    for path in paths:
        names = pq.read_schema(path).names
        missing = [name for name in wanted if name not in names]
        if missing:
            raise ValueError(f"GLUE {spec.name}: {path} has no column(s) {missing}; its columns are {names}.")
        table = pq.read_table(path, columns=list(wanted))
        for out, name in zip(texts, spec.text_columns):
            column = table.column(name).to_pylist()
            if None in column:
                raise ValueError(f"GLUE {spec.name}: {path} row {column.index(None)} (0-based): {name} is null.")
            out.extend(column)
        for row, value in enumerate(table.column("label").to_pylist()):
            labels.append(_label(spec, value, f"{path} row {row} (0-based)"))
    return _examples(spec, texts, labels, 0, paths)
