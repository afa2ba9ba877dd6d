"""The command line: ``scenepriv protect``, ``classify`` and ``models``. It only parses and calls."""

from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import product
from pathlib import Path

import torch
from tqdm import tqdm

from . import METHODS, MODELS, Settings, load_classifier, protect, verify
from .images import ImageError, find_images, image_extensions, load_photo, prefetch, save_image
from .methods import to_uint8
from .runtime import keep_freed_memory
from .transforms import RESAMPLERS
from .zoo import DEFAULT_MODEL, RESIZE_POLICIES, resize_to_input
from .zoo.cache import WeightsUnavailable

FULL_SIZE_EPS = 1 / 255  # step for full-size output: one grey level per iteration


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was asked for, but PyTorch sees no CUDA device")
    return name


def _classifier(args: argparse.Namespace):
    """The classifier of ``--model``; ``--resize auto`` is the paper's bilinear for 224 px work (evaluate,
    ``--size model``) and an antialiased bilinear for full-size photos, which holds through other resizers."""
    resize = args.resize
    if resize == "auto":
        paper_setting = args.command == "evaluate" or getattr(args, "size", "full") == "model"
        resize = "bilinear" if paper_setting else "bilinear-antialias"
    try:
        return load_classifier(args.model, weights=args.weights, device=_device(args.device), resize=resize,
                               precision=args.precision, fold_batch_norm=args.fold_batch_norm)
    except WeightsUnavailable as error:
        raise SystemExit(f"error: {error}") from None
    except (OSError, ValueError, RuntimeError) as error:
        raise SystemExit(f"error: cannot load model {args.model!r}: {error}") from None


def _outputs(sources: list[tuple[Path, Path]], outdir: Path, suffix: str = ".png") -> list[tuple[Path, Path]]:
    """Output file for each source: OUTDIR/<relative name><suffix>, keeping the extension on a clash.

    A name still taken (the same file name in two input folders) gets a number: ``x.jpg-2.png``.
    """
    stems = [relative.as_posix() for _, relative in sources]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    pairs, used = [], set()
    for (source, relative), stem in zip(sources, stems, strict=True):
        name = (relative.with_name(source.name) if counts[stem] > 1 else relative).as_posix()
        candidate, number = name, 1
        while candidate.casefold() in used:  # casefold: also distinct on case-insensitive file systems
            number += 1
            candidate = f"{name}-{number}"
        used.add(candidate.casefold())
        pairs.append((source, outdir / f"{candidate}{suffix}"))
    return pairs


