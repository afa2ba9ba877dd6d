"""Reports from the records of results.jsonl: Table 1, Table 2, the paper's numbers beside them, CSV and
Markdown, Fig. 3 and the trade-off plot (matplotlib imported only when drawn), and summary.md."""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..settings import Settings
from ..zoo import Classifier
from .datasets import PLACES365_VAL, Dataset
from .rows import ITERATIVE_ROWS, PAPER_ROWS, Row

PAPER_MODEL = "resnet50-places365"


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values))


def table1(records: list[dict[str, Any]], rows: list[Row], unseen: list[str] | None = None) -> list[dict[str, Any]]:
    """Per row: images, T1, T5 (%), SSIM, PSNR, BRISQUE, butteraugli (mean and std), unchanged images, iterations,
    s/image; and T1, T5 of each ``unseen`` model (recorded with ``transfer_to``) as ``T1 <name>``, ``T5 <name>``."""
    table = []
    for row in rows:
        rs = [r for r in records if r["row"] == row.name]
        if not rs:
            continue
        labels, ranked = [r["label"] for r in rs], [r["top5"] for r in rs]
        ssim = _mean_std([r["ssim"] for r in rs if r["ssim"] is not None])
        psnr = _mean_std([r["psnr"] for r in rs if r["psnr"] is not None])
        quality = _mean_std([r["brisque"] for r in rs if r["brisque"] is not None])
        visible = _mean_std([r["butteraugli"] for r in rs if r.get("butteraugli") is not None])
        table.append({
            "row": row.name, "images": len(rs),
            "T1": metrics.top_k_accuracy(labels, ranked, 1), "T5": metrics.top_k_accuracy(labels, ranked, 5),
            "SSIM": ssim[0], "SSIM_std": ssim[1], "PSNR": psnr[0], "PSNR_std": psnr[1],
            "BRISQUE": quality[0], "BRISQUE_std": quality[1], "butteraugli": visible[0], "butteraugli_std": visible[1],
            "unchanged": 0 if row.method is None else sum(r["psnr"] is None for r in rs),
            "iterations": float(np.mean([r["iterations"] for r in rs])),
            "seconds_per_image": float(np.mean([r["seconds"] for r in rs])),
        })
        for name in unseen or []:
            seen = [r for r in rs if name in r.get("transfer", {})]
            for k in (1, 5):
                table[-1][f"T{k} {name}"] = metrics.top_k_accuracy(
                    [r["label"] for r in seen], [r["transfer"][name] for r in seen], k)
    return table


def table2(records: list[dict[str, Any]], rows: list[Row], class_names: list[str]) -> list[dict[str, Any]]:
    """Per row: irreversibility (mean distance to uniform) and the largest share of one class mapped to one class."""
    table = []
    for row in rows:
        rs = [r for r in records if r["row"] == row.name]
        if not rs:
            continue
        true, assigned = [r["label"] for r in rs], [r["assigned"] for r in rs]
        share, source, target = metrics.max_mapping_share(true, assigned)
        table.append({
            "row": row.name, "classes": len(set(true)), "images": len(rs),
            "irreversibility": metrics.irreversibility(true, assigned, len(class_names)),
            "max_share": 100 * share, "from": class_names[source], "to": class_names[target],
        })
    return table


def irreversibility_range(true_labels: list[int], num_classes: int) -> tuple[float, float]:
    """The lowest and highest distance Table 2 can report for these true labels, whatever the method: each class's
    images sent to as many different classes as possible, or all to one class (sqrt(1 - 1/D)). A class of one
    image scores sqrt(1 - 1/D) either way, so with one image per class the distance says nothing."""
    sizes = np.unique(np.asarray(true_labels, dtype=np.int64), return_counts=True)[1]
    if not len(sizes):
        return math.nan, math.nan
    uniform, lows = 1 / num_classes, []
    for n in sizes.tolist():
        whole, rest = divmod(n, num_classes)  # rest classes get whole + 1 images, the others whole
        lows.append(math.sqrt(rest * ((whole + 1) / n - uniform) ** 2
                              + (num_classes - rest) * (whole / n - uniform) ** 2))
    return float(np.mean(lows)), math.sqrt(1 - uniform)


def _true_labels(records: list[dict[str, Any]]) -> list[int]:
    """One true label per image (an image appears once per row)."""
    return list({r["image"]: r["label"] for r in records}.values())


