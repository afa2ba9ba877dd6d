"""The command line: ``scenepriv protect``, ``verify``, ``classify``, ``models``, ``evaluate``. It parses and calls.

PyTorch and the image libraries are imported inside the commands, so ``--help``, ``--version`` and
``models`` answer at once. Exit status: 0 when everything asked for was done (every photo protected,
every check held), 1 when some photo or check failed (each named on an ``error:`` line), 2 for a
usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys
import time
import warnings
from datetime import datetime, timezone
from fractions import Fraction
from itertools import product
from pathlib import Path

from . import __version__
from .settings import METHODS, PRECISIONS, RESAMPLERS, RESIZE_POLICIES, STRENGTHS, ScenePrivError, Settings
from .zoo import DEFAULT_MODEL, MODELS, places365

DEFAULT_STRENGTH = "low"  # full-size photos: least visible (README, "Strength")
INTERRUPTED = 130


# --- option types: every number is checked, and the message names the option (argparse adds it) --------------------


def _number(text: str) -> float:
    """A decimal or a fraction such as ``1/255``."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _in_range(low: float, high: float, *, open_low: bool = False):
    def parse(text: str) -> float:
        value = _number(text)
        if not (low < value if open_low else low <= value) or value > high:
            raise argparse.ArgumentTypeError(f"must lie in {'(' if open_low else '['}{low:g}, {high:g}], got {text!r}")
        return value

    return parse


