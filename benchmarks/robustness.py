"""Measure how well protection holds through resizing and real JPEG re-encoding (README, "Real photos").

    python benchmarks/robustness.py PHOTO_FOLDER [--resize bilinear-antialias] [--robust] [--eps 0.007]

Protects every photo of the folder at full size with p-fgsm, then checks the originals and the
protected photos under every verify check (JPEG 25/50/75/95 or none, scale 0.5/1, four resamplers),
and prints PSNR, SSIM, iterations, seconds per photo and the share of photos whose top-1 differs
from the original's under each check.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import scenepriv
from scenepriv import verify
from scenepriv.images import find_images, load_photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--resize", default="bilinear-antialias")
    parser.add_argument("--robust", action="store_true")
    parser.add_argument("--eps", type=lambda text: float(Fraction(text)), default=0.007, help="step, e.g. 1/255")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="of the classifier that protects; the checks always classify in fp32")
    args = parser.parse_args()

    classifier = scenepriv.load_classifier(resize=args.resize)  # fp32: what the checks see
    protector = scenepriv.load_classifier(resize=args.resize, precision=args.precision)
    checks = verify.checks([25, 50, 75, 95], [0.5, 1.0])
    held: dict[tuple, list[bool]] = defaultdict(list)
    records, seconds = [], []
    for path, _ in find_images([args.folder]):
        photo = load_photo(path).pixels
        start = time.perf_counter()
        result = scenepriv.protect(photo[None], protector, "p-fgsm", seed=args.seed, eps=args.eps,
                                   robust=args.robust)
        seconds.append(time.perf_counter() - start)
        records.append(result.records[0])
        before = verify.top1_under_checks(classifier, photo, checks)
        after = verify.top1_under_checks(classifier, result.images[0], checks)
        for check, original, protected in zip(checks, before, after, strict=True):
            held[check.quality, check.scale, check.resampler].append(original != protected)

    def mean(values):
        return sum(values) / len(values)

    print(f"resize={args.resize} robust={args.robust} eps={args.eps:.4f} precision={args.precision} "
          f"photos={len(records)} "
          f"PSNR={mean([r['psnr'] for r in records]):.2f} dB SSIM={mean([r['ssim'] for r in records]):.4f} "
          f"iterations={mean([r['iterations'] for r in records]):.1f} s/photo={mean(seconds):.1f}")
    resamplers = list(dict.fromkeys(c.resampler for c in checks))
    print(f"{'holds (% of photos)':<22}" + "".join(f"{r:>20}" for r in resamplers))
    for quality in [None, 25, 50, 75, 95]:
        for scale in (0.5, 1.0):
            label = f"{'as saved' if quality is None else f'JPEG {quality}'}, x{scale:g}"
            print(f"{label:<22}" + "".join(f"{100 * mean(held[quality, scale, r]):>19.0f}%" for r in resamplers))


if __name__ == "__main__":
    main()