def irreversibility_warning(records: list[dict[str, Any]], num_classes: int) -> str | None:
    """Why Table 2 cannot rank the methods on these images (more than half the true classes have a single image),
    or None when it can."""
    labels = _true_labels(records)
    sizes = np.unique(np.asarray(labels, dtype=np.int64), return_counts=True)[1]
    single = int((sizes == 1).sum())
    if not len(sizes) or 2 * single <= len(sizes):
        return None
    low, high = irreversibility_range(labels, num_classes)
    extent, lands = ("nothing", "") if single == len(sizes) else \
        ("little", f", so every method lands between {low:.4f} and {high:.4f}")
    return (f"irreversibility (Table 2) means {extent} here: {single} of {len(sizes)} true classes have a single "
            f"image, which scores sqrt(1 - 1/{num_classes}) = {high:.4f} whatever the method{lands}; evaluate "
            f"several images per class (class folders or {PLACES365_VAL})")


def paper_tables() -> tuple[dict[str, dict[str, str]], dict[str, float]]:
    """The paper's Table 1 by row name and Table 2 by row name (ResNet-50, Places365 private test images)."""
    data = resources.files("scenepriv") / "data"

    def rows(name: str) -> list[dict[str, str]]:
        lines = [line for line in (data / name).read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
        return list(csv.DictReader(lines))

    by_key = {row.paper: row.name for row in PAPER_ROWS}
    first = {by_key[(r["method"], r["iterations"])]: r for r in rows("table1_resnet50_places365.csv")}
    second = {by_key[(r["method"], "adaptive")]: float(r["distance"]) for r in rows("table2_irreversibility.csv")}
    return first, second


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


TABLE1_COLUMNS = [("T1", 2), ("T5", 2), ("SSIM", 3), ("PSNR", 2), ("BRISQUE", 2), ("butteraugli", 2)]


def _table1_markdown(table: list[dict[str, Any]], paper: dict[str, dict[str, str]] | None = None) -> str:
    lines = ["| Method | T1 ↓ | T5 ↓ | SSIM ↑ mean (std) | PSNR ↑ mean (std) | BRISQUE ↓ mean (std) "
             "| butteraugli ↓ mean (std) | images | unchanged | iterations | s/image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def with_std(entry: dict[str, Any], key: str, digits: int) -> str:
        mean, std = _cell(entry.get(key), digits), _cell(entry.get(f"{key}_std"), digits)
        return f"{mean} ({std})" if mean and std else mean

    unseen = [key for key in (table[0] if table else {}) if key.startswith(("T1 ", "T5 "))]  # --transfer-to
    if unseen:
        lines = [lines[0] + "".join(f" {key} ↓ |" for key in unseen), lines[1] + "---:|" * len(unseen)]
    for entry in table:
        cells = [with_std(entry, key, digits) for key, digits in TABLE1_COLUMNS]
        lines.append(f"| {entry['row']} | {' | '.join(cells)} | {entry['images']} | {entry['unchanged']} "
                     f"| {entry['iterations']:.1f} | {entry['seconds_per_image']:.3f} |"
                     + "".join(f" {_cell(entry[key], 2)} |" for key in unseen))
        if paper and entry["row"] in paper:
            numbers = {key: float(value) if value else None for key, value in paper[entry["row"]].items()
                       if key not in ("method", "iterations")}
            cells = [with_std(numbers, key, digits) for key, digits in TABLE1_COLUMNS]
            lines.append(f"| *{entry['row']} (paper)* | {' | '.join(cells)} | 3000 | | | |")
    return "\n".join(lines) + "\n"


def _table2_markdown(table: list[dict[str, Any]], paper: dict[str, float] | None = None,
                     records: list[dict[str, Any]] | None = None, num_classes: int | None = None) -> str:
    """Table 2; with the records and the number of classes, the range any method's distance can take on these
    images and, where it cannot rank the methods, a warning."""
    header = ["Method", "distance to uniform ↓", *(["paper"] if paper else []),
              "largest share of one class to one class", "classes", "images"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for entry in table:
        paper_cell = [_cell(paper.get(entry["row"]), 4)] if paper else []
        cells = [entry["row"], f"{entry['irreversibility']:.4f}", *paper_cell,
                 f"{entry['max_share']:.0f}% ({entry['from']} -> {entry['to']})", str(entry["classes"]),
                 str(entry["images"])]
        lines.append("| " + " | ".join(cells) + " |")
    if records and num_classes:
        low, high = irreversibility_range(_true_labels(records), num_classes)
        warning = irreversibility_warning(records, num_classes)
        lines += ["", f"**Warning**: {warning}." if warning else
                  f"On these images any method's distance lies between {low:.4f} (each class's images sent to "
                  f"different classes) and {high:.4f} (all sent to one class)."]
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, table: list[dict[str, Any]], digits: int = 4) -> None:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(table[0]) if table else ["row"])
        writer.writeheader()
        for entry in table:
            writer.writerow({k: _cell(v, digits) if isinstance(v, float) else v for k, v in entry.items()})


# --------------------------------------------------------------------------------------------- figures


FIGURE_FORMATS = ("png", "pdf", "svg")  # PNG to look at; PDF and SVG (text kept as text) for papers and slides
TOP_CLASSES = 10  # the classes Fig. 3 names, per panel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save_figure(figure, path: Path) -> None:
    """``path`` (its suffix replaced) as PNG, PDF and SVG, without a creation date so reruns write the same files."""
    from matplotlib import pyplot

    metadata = {"png": {}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
    with pyplot.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        for suffix in FIGURE_FORMATS:
            figure.savefig(path.with_suffix(f".{suffix}"), dpi=120, metadata=metadata[suffix])
    pyplot.close(figure)


def _short(name: str, length: int = 28) -> str:
    return name if len(name) <= length else name[: length - 1] + "…"


def histogram_figure(records: list[dict[str, Any]], rows: list[Row], class_names: list[str]):
    """Fig. 3 as a matplotlib figure: per iterative method (else per row), how often each class is the assigned
    class. Left: every class, most assigned first (log rank), against the uniform share 1/D, so the shape shows
    at any D; right: the most assigned classes by name with their share."""
    pyplot = _pyplot()
    num_classes = len(class_names)
    uniform = 100 / num_classes
    names = [row.name for row in rows]
    panels = [name for name in ITERATIVE_ROWS if name in names] or names
    figure, axes = pyplot.subplots(len(panels), 2, figsize=(11, 2.6 * len(panels)), squeeze=False,
                                   gridspec_kw={"width_ratios": [1, 1.3]})
    for letter, name, (whole, top) in zip("abcdefghijklmnop", panels, axes, strict=False):
        assigned = [r["assigned"] for r in records if r["row"] == name]
        counts = np.bincount(np.asarray(assigned, dtype=np.int64), minlength=num_classes)
        shares = 100 * counts / max(len(assigned), 1)
        order = np.lexsort((np.arange(num_classes), -counts))  # most assigned first, ties by class index
        used = int((counts > 0).sum())
        whole.stairs(shares[order], np.arange(1, num_classes + 2) - 0.5, fill=True, color="tab:blue")
        whole.axhline(uniform, color="tab:red", linestyle="--", linewidth=1, label=f"uniform: {uniform:.2g}%")
        whole.set_xscale("log")
        whole.xaxis.set_major_formatter(lambda value, _: f"{value:g}")  # 1, 10, 100 rather than powers of ten
        whole.set_xlim(0.5, num_classes + 0.5)
        whole.set_ylim(0, max(shares.max(), uniform) * 1.15)
        whole.set_ylabel("images (%)")
        whole.set_title(f"({letter}) {name}: {len(assigned)} images, {used} of {num_classes} classes assigned",
                        fontsize=9, loc="left")
        whole.legend(fontsize=8, loc="upper right", frameon=False)
        shown = [int(c) for c in order[: min(TOP_CLASSES, used)]]
        positions = np.arange(len(shown))
        top.barh(positions, shares[shown], color="tab:blue", height=0.7)
        top.axvline(uniform, color="tab:red", linestyle="--", linewidth=1)
        top.set_yticks(positions, [_short(class_names[c]) for c in shown], fontsize=7)
        top.invert_yaxis()
        top.set_ylim(TOP_CLASSES - 0.5, -0.5)  # the same bar height in every panel
        for position, c in zip(positions, shown, strict=True):
            top.annotate(f"{shares[c]:.1f}%", (shares[c], position), textcoords="offset points", xytext=(3, 0),
                         va="center", fontsize=7)
        top.set_xlim(0, max(shares.max(), uniform) * 1.2)
        top.set_title(f"the {len(shown)} most assigned classes", fontsize=9, loc="left")
        top.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("classes, most assigned first (log scale)")
    axes[-1, 1].set_xlabel("images assigned to the class (%)")
    figure.tight_layout()
    return figure


def figure_histograms(records: list[dict[str, Any]], rows: list[Row], class_names: list[str], path: Path) -> None:
    """Fig. 3 (:func:`histogram_figure`) written as ``path`` in PNG, PDF and SVG."""
    _save_figure(histogram_figure(records, rows, class_names), path)


def _overlap(a, b) -> float:
    """The area two display-space boxes share."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


# Where a point's label may go, in points from the point, nearest first: right, left, above, below, then further.
_LABEL_OFFSETS = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
                  (-5, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top")]
_NEAR_OFFSETS = len(_LABEL_OFFSETS)
_LABEL_OFFSETS += [(k * x, k * y, h, v) for k in (3, 5) for x, y, h, v in _LABEL_OFFSETS]


def _place_labels(figure, axis, points: list[tuple[float, float, str]], obstacles: list) -> list:
    """One label per point where it overlaps no other label, no point and no ``obstacles`` and stays inside the
    axes: the nearest free place of ``_LABEL_OFFSETS``; a label that finds none goes where it overlaps least,
    with a line to its point. Call once the layout is final (display positions must not move)."""
    from matplotlib.transforms import Bbox

    renderer = figure.canvas.get_renderer()
    inside = axis.get_window_extent(renderer)
    marker = 4 * figure.dpi / 72  # a marker's half width in pixels
    taken = [*obstacles]
    for x, y, _ in points:
        centre = axis.transData.transform((x, y))
        taken.append(Bbox.from_extents(*(centre - marker), *(centre + marker)))

    def annotate(x: float, y: float, text: str, offset: tuple[float, float, str, str], **options):
        dx, dy, horizontal, vertical = offset
        return axis.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                             ha=horizontal, va=vertical, **options)

    labels = []
    for x, y, text in sorted(points, key=lambda point: (-point[1], point[0])):  # top to bottom, left to right
        best = None
        for offset in _LABEL_OFFSETS:
            label = annotate(x, y, text, offset)
            box = label.get_window_extent(renderer).padded(2)
            label.remove()
            cost = box.width * box.height - _overlap(box, inside) + sum(_overlap(box, other) for other in taken)
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        cost, offset, box = best
        far = _LABEL_OFFSETS.index(offset) >= _NEAR_OFFSETS  # a line says whose label it is
        leader = {"arrowprops": {"arrowstyle": "-", "color": "grey", "linewidth": 0.6}} if far else {}
        labels.append(annotate(x, y, text, offset, **leader))
        taken.append(box)
    return labels


def tradeoff_figure(table: list[dict[str, Any]]):
    """The trade-off plot as a matplotlib figure: top-5 accuracy (lower protects more) against PSNR (higher looks
    better), one point per row, each labelled where no other label or point is."""
    pyplot = _pyplot()
    figure, axis = pyplot.subplots(figsize=(6.5, 4.8))
    points: dict[tuple[float, float], list[str]] = {}  # rows at the same place share one label
    obstacles = []
    original = None
    for entry in table:
        if entry["row"] == "Orig.":
            original = entry["T5"]
            axis.axhline(original, color="grey", linestyle="--", linewidth=1)
        elif not math.isnan(entry["PSNR"]):  # NaN: every image unchanged, no finite PSNR
            points.setdefault((round(entry["PSNR"], 1), round(entry["T5"], 1)), []).append(entry["row"])
    for psnr, top5 in points:
        axis.scatter(psnr, top5, color="tab:blue", zorder=3)
    axis.margins(x=0.15, y=0.12)
    axis.set_xlabel("PSNR (dB) ↑")
    axis.set_ylabel("top-5 accuracy (%) ↓")
    axis.set_title("Protection against image quality")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    axis.set_xlim(axis.get_xlim())  # freeze the limits: labels are placed in display space
    axis.set_ylim(axis.get_ylim())
    if original is not None:
        note = axis.annotate("Orig. (no perturbation)", (0.01, original), xycoords=("axes fraction", "data"),
                             xytext=(0, 2), textcoords="offset points", fontsize=8, color="grey", va="bottom")
        obstacles.append(note.get_window_extent(figure.canvas.get_renderer()).padded(2))
    _place_labels(figure, axis, [(x, y, ", ".join(names)) for (x, y), names in points.items()], obstacles)
    return figure


def figure_tradeoff(table: list[dict[str, Any]], path: Path) -> None:
    """The trade-off plot (:func:`tradeoff_figure`) written as ``path`` in PNG, PDF and SVG."""
    _save_figure(tradeoff_figure(table), path)


# --------------------------------------------------------------------------------------------- summary


def _summary(dataset: Dataset, classifier: Classifier, records: list[dict[str, Any]], first: list[dict[str, Any]],
             second: list[dict[str, Any]], seed: int | None) -> str:
    settings = Settings()
    classes = len({item.label for item in dataset.items}) if dataset.labelled else None
    height, width = classifier.input_size
    lines = [
        f"# scenepriv evaluate: {dataset.root}", "",
        f"- model: {classifier.name} ({classifier.num_classes} classes), resize {classifier.resize!r}",
        f"- dataset: {dataset.root} ({dataset.layout}), {len(dataset.items)} images"
        + (f" in {classes} classes" if classes else "")
        + (", the 60 private classes of MediaEval 2018 only" if dataset.private_classes else ""),
    ]
    if dataset.labelled:
        lines.append(f"- labels: from the {dataset.layout}")
    else:
        lines.append("- labels: **the classifier's clean top-1** (unlabelled folder), so the original top-1 accuracy "
                     "is 100% by construction and irreversibility is measured per clean class")
    lines += [
        f"- images: each photo resized to {width}x{height} ({classifier.resize}) and rounded to 8 bits (Orig.); every "
        "metric is computed on the 8-bit images as saved",
        f"- settings: eps {settings.eps}, at most {settings.max_iter} iterations, threshold {settings.threshold}, "
        f"sigma {settings.sigma}, seed {seed if seed is not None else 'none (unpredictable targets)'}",
        "",
    ]
    paper1, paper2 = paper_tables() if classifier.name == PAPER_MODEL else (None, None)
    if paper1 is None:
        lines += ["The paper's numbers are for ResNet-50 on the 3,000 private test images of Places365 and are not "
                  f"comparable with {classifier.name}'s; they are left out.", ""]
    lines += ["## Table 1: accuracy and image quality", "",
              "T1/T5: top-1/top-5 accuracy (%) against the labels; SSIM, PSNR (dB), BRISQUE, butteraugli (how "
              "visible, about 1: not noticeable): mean (standard deviation) over images. *unchanged*: images "
              "identical to the original (infinite PSNR, left out of the PSNR mean).", "",
              _table1_markdown(first, paper1),
              "## Table 2: irreversibility", "",
              "Mean over true classes of the Euclidean distance between the distribution of the assigned class "
              "(final top-1) and the uniform distribution over all classes: the lower, the harder to recover the "
              "true class. With few images per class the distance cannot be small (at least about "
              "sqrt(1/n) for n images per class); the line under the table gives its range on these images.", "",
              _table2_markdown(second, paper2, records, classifier.num_classes),
              "BRISQUE comes from OpenCV's implementation with the LIVE model; the paper's came from MATLAB, so "
              "absolute values differ by a few points while rankings agree.", "",
              "## Figures", "",
              f"Each as {', '.join(FIGURE_FORMATS).upper()}. `fig3_target_histograms`: the paper's Fig. 3, how often "
              "each class is the assigned class per iterative method; left, every class, most assigned first, "
              "against the uniform share; right, the most assigned classes by name. `tradeoff`: top-5 accuracy "
              "against PSNR, one point per row.", ""]
    return "\n".join(lines)


def write_reports(records: list[dict[str, Any]], dataset: Dataset, classifier: Classifier, rows: list[Row],
                  output: Path, *, seed: int | None = None, unseen: list[str] | None = None) -> None:
    """Write the tables (CSV and Markdown), the figures and summary.md of these records into ``output``."""
    first, second = table1(records, rows, unseen), table2(records, rows, classifier.labels)
    _write_csv(output / "table1.csv", first)
    _write_csv(output / "table2.csv", second)
    (output / "table1.md").write_text(_table1_markdown(first), encoding="utf-8")
    (output / "table2.md").write_text(_table2_markdown(second, None, records, classifier.num_classes),
                                      encoding="utf-8")
    figure_histograms(records, rows, classifier.labels, output / "fig3_target_histograms.png")
    figure_tradeoff(first, output / "tradeoff.png")
    (output / "summary.md").write_text(_summary(dataset, classifier, records, first, second, seed), encoding="utf-8")
