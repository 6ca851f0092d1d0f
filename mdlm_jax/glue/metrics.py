"""GLUE metrics in numpy (the values sklearn.metrics and scipy.stats give), each task's official
set as HF ``run_glue.py`` reports it, and the MDLM paper's Table 4 row and table.
"""

from __future__ import annotations

import math

import numpy as np

from mdlm_jax.glue.tasks import get_task

# Table 4's columns in the paper's order: (task, eval split, metric) each, reported x100.
TABLE4_SOURCES: dict[str, tuple[str, str, str]] = {
    "MNLI-m": ("mnli", "validation_matched", "accuracy"),
    "MNLI-mm": ("mnli", "validation_mismatched", "accuracy"),
    "QQP": ("qqp", "validation", "f1"),
    "QNLI": ("qnli", "validation", "accuracy"),
    "SST-2": ("sst2", "validation", "accuracy"),
    "CoLA": ("cola", "validation", "matthews_correlation"),
    "STS-B": ("stsb", "validation", "spearmanr"),
    "MRPC": ("mrpc", "validation", "f1"),
    "RTE": ("rte", "validation", "accuracy"),
}
TABLE4_COLUMNS: tuple[str, ...] = tuple(TABLE4_SOURCES)


def _pair(labels, preds, name: str) -> tuple[np.ndarray, np.ndarray]:
    labels, preds = np.asarray(labels), np.asarray(preds)
    if labels.ndim != 1 or labels.shape != preds.shape or not labels.size:
        raise ValueError(f"{name}: labels and predictions must be non-empty 1-D arrays of one length; got shapes "
                         f"{labels.shape} and {preds.shape}.")
    return labels, preds


def accuracy(labels, preds) -> float:
    """mean(labels == preds)."""
    labels, preds = _pair(labels, preds, "accuracy")
    return float(np.mean(labels == preds))


def matthews_corrcoef(labels, preds) -> float:
    """Matthews' correlation, in its multiclass form (Gorodkin 2004, as sklearn computes it):
    with the confusion matrix C, t_k = sum_j C[k, j] (true counts), p_k = sum_i C[i, k]
    (predicted counts), c = trace(C) and s = sum(C),

        MCC = (c s - t.p) / sqrt((s^2 - p.p) (s^2 - t.t)),

    which for two classes is (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)). 0 when the
    denominator is 0 (constant labels or predictions), as sklearn returns.
    """
    labels, preds = _pair(labels, preds, "matthews_corrcoef")
    classes, codes = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    k, n = len(classes), len(labels)
    confusion = np.bincount(codes[:n] * k + codes[n:], minlength=k * k).reshape(k, k).astype(np.float64)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), float(n)
    denominator = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denominator == 0 else float((c * s - t @ p) / denominator)


def f1(labels, preds) -> float:
    """F1 of the positive class 1 for binary 0/1 labels: 2 TP / (2 TP + FP + FN), the harmonic
    mean of precision and recall; 0 when TP + FP + FN = 0 (sklearn's ``zero_division`` default)."""
    labels, preds = _pair(labels, preds, "f1")
    for name, values in (("labels", labels), ("predictions", preds)):
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"f1: {name} must be 0 or 1; got {np.setdiff1d(values, (0, 1))[:5].tolist()}.")
    tp = np.sum((labels == 1) & (preds == 1))
    wrong = np.sum(labels != preds)  # FP + FN
    return 0.0 if tp + wrong == 0 else float(2 * tp / (2 * tp + wrong))


