"""Render the Markdown tables of README.md and docs/ that come from files, so that none is typed twice.

    python tools/doc_tables.py            # rewrite every generated table in place
    python tools/doc_tables.py --check    # exit 1, naming each table that differs from its data (tests/test_docs.py)

A generated table sits between two markers, each on a line of its own:

    <!-- table: NAME -->
    (the table, written by this script)
    <!-- /table -->

NAME is one of TABLES below: the strengths from ``scenepriv.settings.PRESETS``, the speed tables from
``benchmarks/results.json`` and ``benchmarks/quality.json``, the speed of whole photos from
``benchmarks/photo_speed.json``, ``photo_speed_heap.json`` and ``photo_speed_mask.json`` (written by
``benchmarks/photo_speed.py --json``), the presets measured on photos from ``docs/data/strengths.jsonl``
(``benchmarks/strengths.py --json``), the transfer frontier from ``docs/data/transfer-surrogates.jsonl``. Tables
with no data file (earlier measurements) stay typed; their pages say so. Reads no model and imports no PyTorch:
it runs in a second.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's presets, whatever is installed

OPENING = re.compile(r"^<!-- table: [a-z0-9-]+ -->$", re.M)
MARKER = re.compile(r"^<!-- table: (?P<name>[a-z0-9-]+) -->\n(?P<body>.*?)^<!-- /table -->$", re.M | re.S)
MODEL_NAMES = {"resnet50": "ResNet-50", "efficientnet-lite0": "EfficientNet-Lite0"}
# A judge's verdict whose top-1 to top-2 margin is below this could go either way with the exact weights: the
# campaign's judges ran with weights rounded to fp16, which moves Lite2's logits by at most 0.037 (twice that).
NEAR_TIE = 0.074


def markdown(head: Iterable[str], align: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table: ``align`` holds one of "l" or "r" per column; a "|" in a cell is escaped."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _json(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def _json_lines(path: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / path).read_text().splitlines() if line.strip()]


# --- strengths: scenepriv.settings.PRESETS ---------------------------------------------------------------------

def _checks(preset) -> str:
    """In words, what ``scenepriv verify`` checks by default for a preset (see Strength in settings.py)."""
    after = f" and after JPEG {', '.join(map(str, preset.jpeg))}" if preset.jpeg else ""
    scales = " and ".join(f"{scale:g}" for scale in preset.scales)
    size = "full size" if preset.scales == (1.0,) else f"scale {scales}"
    resize = "every resampler" if preset.all_resamplers else "the classifier's own resize"
    return f"the file as saved{after}, at {size}, through {resize}"


def strengths() -> str:
    """The presets in the words the help and the page show, and what verify checks for each."""
    from scenepriv.settings import DEFAULT_STRENGTH, PRESETS

    rows = [(f"`{name}`" + (" (default)" if name == DEFAULT_STRENGTH else ""), preset.promise, _checks(preset))
            for name, preset in PRESETS.items()]
    return markdown(("`--strength`", "what it promises", "what `scenepriv verify` checks by default"), "lll", rows)


def _value(name: str, value: object) -> str:
    """A setting as the docs write it: pixel amounts in grey levels (2/255), the rest as they are."""
    if name in ("eps", "texture_budget", "max_perturbation") and isinstance(value, float):
        levels = value * 255
        if abs(levels - round(levels, 1)) < 1e-9:
            return f"{round(levels, 1):g}/255"
    return f"{value:g}" if isinstance(value, float) else str(value)


def strength_settings() -> str:
    """Each preset's fields of ``scenepriv.Settings`` (the others keep their defaults, the paper's)."""
    from scenepriv.settings import PRESETS, Settings

    defaults = {field.name: field.default for field in fields(Settings)}
    rows = []
    for name, preset in PRESETS.items():
        changed = ", ".join(f"`{key}={_value(key, value)}`" for key, value in preset.settings.items())
        rows.append((f"`{name}`", changed or "none: the defaults, the paper's"))
    paper = ", ".join(f"`{key}={_value(key, defaults[key])}`" for key in ("eps", "max_iter", "threshold", "sigma"))
    rows.append(("(defaults)", f"{paper}, no texture mask, no re-encoding views"))
    return markdown(("strength", "`Settings` fields it sets"), "ll", rows)


# --- speed: benchmarks/results.json and quality.json (benchmarks/run.py) ------------------------------------------

def _speed_rows() -> list[dict]:
    return _json("benchmarks/results.json")["rows"]


def _precision(row: dict) -> str:
    return row["extra"]["precision"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ratio(value: float | None, base: float) -> str:
    return "-" if value is None else f"{value / base:.2f}"


def speed_batches() -> str:
    """ms per image-iteration by model, precision and batch, with the BIM, tidied-loop and paper-code baselines."""
    rows = []
    for model in ("resnet50", "efficientnet-lite0"):
        for precision in ("fp32", "bf16"):
            for row in _speed_rows():
                if (row["model"], _precision(row)) != (model, precision) or row["bim_ms"] is None:
                    continue
                p = row["pfgsm_ms"]
                rows.append((
                    f"{MODEL_NAMES[model]}, {precision}", row["batch"], _ms(p), _ms(row["bim_ms"]),
                    _ms(row["bim_targets_ms"]), _ms(row["reference_ms"]), _ms(row["paper_ms"]),
                    _ratio(row["bim_ms"], p), _ratio(row["bim_targets_ms"], p), _ratio(row["reference_ms"], p),
                    _ratio(row["paper_ms"], p), f"{row['pfgsm_images_per_s']:.1f}",
                    f"{row['pfgsm_gflops']:.0f} ({100 * row['pfgsm_peak_fraction']:.0f}%)",
                    f"{row['pfgsm_peak_mib'] / 1024:.1f}"))
    head = ("model, classifier", "batch", "p-fgsm", "BIM", "BIM+t", "ref", "paper", "BIM / p", "BIM+t / p",
            "ref / p", "paper / p", "images/s (5 it.)", "GFLOP/s (of peak)", "peak memory GB")
    return markdown(head, "l" + "r" * 13, rows)


def speed_options() -> str:
    """p-fgsm at batch 16 with each classifier option on and off, ms per image-iteration."""
    cells: dict[str, dict[str, str]] = {}
    order: dict[str, tuple] = {}
    for row in _speed_rows():
        if row["batch"] != 16:
            continue
        options = row["options"]
        folded, channels_last = "folded BN" in options, "channels-last" in options
        label = ", ".join((_precision(row), "channels-last" if channels_last else "NCHW",
                           "folded" if folded else "not folded" if channels_last else "batch norms as published"))
        if folded and channels_last:
            label += " (`load_classifier`'s default)" if _precision(row) == "fp32" else " (`protect`'s default here)"
        cells.setdefault(label, {})[row["model"]] = _ms(row["pfgsm_ms"])
        order[label] = (_precision(row) != "fp32", folded, channels_last)
    rows = [(label, cells[label].get("resnet50", "-"), cells[label].get("efficientnet-lite0", "-"))
            for label in sorted(cells, key=order.get)]
    return markdown(("classifier", "ResNet-50", "EfficientNet-Lite0"), "lrr", rows)


QUALITY_VARIANTS = {"fp32 plain": "fp32 as published (NCHW, batch norms unfolded)",
                    "fp32": "fp32, channels-last, folded", "bf16": "bf16, channels-last, folded"}


def speed_quality() -> str:
    """Whether the fast classifier options protect as well: success, iterations, PSNR, SSIM (run.py --quality)."""
    rows = [(QUALITY_VARIANTS.get(row["variant"], row["variant"]), f"{100 * row['success_rate']:.0f}%",
             f"{100 * row['fp32_judged_success_rate']:.0f}%", f"{row['mean_iterations']:.2f}",
             f"{row['mean_psnr']:.2f} dB", f"{row['mean_ssim']:.3f}")
            for row in _json("benchmarks/quality.json")["summary"]]
    return markdown(("classifier", "success", "fp32 judge", "mean iterations", "PSNR", "SSIM"), "lrrrrr", rows)


def photo_speed(path: str = "benchmarks/photo_speed.json") -> str:
    """Seconds and peak memory of one protect run per photo size and strength (benchmarks/photo_speed.py --json)."""
    rows = _json(path)["rows"]
    before = any("before" in row for row in rows)

    def cell(result: dict) -> str:
        return f"{result['seconds']:.1f} s, {result['peak_gb']:.2f} GB" + (
            "" if result["exit"] == 0 else f" (exit {result['exit']})")

    table = []
    for row in rows:
        cells = [f"{row['megapixels']:g}", f"`{row['strength']}`"]
        if before:
            cells += [cell(row["before"]), cell(row["after"]),
                      f"{row['after']['seconds'] / row['before']['seconds']:.2f}"]
        else:
            cells.append(cell(row["after"]))
        table.append(cells)
    measured = ("before", "after", "time after / before") if before else ("time, peak memory",)
    head = ("megapixels", "strength", *measured)
    return markdown(head, "lr" + "r" * (len(head) - 2), table)


# --- strengths on photos: docs/data/strengths.jsonl (benchmarks/strengths.py lines) ----------------------------


def _measured_rows(columns: dict[str, Callable[[dict], str]]) -> list[list[str]]:
    rows = []
    for line in _json_lines("docs/data/strengths.jsonl"):
        name = f"`{line['strength']}`" + ("" if line["format"] == "auto" else f" (`--format {line['format']}`)")
        seeds = line["seeds"]
        if seeds != [0, 1, 2]:  # a run of three or more seeds as its first and last
            run = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
            name += f", seeds {seeds[0]}-{seeds[-1]}" if run else f", seeds {', '.join(map(str, seeds))}"
        rows.append([name, *(cell(line) for cell in columns.values())])
    return rows


def _spread_of(line: dict) -> str:
    distances = [d for d in line["butteraugli"] if d is not None]
    return f"{statistics.median(distances):.2f} / {max(distances):.2f}"


def _holds(check: str) -> Callable[[dict], str]:
    return lambda line: " / ".join(f"{100 * line['holds'][f'{check}/{scale}']:.0f}%" for scale in ("x0.5", "x1"))


def _judges(line: dict) -> str:
    return " / ".join(f"{100 * share:.0f}%" for _, share in sorted(line["judges"].items()))


MEASURED: dict[str, Callable[[dict], str]] = {
    "butteraugli median / max": _spread_of,
    "PSNR": lambda line: f"{line['psnr']:.1f} dB",
    "SSIM": lambda line: f"{line['ssim']:.3f}",
    "protected": lambda line: f"{100 * line['protected'] / len(line['butteraugli']):.0f}%",
    "holds: as saved": _holds("saved"),
    "JPEG 95": _holds("jpeg95"),
    "JPEG 75": _holds("jpeg75"),
    "JPEG 50": _holds("jpeg50"),
    "JPEG 25": _holds("jpeg25"),
    "iterations": lambda line: f"{line['iterations']:.1f}",
    "s/photo": lambda line: f"{line['seconds_per_photo']:.1f}",
    "Lite1 / Lite2 top-1 changed": _judges,
}
SHORT = ("butteraugli median / max", "holds: as saved", "JPEG 50", "JPEG 25", "s/photo", "Lite1 / Lite2 top-1 changed")


def strengths_measured() -> str:
    """The presets run as a user runs them on the held-out photos (benchmarks/strengths.py), every column."""
    return markdown(("strength", *MEASURED), "l" + "r" * len(MEASURED), _measured_rows(MEASURED))


def strengths_measured_short() -> str:
    """The same, the README's columns."""
    columns = {name: MEASURED[name] for name in SHORT}
    return markdown(("strength", *columns), "l" + "r" * len(columns), _measured_rows(columns))


