"""Seconds and peak memory of `scenepriv protect` on one photo at several sizes, per strength, before and after.

    python benchmarks/photo_speed.py --photo PHOTO [--sizes 0.7,3,12,24] [--strengths low,medium,high]
        [--before GIT_REVISION] [--repeat 1] [--json results.json]

The photo is resized (Lanczos, its aspect kept) to each size in megapixels and saved as a JPEG at quality 92, as a
phone writes it. Each measurement is one `scenepriv protect PHOTO -o OUT --strength S --seed 0` in a process of its
own (model loading, decoding, protecting, encoding, butteraugli: what a user waits for), its wall time and its
peak resident memory (``wait4``). With ``--before REV`` the same command of that revision (a temporary git
worktree, this Python) runs beside each one, alternating, so both see the same load on a shared machine. Prints a
Markdown table with the ratios; ``--smoke`` runs one tiny size at the low strength (a check that it works).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent


def resized(photo: Path, megapixels: float, folder: Path) -> Path:
    """``photo`` upright, resized to about ``megapixels``, saved as a JPEG at quality 92 in ``folder``."""
    with Image.open(photo) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
        path = folder / f"{photo.stem}-{megapixels:g}MP.jpg"
        image.resize(size, Image.LANCZOS).save(path, quality=92)
    return path


def measure(source: Path | None, photo: Path, strength: str, output: Path) -> dict:
    """One protect run of the code in ``source`` (a checkout; None: this one): wall seconds, peak memory, status."""
    environment = dict(os.environ)
    if source is not None:
        environment["PYTHONPATH"] = str(source / "src")
    command = [sys.executable, "-m", "scenepriv", "protect", str(photo), "-o", str(output), "--strength", strength,
               "--seed", "0", "-q"]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    error = process.stderr.read().decode(errors="replace").strip().splitlines()
    process.stderr.close()
    return {"seconds": round(seconds, 1), "peak_gb": round(usage.ru_maxrss / 1e6, 2),
            "exit": os.waitstatus_to_exitcode(status), "last_error": error[-1] if error else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photo", type=Path, help="the photo to resize (default: an example photo)")
    parser.add_argument("--sizes", default="0.7,3,12,24", help="megapixels, comma-separated")
    parser.add_argument("--strengths", default="low,medium,high")
    parser.add_argument("--before", metavar="REV", help="also run this git revision, alternating with this one")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement (the fastest is kept)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="one tiny size, low strength: a quick check")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.strengths = "0.05", "low"
    photo = args.photo or ROOT / "examples" / "photos" / "aitzgorri_by_Aitzol_Berasategi.jpg"
    sizes = [float(size) for size in args.sizes.split(",")]
    strengths = args.strengths.split(",")
    with tempfile.TemporaryDirectory(prefix="scenepriv-speed-") as folder:
        folder = Path(folder)
        versions: dict[str, Path | None] = {"after": None}
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder / "before"),
                            args.before], check=True, capture_output=True)
            versions = {"before": folder / "before", "after": None}
        rows = []
        try:
            for megapixels in sizes:
                path = resized(photo, megapixels, folder)
                with Image.open(path) as image:
                    pixels = image.width * image.height
                for strength in strengths:
                    row = {"megapixels": round(pixels / 1e6, 2), "strength": strength}
                    for _ in range(args.repeat):
                        for name, source in versions.items():  # alternating: the same load for both
                            result = measure(source, path, strength, folder / f"out-{name}")
                            best = row.get(name)
                            if best is None or result["seconds"] < best["seconds"]:
                                row[name] = result
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder / "before")],
                               capture_output=True)
    if args.json:
        args.json.write_text(json.dumps({"photo": photo.name, "rows": rows}, indent=2) + "\n")
    head = "| MP | strength | " + ("before s / GB | " if args.before else "") + "after s / GB |" + (
        " after / before (time) |" if args.before else "")
    print(head)
    print("|" + "|".join("---" for _ in head.split("|")[1:-1]) + "|")
    for row in rows:
        cells = [f"{row['megapixels']:g}", row["strength"]]
        for name in versions:
            result = row[name]
            cells.append(f"{result['seconds']:.1f} / {result['peak_gb']:.2f}" + ("" if result["exit"] == 0 else
                                                                                 f" (exit {result['exit']})"))
        if args.before:
            cells.append(f"{row['after']['seconds'] / row['before']['seconds']:.2f}")
        print("| " + " | ".join(cells) + " |")
    if any(row[name]["exit"] != 0 for row in rows for name in versions):
        sys.exit(1)


if __name__ == "__main__":
    main()
