"""The presets as a user runs them, on a folder of photos: how visible, how robust, how fast, how far they carry.

    python benchmarks/strengths.py PHOTO_FOLDER --out OUT [--strengths medium,low] [--format auto]
        [--json docs/data/strengths.jsonl] [--summarize-only]

Per strength, the command line a user types (``scenepriv protect FOLDER -o OUT/S --strength S --seed 0 --report``,
timed), then three ``scenepriv verify --json`` runs on its outputs: what the strength promises; every check (the
file as saved and JPEG 25, 50, 75, 95, at scale 0.5 and 1, through the four resamplers); and EfficientNet-Lite1
and Lite2, which the photos were not protected against, on the files as saved. Appends one JSON line per strength
to ``--json`` (read by ``tools/doc_tables.py``: the table "strengths-measured"): butteraugli per photo, PSNR, SSIM,
iterations, seconds, and per check the share of photos whose top-1 differs from the original's through every
resampler. ``--summarize-only`` reads OUT as an earlier run left it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

JUDGES = "efficientnet-lite1,efficientnet-lite2"


def scenepriv(*arguments: str, output: Path | None = None) -> int:
    """Run ``python -m scenepriv ARGUMENTS`` (stdout to ``output``); its exit status."""
    with open(output, "w") if output else open("/dev/null", "w") as stdout:
        return subprocess.run([sys.executable, "-m", "scenepriv", *arguments], stdout=stdout,
                              stderr=subprocess.DEVNULL).returncode


def measure(folder: Path, out: Path, strength: str, file_format: str) -> None:
    """Protect ``folder`` at ``strength`` into out/STRENGTH and verify it three ways (the files summarize reads)."""
    protected = out / strength
    start = time.perf_counter()
    scenepriv("protect", str(folder), "-o", str(protected), "--strength", strength, "--seed", "0", "--format",
              file_format, "--report", str(out / f"{strength}.jsonl"), "-q")
    seconds = time.perf_counter() - start
    original = ("--original", str(folder))
    promise = scenepriv("verify", str(protected), *original, "--strength", strength, "--json",
                        output=out / f"{strength}.promise.json")
    scenepriv("verify", str(protected), *original, "--jpeg", "25,50,75,95", "--scale", "0.5,1", "--resamplers", "all",
              "--json", output=out / f"{strength}.all.json")
    scenepriv("verify", str(protected), *original, "--strength", "low", "--models", JUDGES, "--json",
              output=out / f"{strength}.others.json")
    (out / f"{strength}.run.json").write_text(json.dumps({"seconds": seconds, "promise_exit": promise}))


def summarize(folder: Path, out: Path, strength: str, file_format: str) -> dict:
    """One JSON line of the results in ``out`` for ``strength``."""
    records = [json.loads(line) for line in (out / f"{strength}.jsonl").read_text().splitlines() if line.strip()]
    run = json.loads((out / f"{strength}.run.json").read_text())
    holds: dict[str, dict[str, bool]] = defaultdict(lambda: defaultdict(lambda: True))  # check -> file -> holds
    for entry in json.loads((out / f"{strength}.all.json").read_text()):
        for check in entry["checks"]:
            quality, scale, _ = check["check"].split("/")  # e.g. jpeg75/x0.5/area: worst of the resamplers
            holds[f"{quality}/{scale}"][entry["file"]] &= check["holds"]
    judges: dict[str, list[bool]] = defaultdict(list)
    for entry in json.loads((out / f"{strength}.others.json").read_text()):
        judges[entry["model"]] += [check["holds"] for check in entry["checks"]]
    return {
        "strength": strength, "format": file_format, "folder": folder.name, "photos": len(records),
        "files": [Path(r["file"]).name for r in records],
        "butteraugli": [r["butteraugli"] for r in records], "psnr": statistics.mean(r["psnr"] for r in records),
        "ssim": statistics.mean(r["ssim"] for r in records), "protected": sum(r["success"] for r in records),
        "iterations": statistics.mean(r["iterations"] for r in records),
        "seconds_per_photo": run["seconds"] / len(records), "promise_holds": run["promise_exit"] == 0,
        "holds": {check: sum(files.values()) / len(files) for check, files in holds.items()},
        "judges": {model: sum(verdicts) / len(verdicts) for model, verdicts in judges.items()
                   if model not in {r["model"] for r in records}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the protected photos and verdicts")
    parser.add_argument("--strengths", default="medium,low")
    parser.add_argument("--format", default="auto", choices=["auto", "png", "jpeg"], help="protect's --format")
    parser.add_argument("--json", type=Path, help="append one JSON line per strength here")
    parser.add_argument("--summarize-only", action="store_true", help="read OUT as an earlier run left it")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for strength in args.strengths.split(","):
        if not args.summarize_only:
            measure(args.folder, args.out, strength, args.format)
        line = summarize(args.folder, args.out, strength, args.format)
        print(json.dumps(line))
        if args.json:
            with open(args.json, "a") as results:
                results.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