# --- transfer: docs/data/transfer-surrogates.jsonl (benchmarks/frontier.py lines) --------------------------------

def _frontier(photos: str) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for line in _json_lines("docs/data/transfer-surrogates.jsonl"):
        if line.get("kind") == "photo" and line["photos"] == photos:
            groups.setdefault((line["surrogate"], line["setting"]), []).append(line)
    return groups


def _spread(records: list[dict]) -> str:
    distances = [r["butteraugli"] for r in records if r["butteraugli"] is not None]
    return f"{statistics.median(distances):.2f} / {max(distances):.2f}"


def frontier_heldout() -> str:
    """Held-out photos judged by Lite2, per surrogate and setting; † counts verdicts within the weights' rounding."""
    groups = _frontier("heldout")
    every_photo = sorted({r["photo"] for records in groups.values() for r in records})
    surrogates = list(dict.fromkeys(surrogate for surrogate, _ in groups))
    rows = []
    for setting in ("medium", "transfer", "transfer-3"):
        for surrogate in sorted(surrogates, key=lambda name: name != "stock"):
            records = groups.get((surrogate, setting))
            if not records:
                continue
            changed = sum(r["judge_changed"] for r in records)
            notes = [f"{100 * changed / len(records):.0f}%"]
            near = sum(r["judge_changed"] and min(r["judge_clean_margin"], r["judge_final_margin"]) < NEAR_TIE
                       for r in records)
            if near:
                notes.append(f"{near} of the {changed} †" if near > 1 else f"{near} †")
            missing = sorted(set(every_photo) - {r["photo"] for r in records})
            if missing:
                notes.append("not measured: " + ", ".join(Path(name).stem for name in missing))
            rows.append(("stock Lite0 + Lite1" if surrogate == "stock" else f"`{surrogate}`", f"`{setting}`",
                         f"{changed}/{len(records)} ({'; '.join(notes)})", _spread(records),
                         f"{statistics.mean(r['psnr'] for r in records):.1f} dB",
                         f"{100 * statistics.mean(r['protected'] for r in records):.0f}%",
                         f"{statistics.mean(r['iterations'] for r in records):.0f}"))
    head = ("surrogates", "setting", "Lite2 changed", "butteraugli median / max", "PSNR", "protected", "iterations")
    return markdown(head, "llrrrrr", rows)


