"""Experiments: a dataset x the paper's methods -> results.jsonl -> Table 1, Table 2, Fig. 3 and a summary.

``rows``: the rows of Table 1 and ``select_rows``; ``datasets``: the images and their labels; ``run``: each row on
each image, one line of results.jsonl per pair, resumable (``run.run``); ``report``: tables, figures, summary.md.
``evaluate`` does it all: run (or resume), then write the reports.
"""

from __future__ import annotations

from .datasets import PLACES365_VAL, Dataset, Item, load_dataset, match_class, private_class_indices
from .report import (
    FIGURE_FORMATS,
    PAPER_MODEL,
    TABLE1_COLUMNS,
    figure_histograms,
    figure_tradeoff,
    histogram_figure,
    irreversibility_range,
    irreversibility_warning,
    paper_tables,
    table1,
    table2,
    tradeoff_figure,
    write_reports,
)
from .rows import ITERATIVE_ROWS, METHOD_ROWS, PAPER_ROWS, EvaluationError, Row, select_rows
from .run import evaluate, read_results

__all__ = [
    "FIGURE_FORMATS", "ITERATIVE_ROWS", "METHOD_ROWS", "PAPER_MODEL", "PAPER_ROWS", "PLACES365_VAL", "TABLE1_COLUMNS",
    "Dataset", "EvaluationError", "Item", "Row", "evaluate", "figure_histograms", "figure_tradeoff",
    "histogram_figure", "irreversibility_range", "irreversibility_warning", "load_dataset", "match_class",
    "paper_tables", "private_class_indices", "read_results", "select_rows", "table1", "table2", "tradeoff_figure",
    "write_reports",
]