def _whole(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {f'from {low} to {high}' if high else f'>= {low}'}, got {text}")
        return value

    return parse


def _list_of(parse):
    def parse_list(text: str) -> list:
        values = [parse(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return values

    return parse_list


def _one_of(choices):
    def parse(text: str) -> str:
        if text.strip() not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text.strip()

    return parse


def _resamplers(text: str) -> list[str]:
    return list(RESAMPLERS) if text == "all" else _list_of(_one_of(RESAMPLERS))(text)


JPEG_QUALITY = _whole(1, 100)
MODEL = _one_of(list(MODELS))
MODEL_NAMES = _list_of(MODEL)
SCALE = _in_range(0, 8, open_low=True)


# --- output: messages, the progress bar, machine-readable output ---------------------------------------------------


class Console:
    """Where each kind of line goes. Errors and warnings: stderr, always. Per-photo lines and summaries: stdout,
    or stderr when stdout carries JSON (``--json``, ``--report -``); none with ``--quiet``. Details: ``--verbose``."""

    def __init__(self, verbosity: int = 0, machine_stdout: bool = False) -> None:
        self.verbosity = verbosity
        self.stream = sys.stderr if machine_stdout else sys.stdout
        self.progress = None  # a tqdm bar, whose line is kept below the messages

    def _write(self, line: str, stream) -> None:
        if self.progress is not None:
            self.progress.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def info(self, line: str) -> None:
        if self.verbosity >= 0:
            self._write(line, self.stream)

    def detail(self, line: str) -> None:
        if self.verbosity > 0:
            self._write(line, sys.stderr)

    def warn(self, line: str) -> None:
        self._write(f"warning: {line}", sys.stderr)

    def error(self, line: str) -> None:
        self._write(f"error: {line}", sys.stderr)

    def bar(self, total: int, unit: str):
        from tqdm import tqdm

        self.progress = tqdm(total=total, unit=unit, file=sys.stderr, disable=None if self.verbosity >= 0 else True)
        return self.progress


def _shown(path) -> str:
    from .images import shown

    return shown(path)


# --- shared steps ---------------------------------------------------------------------------------------------------


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was asked for, but PyTorch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SystemExit("error: --device mps was asked for, but this PyTorch has no Apple GPU (MPS) backend here")
    return name


def _classifier(args: argparse.Namespace, name: str | None = None, weights: str | None = None):
    """The classifier of ``--model`` (or ``name``); ``--resize auto`` is the paper's bilinear for 224 px work
    (evaluate, ``--size model``) and an antialiased bilinear for full-size photos, which holds through other
    resizers."""
    from . import load_classifier
    from .zoo.cache import WeightsUnavailable

    resize = args.resize
    if resize == "auto":
        paper_setting = args.command == "evaluate" or getattr(args, "size", "full") == "model"
        resize = "bilinear" if paper_setting else "bilinear-antialias"
    if args.mirror:
        os.environ[places365.URL_ENV] = args.mirror
    try:
        weights = weights if name else args.weights
        name = name or args.model
        return load_classifier(name, weights=weights, device=_device(args.device), resize=resize,
                               precision=args.precision, fold_batch_norm=args.fold_batch_norm)
    except WeightsUnavailable as error:
        raise SystemExit(f"error: {error}") from None
    except (OSError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SystemExit(f"error: cannot load model {name!r}: {reason}") from None


def _inputs(names: list[str]) -> list[Path]:
    """The paths named on the command line; ``-`` reads more from stdin, one per line (or NUL-separated)."""
    paths = []
    for name in names:
        if name != "-":
            paths.append(Path(name))
            continue
        text = sys.stdin.read()
        separator = "\0" if "\0" in text else "\n"
        paths += [Path(line.removesuffix("\r")) for line in text.split(separator) if line.strip()]
    return paths


def _find(args: argparse.Namespace, names: list[str], console: Console, failures: list[str]):
    """Photos named or inside the named folders; each path that cannot be used is one error line, the rest go on."""
    from .images import find_images

    problems: list[str] = []
    skipped: list[str] = []
    sources = find_images(_inputs(names), recursive=args.recursive, problems=problems, skipped=skipped)
    for problem in problems:
        console.error(problem)
    for warning in skipped:
        console.warn(warning)
    failures += problems
    return sources


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error) or "allocate memory" in str(error)))


# --- protect --------------------------------------------------------------------------------------------------------


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


def _photos(pairs: list[tuple[Path, Path]], inputs: set[Path], console: Console, failures: list[str],
            classifier, size: str):
    """Decode each photo (and shrink it for ``--size model``); a bad file is reported and skipped."""
    from .images import ImageError, load_photo
    from .zoo import resize_to_input

    for source, output in pairs:
        try:
            if output.resolve() in inputs:
                raise ImageError(f"{_shown(source)}: its output {_shown(output)} would overwrite an input file; "
                                 "choose another -o")
            photo = load_photo(source)
        except ImageError as error:
            failures.append(str(error))
            console.error(str(error))
            continue
        for warning in photo.warnings:
            console.warn(f"{_shown(source)}: {warning}")
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


def _writable_folder(folder: Path) -> None:
    """Stop before any work if ``folder`` cannot be created or written to."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise SystemExit(f"error: cannot write to the output folder {_shown(folder)}: "
                         f"{error.strerror or error}") from None


class Report:
    """``--report``: one JSON line per photo, appended (``-``: stdout). A failed write is one error line; the run
    goes on without the report and ends with exit status 1."""

    def __init__(self, name: str | None, inputs: set[Path], console: Console, failures: list[str]) -> None:
        self.stream, self.name, self.console, self.failures = None, name, console, failures
        if name is None:
            return
        if name == "-":
            self.stream = sys.stdout
            return
        path = Path(name)
        from .images import image_extensions

        if path.resolve() in inputs or path.suffix.lower() in image_extensions():
            raise SystemExit(f"error: --report {_shown(path)} is a photo; name a .jsonl file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (closed in close())
            if self.stream.tell() > 0:  # a last line cut off (a run killed mid-write) must not swallow the next record
                self.stream.seek(self.stream.tell() - 1)
                if self.stream.read(1) != "\n":
                    self.stream.write("\n")
        except (OSError, UnicodeDecodeError) as error:
            raise SystemExit(f"error: cannot write the report {_shown(path)}: {error}") from None

    def write(self, record: dict) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        except OSError as error:
            message = f"{_shown(self.name)}: cannot write the report ({error.strerror or error}); " \
                      "the photos are still saved, without report records from here on"
            self.failures.append(message)
            self.console.error(message)
            self.close()

    def close(self) -> None:
        if self.stream not in (None, sys.stdout):
            try:
                self.stream.close()
            except OSError:
                pass
        self.stream = None


def _not_protected_advice(record: dict) -> str:
    goal = record.get("target") or record.get("label") or {}
    if "away_from" in record:
        why = f"top-1 {record['final_top5'][0]['name']} after {record['iterations']} iterations"
    elif "target" in record:
        reached = next((e["probability"] for e in record["final_top5"] if e["index"] == goal.get("index")), 0.0)
        why = f"p({goal.get('name')}) = {reached:.2f} after {record['iterations']} iterations"
    else:
        why = f"top-1 still {goal.get('name')} after {record['iterations']} iterations"
    return f"saved but not protected: {why}; re-run it with a larger --max-iter or --eps"


def command_protect(args: argparse.Namespace, console: Console) -> int:
    import torch

    from . import metrics
    from .images import ImageError, most_changed_crop, prefetch, save_image
    from .methods import protect, to_uint8
    from .runtime import keep_freed_memory

    if args.size == "model":
        keep_freed_memory()  # batches at the model's size: ~10% faster; at full size it costs too much memory
    failures: list[str] = []
    sources = _find(args, args.inputs, console, failures)
    outdir = Path(args.output)
    folders = {Path(name).resolve() for name in args.inputs if name != "-" and Path(name).is_dir()}
    if outdir.resolve() in folders:
        raise SystemExit(f"error: -o {_shown(outdir)} is an input folder; protected photos would replace the "
                         "originals: choose another folder")
    if args.compare and Path(args.compare).resolve() in {outdir.resolve(), *folders,
                                                        *(source.parent.resolve() for source, _ in sources)}:
        raise SystemExit(f"error: --compare {_shown(args.compare)} is the output or an input folder; its crops "
                         "would replace photos: choose another folder")
    if not sources:
        raise SystemExit("error: no photos found in the inputs" + (" that could be read" if failures else ""))
    # the presets are made for P-FGSM on full-size photos; the paper's other methods and 224 px thumbnails keep
    # the paper's settings unless a strength is asked for
    args.strength = args.strength or ("paper" if args.size == "model" or args.method != "p-fgsm" else DEFAULT_STRENGTH)
    values = dict(STRENGTHS[args.strength])
    if args.max_perturbation is not None:  # one bound: the one given wins over the preset's texture budget
        values = {k: v for k, v in values.items() if k not in ("texture_budget", "budget_growth")}
    values.update({k: getattr(args, k) for k in ("eps", "max_iter", "threshold", "sigma", "iterations",
                                                 "max_perturbation") if getattr(args, k) is not None})
    values["robust"] = values.get("robust", False) or args.robust
    try:
        settings = Settings(**values)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if args.format == "jpeg" and not settings.robust:
        console.warn("JPEG output re-encodes the perturbation and may weaken it; use --strength medium, or keep PNG")
    pairs = _outputs(sources, outdir, ".jpg" if args.format == "jpeg" else ".png")
    inputs = {source.resolve() for source, _ in pairs}
    report = Report(args.report, inputs, console, failures)
    _writable_folder(outdir)
    models = [_classifier(args, name, args.weights if i == 0 else None) for i, name in enumerate(args.model)]
    classifier, model_name = models[0], "+".join(args.model)  # the first model resizes for --size model
    console.detail(f"{model_name} on {_device(args.device)}, precision {args.precision}, resize "
                   f"{classifier.resize}; {args.method} with {settings}")
    records: list[dict] = []
    run = datetime.now(timezone.utc).isoformat(timespec="seconds")
    start = time.perf_counter()
    pending: list = []  # files being written in the background: (future, photo, output, record)

    def finish() -> None:
        """Wait for the files being written, in order; then log, count and report each."""
        while pending:
            future, photo, output, record = pending[0]
            try:
                warnings, distance = future.result()
                for warning in warnings:
                    console.warn(f"{_shown(photo.path)}: {warning}")
            except ImageError as error:
                failures.append(f"{_shown(photo.path)}: {error}")
                console.error(failures[-1])
            else:
                record = {"file": str(photo.path), "output": str(output), "model": model_name, "run": run,
                          "strength": args.strength, **record, "butteraugli": distance}
                records.append(record)
                report.write(record)
                before, after = record["clean_top5"][0], record["final_top5"][0]
                console.info(f"{_shown(photo.path)} -> {_shown(output)}: {before['name']} ({before['probability']:.2f})"
                             f" -> {after['name']} ({after['probability']:.2f}), {record['iterations']} iterations, "
                             f"PSNR {record['psnr'] or float('inf'):.1f} dB"
                             + ("" if distance is None else f", butteraugli {distance:.2f}"))
                if not record["success"]:
                    console.error(f"{_shown(photo.path)}: {_not_protected_advice(record)}")
            pending.pop(0)
            progress.update(1)

    def write(photo, output: Path, original, protected) -> tuple[list[str], float | None]:
        """In the writer thread: save the photo (and its --compare crop); measure how visible the change is.
        ``original``: the pixels protect() was given, brought to 8 bits here, off the protecting thread."""
        warnings = save_image(protected, output, quality=args.quality, icc_profile=photo.icc_profile,
                              exif=photo.exif if args.keep_metadata else None)
        original = to_uint8(original[None])[0]
        if args.compare:
            save_image(most_changed_crop(original, protected), Path(args.compare) / output.relative_to(outdir))
        return warnings, metrics.butteraugli(original, protected)

    def protect_batch(batch: list) -> list:
        """Protect a batch; out of memory, each photo alone; a photo that does not fit alone is one error line."""
        try:
            result = protect(torch.stack([pixels for _, _, pixels in batch]), models, args.method,
                             seed=args.seed, settings=settings)
            return list(zip(batch, to_uint8(result.images), result.records, strict=True))
        except Exception as error:  # noqa: BLE001 (only out-of-memory errors are handled; others are re-raised)
            if not _is_out_of_memory(error):
                raise
        if len(batch) > 1:
            return [done for item in batch for done in protect_batch([item])]
        photo, _, pixels = batch[0]
        megapixels = pixels[0].numel() / 1e6
        failures.append(f"{_shown(photo.path)}: not enough memory to protect this {megapixels:.0f}-megapixel photo; "
                        "close other programs, or use --size model")
        console.error(failures[-1])
        progress.update(1)
        return []

    from concurrent.futures import ThreadPoolExecutor

    interrupted = False
    # Files are encoded and written in a background thread while the next batch is protected.
    with console.bar(len(pairs), "photo") as progress, ThreadPoolExecutor(max_workers=1) as writer:
        try:
            photos = prefetch(_photos(pairs, inputs, console, failures, classifier, args.size), depth=args.batch_size)
            for batch in _batches(photos, args.batch_size):
                done = protect_batch(batch)
                finish()
                pending += [(writer.submit(write, photo, output, original, pixels), photo, output, record)
                            for (photo, output, original), pixels, record in done]
            finish()
        except KeyboardInterrupt:
            interrupted = True
            finish()  # the files already handed to the writer are saved and reported: report and folder agree
        progress.update(len(pairs) - progress.n)
    console.progress = None
    report.close()
    _protect_summary(args, console, pairs, records, failures, time.perf_counter() - start, interrupted)
    if interrupted:
        return INTERRUPTED
    return 1 if failures or not all(r["success"] for r in records) else 0


def _protect_summary(args, console: Console, pairs, records, failures, elapsed, interrupted) -> None:
    protected = [r for r in records if r["success"]]
    missed = [r for r in records if not r["success"]]
    if args.json:
        print(json.dumps({"photos": len(pairs), "protected": len(protected), "not_protected": len(missed),
                          "failed": len(failures), "interrupted": interrupted, "records": records,
                          "errors": failures}, indent=2))
    psnrs = [r["psnr"] for r in records if r["psnr"] is not None]
    ssims = [r["ssim"] for r in records if r["ssim"] is not None]
    distances = [r["butteraugli"] for r in records if r.get("butteraugli") is not None]
    lines = [
        ("photos", f"{len(pairs)}"),
        ("protected", f"{len(protected)} of {len(pairs)}"),
        ("saved, not protected", f"{len(missed)}" + (" (see the error lines: re-run those with a larger "
                                                      "--max-iter or --eps)" if missed else "")),
        ("not saved", f"{len(pairs) - len(records)}" + (" (see the error lines)" if len(pairs) > len(records) else "")),
        ("top-1 changed", f"{sum(r['top1_changed'] for r in records)} of {len(records)}"),
        ("mean iterations", f"{_mean([r['iterations'] for r in records]):.1f}"),
        ("mean PSNR / SSIM", f"{_mean(psnrs):.2f} dB / {_mean(ssims):.4f}"),
        *([("butteraugli", f"median {statistics.median(distances):.2f}, max {max(distances):.2f} (about 1: not "
                           "visible; JPEG quality 85 of a photo: 1.1-1.6)")] if distances else []),
        ("time", f"{elapsed:.1f} s ({args.method}, {'+'.join(args.model)}, {_device(args.device)})"),
    ]
    for label, value in lines:
        console.info(f"{label:<22}{value}")
    if interrupted:
        console.error(f"interrupted: {len(records)} of {len(pairs)} photos saved"
                      + (" and reported" if args.report else "") + "; run again to protect the rest")


# --- classify, models -----------------------------------------------------------------------------------------------


def command_classify(args: argparse.Namespace, console: Console) -> int:
    import torch

    from .images import ImageError, load_photo

    failures: list[str] = []
    sources = _find(args, args.images, console, failures)
    classifier = _classifier(args)
    results = []
    for path, _ in sources:
        try:
            photo = load_photo(path)
        except ImageError as error:
            console.error(str(error))
            failures.append(str(error))
            continue
        with torch.inference_mode():
            probabilities = classifier(photo.pixels[None].to(classifier.device)).double().softmax(1)[0].cpu()
        values, indices = probabilities.topk(min(args.top, len(probabilities)))
        top = [{"index": int(i), "name": classifier.labels[int(i)], "probability": float(v)}
               for v, i in zip(values, indices, strict=True)]
        results.append({"file": str(path), "model": classifier.name, "top": top})
        if not args.json:
            print(_shown(path))
            for rank, entry in enumerate(top, 1):
                print(f"  {rank}. {entry['name']:<40} {entry['probability']:.4f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


def command_models(args: argparse.Namespace, console: Console) -> int:
    entries = []
    for name, spec in MODELS.items():
        location, available = spec.weights_status()
        entries.append({"name": name, "default": name == DEFAULT_MODEL, "description": spec.description,
                        "weights": location, "offline": available})
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for entry in entries:
        print(f"{entry['name']}{' (default)' if entry['default'] else ''}\n  {entry['description']}\n"
              f"  weights: {entry['weights']}\n"
              f"  offline: {'yes' if entry['offline'] else 'no: see where the weights come from above'}")
    return 0


# --- evaluate -------------------------------------------------------------------------------------------------------


def command_evaluate(args: argparse.Namespace, console: Console) -> int:
    from .runtime import keep_freed_memory

    keep_freed_memory()  # batches at the model's size: ~10% faster
    try:
        from . import evaluate, metrics

        metrics.brisque_model()  # before hours of work: OpenCV's contrib modules must be there
    except ImportError as error:
        raise SystemExit(f"error: evaluate: {error}") from None
    try:
        rows = evaluate.select_rows(args.methods)
        dataset = evaluate.load_dataset(Path(args.dataset), MODELS[args.model].labels(),
                                        private_classes=args.private_classes, limit=args.limit)
        classifier = _classifier(args)
        unseen = [_classifier(args, name) for name in args.transfer_to if name != args.model]
        failures = evaluate.evaluate(dataset, classifier, rows, Path(args.output), seed=args.seed,
                                     batch_size=args.batch_size, save_images=args.save_images, transfer_to=unseen)
    except evaluate.EvaluationError as error:
        raise SystemExit(f"error: {error}") from None
    output = Path(args.output)
    console.info((output / "table1.md").read_text(encoding="utf-8"))
    console.info((output / "table2.md").read_text(encoding="utf-8"))
    console.info(f"results, tables and figures in {output}/ (summary.md)")
    return 1 if failures else 0


# --- verify ---------------------------------------------------------------------------------------------------------


def _original_of(relative: Path, originals: Path) -> Path | None:
    """The original photo of a protected file: same relative name in ``originals``, any image extension."""
    from .images import image_extensions

    if (originals / relative).is_file():  # outputs named after a clash keep the extension: x.jpg.png
        return originals / relative
    candidates = sorted((originals / relative).parent.glob(f"{glob.escape(relative.name)}.*"))
    return next((c for c in candidates if c.suffix.lower() in image_extensions()), None)


def command_verify(args: argparse.Namespace, console: Console) -> int:
    import torch

    from . import verify
    from .images import ImageError, load_photo

    failures: list[str] = []
    sources = _find(args, args.files, console, failures)
    if not sources:
        raise SystemExit("error: no protected photos found in the inputs")
    all_checks = verify.checks(args.jpeg, args.scale, args.resamplers)
    judges = [_classifier(args), *(_classifier(args, name) for name in args.models if name != args.model)]
    results = []
    with console.bar(len(sources), "photo") as progress:
        for path, relative in sources:
            progress.update(1)
            original = _original_of(relative, Path(args.original)) if args.original else None
            try:
                protected = load_photo(path).pixels
                if args.original and original is None:
                    raise ImageError(f"{_shown(path)}: no original named {_shown(relative)}.* in "
                                     f"{_shown(args.original)}")
                original_pixels = load_photo(original).pixels if original else None
            except ImageError as error:
                console.error(str(error))
                failures.append(str(error))
                continue
            for judge in judges:
                original_top1 = verify.top1_under_checks(judge, original_pixels, all_checks) if original else None
                with torch.inference_mode():
                    target = int(judge(protected[None].to(judge.device)).argmax())
                protected_top1 = verify.top1_under_checks(judge, protected, all_checks)
                checks = []
                for i, check in enumerate(all_checks):
                    entry = {"check": check.name, "top1": judge.labels[protected_top1[i]],
                             "target_wins": protected_top1[i] == target}
                    if original_top1:
                        entry.update(original_top1=judge.labels[original_top1[i]],
                                     holds=protected_top1[i] != original_top1[i])
                    checks.append(entry)
                results.append({"file": str(path), "model": judge.name, "original": str(original) if original else None,
                                "target": judge.labels[target], "checks": checks})
    console.progress = None
    key = "holds" if args.original else "target_wins"
    broken_files = [r for r in results if not all(c[key] for c in r["checks"])]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for judge in judges:
            _verify_table(args, console, [r for r in results if r["model"] == judge.name], key,
                          f" on {judge.name}" if len(judges) > 1 else "")
    for result in broken_files:
        broken = [c["check"] for c in result["checks"] if not c[key]]
        console.error(f"{_shown(result['file'])}: {len(broken)} of {len(result['checks'])} checks fail"
                      + (f" on {result['model']}" if len(judges) > 1 else "") + f" ({', '.join(broken)})")
    if broken_files:
        console.info(f"\n{len(broken_files)} of {len(results)} checked files do not hold under every check: protect "
                     "their originals again with --strength medium or high (against other models, add them "
                     "to --model), or share them at a higher quality")
    return 1 if failures or broken_files else 0


def _verify_table(args, console: Console, results: list[dict], key: str, on: str) -> None:
    from . import verify

    for result in results:
        broken = [c["check"] for c in result["checks"] if not c[key]]
        console.info(f"{_shown(result['file'])}: {len(result['checks']) - len(broken)}/{len(result['checks'])} "
                     f"checks {'hold' if args.original else 'keep the target'}{on} ({result['target']})")
    if not results:
        return
    console.info(f"\n{'share of files' + (' holding' if args.original else ' keeping the target') + on:<38}"
                 + "".join(f"{r:>20}" for r in args.resamplers))
    for quality, scale in product([None, *args.jpeg], args.scale):
        cells = []
        for resampler in args.resamplers:
            name = verify.Check(quality, scale, resampler).name
            held = [c[key] for r in results for c in r["checks"] if c["check"] == name]
            cells.append(f"{100 * sum(held) / len(held):>19.0f}%")
        label = f"{'as saved' if quality is None else f'JPEG {quality}'}, scale {scale:g}"
        console.info(f"{label:<38}" + "".join(cells))
    console.info("")


# --- the parser -----------------------------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _output_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", default=0,
                           help="print only errors and warnings")
    verbosity.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                           help="also print the settings and model in use")


def _model_options(parser: argparse.ArgumentParser, precision: str = "fp32", batch_size: str | None = None,
                   ensemble: bool = False) -> None:
    """``precision``: the default of ``--precision``; protect takes ``auto`` (speed), the commands that
    measure take ``fp32``, the network as published, whatever the machine. ``batch_size``: what a
    ``--batch-size`` counts, for the commands that batch. ``ensemble``: ``--model`` takes several."""
    model = parser.add_argument_group("model")
    if ensemble:
        model.add_argument("--model", default=[DEFAULT_MODEL], type=MODEL_NAMES, metavar="NAME[,NAME...]",
                           help=f"classifier to protect against (default {DEFAULT_MODEL}, embedded); several, "
                                f"comma-separated, protect against all of them at once (from: {', '.join(MODELS)})")
    else:
        model.add_argument("--model", default=DEFAULT_MODEL, type=MODEL, metavar="NAME",
                           help=f"classifier to ask (default {DEFAULT_MODEL}, embedded; from: {', '.join(MODELS)})")
    model.add_argument("--weights", metavar="PATH", help="a local checkpoint file instead of the default weights")
    model.add_argument("--mirror", metavar="URL",
                       help="download Places365 weights from this folder URL instead of the official server (the "
                            f"checksum stays pinned; or set {places365.URL_ENV})")
    model.add_argument("--resize", default="auto", choices=["auto", *RESIZE_POLICIES],
                       help="how the classifier brings a photo to its input size (default auto: bilinear-antialias "
                            "for full-size output, the paper's bilinear otherwise)")
    speed = parser.add_argument_group("speed")
    speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                       help="where to compute (default auto: cuda when there is one, else cpu)")
    speed.add_argument("--precision", default=precision, choices=list(PRECISIONS),
                       help="bf16 autocast: 2-3x faster where the CPU or GPU runs bf16 natively; auto: bf16 "
                            f"only there (default {precision})")
    speed.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction, default=True,
                       help="fold batch norms into convolutions: the same function to float rounding, faster "
                            "(default on)")
    if batch_size:
        speed.add_argument("--batch-size", type=_whole(1), default=8,
                           help=f"{batch_size} protected together (default 8)")


PROTECT_EXAMPLES = """examples:
  scenepriv protect holiday/ -o protected/                 protect every photo of a folder, least visibly
  scenepriv protect holiday/ -o protected/ --strength medium   also hold through platform JPEG and resizing
  scenepriv verify protected/ --original holiday/          check the protection after re-encoding
  find . -name '*.heic' | scenepriv protect - -o out/      paths from stdin

Outputs replace files of the same name in OUTDIR. Exit status: 0 when every photo was protected,
1 when a photo failed or was saved without reaching its goal (each on an error: line), 2 for an
invalid option, 130 when interrupted."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scenepriv", formatter_class=_Formatter,
        description="Protect the scene of photos from automatic classifiers (Private FGSM, ICASSP 2019).",
        epilog="examples:\n  scenepriv protect photos/ -o protected/\n"
               "  scenepriv verify protected/ --original photos/\n\nrun 'scenepriv COMMAND --help' for its options")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser("protect", help="protect photos (files or folders) into an output folder",
                            description="Protect photos: each is saved to OUTDIR with a perturbation that changes "
                                        "what the classifier sees.",
                            epilog=PROTECT_EXAMPLES, formatter_class=_Formatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photos or folders of photos; - reads paths from stdin")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the protected photos")
    p.add_argument("--strength", choices=list(STRENGTHS),
                   help="low (default): least visible, holds on the file as saved; medium: hardly visible and "
                        "holds through platform JPEG re-encoding and resizing; high: surest, more visible; paper: "
                        "the paper's P-FGSM settings (the default with --size model and for methods other than p-fgsm)")
    p.add_argument("--robust", action="store_true",
                   help="also hold through platform re-encoding (JPEG down to quality 25, resizing) at any strength "
                        "(medium and high have it)")
    p.add_argument("--seed", type=_whole(0), help="make target choice reproducible (default: unpredictable)")
    p.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    p.add_argument("--report", metavar="FILE.jsonl",
                   help="append one JSON record per photo to this file (- : JSON lines on stdout)")
    p.add_argument("--compare", metavar="DIR",
                   help="also write, per photo, the most changed 256x256 crop at 100%%: original | protected")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout (messages on stderr)")
    p.add_argument("--format", default="png", choices=["png", "jpeg"], help="output format (default png, lossless)")
    p.add_argument("--quality", type=JPEG_QUALITY, default=95,
                   help="JPEG quality 1-100 for --format jpeg (default 95)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF metadata except location (default: strip all; a valid colour profile is kept)")
    p.add_argument("--size", default="full", choices=["full", "model"],
                   help="output at the photo's own size (default) or at the model's input size (the paper's setting)")
    _output_options(p)
    method = p.add_argument_group("method (each given here wins over the --strength preset)")
    method.add_argument("--method", default="p-fgsm", choices=list(METHODS), help="default p-fgsm")
    method.add_argument("--eps", type=_in_range(0, 1),
                        help="step size in [0, 1] pixel units, e.g. 0.004 or 1/255 (the paper's: 0.007)")
    method.add_argument("--max-iter", type=_whole(0), help="most iterations of the iterative methods (default 50)")
    method.add_argument("--threshold", type=_in_range(0, 1),
                        help="target probability that stops the iterations (default 0.99)")
    method.add_argument("--sigma", type=_in_range(0, 1),
                        help="P-FGSM's cumulative-probability threshold (default 0.99)")
    method.add_argument("--iterations", type=_whole(0), help="fixed number of repeated steps (sog, fgsm, r-fgsm)")
    method.add_argument("--max-perturbation", type=_in_range(0, 1),
                        help="optional L-infinity bound around the original, in [0, 1] pixel units")
    _model_options(p, precision="auto", batch_size="photos", ensemble=True)
    p.set_defaults(run=command_protect)

    v = commands.add_parser("verify", help="check that protected files stay protected after re-encoding",
                            formatter_class=_Formatter,
                            description="Re-classify protected photos as saved and after real JPEG re-encoding and "
                                        "resizing. Exit status 1 when any check fails (like sha256sum -c).")
    v.add_argument("files", nargs="+", metavar="FILE", help="protected photos or folders of them; - reads stdin")
    v.add_argument("--original", metavar="DIR", help="folder of the originals (same names, any extension)")
    v.add_argument("--jpeg", type=_list_of(JPEG_QUALITY), default=[25, 50, 75, 95],
                   help="JPEG qualities 1-100 to re-encode with (default 25,50,75,95)")
    v.add_argument("--scale", type=_list_of(SCALE), default=[0.5, 1.0],
                   help="scales to resize by before JPEG, in (0, 8] (default 0.5,1)")
    v.add_argument("--resamplers", type=_resamplers, default=list(RESAMPLERS),
                   help=f"all, or some of {','.join(RESAMPLERS)} (default all)")
    v.add_argument("--recursive", action="store_true", help="also take files in sub-folders")
    v.add_argument("--models", type=MODEL_NAMES, default=[], metavar="NAME[,NAME...]",
                   help="also judge on these models, e.g. ones the photos were not protected against")
    v.add_argument("--json", action="store_true", help="print every check as JSON")
    _output_options(v)
    _model_options(v)
    v.set_defaults(run=command_verify)

    c = commands.add_parser("classify", help="what the classifier sees in photos", formatter_class=_Formatter)
    c.add_argument("images", nargs="+", metavar="IMAGE", help="photos or folders; - reads paths from stdin")
    c.add_argument("--top", type=_whole(1), default=5, help="how many classes to show (default 5)")
    c.add_argument("--recursive", action="store_true", help="also take photos in sub-folders")
    c.add_argument("--json", action="store_true", help="print JSON instead of a list")
    _output_options(c)
    _model_options(c)
    c.set_defaults(run=command_classify)

    m = commands.add_parser("models", help="the classifiers available and where their weights are")
    m.add_argument("--json", action="store_true", help="print JSON instead of a list")
    _output_options(m)
    m.set_defaults(run=command_models)

    e = commands.add_parser("evaluate", help="reproduce the paper's Table 1, Table 2 and Fig. 3 on a dataset",
                            formatter_class=_Formatter,
                            description="Reproduce the paper's tables on any classifier and image set (needs the "
                                        "eval extra: pip install 'scenepriv[eval]').")
    e.add_argument("dataset", metavar="DATASET",
                   help="class folders (CLASS_NAME/photo.jpg), a Places365 val folder with places365_val.txt, "
                        "or a flat folder of unlabelled photos (label = clean top-1)")
    e.add_argument("-o", "--output", required=True, metavar="RESULTS_DIR", help="folder for results and tables")
    e.add_argument("--methods", default="paper",
                   help="'paper' (the eleven rows of Table 1) or comma-separated methods or row names, "
                        "e.g. 'fgsm,r-fgsm,p-fgsm' or 'FG (6I),P-FG' (default paper)")
    e.add_argument("--limit", type=_whole(1), help="evaluate only the first N images (class folders: taken in turn)")
    e.add_argument("--seed", type=_whole(0), help="make target choice reproducible (default: unpredictable)")
    e.add_argument("--private-classes", action="store_true",
                   help="keep only the 60 private classes of MediaEval 2018 (Places365 models)")
    e.add_argument("--save-images", action="store_true", help="also write the protected images as PNG")
    e.add_argument("--transfer-to", type=MODEL_NAMES, default=[], metavar="NAME[,NAME...]",
                   help="also report the top-1/top-5 accuracy of these models, not protected against, in Table 1")
    _output_options(e)
    _model_options(e, batch_size="images")
    e.set_defaults(run=command_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    # Pillow's own warnings ("Corrupt EXIF data", two lines naming no photo): load_photo says what matters per file.
    warnings.filterwarnings("ignore", module=r"PIL\.")
    machine_stdout = getattr(args, "json", False) or getattr(args, "report", None) == "-"
    if getattr(args, "json", False) and getattr(args, "report", None) == "-":
        parser.error("--json and --report - would both write to stdout; choose one")
    console = Console(args.verbosity, machine_stdout=machine_stdout)
    try:
        return args.run(args, console)
    except ScenePrivError as error:  # a user's problem, said in one line; a bug keeps its traceback
        console.error(str(error))
        return 1
    except KeyboardInterrupt:
        console.error("interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # `scenepriv classify ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
