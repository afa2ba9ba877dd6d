"""Datasets: a tree of class folders, Places365's ``places365_val.txt``, or a flat folder of unlabelled photos."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..images import find_images
from ..zoo import places365
from .rows import EvaluationError

PLACES365_VAL = "places365_val.txt"


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
