"""What the page says of a protected photo in plain words: which checks hold, and how visible the change is."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..verify import Check

# What the page checks: the file as saved and after real JPEG re-encoding at 75 and 50, at full and half size, each
# through the resampler of the model protected against (scenepriv verify offers every combination).
CHECK_QUALITIES, CHECK_SCALES = [75, 50], [1.0, 0.5]
# The strengths to suggest where a site's re-encoding undoes a photo's protection.
STRONGER = {"low": "medium or high", "paper": "medium or high", "transfer": "medium or high", "medium": "high"}
# Butteraugli scores and what they look like (DESIGN.md: about 1.0 is just noticeable; JPEG quality 85 of typical
# photos scores 1.1-1.6, quality 75 2.5-2.8), from least to most visible.
VISIBILITY = [
    (1.1, "The change should not be noticeable, even side by side."),
    (1.6, "The change is about as visible as ordinary JPEG compression: hard to see."),
    (2.8, "The change is about as visible as strong JPEG compression: it shows up close, in flat areas such as "
          "sky."),
    (float("inf"), "The change can be seen up close, above all in flat areas such as sky: compare below."),
]


def check_label(check: Check) -> str:
    """The check in the details table: ``JPEG 75, half size``."""
    jpeg = "as saved" if check.quality is None else f"JPEG {check.quality}"
    return f"{jpeg}, {'full size' if check.scale == 1 else 'half size' if check.scale == 0.5 else f'x{check.scale:g}'}"


def _sizes(scales: set[float]) -> str:
    named = [{1.0: "full", 0.5: "half"}.get(scale, f"{scale:g}x") for scale in sorted(scales, reverse=True)]
    return f"at {' and '.join(named)} size"


def where(checks: Sequence[Check], chosen: Sequence[bool]) -> str:
    """The ``chosen`` checks in words, grouped: "as saved and after a site's JPEG re-encoding, at full and half
    size"; "as saved, at full size, and after JPEG re-encoding at quality 75, at half size"."""
    qualities = list(dict.fromkeys(check.quality for check in checks))
    scales = {quality: {check.scale for check, pick in zip(checks, chosen, strict=True)
                        if pick and check.quality == quality} for quality in qualities}
    jpegs = [quality for quality in qualities if quality is not None]
    groups: dict[frozenset, list[int | None]] = {}
    for quality in qualities:
        if scales[quality]:
            groups.setdefault(frozenset(scales[quality]), []).append(quality)
    phrases = []
    for sizes, members in groups.items():
        named = ["as saved"] if None in members else []
        coded = [quality for quality in members if quality is not None]
        if coded and len(coded) == len(jpegs):
            named.append("after a site's JPEG re-encoding")
        elif coded:
            named.append(f"after JPEG re-encoding at quality {' and '.join(map(str, coded))}")
        phrases.append(f"{' and '.join(named)}, {_sizes(set(sizes))}")
    return ", and ".join(phrases)


def verdict(checks: Sequence[Check], verdicts: Sequence[dict[str, Any]], strength: str) -> dict[str, Any]:
    """The plain verdict on one photo from each judge's ``holds`` per check (``verdicts``, those protected
    against marked ``protected_against``): ``level`` (holds: every check on every classifier; fails: the classifier
    protected against still recognises the file as saved; else partly), a short ``badge``, and the ``text``
    saying which checks hold on which classifiers."""
    ours = [verdict for verdict in verdicts if verdict["protected_against"]]
    others = [verdict for verdict in verdicts if not verdict["protected_against"]]
    held = [all(verdict["checks"][i]["holds"] for verdict in ours) for i in range(len(checks))]
    saved = next((i for i, check in enumerate(checks) if check.quality is None and check.scale == 1), 0)
    who, recognises = (("the classifier it was protected against", "recognises") if len(ours) == 1
                       else (f"the {len(ours)} classifiers it was protected against", "recognise"))
    if all(held):
        sentences = [f"Holds against {who}: {where(checks, held)}."]
    elif any(held):
        sentences = [f"Holds against {who} {where(checks, held)}; it does not hold "
                     f"{where(checks, [not hold for hold in held])}."]
    else:
        sentences = [f"Does not hold: {who} still {recognises} the photo, even as saved."]
    if not all(held) and STRONGER.get(strength):
        sentences.append(f"A site that re-encodes or shrinks photos may undo it: for such sites, protect it again "
                         f"at strength {STRONGER[strength]}.")
    other_rows = [row["holds"] for verdict in others for row in verdict["checks"]]
    if not others:
        sentences.append("No other classifier was checked: others may still recognise the photo.")
    elif not all(other_rows):
        sentences.append(f"Other classifiers still recognise the photo in {other_rows.count(False)} of "
                         f"{len(other_rows)} checks.")
    else:
        sentences.append(f"The other classifiers checked ({len(others)}) do not recognise it either, in all "
                         f"{len(other_rows)} checks.")
    rows = [row["holds"] for verdict in verdicts for row in verdict["checks"]]
    level = "fails" if not held[saved] else "holds" if all(rows) else "partly"
    badge = ("not protected" if level == "fails"
             else f"holds in all {len(rows)} checks" if all(rows) else f"holds in {sum(rows)} of {len(rows)} checks")
    return {"level": level, "badge": badge, "text": " ".join(sentences)}


def visibility(butteraugli: float | None) -> str:
    """How visible the change is, in words, from its butteraugli score (None: not measured here)."""
    if butteraugli is None:
        return "Compare below how visible the change is."
    return next(text for limit, text in VISIBILITY if butteraugli <= limit)