def _warn(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _photos(pairs: list[tuple[Path, Path]], inputs: set[Path], failures: list[str], classifier, size: str):
    """Decode each photo (and shrink it for ``--size model``); a bad file is reported and skipped."""
    for source, output in pairs:
        try:
            if output.resolve() in inputs:
                raise ImageError(f"{source}: its output {output} would overwrite an input file; choose another -o")
            photo = load_photo(source)
        except ImageError as error:
            failures.append(str(error))
            _warn(f"error: {error}")
            continue
        for warning in photo.warnings:
            _warn(f"warning: {source}: {warning}")
        pixels = photo.pixels
        if size == "model":
            pixels = resize_to_input(pixels[None], classifier.input_size, classifier.resize)[0]
        yield photo, output, pixels


def _batches(items, size: int, pixel_budget: int = 16_000_000):
    """Consecutive photos of the same size, at most ``size`` of them and about ``pixel_budget`` pixels."""
    batch: list = []
    for item in items:
        pixels = item[2]
        if batch and (len(batch) == size or pixels.shape != batch[0][2].shape
                      or (len(batch) + 1) * pixels[0].numel() > pixel_budget):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def command_protect(args: argparse.Namespace) -> int:
    try:
        sources = find_images([Path(p) for p in args.inputs], recursive=args.recursive)
    except ImageError as error:
        raise SystemExit(f"error: {error}") from None
    if not sources:
        raise SystemExit("error: no photos found in the inputs")
    if args.eps is None and args.size == "full":  # measured: +2.8 dB PSNR over 0.007, as robust (README)
        args.eps = FULL_SIZE_EPS
    overrides = {k: getattr(args, k) for k in ("eps", "max_iter", "threshold", "sigma", "iterations")}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None},
                        max_perturbation=args.max_perturbation, robust=args.robust)
    if args.format == "jpeg" and not args.robust:
        _warn("warning: JPEG output re-encodes the perturbation and may weaken it; add --robust, or keep PNG")
    classifier = _classifier(args)
    pairs = _outputs(sources, Path(args.output), ".jpg" if args.format == "jpeg" else ".png")
    inputs = {source.resolve() for source, _ in pairs}
    failures: list[str] = []
    records = []
    run = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = None
    if args.report:  # appended, never overwritten: earlier runs stay in the file
        try:
            Path(args.report).parent.mkdir(parents=True, exist_ok=True)
            report = open(args.report, "a", encoding="utf-8")
        except OSError as error:
            raise SystemExit(f"error: cannot write the report {args.report}: {error}") from None
    start = time.perf_counter()

    def finish(saves: list) -> None:
        """Wait for one batch's files to be written, in order; then log, count and report each."""
        for future, photo, output, record in saves:
            try:
                future.result()
            except OSError as error:
                failures.append(f"{photo.path}: cannot write {output}: {error}")
                _warn(f"error: {failures[-1]}")
                continue
            record = {"file": str(photo.path), "output": str(output), "model": classifier.name, "run": run, **record}
            records.append(record)
            before, after = record["clean_top5"][0], record["final_top5"][0]
            tqdm.write(f"{photo.path} -> {output}: {before['name']} ({before['probability']:.2f}) -> "
                       f"{after['name']} ({after['probability']:.2f}), {record['iterations']} iterations, "
                       f"PSNR {record['psnr'] or float('inf'):.1f} dB")
            if report:
                report.write(json.dumps(record) + "\n")
                report.flush()
        progress.update(len(saves))

    # Files are encoded and written in a background thread while the next batch is protected.
    with tqdm(total=len(pairs), unit="photo", file=sys.stderr, disable=None) as progress, \
            ThreadPoolExecutor(max_workers=1) as writer:
        photos = prefetch(_photos(pairs, inputs, failures, classifier, args.size), depth=args.batch_size)
        saves: list = []
        for batch in _batches(photos, args.batch_size):
            images = torch.stack([pixels for _, _, pixels in batch])
            result = protect(images, classifier, args.method, seed=args.seed, settings=settings)
            finish(saves)
            saves = [(writer.submit(save_image, pixels, output, quality=args.quality, icc_profile=photo.icc_profile,
                                    exif=photo.exif if args.keep_metadata else None), photo, output, record)
                     for (photo, output, _), pixels, record in zip(batch, to_uint8(result.images), result.records,
                                                                   strict=True)]
        finish(saves)
        progress.update(len(pairs) - progress.n)
    if report:
        report.close()
    elapsed = time.perf_counter() - start
    psnrs = [r["psnr"] for r in records if r["psnr"] is not None]
    print(f"{'photos':<22}{len(pairs)}")
    print(f"{'protected (success)':<22}{sum(r['success'] for r in records)} of {len(records)} saved"
          f" ({len(failures)} failed)")
    print(f"{'top-1 changed':<22}{sum(r['top1_changed'] for r in records)} of {len(records)}")
    print(f"{'mean iterations':<22}{_mean([r['iterations'] for r in records]):.1f}")
    ssims = [r["ssim"] for r in records if r["ssim"] is not None]
    print(f"{'mean PSNR / SSIM':<22}{_mean(psnrs):.2f} dB / {_mean(ssims):.4f}")
    print(f"{'time':<22}{elapsed:.1f} s ({args.method}, {classifier.name}, {_device(args.device)})")
    return 1 if failures else 0


def command_classify(args: argparse.Namespace) -> int:
    classifier = _classifier(args)
    failed = False
    results = []
    for name in args.images:
        try:
            photo = load_photo(Path(name))
        except ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True
            continue
        device = next(classifier.parameters()).device
        with torch.inference_mode():
            probabilities = classifier(photo.pixels[None].to(device)).double().softmax(1)[0].cpu()
        values, indices = probabilities.topk(min(args.top, len(probabilities)))
        top = [{"index": int(i), "name": classifier.labels[int(i)], "probability": float(v)}
               for v, i in zip(values, indices, strict=True)]
        results.append({"file": name, "model": classifier.name, "top": top})
        if not args.json:
            print(name)
            for rank, entry in enumerate(top, 1):
                print(f"  {rank}. {entry['name']:<40} {entry['probability']:.4f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def command_models(args: argparse.Namespace) -> int:
    for name, spec in MODELS.items():
        location, available = spec.weights_status()
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{default}\n  {spec.description}\n  weights: {location}\n"
              f"  offline: {'yes' if available else 'no, downloaded on first use (or pass --weights PATH)'}")
    return 0


def command_evaluate(args: argparse.Namespace) -> int:
    from . import evaluate

    if args.limit is not None and args.limit < 1:
        raise SystemExit("error: --limit must be at least 1")
    try:
        rows = evaluate.select_rows(args.methods)
        dataset = evaluate.load_dataset(Path(args.dataset), MODELS[args.model].labels(),
                                        private_classes=args.private_classes, limit=args.limit)
        classifier = _classifier(args)
        failures = evaluate.evaluate(dataset, classifier, rows, Path(args.output), seed=args.seed,
                                     batch_size=args.batch_size, save_images=args.save_images)
    except evaluate.EvaluationError as error:
        raise SystemExit(f"error: {error}") from None
    output = Path(args.output)
    print((output / "table1.md").read_text(encoding="utf-8"))
    print((output / "table2.md").read_text(encoding="utf-8"))
    print(f"results, tables and figures in {output}/ (summary.md)")
    return 1 if failures else 0


