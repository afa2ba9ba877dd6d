"""The presets as a user runs them, on a folder of photos: how visible, how robust, how fast, how far they carry.

    python benchmarks/strengths.py PHOTO_FOLDER --out OUT [--strengths medium,low] [--format auto]
        [--seeds 0,1,2] [--json docs/data/strengths.jsonl] [--summarize-only]

Per strength and seed, the command line a user types (``scenepriv protect FOLDER -o OUT/S-seedN --strength S --seed
N --report``, timed), then three ``scenepriv verify --json`` runs on its outputs: what the strength promises; every
check (the file as saved and JPEG 25, 50, 75, 95, at scale 0.5 and 1, through the four resamplers); and
EfficientNet-Lite1 and Lite2, which the photos were not protected against, on the files as saved. Appends one JSON
line per strength to ``--json`` (read by ``tools/doc_tables.py``: the table "strengths-measured"), pooled over the
seeds (each draws other targets: how visible a photo's protection is depends on its target): butteraugli per photo
and seed, PSNR, SSIM, iterations, seconds, and per check the share of photo-runs whose top-1 differs from the
original's through every resampler. ``--summarize-only`` reads OUT as an earlier run left it.
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


def measure(folder: Path, out: Path, strength: str, file_format: str, seed: int) -> None:
    """Protect ``folder`` at ``strength`` with ``seed`` into out/STRENGTH-seedN and verify it three ways (the files
    summarize reads)."""
    run = f"{strength}-seed{seed}"
    protected = out / run
    start = time.perf_counter()
    scenepriv("protect", str(folder), "-o", str(protected), "--strength", strength, "--seed", str(seed), "--format",
              file_format, "--report", str(out / f"{run}.jsonl"), "-q")
    seconds = time.perf_counter() - start
    original = ("--original", str(folder))
    promise = scenepriv("verify", str(protected), *original, "--strength", strength, "--json",
                        output=out / f"{run}.promise.json")
    scenepriv("verify", str(protected), *original, "--jpeg", "25,50,75,95", "--scale", "0.5,1", "--resamplers", "all",
              "--json", output=out / f"{run}.all.json")
    scenepriv("verify", str(protected), *original, "--strength", "low", "--models", JUDGES, "--json",
              output=out / f"{run}.others.json")
    (out / f"{run}.run.json").write_text(json.dumps({"seconds": seconds, "promise_exit": promise}))


def summarize(folder: Path, out: Path, strength: str, file_format: str, seeds: list[int]) -> dict:
    """One JSON line of the results in ``out`` for ``strength``, pooled over ``seeds`` (lists per photo and seed)."""
    runs = [f"{strength}-seed{seed}" for seed in seeds]
    records = [json.loads(line) for run in runs for line in (out / f"{run}.jsonl").read_text().splitlines()
               if line.strip()]
    timings = [json.loads((out / f"{run}.run.json").read_text()) for run in runs]
    holds: dict[str, dict[tuple, bool]] = defaultdict(lambda: defaultdict(lambda: True))  # check -> run, file -> holds
    judges: dict[str, list[bool]] = defaultdict(list)
    for run in runs:
        for entry in json.loads((out / f"{run}.all.json").read_text()):
            for check in entry["checks"]:
                quality, scale, _ = check["check"].split("/")  # e.g. jpeg75/x0.5/area: worst of the resamplers
                holds[f"{quality}/{scale}"][run, entry["file"]] &= check["holds"]
        for entry in json.loads((out / f"{run}.others.json").read_text()):
            judges[entry["model"]] += [check["holds"] for check in entry["checks"]]
    files = list(dict.fromkeys(Path(r["file"]).name for r in records))
    return {
        "strength": strength, "format": file_format, "folder": folder.name, "photos": len(files), "seeds": seeds,
        "files": files, "butteraugli": [r["butteraugli"] for r in records],  # seed by seed, photo by photo
        "psnr": statistics.mean(r["psnr"] for r in records),
        "ssim": statistics.mean(r["ssim"] for r in records), "protected": sum(r["success"] for r in records),
        "iterations": statistics.mean(r["iterations"] for r in records),
        "seconds_per_photo": sum(t["seconds"] for t in timings) / len(records),
        "promise_holds": all(t["promise_exit"] == 0 for t in timings),
        "holds": {check: sum(held.values()) / len(held) for check, held in holds.items()},
        "judges": {model: sum(verdicts) / len(verdicts) for model, verdicts in judges.items()
                   if model not in {r["model"] for r in records}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the protected photos and verdicts")
    parser.add_argument("--strengths", default="medium,low")
    parser.add_argument("--format", default="auto", choices=["auto", "png", "jpeg"], help="protect's --format")
    parser.add_argument("--seeds", default="0", help="protect's --seed, each in turn, pooled (e.g. 0,1,2)")
    parser.add_argument("--json", type=Path, help="append one JSON line per strength here")
    parser.add_argument("--summarize-only", action="store_true", help="read OUT as an earlier run left it")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for strength in args.strengths.split(","):
        if not args.summarize_only:
            for seed in seeds:
                measure(args.folder, args.out, strength, args.format, seed)
        line = summarize(args.folder, args.out, strength, args.format, seeds)
        print(json.dumps(line))
        if args.json:
            with open(args.json, "a") as results:
                results.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
