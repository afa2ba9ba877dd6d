"""Measure a protection setting on a folder of real photos: how visible, how robust, how well it transfers.

    python benchmarks/robustness.py PHOTO_FOLDER [--strength medium] [--robust] [--eps 1/255]
        [--model efficientnet-lite0[,efficientnet-lite1]] [--judges efficientnet-lite1,efficientnet-lite2]
        [--json results.jsonl]

Protects every photo of the folder at full size with p-fgsm or away (the settings of ``--strength``,
options given beside it win), then checks the originals and the protected photos under every verify check (JPEG
25/50/75/95 or none, scale 0.5/1, four resamplers) on the model(s) protected against, and the top-1 of
other models (``--judges``) on the saved files. Prints butteraugli (median, max), PSNR, SSIM, iterations,
seconds per photo, the share of photos protected, the share whose top-1 differs from the original's under
each check, and each judge's share; ``--json`` appends the numbers as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import torch

import scenepriv
from scenepriv import metrics, verify
from scenepriv.images import find_images, load_photo
from scenepriv.methods import to_uint8
from scenepriv.settings import STRENGTHS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--strength", default="paper", choices=list(STRENGTHS))
    parser.add_argument("--method", default="p-fgsm", choices=["p-fgsm", "away"])
    parser.add_argument("--threshold", type=float, help="stop at this probability (default: the strength's)")
    parser.add_argument("--resize", default="bilinear-antialias")
    parser.add_argument("--robust", action="store_true")
    parser.add_argument("--eps", type=lambda text: float(Fraction(text)), help="step, e.g. 1/255")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="efficientnet-lite0", help="model(s) to protect against, comma-separated")
    parser.add_argument("--judges", default="", help="other models whose top-1 is checked on the saved files")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="of the classifiers that protect; the checks always classify in fp32")
    parser.add_argument("--json", type=Path, help="append the results to this JSON-lines file")
    args = parser.parse_args()

    names = args.model.split(",")
    checkers = [scenepriv.load_classifier(name, resize=args.resize) for name in names]  # fp32: what checks see
    protectors = [scenepriv.load_classifier(name, resize=args.resize, precision=args.precision) for name in names]
    judges = {name: scenepriv.load_classifier(name, resize=args.resize) for name in args.judges.split(",") if name}
    settings = dict(STRENGTHS[args.strength], **({"eps": args.eps} if args.eps is not None else {}),
                    **({"threshold": args.threshold} if args.threshold is not None else {}))
    settings["robust"] = settings.get("robust", False) or args.robust
    checks = verify.checks([25, 50, 75, 95], [0.5, 1.0])
    held: dict[tuple, list[bool]] = defaultdict(list)
    records, seconds, distances, changed = [], [], [], defaultdict(list)
    for path, _ in find_images([args.folder]):
        photo = load_photo(path).pixels
        start = time.perf_counter()
        result = scenepriv.protect(photo[None], protectors, args.method, seed=args.seed, **settings)
        seconds.append(time.perf_counter() - start)
        records.append(result.records[0])
        distances.append(metrics.butteraugli(to_uint8(photo[None])[0], to_uint8(result.images)[0]))
        for checker in checkers:  # a check holds when it holds on every model protected against
            before = verify.top1_under_checks(checker, photo, checks)
            after = verify.top1_under_checks(checker, result.images[0], checks)
            for check, original, protected in zip(checks, before, after, strict=True):
                key = check.quality, check.scale, check.resampler
                if checker is checkers[0]:
                    held[key].append(original != protected)
                else:
                    held[key][-1] &= original != protected
        with torch.inference_mode():
            for name, judge in judges.items():
                changed[name].append(int(judge(photo[None]).argmax()) != int(judge(result.images).argmax()))

    def mean(values):
        return sum(values) / len(values)

    known = [d for d in distances if d is not None]
    summary = {
        "folder": str(args.folder), "method": args.method, "strength": args.strength, "settings": settings,
        "model": args.model, "precision": args.precision, "photos": len(records),
        "protected": mean([r["success"] for r in records]),
        "butteraugli_median": statistics.median(known) if known else None, "butteraugli_max": max(known, default=None),
        "psnr": mean([r["psnr"] for r in records]), "ssim": mean([r["ssim"] for r in records]),
        "iterations": mean([r["iterations"] for r in records]), "seconds_per_photo": mean(seconds),
        "judges_top1_changed": {name: mean(values) for name, values in changed.items()},
        "holds": {f"{'saved' if q is None else f'jpeg{q}'}/x{s:g}/{r}": mean(v) for (q, s, r), v in held.items()},
    }
    changed_shares = summary["judges_top1_changed"]
    print(f"{args.folder}: method={args.method} strength={args.strength} model={args.model} photos={len(records)} "
          f"protected={100 * summary['protected']:.0f}% butteraugli median={summary['butteraugli_median']} "
          f"max={summary['butteraugli_max']} PSNR={summary['psnr']:.2f} dB SSIM={summary['ssim']:.4f} "
          f"iterations={summary['iterations']:.1f} s/photo={summary['seconds_per_photo']:.1f} "
          + " ".join(f"{name} top-1 changed={100 * share:.0f}%" for name, share in changed_shares.items()))
    resamplers = list(dict.fromkeys(c.resampler for c in checks))
    print(f"{'holds (% of photos)':<22}" + "".join(f"{r:>20}" for r in resamplers))
    for quality in [None, 25, 50, 75, 95]:
        for scale in (0.5, 1.0):
            label = f"{'as saved' if quality is None else f'JPEG {quality}'}, x{scale:g}"
            print(f"{label:<22}" + "".join(f"{100 * mean(held[quality, scale, r]):>19.0f}%" for r in resamplers))
    if args.json:
        with args.json.open("a", encoding="utf-8") as file:
            file.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