def _original_of(relative: Path, originals: Path) -> Path | None:
    """The original photo of a protected file: same relative name in ``originals``, any image extension."""
    if (originals / relative).is_file():  # outputs named after a clash keep the extension: x.jpg.png
        return originals / relative
    candidates = sorted((originals / relative).parent.glob(f"{glob.escape(relative.name)}.*"))
    return next((c for c in candidates if c.suffix.lower() in image_extensions()), None)


def command_verify(args: argparse.Namespace) -> int:
    try:
        sources = find_images([Path(p) for p in args.files], recursive=args.recursive)
        qualities = [int(q) for q in args.jpeg.split(",") if q.strip()]
        scales = [float(s) for s in args.scale.split(",") if s.strip()]
    except ImageError as error:
        raise SystemExit(f"error: {error}") from None
    except ValueError:
        raise SystemExit("error: --jpeg takes integers and --scale numbers, separated by commas") from None
    resamplers = list(RESAMPLERS) if args.resamplers == "all" else args.resamplers.split(",")
    if unknown := set(resamplers) - set(RESAMPLERS):
        raise SystemExit(f"error: unknown resampler {', '.join(sorted(unknown))}; choose from {', '.join(RESAMPLERS)}")
    all_checks = verify.checks(qualities, scales, resamplers)
    classifier = _classifier(args)
    failed, results = False, []
    for path, relative in tqdm(sources, unit="photo", file=sys.stderr, disable=None):
        original = _original_of(relative, Path(args.original)) if args.original else None
        try:
            protected = load_photo(path).pixels
            if args.original and original is None:
                raise ImageError(f"{path}: no original named {relative}.* in {args.original}")
            original_top1 = verify.top1_under_checks(classifier, load_photo(original).pixels, all_checks) \
                if original else None
        except ImageError as error:
            _warn(f"error: {error}")
            failed = True
            continue
        with torch.inference_mode():
            target = int(classifier(protected[None].to(next(classifier.parameters()).device)).argmax())
        protected_top1 = verify.top1_under_checks(classifier, protected, all_checks)
        checks = []
        for i, check in enumerate(all_checks):
            entry = {"check": check.name, "top1": classifier.labels[protected_top1[i]],
                     "target_wins": protected_top1[i] == target}
            if original_top1:
                entry.update(original_top1=classifier.labels[original_top1[i]],
                             holds=protected_top1[i] != original_top1[i])
            checks.append(entry)
        results.append({"file": str(path), "original": str(original) if original else None,
                        "target": classifier.labels[target], "checks": checks})
    if args.json:
        print(json.dumps(results, indent=2))
        return 1 if failed else 0
    key = "holds" if args.original else "target_wins"
    for result in results:
        broken = [c["check"] for c in result["checks"] if not c[key]]
        print(f"{result['file']}: {len(result['checks']) - len(broken)}/{len(result['checks'])} checks "
              f"{'hold' if args.original else 'keep the target'} ({result['target']})"
              + (f"; not: {', '.join(broken)}" if broken else ""))
    if results:
        print(f"\n{'share of files' + (' holding' if args.original else ' keeping the target'):<38}"
              + "".join(f"{r:>20}" for r in resamplers))
        for quality, scale in product([None, *qualities], scales):
            cells = []
            for resampler in resamplers:
                name = verify.Check(quality, scale, resampler).name
                held = [c[key] for r in results for c in r["checks"] if c["check"] == name]
                cells.append(f"{100 * sum(held) / len(held):>19.0f}%")
            label = f"{'as saved' if quality is None else f'JPEG {quality}'}, scale {scale:g}"
            print(f"{label:<38}" + "".join(cells))
    return 1 if failed else 0


