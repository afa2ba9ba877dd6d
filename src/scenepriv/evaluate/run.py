"""Running the rows over a dataset: one line of results.jsonl per (image, row), resumed where a run stopped.

Every image is the paper's setting: the photo bilinearly downsized to the classifier's input size
and rounded to 8 bits (the "Orig." row). Every metric is computed on the 8-bit images as saved.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .. import metrics
from ..attack import to_uint8
from ..images import ImageError, load_photo, save_image
from ..methods import protect
from ..zoo import Classifier, resize_to_input
from .datasets import Dataset, Item
from .report import irreversibility_warning, write_reports
from .rows import EvaluationError, Row


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
              "target": record["goal"]["classes"][0]["index"] if record["goal"]["toward"] else None}
             for record in result.records]
    return result.images, facts, seconds


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def run(dataset: Dataset, classifier: Classifier, rows: list[Row], output: Path, *, seed: int | None = None,
        batch_size: int = 8, save_images: bool = False, transfer_to: list[Classifier] | None = None,
        progress: bool | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Evaluate every (image, row) pair not yet in ``output/results.jsonl``, appending one line per pair.

    ``transfer_to``: models the images are not protected against, whose top-5 on each image is recorded too
    (``transfer``), so Table 1 can say how far the protection carries to them. ``progress``: a bar on stderr
    naming the row at work and counting results (image x row); None: only when stderr is a terminal.

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
            tqdm(total=total, unit="result", desc="evaluate", file=sys.stderr,
                 disable=None if progress is None else not progress) as bar:
        if total and _ends_mid_line(results):
            stream.write("\n")  # after a line cut short by an interrupted run
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            items, images = _thumbnails([item for item, _ in batch], classifier, failures)
            todo = {item.id: rows_left for item, rows_left in batch}
            bar.update(sum(len(rows_left) for item, rows_left in batch if item not in items))  # unreadable
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
                bar.set_description(f"evaluate {row.name}")
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
                bar.update(len(selected))
    wanted_images, wanted_rows = {item.id for item in dataset.items}, {row.name for row in rows}
    return [r for r in previous if r["image"] in wanted_images and r["row"] in wanted_rows], failures


def evaluate(dataset: Dataset, classifier: Classifier, rows: list[Row], output: Path, *, seed: int | None = None,
             batch_size: int = 8, save_images: bool = False, transfer_to: list[Classifier] | None = None,
             progress: bool | None = None) -> list[str]:
    """Run (or resume) the evaluation and write the tables, figures and summary.md; returns unreadable files.
    A ``warning:`` line on stderr says when Table 2 cannot rank the methods (one image per class)."""
    records, failures = run(dataset, classifier, rows, output, seed=seed, batch_size=batch_size,
                            save_images=save_images, transfer_to=transfer_to, progress=progress)
    write_reports(records, dataset, classifier, rows, output, seed=seed,
                  unseen=[model.name for model in transfer_to or []])
    warning = irreversibility_warning(records, classifier.num_classes)
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return failures
