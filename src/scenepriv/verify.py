"""Does the protection hold on the file as saved, and after a platform re-encodes it?

Each check (:mod:`scenepriv.reencode`) is a resize of the saved photo by a scale with one resampler, a real JPEG
round trip through Pillow at one quality (or none), then the classifier's downsizing to its input size with the
same resampler. The protection holds when the top-1 differs from the original's top-1 under the same check; the
target still wins when the top-1 is the one of the protected file as saved.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from itertools import product
from pathlib import Path

import torch

from .reencode import ROBUST_CHECKS, Check, checks, jpeg_round_trip, platform_version, platform_versions
from .zoo import Classifier

__all__ = ["ROBUST_CHECKS", "Check", "checks", "jpeg_round_trip", "platform_version", "platform_versions", "judge",
           "failed_checks", "shares", "share_table", "original_of", "verify_files", "top1_under_checks"]


def top1_under_checks(classifier: Classifier, pixels: torch.Tensor, all_checks: list[Check]) -> list[int]:
    """The classifier's top-1 for the photo under every check, in one batch, in the network's own precision."""
    views = platform_versions(pixels.to(classifier.device), all_checks, classifier.input_size)
    with torch.inference_mode():
        return classifier.exact(views).argmax(1).tolist()


def judge(classifier: Classifier, protected: torch.Tensor, original: torch.Tensor | None,
          all_checks: list[Check]) -> dict:
    """The verdict of one classifier on one protected photo (3, H, W) under every check: per check its top-1,
    whether the target (the top-1 of the file as saved) still wins and, given the ``original``, whether the
    protection holds (the top-1 differs from the original's under the same check)."""
    device = classifier.device
    with torch.inference_mode():
        target = int(classifier.exact(protected[None].to(device)).argmax())
    after = top1_under_checks(classifier, protected, all_checks)
    before = top1_under_checks(classifier, original, all_checks) if original is not None else None
    entries = []
    for i, check in enumerate(all_checks):
        entry = {"check": check.name, "top1": classifier.labels[after[i]], "target_wins": after[i] == target}
        if before is not None:
            entry.update(original_top1=classifier.labels[before[i]], holds=after[i] != before[i])
        entries.append(entry)
    return {"model": classifier.name, "target": classifier.labels[target], "checks": entries}


def verdict_key(verdict: dict) -> str:
    """What a verdict is judged by: ``holds`` with an original, else ``target_wins``."""
    return "holds" if verdict["checks"] and "holds" in verdict["checks"][0] else "target_wins"


def failed_checks(verdict: dict) -> list[str]:
    key = verdict_key(verdict)
    return [entry["check"] for entry in verdict["checks"] if not entry[key]]


def shares(verdicts: list[dict]) -> dict[str, float]:
    """Per check name, the share of verdicts that pass it."""
    passed: dict[str, list[bool]] = {}
    for verdict in verdicts:
        key = verdict_key(verdict)
        for entry in verdict["checks"]:
            passed.setdefault(entry["check"], []).append(entry[key])
    return {name: sum(values) / len(values) for name, values in passed.items()}


def share_table(verdicts: list[dict], qualities: list[int], scales: list[float], resamplers: list[str],
                title: str) -> list[str]:
    """Lines of a table: one row per JPEG quality (or as saved) and scale, one column per resampler, each cell
    the percentage of verdicts passing that check."""
    share = shares(verdicts)
    lines = [f"{title:<38}" + "".join(f"{r:>20}" for r in resamplers)]
    for quality, scale in product([None, *qualities], scales):
        cells = "".join(f"{100 * share[Check(quality, scale, r).name]:>19.0f}%" for r in resamplers)
        lines.append(f"{'as saved' if quality is None else f'JPEG {quality}'}, scale {scale:g}".ljust(38) + cells)
    return lines


def original_of(relative: Path, originals: Path) -> Path | None:
    """The original photo of a protected file: the same relative name in ``originals``, any image extension
    (outputs named after a clash keep the original's extension: ``x.jpg.png``)."""
    from .images import image_extensions

    if (originals / relative).is_file():
        return originals / relative
    candidates = sorted((originals / relative).parent.glob(f"{glob.escape(relative.name)}.*"))
    return next((c for c in candidates if c.suffix.lower() in image_extensions()), None)


def verify_files(sources: Sequence[tuple[Path, Path]], judges: Sequence[Classifier], all_checks: list[Check],
                 originals: Path | None = None) -> Iterator[tuple[Path, list[dict], str | None]]:
    """For each (protected file, its name relative to its input) of :func:`scenepriv.images.find_images`: the
    verdict of every judge (:func:`judge`; against the original of the same name in ``originals``, if given),
    or an error line naming the file that could not be read or has no original."""
    from .images import ImageError, load_photo, shown

    for path, relative in sources:
        original = original_of(relative, originals) if originals else None
        try:
            if originals and original is None:
                raise ImageError(f"{shown(path)}: no original named {shown(relative)}.* in {shown(originals)}")
            protected = load_photo(path).pixels
            original_pixels = load_photo(original).pixels if original else None
        except ImageError as error:
            yield path, [], str(error)
            continue
        yield path, [{"file": str(path), "original": str(original) if original else None,
                      **judge(model, protected, original_pixels, all_checks)} for model in judges], None