def frontier_tuning() -> str:
    """The selection proxy on the tuning photos: each surrogate copy alone, judged by the stock sibling."""
    rows = []
    for (surrogate, _), records in _frontier("tuning").items():
        variant, base = surrogate.rsplit("-", 1)
        judge = records[0]["judge"].split("@")[0].replace("efficientnet-lite", "Lite")
        changed = sum(r["judge_changed"] for r in records)
        rows.append(((variant if variant == "stock" else f"`{variant}`") + f" {base.capitalize()}", judge,
                     f"{changed}/{len(records)} ({100 * changed / len(records):.0f}%)", _spread(records)))
    rows.sort(key=lambda row: (row[0].split()[-1], row[0] != f"stock {row[0].split()[-1]}"))
    return markdown(("surrogate", "judge", "sibling changed", "butteraugli median / max"), "llrr", rows)


TABLES: dict[str, Callable[[], str]] = {
    "strengths": strengths,
    "strength-settings": strength_settings,
    "speed-batches": speed_batches,
    "speed-options": speed_options,
    "speed-quality": speed_quality,
    "photo-speed": photo_speed,
    "photo-speed-heap": lambda: photo_speed("benchmarks/photo_speed_heap.json"),
    "photo-speed-mask": lambda: photo_speed("benchmarks/photo_speed_mask.json"),
    "strengths-measured": strengths_measured,
    "strengths-measured-short": strengths_measured_short,
    "frontier-heldout": frontier_heldout,
    "frontier-tuning": frontier_tuning,
}


def documents(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown page of docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def render(text: str, where: str = "") -> tuple[str, list[str]]:
    """``text`` with each marked table rendered anew, and the names of the tables that changed."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"error: {where}: unknown table {name!r} (known: {', '.join(TABLES)})")
        body = "\n" + TABLES[name]() + "\n\n"
        if match["body"] != body:
            changed.append(name)
        return f"<!-- table: {name} -->\n{body}<!-- /table -->"

    return MARKER.sub(replace, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    parser.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/**/*.md")
    args = parser.parse_args(argv)
    differing = 0
    for path in args.files or documents():
        text = path.read_text()
        if len(OPENING.findall(text)) != len(MARKER.findall(text)):
            raise SystemExit(f"error: {path}: a '<!-- table: NAME -->' marker without its '<!-- /table -->'")
        new, changed = render(text, str(path))
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        for name in changed:
            print(f"{shown}: table {name} {'differs from its data' if args.check else 'rewritten'}")
        differing += len(changed)
        if changed and not args.check:
            path.write_text(new)
    if differing and args.check:
        print("run: python tools/doc_tables.py (it rewrites them)")
    return 1 if differing and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
