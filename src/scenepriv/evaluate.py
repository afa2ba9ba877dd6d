"""Experiments: a dataset x the paper's methods -> results.jsonl -> Table 1, Table 2, Fig. 3 and a summary.

Every image is the paper's setting: the photo bilinearly downsized to the classifier's input size
and rounded to 8 bits (the "Orig." row). Every metric is computed on the 8-bit images as saved.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import metrics
from .images import ImageError, find_images, load_photo, save_image
from .methods import protect, to_uint8
from .settings import ScenePrivError, Settings
from .zoo import Classifier, places365, resize_to_input

PLACES365_VAL = "places365_val.txt"
PAPER_MODEL = "resnet50-places365"


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


# --------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Item:
    """One image of a dataset: its id (path relative to the dataset), file and true class (None = unlabelled)."""

    id: str
    path: Path
    label: int | None


@dataclass(frozen=True)
class Dataset:
    """The images to evaluate and where their labels come from."""

    root: Path
    layout: str  # "class folders", "places365_val.txt" or "unlabelled folder"
    items: list[Item]
    private_classes: bool = False

    @property
    def labelled(self) -> bool:
        return self.layout != "unlabelled folder"


def _normalise(name: str) -> str:
    """Case-insensitive, with ``_``, spaces and ``/`` equivalent (``church/indoor`` = ``Church_Indoor``)."""
    return re.sub(r"[\s_/]+", " ", name).strip().casefold()


def match_class(name: str, class_names: list[str]) -> int:
    """The class index a folder name stands for; EvaluationError with close matches when it is not a class."""
    if name in class_names:
        return class_names.index(name)
    found = [i for i, label in enumerate(class_names) if _normalise(label) == _normalise(name)]
    if len(found) == 1:
        return found[0]
    if found:
        candidates = ", ".join(repr(class_names[i]) for i in found)
        raise EvaluationError(f"folder {name!r} matches several classes ({candidates}); rename it to one exactly")
    normalised = {_normalise(label): label for label in class_names}
    close = difflib.get_close_matches(_normalise(name), list(normalised), n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(repr(normalised[c]) for c in close)}" if close else "no close match"
    raise EvaluationError(f"folder {name!r} is not a class of the model ({hint})")


def private_class_indices() -> list[int]:
    """Places365 indices of the 60 private classes of the MediaEval 2018 Pixel Privacy task."""
    text = (resources.files("scenepriv") / "data" / "private_classes_mediaeval2018.txt").read_text(encoding="utf-8")
    return [int(line.split()[1]) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _class_folders(root: Path, folders: list[Path], class_names: list[str]) -> list[Item]:
    """Items of a ``CLASS_NAME/image`` tree, taken round-robin over classes so that --limit keeps them balanced."""
    errors, per_class = [], []
    for folder in folders:
        try:
            label = match_class(folder.name, class_names)
        except EvaluationError as error:
            errors.append(str(error))
            continue
        per_class.append([Item(source.relative_to(root).as_posix(), source, label)
                          for source, _ in find_images([folder], recursive=True)])
    if errors:
        raise EvaluationError(f"{root}: {'; '.join(errors)}")
    longest = max((len(items) for items in per_class), default=0)
    return [items[i] for i in range(longest) for items in per_class if i < len(items)]


def _places365_val(root: Path, class_names: list[str]) -> list[Item]:
    """Items listed in ``places365_val.txt`` (``Places365_val_00000001.jpg 165``), images beside it or in val_256/."""
    if len(class_names) != places365.NUM_CLASSES:
        raise EvaluationError(f"{root / PLACES365_VAL} gives Places365 class indices; use a *-places365 model")
    entries = []
    for number, line in enumerate((root / PLACES365_VAL).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                name, index = line.split()
                entries.append((name, int(index)))
            except ValueError:
                raise EvaluationError(f"{root / PLACES365_VAL}:{number}: expected 'FILE INDEX', got {line!r}") from None
    folders = [root / "val_256", root / "val_large", root]
    folder = next((f for f in folders if entries and (f / entries[0][0]).is_file()), root)
    missing = [name for name, _ in entries if not (folder / name).is_file()]
    if missing:
        raise EvaluationError(f"{root / PLACES365_VAL}: {len(missing)} of the {len(entries)} images listed are not in "
                              f"{folder} (e.g. {missing[0]})")
    return [Item(name, folder / name, index) for name, index in entries]


def load_dataset(root: Path, class_names: list[str], *, private_classes: bool = False,
                 limit: int | None = None) -> Dataset:
    """Read a dataset: ``places365_val.txt`` with its images, a tree of class folders, or a flat folder of photos."""
    if not root.is_dir():
        raise EvaluationError(f"{root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and find_images([p], recursive=True))
    if (root / PLACES365_VAL).is_file():
        layout, items = "places365_val.txt", _places365_val(root, class_names)
    elif folders:
        loose = find_images([root])
        if loose:
            raise EvaluationError(f"{root}: has both class folders and loose photos ({loose[0][0].name}); "
                                  "move the photos into class folders or evaluate a flat folder")
        layout, items = "class folders", _class_folders(root, folders, class_names)
    else:
        layout = "unlabelled folder"
        items = [Item(source.relative_to(root).as_posix(), source, None) for source, _ in find_images([root])]
    if private_classes:
        if class_names != places365.labels():
            raise EvaluationError("--private-classes selects Places365 classes; use a *-places365 model")
        if layout == "unlabelled folder":
            raise EvaluationError(f"{root}: --private-classes needs labels (class folders or {PLACES365_VAL})")
        private = set(private_class_indices())
        items = [item for item in items if item.label in private]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise EvaluationError(f"{root}: no photos to evaluate" + (" in the private classes" if private_classes else ""))
    return Dataset(root, layout, items, private_classes)


# --------------------------------------------------------------------------------------------- running


def read_results(path: Path) -> list[dict[str, Any]]:
    """The records already in results.jsonl (a line cut short by an interrupted run is ignored)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _ends_mid_line(path: Path) -> bool:
    with open(path, "rb") as stream:
        if stream.seek(0, 2) == 0:
            return False
        stream.seek(-1, 2)
        return stream.read(1) != b"\n"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_")


