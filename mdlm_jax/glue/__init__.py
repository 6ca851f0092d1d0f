"""GLUE for the MDLM paper's Table 4 (section 5.1; WNLI excluded): the tasks and a reader of their
labelled splits from the GLUE TSV distribution or the Hugging Face ``nyu-mll/glue`` parquet files
(``tasks``), and the official metrics, the Table 4 row and its table (``metrics``).
"""

from mdlm_jax.glue.metrics import (
    TABLE4_COLUMNS,
    TABLE4_SOURCES,
    accuracy,
    f1,
    format_table,
    matthews_corrcoef,
    pearson,
    spearman,
    table4_row,
    task_metrics,
)
from mdlm_jax.glue.tasks import LAYOUTS, TASKS, Examples, TaskSpec, get_task, parquet_paths, read_split, tsv_path

__all__ = [
    "LAYOUTS", "TABLE4_COLUMNS", "TABLE4_SOURCES", "TASKS", "Examples", "TaskSpec", "accuracy", "f1", "format_table",
    "get_task", "matthews_corrcoef", "parquet_paths", "pearson", "read_split", "spearman", "table4_row",
    "task_metrics", "tsv_path",
]
