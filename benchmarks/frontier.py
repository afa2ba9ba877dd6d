"""The transfer frontier: how often a model not protected against changes its top-1, against how visible the change is.

    python benchmarks/frontier.py PHOTOS --surrogate stock=efficientnet-lite0,efficientnet-lite1 \\
        --surrogate lgv=lite0-lgv.npz,lite1-lgv.npz --setting medium --setting transfer \\
        --judge efficientnet-lite2 --json frontier.jsonl
    python benchmarks/frontier.py --table frontier.jsonl [--plot docs/transfer-frontier.png]
    python benchmarks/frontier.py --smoke --json /tmp/f.jsonl        # seconds on the CPU: every code path

Protects every photo of PHOTOS at full size against each surrogate (a comma-separated ensemble: zoo model names,
surrogate files ``*.npz`` of tools/train_surrogate.py, or ``NAME@CHECKPOINT`` for a zoo model with another
checkpoint of its architecture) with each setting (a ``--strength`` of scenepriv, or ``transfer-3``: the transfer
preset within 3/255 x w, the less visible form docs/transfer.md names), then judges the saved image with ``--judge``
(never protected against; Lite2 is never trained, tuned or selected on) and measures butteraugli against the
original. Writes one JSON line per photo (``kind: photo``) as it goes, so a run cut short keeps what it measured.
``--table`` summarises such lines per (photo folder, surrogate, setting, judge): the share of photos whose
judge top-1 changed, butteraugli median and max, PSNR, iterations, seconds; ``--plot`` draws the frontier.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

import scenepriv
from scenepriv import metrics
from scenepriv.attack import to_uint8
from scenepriv.images import find_images, load_photo
from scenepriv.settings import STRENGTHS
from scenepriv.zoo import MODELS, Classifier
from scenepriv.zoo.imagenet import LITE_INPUT_SIZES, imagenet_labels
from scenepriv.zoo.snapshots import build as build_surrogate
from scenepriv.zoo.snapshots import read_meta

SETTINGS: dict[str, dict] = {**STRENGTHS, "transfer-3": {**STRENGTHS["transfer"], "texture_budget": 3 / 255}}
SMOKE_ITERATIONS = {"max_iter": 3, "min_iter": 2, "budget_growth": 2, "shrink": 1}  # the smoke run's overrides


def load_model(spec: str, *, device: str, precision: str, base_weights: dict[int, str]) -> Classifier:
    """One member of an ensemble: a zoo name, ``NAME@CHECKPOINT``, or a surrogate file (``.npz``)."""
    if spec.endswith(".npz"):
        variant = int(read_meta(spec)["base_variant"])
        network = build_surrogate(spec, base_weights=base_weights.get(variant))
        size = LITE_INPUT_SIZES[variant]
        classifier = Classifier(network, name=Path(spec).stem, labels=imagenet_labels(), input_size=(size, size),
                                mean=(0.5,) * 3, std=(0.5,) * 3, resize="bilinear-antialias", precision=precision,
                                channels_last=True, fold_batch_norm=True)
        return classifier.to(device)
    name, _, checkpoint = spec.partition("@")
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}: a zoo name, NAME@CHECKPOINT or a surrogate file .npz")
    return scenepriv.load_classifier(name, checkpoint or None, device, resize="bilinear-antialias",
                                     precision=precision)


def margin(logits: torch.Tensor) -> float:
    """Top-1 logit minus top-2 logit: how far a verdict is from flipping."""
    top = logits.double().topk(2).values
    return float(top[0] - top[1])


def run(args: argparse.Namespace) -> None:
    if args.device.startswith("cuda"):  # judge in plain fp32, as a CPU would
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    base_weights = {int(k): v for k, _, v in (item.partition("=") for item in args.base_weights.split(",") if item)}
    judge = load_model(args.judge, device=args.device, precision="fp32", base_weights=base_weights)
    photos = [path for path, _ in find_images([args.photos])][: args.limit]
    output = os.open(args.json, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.json else None
    for surrogate in args.surrogate:
        label, _, specs = surrogate.partition("=")
        models = [load_model(spec, device=args.device, precision=args.precision, base_weights=base_weights)
                  for spec in specs.split(",")]
        for setting in args.setting:
            settings = dict(SETTINGS[setting], **(SMOKE_ITERATIONS if args.smoke else {}))
            if args.smoke and "min_iter" not in SETTINGS[setting]:
                settings.pop("min_iter")
            if args.smoke and "shrink" not in SETTINGS[setting]:
                settings.pop("shrink")
            for path in photos:
                photo = load_photo(path).pixels[None]
                if args.smoke:
                    photo = torch.nn.functional.interpolate(photo, size=(72, 96), mode="area")
                photo = photo.to(args.device)
                start = time.perf_counter()
                result = scenepriv.protect(photo, models, args.method, seed=args.seed, **settings)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                with torch.inference_mode():
                    clean, final = judge.exact(result.originals)[0], judge.exact(result.images)[0]
                original, protected = to_uint8(result.originals)[0], to_uint8(result.images)[0]
                record = {
                    "kind": "photo", "photos": args.photos.name, "photo": path.name, "surrogate": label,
                    "models": specs, "setting": setting, "method": args.method, "judge": args.judge,
                    "judge_changed": int(clean.argmax()) != int(final.argmax()),
                    "judge_clean_top1": int(clean.argmax()), "judge_final_top1": int(final.argmax()),
                    "judge_clean_margin": round(margin(clean), 4), "judge_final_margin": round(margin(final), 4),
                    "protected": bool(result.success[0]), "iterations": int(result.iterations[0]),
                    "butteraugli": metrics.butteraugli(original, protected), "psnr": metrics.psnr(original, protected),
                    "seconds": round(seconds, 2), "device": args.device, "precision": args.precision,
                    "seed": args.seed, "smoke": args.smoke,
                }
                line = json.dumps(record)
                print(line, flush=True)
                if output is not None:
                    os.write(output, (line + "\n").encode())  # one write per line: safe beside other writers
    if output is not None:
        os.close(output)


def summarise(lines: list[dict]) -> list[dict]:
    """One row per (photo folder, surrogate, setting, judge, method) of the photo records."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for line in lines:
        if line.get("kind") == "photo":
            groups[(line["photos"], line["surrogate"], line["setting"], line["judge"], line["method"])].append(line)
    rows = []
    for (photos, surrogate, setting, judge, method), records in groups.items():
        distances = [r["butteraugli"] for r in records if r["butteraugli"] is not None]
        psnrs = [r["psnr"] for r in records if r["psnr"] is not None]
        rows.append({
            "photos": photos, "surrogate": surrogate, "setting": setting, "judge": judge, "method": method,
            "count": len(records), "changed": sum(r["judge_changed"] for r in records),
            "changed_share": sum(r["judge_changed"] for r in records) / len(records),
            "protected_share": sum(r["protected"] for r in records) / len(records),
            "butteraugli_median": statistics.median(distances) if distances else None,
            "butteraugli_max": max(distances) if distances else None,
            "psnr": statistics.mean(psnrs) if psnrs else None,
            "iterations": statistics.mean(r["iterations"] for r in records),
            "seconds": statistics.mean(r["seconds"] for r in records),
            "smallest_judge_margin": min(min(r["judge_clean_margin"], r["judge_final_margin"]) for r in records),
        })
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    def number(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    out = ["| photos | surrogate | setting | judge | judge changed | butteraugli median / max | PSNR | protected "
           "| iterations | s/photo |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        out.append(f"| {row['photos']} | {row['surrogate']} | {row['setting']} | {row['judge']} | "
                   f"{row['changed']}/{row['count']} ({100 * row['changed_share']:.0f}%) | "
                   f"{number(row['butteraugli_median'])} / {number(row['butteraugli_max'])} | "
                   f"{number(row['psnr'], 1)} dB | {100 * row['protected_share']:.0f}% | "
                   f"{row['iterations']:.0f} | {row['seconds']:.1f} |")
    return "\n".join(out)


def plot(rows: list[dict], path: Path) -> None:
    """Judge changed (%) against butteraugli median, one point per surrogate and setting (with its photo count),
    one panel per photo folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folders = sorted({row["photos"] for row in rows})
    figure, axes = plt.subplots(1, len(folders), figsize=(6.5 * len(folders), 4.8), squeeze=False)
    markers = dict(zip(sorted({row["setting"] for row in rows}), "osD^v<>", strict=False))
    surrogates = sorted({row["surrogate"] for row in rows})
    colours = {name: plt.cm.tab10(index % 10) for index, name in enumerate(surrogates)}
    for axis, folder in zip(axes[0], folders, strict=True):
        for row in (r for r in rows if r["photos"] == folder and r["butteraugli_median"] is not None):
            axis.scatter(row["butteraugli_median"], 100 * row["changed_share"], marker=markers[row["setting"]],
                         color=colours[row["surrogate"]], s=60,
                         label=f"{row['surrogate']} {row['setting']} ({row['count']} photos)")
        axis.legend(fontsize=7, loc="lower right")
        judges = ", ".join(sorted({r["judge"] for r in rows if r["photos"] == folder}))
        axis.set(title=f"{folder} (judge: {judges})", xlabel="butteraugli, median over photos",
                 ylabel="judge top-1 changed (% of photos)", ylim=(-5, 105))
        axis.axhline(80, color="grey", linewidth=0.5, linestyle="--")
        axis.axvline(2.5, color="grey", linewidth=0.5, linestyle="--")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, nargs="?")
    parser.add_argument("--surrogate", action="append", default=[], metavar="LABEL=MODEL[,MODEL]")
    parser.add_argument("--setting", action="append", default=[], choices=list(SETTINGS))
    parser.add_argument("--judge", default="efficientnet-lite2")
    parser.add_argument("--method", default="p-fgsm", choices=["p-fgsm", "away"])
    parser.add_argument("--base-weights", default="", metavar="VARIANT=PATH[,...]",
                        help="checkpoints of the bases of surrogate files (default: their packages')")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="of the surrogates while protecting; the judge always computes in fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="the first N photos only")
    parser.add_argument("--json", type=Path, help="append one JSON line per photo here")
    parser.add_argument("--table", type=Path, nargs="*", help="summarise these JSON-lines files and stop")
    parser.add_argument("--plot", type=Path, help="with --table: draw the frontier to this image")
    parser.add_argument("--smoke", action="store_true",
                        help="a few iterations on two example photos shrunk to 96 px: every code path, in seconds")
    args = parser.parse_args()
    if args.table is not None:
        lines = [json.loads(line) for path in args.table for line in path.read_text().splitlines() if line.strip()]
        rows = summarise(lines)
        print(table(rows))
        if args.plot:
            plot(rows, args.plot)
        return
    if args.smoke:
        args.photos = args.photos or Path(__file__).resolve().parent.parent / "examples" / "photos"
        args.limit = args.limit or 2
        args.surrogate = args.surrogate or ["stock=efficientnet-lite0"]
        args.setting = args.setting or ["medium", "transfer"]
    if args.photos is None or not args.surrogate or not args.setting:
        parser.error("give PHOTOS, at least one --surrogate and one --setting (or --smoke, or --table)")
    run(args)


if __name__ == "__main__":
    sys.exit(main())
