"""The rows of the paper's Table 1 (a method with its settings) and the choice of rows from ``--methods``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..settings import ScenePrivError


class EvaluationError(ScenePrivError, ValueError):
    """A dataset or results folder that cannot be used as given; the message is one line that says why."""


@dataclass(frozen=True)
class Row:
    """One row of Table 1: a method with its settings; ``method`` None is the original image, unperturbed."""

    name: str
    method: str | None
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: tuple[str, str] | None = None  # (method, iterations) in the paper's table1 CSV


PAPER_ROWS: list[Row] = [
    Row("Orig.", None, {}, ("original", "0")),
    Row("SoG (1I)", "sog", {"iterations": 1}, ("SoG", "1")),
    Row("SoG (8I)", "sog", {"iterations": 8}, ("SoG", "8")),
    Row("FG", "fgsm", {}, ("FGSM", "1")),
    Row("FG (6I)", "fgsm", {"iterations": 6}, ("FGSM", "6")),
    Row("R-FG (1I)", "r-fgsm", {"iterations": 1}, ("R-FGSM", "1")),
    Row("R-FG (3I)", "r-fgsm", {"iterations": 3}, ("R-FGSM", "3")),
    Row("N-FG", "n-fgsm", {}, ("N-FGSM", "adaptive")),
    Row("R-FG", "r-fgsm", {}, ("R-FGSM", "adaptive")),
    Row("L-FG", "l-fgsm", {}, ("L-FGSM", "adaptive")),
    Row("P-FG", "p-fgsm", {}, ("P-FGSM", "adaptive")),
]
# A method name in --methods means its row with the default settings.
METHOD_ROWS = {"original": "Orig.", "sog": "SoG (1I)", "fgsm": "FG", "n-fgsm": "N-FG", "r-fgsm": "R-FG",
               "l-fgsm": "L-FG", "p-fgsm": "P-FG"}
ITERATIVE_ROWS = ("L-FG", "N-FG", "R-FG", "P-FG")  # the panels of the paper's Fig. 3, in its order


def select_rows(spec: str) -> list[Row]:
    """``paper`` -> the eleven rows of Table 1; else comma-separated row names (``R-FG (3I)``) or method names."""
    if spec.strip().casefold() == "paper":
        return list(PAPER_ROWS)
    by_name = {row.name.casefold(): row for row in PAPER_ROWS}
    rows = []
    for item in (part.strip() for part in spec.split(",")):
        name = METHOD_ROWS.get(item.casefold(), item).casefold()
        if name not in by_name:
            choices = ", ".join(["paper", *METHOD_ROWS, *(row.name for row in PAPER_ROWS)])
            raise EvaluationError(f"unknown method or row {item!r} in --methods; choose from {choices}")
        if by_name[name] not in rows:
            rows.append(by_name[name])
    return rows
