"""The GLUE metrics against sklearn.metrics and scipy.stats on random inputs and edge cases, each
task's official metric set, and the MDLM paper's Table 4 averages and table."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from mdlm_jax import glue
from mdlm_jax.glue import TABLE4_COLUMNS, format_table, table4_row, task_metrics

# The paper's Table 4 rows (SPEC section 15), in TABLE4_COLUMNS order, and its averages.
PAPER = {
    "AR": ((80.94, 80.78, 86.98, 86.16, 90.14, 33.43, 84.32, 83.88, 47.29), 74.88),
    "BERT": ((84.43, 85.35, 88.41, 90.46, 92.20, 54.81, 88.41, 89.16, 61.37), 81.62),
    "BERT + MDLM-FT": ((84.76, 85.07, 88.49, 90.30, 92.20, 57.69, 87.48, 90.53, 62.09), 82.06),
}


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels, preds = rng.integers(0, 2, n), rng.integers(0, 2, n)
    assert glue.accuracy(labels, preds) == pytest.approx(sklearn.metrics.accuracy_score(labels, preds), abs=1e-12)
    assert glue.f1(labels, preds) == pytest.approx(sklearn.metrics.f1_score(labels, preds), abs=1e-12)
    assert glue.matthews_corrcoef(labels, preds) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, preds), abs=1e-12)
    labels3, preds3 = rng.integers(0, 3, n), rng.integers(0, 3, n)  # MNLI-sized label sets
    assert glue.matthews_corrcoef(labels3, preds3) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels3, preds3), abs=1e-12)
    assert glue.accuracy(labels3, preds3) == pytest.approx(sklearn.metrics.accuracy_score(labels3, preds3))


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    assert glue.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-12)
    assert glue.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
    # STS-B's gold scores come in steps of 0.2: many ties, which must share their average rank.
    gold = np.round(rng.uniform(0, 5, n) * 5) / 5
    coarse = np.round(gold + rng.normal(scale=1.0, size=n))
    assert glue.spearman(gold, coarse) == pytest.approx(scipy.stats.spearmanr(gold, coarse)[0], abs=1e-12)
    assert glue.pearson(gold, coarse) == pytest.approx(scipy.stats.pearsonr(gold, coarse)[0], abs=1e-12)


def test_spearman_with_ties_by_hand():
    # Average ranks: x -> 1, 2.5, 2.5, 4; y -> 1, 2, 3, 4.
    assert glue.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(scipy.stats.pearsonr(
        [1, 2.5, 2.5, 4], [1, 2, 3, 4])[0])
    assert glue.spearman([3, 1, 1, 1], [4, 3, 2, 1]) == pytest.approx(scipy.stats.spearmanr(
        [3, 1, 1, 1], [4, 3, 2, 1])[0])


def test_edge_cases_match_sklearn():
    labels = np.array([0, 1, 1, 0, 1])
    for constant in (np.zeros(5, int), np.ones(5, int)):
        assert glue.matthews_corrcoef(labels, constant) == sklearn.metrics.matthews_corrcoef(labels, constant) == 0
    assert glue.f1(labels, np.zeros(5, int)) == 0.0  # no positive predictions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns of the ill-defined precision
        assert glue.f1(np.zeros(5, int), np.zeros(5, int)) == sklearn.metrics.f1_score(
            np.zeros(5, int), np.zeros(5, int)) == 0.0
    assert glue.f1(labels, labels) == glue.accuracy(labels, labels) == glue.matthews_corrcoef(labels, labels) == 1.0
    assert glue.matthews_corrcoef(labels, 1 - labels) == -1.0
    assert math.isnan(glue.pearson([1, 1, 1], [1, 2, 3])) and math.isnan(glue.spearman([1, 2, 3], [2, 2, 2]))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="one length"):
        glue.accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="non-empty"):
        glue.matthews_corrcoef([], [])
    with pytest.raises(ValueError, match="0 or 1"):
        glue.f1([0, 2], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        glue.spearman([0.0, np.nan], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"rte: predictions outside the class ids 0\.\.1: \[2\]"):
        task_metrics("rte", [0, 1], [0, 2])


def test_task_metrics_are_run_glues_sets():
    rng = np.random.default_rng(0)
    want = {"cola": {"matthews_correlation"}, "sst2": {"accuracy"}, "mnli": {"accuracy"}, "qnli": {"accuracy"},
            "rte": {"accuracy"}, "mrpc": {"accuracy", "f1"}, "qqp": {"accuracy", "f1"},
            "stsb": {"pearson", "spearmanr"}}
    assert set(want) == set(glue.TASKS)
    for task, names in want.items():
        if task == "stsb":
            labels = rng.uniform(0, 5, 50)
            preds = labels + rng.normal(size=50)
        else:
            k = glue.TASKS[task].num_labels
            labels, preds = rng.integers(0, k, 50), rng.integers(0, k, 50)
        result = task_metrics(task, labels, preds)
        assert set(result) == names
        reference = {"matthews_correlation": sklearn.metrics.matthews_corrcoef, "accuracy":
                     sklearn.metrics.accuracy_score, "f1": sklearn.metrics.f1_score,
                     "pearson": lambda a, b: scipy.stats.pearsonr(a, b)[0],
                     "spearmanr": lambda a, b: scipy.stats.spearmanr(a, b)[0]}
        for name, value in result.items():
            assert isinstance(value, float) and value == pytest.approx(reference[name](labels, preds), abs=1e-12)


def _results(values):
    """``results[task][split][metric]`` with the Table 4 ``values`` (x100) in TABLE4_COLUMNS order."""
    results = {}
    for column, value in zip(TABLE4_COLUMNS, values):
        task, split, metric = glue.TABLE4_SOURCES[column]
        results.setdefault(task, {}).setdefault(split, {})[metric] = value / 100
    return results


def test_table4_average_of_the_paper_rows():
    assert TABLE4_COLUMNS == ("MNLI-m", "MNLI-mm", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE")
    for name, (values, avg) in PAPER.items():
        row = table4_row(_results(values))
        assert [row[c] for c in TABLE4_COLUMNS] == pytest.approx(values)
        assert row["avg"] == row["avg_present"]
        # The paper averaged unrounded numbers: the MDLM-FT row's printed cells average 82.068.
        assert row["avg"] == pytest.approx(avg, abs=0.01)
    assert round(table4_row(_results(PAPER["BERT"][0]))["avg"], 2) == 81.62
    assert round(table4_row(_results(PAPER["AR"][0]))["avg"], 2) == 74.88


def test_table4_row_reads_the_right_metrics():
    results = _results(PAPER["BERT"][0])
    # Metrics that are not Table 4's (accuracy beside QQP's and MRPC's F1, Pearson beside STS-B's
    # Spearman) must not be picked up.
    results["qqp"]["validation"]["accuracy"] = 0.1
    results["mrpc"]["validation"]["accuracy"] = 0.2
    results["stsb"]["validation"]["pearson"] = 0.3
    row = table4_row(results)
    assert (row["QQP"], row["MRPC"], row["STS-B"]) == pytest.approx((88.41, 89.16, 88.41))


def test_table4_row_with_missing_tasks():
    results = _results(PAPER["BERT"][0])
    del results["rte"], results["mnli"]["validation_mismatched"]
    row = table4_row(results)
    assert row["RTE"] is None and row["MNLI-mm"] is None and row["MNLI-m"] == pytest.approx(84.43)
    assert row["avg"] is None
    present = [v for c, v in zip(TABLE4_COLUMNS, PAPER["BERT"][0]) if c not in ("RTE", "MNLI-mm")]
    assert row["avg_present"] == pytest.approx(sum(present) / 7)
    empty = table4_row({})
    assert empty["avg"] is None and empty["avg_present"] is None and all(empty[c] is None for c in TABLE4_COLUMNS)


def test_format_table_has_every_column():
    rows = {name: table4_row(_results(values)) for name, (values, _) in PAPER.items()}
    partial = _results(PAPER["AR"][0])
    del partial["cola"]
    rows["partial"] = table4_row(partial)
    text = format_table(rows)
    lines = text.splitlines()
    header = lines[0].split()
    assert header == ["model", *TABLE4_COLUMNS, "avg"]
    assert len({len(line) for line in lines[:-1]}) == 1  # fixed width
    assert "81.62" in text and "54.81" in text and "BERT + MDLM-FT" in text
    partial_line = next(line for line in lines if line.startswith("partial"))
    assert " - " in partial_line and partial_line.rstrip().endswith("*") and lines[-1].startswith("*")
    assert "*" not in format_table({"BERT": rows["BERT"]})
