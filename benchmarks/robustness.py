"""Measure a protection setting on a folder of real photos: how visible, how robust, how well it transfers.

    python benchmarks/robustness.py PHOTO_FOLDER [--strength medium] [--robust] [--eps 1/255]
        [--model efficientnet-lite0[,efficientnet-lite1]] [--judges efficientnet-lite1,efficientnet-lite2]
        [--set momentum=1 --set diversity=2 ...] [--json results.jsonl]

Protects every photo of the folder at full size with p-fgsm or away (the settings of ``--strength``,
options given beside it win), then checks the originals and the protected photos under every verify check (JPEG
25/50/75/95 or none, scale 0.5/1, four resamplers) on the model(s) protected against, and the top-1 of
other models (``--judges``) on the saved files. ``--set NAME=VALUE`` sets any field of ``scenepriv.Settings``
(``none`` for None), e.g. the transfer options ``diversity``, ``momentum``, ``smoothing``.
Prints butteraugli (median, max), PSNR, SSIM, iterations,
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
from scenepriv.attack import to_uint8
from scenepriv.images import find_images, load_photo
from scenepriv.settings import RESAMPLERS, STRENGTHS


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
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any setting, e.g. momentum=1 or diversity=2 (none: None); wins over the strength's")
    parser.add_argument("--no-checks", action="store_true", help="skip the re-encoding checks (quicker, for tuning)")
    parser.add_argument("--json", type=Path, help="append the results to this JSON-lines file")
    args = parser.parse_args()

    names = args.model.split(",")
    checkers = [scenepriv.load_classifier(name, resize=args.resize) for name in names]  # fp32: what checks see
    protectors = [scenepriv.load_classifier(name, resize=args.resize, precision=args.precision) for name in names]
    judges = {name: scenepriv.load_classifier(name, resize=args.resize) for name in args.judges.split(",") if name}
    settings = dict(STRENGTHS[args.strength], **({"eps": args.eps} if args.eps is not None else {}),
                    **({"threshold": args.threshold} if args.threshold is not None else {}))
    settings["robust"] = settings.get("robust", False) or args.robust
    for assignment in args.set:
        name, _, text = assignment.partition("=")
        value = None if text.lower() == "none" else text.lower() == "true" if text.lower() in ("true", "false") \
            else int(text) if text.lstrip("-").isdigit() else float(Fraction(text))
        settings[name] = value
    qualities, scales = [25, 50, 75, 95], [0.5, 1.0]
    checks = [] if args.no_checks else verify.checks(qualities, scales)
    verdicts: list[dict] = []  # per photo: a check holds when it holds on every model protected against
    records, seconds, distances, changed = [], [], [], defaultdict(list)
    for path, _ in find_images([args.folder]):
        photo = load_photo(path).pixels
        start = time.perf_counter()
        result = scenepriv.protect(photo[None], protectors, args.method, seed=args.seed, **settings)
        seconds.append(time.perf_counter() - start)
        records.append(result.records[0])
        distances.append(metrics.butteraugli(to_uint8(photo[None])[0], to_uint8(result.images)[0]))
        if checks:
            each = [verify.judge(checker, result.images[0], photo, checks) for checker in checkers]
            verdicts.append({"checks": [{"check": entry["check"], "holds": all(v["checks"][i]["holds"] for v in each)}
                                        for i, entry in enumerate(each[0]["checks"])]})
        with torch.inference_mode():
            for name, judge in judges.items():
                changed[name].append(int(judge(photo[None]).argmax()) != int(judge(result.images).argmax()))
        print(f"  {path.name}: iterations={records[-1]['iterations']} success={records[-1]['success']} "
              f"butteraugli={distances[-1]} s={seconds[-1]:.1f} "
              + " ".join(f"{name} changed={values[-1]}" for name, values in changed.items()), flush=True)

    def mean(values):
        return sum(values) / len(values)

    known = [d for d in distances if d is not None]
    summary = {
        "folder": str(args.folder), "method": args.method, "strength": args.strength, "settings": settings,
        "model": args.model, "precision": args.precision, "photos": len(records),
        "protected": mean([r["success"] for r in records]),
        "top1_changed": mean([all(m["clean_top1"] != m["final_top1"] for m in r.get("models", [])) if "models" in r
                              else r["top1_changed"] for r in records]),  # on every model protected against
        "butteraugli_median": statistics.median(known) if known else None, "butteraugli_max": max(known, default=None),
        "psnr": mean([r["psnr"] for r in records]), "ssim": mean([r["ssim"] for r in records]),
        "iterations": mean([r["iterations"] for r in records]), "seconds_per_photo": mean(seconds),
        "judges_top1_changed": {name: mean(values) for name, values in changed.items()},
        "holds": verify.shares(verdicts),
    }
    changed_shares = summary["judges_top1_changed"]
    print(f"{args.folder}: method={args.method} strength={args.strength} model={args.model} photos={len(records)} "
          f"protected={100 * summary['protected']:.0f}% top-1 changed={100 * summary['top1_changed']:.0f}% "
          f"butteraugli median={summary['butteraugli_median']} "
          f"max={summary['butteraugli_max']} PSNR={summary['psnr']:.2f} dB SSIM={summary['ssim']:.4f} "
          f"iterations={summary['iterations']:.1f} s/photo={summary['seconds_per_photo']:.1f} "
          + " ".join(f"{name} top-1 changed={100 * share:.0f}%" for name, share in changed_shares.items()))
    if checks:
        print("\n".join(verify.share_table(verdicts, qualities, scales, list(RESAMPLERS), "holds (% of photos)")))
    if args.json:
        with args.json.open("a", encoding="utf-8") as file:
            file.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