def _model_options(parser: argparse.ArgumentParser, precision: str = "fp32") -> None:
    """``precision``: the default of ``--precision``; protect takes ``auto`` (speed), the commands that
    measure take ``fp32``, the network as published, whatever the machine."""
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS), help="classifier to protect against")
    parser.add_argument("--weights", help="use this local checkpoint file instead of the default weights")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default=precision, choices=["fp32", "bf16", "auto"],
                        help="bf16 autocast (about 3x faster where the CPU or GPU runs bf16 natively; auto: "
                             f"bf16 only there; default {precision})")
    parser.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction, default=True,
                        help="fold batch norms into convolutions (the same function to float rounding, faster)")
    parser.add_argument("--resize", default="auto", choices=["auto", *RESIZE_POLICIES],
                        help="how the classifier brings a photo to its input size; auto: bilinear-antialias for "
                             "full-size output, the paper's bilinear otherwise")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenepriv", description="Protect the scene of photos from classifiers.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("protect", help="protect photos (files or folders) into an output folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos or folders of photos")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the protected PNGs")
    p.add_argument("--method", default="p-fgsm", choices=list(METHODS))
    _model_options(p, precision="auto")
    p.add_argument("--eps", type=float,
                   help="step size in [0, 1] pixel units (default 1/255 for full-size output, the paper's 0.007 "
                        "with --size model)")
    p.add_argument("--max-iter", type=int, help="most iterations of the iterative methods (default 50)")
    p.add_argument("--threshold", type=float, help="target probability that stops the iterations (default 0.99)")
    p.add_argument("--sigma", type=float, help="P-FGSM's cumulative-probability threshold (default 0.99)")
    p.add_argument("--iterations", type=int, help="fixed number of repeated steps (sog, fgsm, r-fgsm)")
    p.add_argument("--max-perturbation", type=float, help="optional L-infinity bound around the original")
    p.add_argument("--seed", type=int, help="make target choice reproducible (default: unpredictable)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", default="full", choices=["full", "model"],
                   help="output at the photo's own size (default) or at the model's input size (the paper's setting)")
    p.add_argument("--robust", action="store_true",
                   help="make the protection survive platform re-encoding (JPEG down to quality 25, resizing)")
    p.add_argument("--format", default="png", choices=["png", "jpeg"], help="output format (default: lossless PNG)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality with --format jpeg (default 95)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF metadata except location (default: strip all; the colour profile is always kept)")
    p.add_argument("--report", metavar="FILE.jsonl", help="append one JSON record per photo to this file")
    p.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    p.set_defaults(run=command_protect)

    c = commands.add_parser("classify", help="what the classifier sees in photos")
    c.add_argument("images", nargs="+", metavar="IMAGE")
    _model_options(c)
    c.add_argument("--top", type=int, default=5)
    c.add_argument("--json", action="store_true", help="print JSON instead of a list")
    c.set_defaults(run=command_classify)

    e = commands.add_parser("evaluate", help="reproduce the paper's Table 1, Table 2 and Fig. 3 on a dataset")
    e.add_argument("dataset", metavar="DATASET",
                   help="class folders (CLASS_NAME/photo.jpg), a Places365 val folder with places365_val.txt, "
                        "or a flat folder of unlabelled photos (label = clean top-1)")
    e.add_argument("-o", "--output", required=True, metavar="RESULTS_DIR", help="folder for results and tables")
    _model_options(e)
    e.add_argument("--methods", default="paper",
                   help="'paper' (the eleven rows of Table 1) or comma-separated methods or row names, "
                        "e.g. 'fgsm,r-fgsm,p-fgsm' or 'FG (6I),P-FG'")
    e.add_argument("--limit", type=int, help="evaluate only the first N images (class folders: taken in turn)")
    e.add_argument("--seed", type=int, help="make target choice reproducible (default: unpredictable)")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--private-classes", action="store_true",
                   help="keep only the 60 private classes of MediaEval 2018 (Places365 models)")
    e.add_argument("--save-images", action="store_true", help="also write the protected images as PNG")
    e.set_defaults(run=command_evaluate)

    v = commands.add_parser("verify", help="check that protected files stay protected after re-encoding")
    v.add_argument("files", nargs="+", metavar="FILE", help="protected photos or folders of them")
    v.add_argument("--original", metavar="DIR", help="folder of the originals (same names, any extension)")
    v.add_argument("--jpeg", default="25,50,75,95", help="JPEG qualities to re-encode with (default 25,50,75,95)")
    v.add_argument("--scale", default="0.5,1", help="scales to resize by before JPEG (default 0.5,1)")
    v.add_argument("--resamplers", default="all", help=f"all, or some of {','.join(RESAMPLERS)}")
    v.add_argument("--recursive", action="store_true", help="also take files in sub-folders")
    v.add_argument("--json", action="store_true", help="print every check as JSON")
    _model_options(v)
    v.set_defaults(run=command_verify)

    m = commands.add_parser("models", help="the classifiers available and where their weights are")
    m.set_defaults(run=command_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "evaluate" or getattr(args, "size", None) == "model":
        keep_freed_memory()  # batches at the model's size: ~10% faster; at full size it costs too much memory
    if getattr(args, "batch_size", 1) < 1:
        raise SystemExit("error: --batch-size must be at least 1")
    if getattr(args, "top", 1) < 1:
        raise SystemExit("error: --top must be at least 1")
    try:
        return args.run(args)
    except ValueError as error:  # invalid settings, e.g. sigma outside [0, 1]
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