def _thumbnails(items: list[Item], classifier: Classifier, failures: list[str]) -> tuple[list[Item], torch.Tensor]:
    """The paper's images: each photo resized to the model's input size and rounded to 8 bits."""
    kept, thumbnails = [], []
    for item in items:
        try:
            photo = load_photo(item.path)
        except ImageError as error:
            failures.append(str(error))
            tqdm.write(f"error: {error}", file=sys.stderr)
            continue
        thumbnail = resize_to_input(photo.pixels[None], classifier.input_size, classifier.resize)[0]
        kept.append(item)
        thumbnails.append(torch.round(thumbnail.clamp(0, 1) * 255) / 255)
    return kept, torch.stack(thumbnails) if thumbnails else torch.empty(0)


def _classify(images: torch.Tensor, classifier: Classifier) -> torch.Tensor:
    device = classifier.device
    with torch.inference_mode():
        return classifier(images.to(device)).double().softmax(1).cpu()


def _run_row(row: Row, images: torch.Tensor, labels: torch.Tensor, classifier: Classifier,
             seed: int | None) -> tuple[torch.Tensor, list[dict[str, Any]], float]:
    """Protected images, per-image facts and seconds per image for one row on one batch."""
    start = time.perf_counter()
    if row.method is None:
        probabilities = _classify(images, classifier)
        facts = [{"top5": p.topk(5).indices.tolist(), "ssim": None, "psnr": None, "iterations": 0,
                  "success": None, "target": None} for p in probabilities]
        return images, facts, (time.perf_counter() - start) / len(images)
    result = protect(images, classifier, row.method, labels=labels, seed=seed, **row.overrides)
    seconds = (time.perf_counter() - start) / len(images)
    facts = [{"top5": [entry["index"] for entry in record["final_top5"]], "ssim": record["ssim"],
              "psnr": record["psnr"], "iterations": record["iterations"], "success": record["success"],
              "target": record["target"]["index"] if "target" in record else None} for record in result.records]
    return result.images, facts, seconds


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run(dataset: Dataset, classifier: Classifier, rows: list[Row], output: Path, *, seed: int | None = None,
        batch_size: int = 8, save_images: bool = False,
        transfer_to: list[Classifier] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Evaluate every (image, row) pair not yet in ``output/results.jsonl``, appending one line per pair.

    ``transfer_to``: models the images are not protected against, whose top-5 on each image is recorded too
    (``transfer``), so Table 1 can say how far the protection carries to them.

    Returns the records of this dataset and these rows (old and new) and the files that could not be read.
    """
    output.mkdir(parents=True, exist_ok=True)
    results = output / "results.jsonl"
    previous = read_results(results)
    other_models = {r.get("model") for r in previous} - {classifier.name}
    if other_models:
        raise EvaluationError(f"{results} holds results of model {sorted(map(str, other_models))[0]!r}, "
                              f"not {classifier.name!r}; choose another -o")
    done = {(r["image"], r["row"]) for r in previous}
    pending = [(item, [row for row in rows if (item.id, row.name) not in done]) for item in dataset.items]
    pending = [(item, todo) for item, todo in pending if todo]
    failures: list[str] = []
    names = classifier.labels
    total = sum(len(todo) for _, todo in pending)
    with open(results, "a", encoding="utf-8") as stream, \
            tqdm(total=total, unit="image", desc="evaluate", file=sys.stderr, disable=None) as progress:
        if total and _ends_mid_line(results):
            stream.write("\n")  # after a line cut short by an interrupted run
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            items, images = _thumbnails([item for item, _ in batch], classifier, failures)
            todo = {item.id: rows_left for item, rows_left in batch}
            progress.update(sum(len(rows_left) for item, rows_left in batch if item not in items))  # unreadable
            if not items:
                continue
            if dataset.labelled:
                labels = torch.tensor([item.label for item in items])
            else:  # an unlabelled photo's label is what the classifier sees in it
                labels = _classify(images, classifier).argmax(1)
            for row in rows:
                selected = [i for i, item in enumerate(items) if row in todo[item.id]]
                if not selected:
                    continue
                protected, facts, seconds = _run_row(row, images[selected], labels[selected], classifier, seed)
                originals = to_uint8(images[selected])
                unseen = {model.name: _classify(protected, model).topk(5).indices.tolist()
                          for model in transfer_to or []}
                outcomes = zip(selected, facts, to_uint8(protected), originals, strict=True)
                for position, (i, fact, pixels, original) in enumerate(outcomes):
                    item, label = items[i], int(labels[i])
                    record = {
                        "image": item.id, "row": row.name, "method": row.method, "model": classifier.name,
                        "label": label, "label_name": names[label],
                        "label_source": dataset.layout if dataset.labelled else "clean top-1",
                        "assigned": fact["top5"][0], "assigned_name": names[fact["top5"][0]], **fact,
                        "brisque": _finite(metrics.brisque(pixels)),
                        "butteraugli": metrics.butteraugli(original, pixels),
                        "transfer": {name: top5[position] for name, top5 in unseen.items()},
                        "seconds": round(seconds, 6), "seed": seed,
                    }
                    if save_images:
                        save_image(pixels, output / "images" / _slug(row.name) / Path(item.id).with_suffix(".png"))
                    stream.write(json.dumps(record) + "\n")
                    stream.flush()
                    previous.append(record)
                progress.update(len(selected))
    wanted_images, wanted_rows = {item.id for item in dataset.items}, {row.name for row in rows}
    return [r for r in previous if r["image"] in wanted_images and r["row"] in wanted_rows], failures


# --------------------------------------------------------------------------------------------- tables


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
    lines = ["| Method | T1 ↓ | T5 ↓ | SSIM ↑ | PSNR ↑ | BRISQUE ↓ | butteraugli ↓ | images | unchanged | iterations "
             "| s/image |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

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


def _table2_markdown(table: list[dict[str, Any]], paper: dict[str, float] | None = None) -> str:
    header = ["Method", "distance to uniform ↓", *(["paper"] if paper else []),
              "largest share of one class to one class", "classes", "images"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for entry in table:
        paper_cell = [_cell(paper.get(entry["row"]), 4)] if paper else []
        cells = [entry["row"], f"{entry['irreversibility']:.4f}", *paper_cell,
                 f"{entry['max_share']:.0f}% ({entry['from']} -> {entry['to']})", str(entry["classes"]),
                 str(entry["images"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, table: list[dict[str, Any]], digits: int = 4) -> None:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(table[0]) if table else ["row"])
        writer.writeheader()
        for entry in table:
            writer.writerow({k: _cell(v, digits) if isinstance(v, float) else v for k, v in entry.items()})


# --------------------------------------------------------------------------------------------- figures


def figure_histograms(records: list[dict[str, Any]], rows: list[Row], num_classes: int, path: Path) -> None:
    """Fig. 3: how often each class is the assigned class, one panel per iterative method (else per row)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = [row.name for row in rows]
    panels = [name for name in ITERATIVE_ROWS if name in names] or names
    figure, axes = pyplot.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels)), squeeze=False)
    for letter, name, axis in zip("abcdefghijklmnop", panels, axes[:, 0], strict=False):
        assigned = [r["assigned"] for r in records if r["row"] == name]
        counts = np.bincount(np.asarray(assigned, dtype=np.int64), minlength=num_classes)
        axis.bar(np.arange(num_classes), 100 * counts / max(len(assigned), 1), width=1.0, color="tab:blue")
        axis.set_xlim(-0.5, num_classes - 0.5)
        axis.set_title(f"({letter}) {name}: {len(assigned)} images", fontsize=9)
        axis.set_ylabel("frequency (%)")
    axes[-1, 0].set_xlabel("assigned class (index)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def figure_tradeoff(table: list[dict[str, Any]], path: Path) -> None:
    """Top-5 accuracy (lower protects more) against PSNR (higher looks better), one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6, 4.5))
    points: dict[tuple[float, float], list[str]] = {}  # rows at the same place share one label
    for entry in table:
        if entry["row"] == "Orig.":
            axis.axhline(entry["T5"], color="grey", linestyle="--", linewidth=1)
            axis.annotate("Orig. (no perturbation)", (0.01, entry["T5"]), xycoords=("axes fraction", "data"),
                          fontsize=8, color="grey", va="bottom")
        elif not math.isnan(entry["PSNR"]):  # NaN: every image unchanged, no finite PSNR
            points.setdefault((round(entry["PSNR"], 1), round(entry["T5"], 1)), []).append(entry["row"])
    placed: list[tuple[float, float]] = []
    for (psnr, top5), names in sorted(points.items()):
        neighbours = sum(abs(psnr - x) < 1.5 and abs(top5 - y) < 4 for x, y in placed)  # stack close labels
        axis.scatter(psnr, top5, color="tab:blue")
        axis.annotate(", ".join(names), (psnr, top5), textcoords="offset points", xytext=(4, 4 - 11 * neighbours),
                      fontsize=8)
        placed.append((psnr, top5))
    axis.margins(x=0.2, y=0.1)  # room for the labels
    axis.set_xlabel("PSNR (dB) ↑")
    axis.set_ylabel("top-5 accuracy (%) ↓")
    axis.set_title("Protection against image quality")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


# --------------------------------------------------------------------------------------------- all together


def _summary(dataset: Dataset, classifier: Classifier, rows: list[Row], first: list[dict[str, Any]],
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
              "sqrt(1/n) for n images per class).", "", _table2_markdown(second, paper2),
              "BRISQUE comes from OpenCV's implementation with the LIVE model; the paper's came from MATLAB, so "
              "absolute values differ by a few points while rankings agree.", ""]
    return "\n".join(lines)


def evaluate(dataset: Dataset, classifier: Classifier, rows: list[Row], output: Path, *, seed: int | None = None,
             batch_size: int = 8, save_images: bool = False, transfer_to: list[Classifier] | None = None) -> list[str]:
    """Run (or resume) the evaluation and write the tables, figures and summary.md; returns unreadable files."""
    records, failures = run(dataset, classifier, rows, output, seed=seed, batch_size=batch_size,
                            save_images=save_images, transfer_to=transfer_to)
    first, second = table1(records, rows, [model.name for model in transfer_to or []]), \
        table2(records, rows, classifier.labels)
    _write_csv(output / "table1.csv", first)
    _write_csv(output / "table2.csv", second)
    (output / "table1.md").write_text(_table1_markdown(first), encoding="utf-8")
    (output / "table2.md").write_text(_table2_markdown(second), encoding="utf-8")
    figure_histograms(records, rows, classifier.num_classes, output / "fig3_target_histograms.png")
    figure_tradeoff(first, output / "tradeoff.png")
    (output / "summary.md").write_text(_summary(dataset, classifier, rows, first, second, seed), encoding="utf-8")
    return failures