def _scores(x, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _pair(x, y, name)
    x, y = x.astype(np.float64), y.astype(np.float64)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{name}: the inputs must be finite.")
    return x, y


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt((dx @ dx) * (dy @ dy))
    return math.nan if denominator == 0 else float(np.clip((dx @ dy) / denominator, -1.0, 1.0))


def pearson(x, y) -> float:
    """Pearson's r = sum (x - mean x)(y - mean y) / sqrt(sum (x - mean x)^2 sum (y - mean y)^2);
    NaN when either input is constant (as scipy.stats.pearsonr returns)."""
    return _pearson(*_scores(x, y, "pearson"))


def _average_ranks(x) -> np.ndarray:
    """1-based ranks of a 1-D array, ties given the mean of the ranks they span (float64):
    a value with n_< smaller and n_= equal values (itself included) ranks n_< + (n_= + 1) / 2."""
    _, inverse, counts = np.unique(np.asarray(x), return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts
    return (below + (counts + 1) / 2.0)[inverse.reshape(-1)]


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the average ranks (``_average_ranks``, so ties count as in
    scipy.stats.spearmanr); NaN when either input is constant."""
    x, y = _scores(x, y, "spearman")
    return _pearson(_average_ranks(x), _average_ranks(y))


_METRICS = {"matthews_correlation": matthews_corrcoef, "accuracy": accuracy, "f1": f1, "pearson": pearson,
            "spearmanr": spearman}


def task_metrics(task: str, labels, preds_or_scores) -> dict[str, float]:
    """The official metrics of a GLUE task, named as HF ``run_glue.py`` reports them: cola
    {matthews_correlation}; sst2, mnli, qnli, rte {accuracy}; mrpc, qqp {accuracy, f1}; stsb
    {pearson, spearmanr}. ``preds_or_scores``: predicted class ids (1-D), or the predicted
    scores for stsb. Values are fractions / correlations (not x100).

    ValueError when a label or a predicted class is outside the task's classes.
    """
    spec = get_task(task)
    labels, preds = _pair(labels, preds_or_scores, f"GLUE {task} metrics")
    if not spec.is_regression:
        for name, values in (("labels", labels), ("predictions", preds)):
            outside = np.setdiff1d(values, np.arange(spec.num_labels))
            if outside.size:
                raise ValueError(f"GLUE {task}: {name} outside the class ids 0..{spec.num_labels - 1}: "
                                 f"{outside[:5].tolist()}.")
    return {name: _METRICS[name](labels, preds) for name in spec.metrics}


def table4_row(results: dict) -> dict:
    """One row of the MDLM paper's Table 4 from ``results[task][split]`` = ``task_metrics(...)``
    of that evaluation split (mnli: 'validation_matched' and 'validation_mismatched'; the rest:
    'validation'): ``TABLE4_COLUMNS`` x100 (None for what is missing), 'avg' = the mean of the
    9 columns (None unless all are present), and 'avg_present' = the mean of the present ones
    (None if none). E.g. the paper's BERT row (84.43, 85.35, 88.41, 90.46, 92.20, 54.81, 88.41,
    89.16, 61.37) has avg 81.62.
    """
    row = {}
    for column, (task, split, metric) in TABLE4_SOURCES.items():
        value = results.get(task, {}).get(split, {}).get(metric)
        row[column] = None if value is None else 100.0 * float(value)
    present = [value for value in row.values() if value is not None]
    row["avg_present"] = sum(present) / len(present) if present else None
    row["avg"] = row["avg_present"] if len(present) == len(TABLE4_COLUMNS) else None
    return row


def format_table(rows: dict[str, dict]) -> str:
    """A fixed-width table of ``table4_row`` rows by model name, in Table 4's layout: model,
    ``TABLE4_COLUMNS``, avg. Missing values print as '-'; an average over only some columns is
    marked '*' and explained below the table."""
    header = ["model", *TABLE4_COLUMNS, "avg"]
    body, partial = [], False
    for name, row in rows.items():
        cells = [name] + ["-" if row.get(c) is None else f"{row[c]:.2f}" for c in TABLE4_COLUMNS]
        if row.get("avg") is not None:
            cells.append(f"{row['avg']:.2f}")
        elif row.get("avg_present") is not None:
            cells.append(f"{row['avg_present']:.2f}*")
            partial = True
        else:
            cells.append("-")
        body.append(cells)
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def line(cells):
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    out = [line(header), "  ".join("-" * w for w in widths)] + [line(cells) for cells in body]
    if partial:
        out.append("* the mean of the present columns only (a task is missing)")
    return "\n".join(out)
