"""What the commands do with their parsed options: find the photos, call the library (:mod:`scenepriv.pipeline`,
:mod:`scenepriv.verify`, :mod:`scenepriv.evaluate`) and show what happened. PyTorch and the image libraries are
imported inside the commands, so that ``--help`` and ``models`` answer at once."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from .settings import PRESETS, RESAMPLERS, ScenePrivError
from .zoo import DEFAULT_MODEL, MODELS, places365

INTERRUPTED = 130


# --- output: messages, the progress bar, machine-readable output ---------------------------------------------------


class Console:
    """Where each kind of line goes. Errors and warnings: stderr, always. Per-photo lines and summaries: stdout,
    or stderr when stdout carries JSON (``--json``, ``--report -``); none with ``--quiet``. Details: ``--verbose``."""

    def __init__(self, verbosity: int = 0, machine_stdout: bool = False) -> None:
        self.verbosity = verbosity
        self.stream = sys.stderr if machine_stdout else sys.stdout
        self.progress = None  # a tqdm bar, whose line is kept below the messages
        self.step_bars: dict[str, tuple] = {}  # more bars: the steps of each batch at work, and its line
        self.lock = threading.Lock()

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

    def steps(self, sources: list, stage: str, step: int) -> None:
        """Bars below the photos' one: the steps of each batch at work (a large photo takes a while), one line each
        (two batches of small photos are protected at once); a batch's bar goes when it is ``"done"``."""
        from tqdm import tqdm

        batch = str(sources[0])  # a batch's first photo: two at work may share a file name, never a path
        with self.lock:  # called from the threads that protect
            if stage == "done":
                if batch in self.step_bars:
                    self.step_bars.pop(batch)[0].close()
                return
            if batch not in self.step_bars:
                name = _shown(Path(sources[0]).name) + (f" and {len(sources) - 1} more" if len(sources) > 1 else "")
                line = min(set(range(1, len(self.step_bars) + 2)) - {line for _, line in self.step_bars.values()})
                self.step_bars[batch] = tqdm(desc=name, unit="step", position=line, leave=False, file=sys.stderr,
                                             disable=None if self.verbosity >= 0 else True), line
            bar = self.step_bars[batch][0]
            bar.set_postfix_str("scaling the change down" if stage == "shrink" else "", refresh=False)
            bar.update(step - bar.n)

    def close_steps(self) -> None:
        with self.lock:
            for bar, _ in self.step_bars.values():
                bar.close()
            self.step_bars.clear()


def _shown(path) -> str:
    from .images import shown

    return shown(path)


# --- shared steps ---------------------------------------------------------------------------------------------------


def _models(args: argparse.Namespace, names: list[str] | None = None):
    """The models of ``--model`` (or ``names``) and the options given for them (:class:`scenepriv.zoo.Models`);
    ``--mirror`` is where Places365 weights are downloaded from."""
    from .zoo import Models

    if args.mirror:
        os.environ[places365.URL_ENV] = args.mirror  # also carried to the workers of a cluster
    given = [args.model] if isinstance(args.model, str) else list(args.model)  # --weights: the first given's
    return Models(tuple(names or given), None if names else args.weights, args.device, args.resize, args.precision,
                  args.fold_batch_norm)


def _classifier(args: argparse.Namespace, name: str | None = None):
    """The classifier of ``--model`` (or ``name``): at the model's size for ``evaluate`` and ``--size model``, else
    for full-size photos (the resize of :func:`scenepriv.zoo.resize_policy`)."""
    size = "model" if args.command == "evaluate" else getattr(args, "size", "full")
    return _models(args, [name] if name else None).load(size)[0]


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


# --- protect --------------------------------------------------------------------------------------------------------


def _not_protected_advice(record: dict) -> str:
    goal = record["goal"]
    if len(goal["classes"]) > 1 or not goal["toward"]:
        why = f"top-1 still {record['final_top5'][0]['name']} after {record['iterations']} iterations"
    else:
        target = goal["classes"][0]
        reached = next((e["probability"] for e in record["final_top5"] if e["index"] == target["index"]), 0.0)
        why = f"p({target['name']}) = {reached:.2f} after {record['iterations']} iterations"
    return f"saved but not protected: {why}; re-run it with a larger --max-iter or --eps"


def _show_result(console: Console, result, failures: list[str]) -> None:
    for warning in result.warnings:
        console.warn(warning)
    if result.error:
        failures.append(result.error)
        console.error(result.error)
        return
    record = result.record
    before, after, distance = record["clean_top5"][0], record["final_top5"][0], record["butteraugli"]
    console.info(f"{_shown(result.source)} -> {_shown(result.output)}: {before['name']} ({before['probability']:.2f})"
                 f" -> {after['name']} ({after['probability']:.2f}), {record['iterations']} iterations, "
                 f"PSNR {record['psnr'] or float('inf'):.1f} dB"
                 + ("" if distance is None else f", butteraugli {distance:.2f}"))
    if not record["success"]:
        console.error(f"{_shown(result.source)}: {_not_protected_advice(record)}")


def command_protect(args: argparse.Namespace, console: Console) -> int:
    from . import pipeline
    from .runtime import PHOTO_HEAP_BLOCKS, keep_freed_memory

    keep_freed_memory(None if args.size == "model" else PHOTO_HEAP_BLOCKS)  # fewer page faults (docs/speed.md)
    failures: list[str] = []
    if args.ray is None and (args.workers is not None or args.gpus_per_worker is not None):
        raise ScenePrivError("--workers and --gpus-per-worker are for --ray")
    try:
        strength, settings = pipeline.resolve_settings(
            args.method, args.size, args.strength, args.robust, **{k: getattr(args, k) for k in pipeline.SETTING_NAMES})
    except ValueError as error:
        raise ScenePrivError(str(error)) from None
    job = pipeline.Job(method=args.method, settings=settings, strength=strength, seed=args.seed, size=args.size,
                       batch_size=args.batch_size, format=args.format, quality=args.quality,
                       keep_metadata=args.keep_metadata, compare=Path(args.compare) if args.compare else None)
    inputs = [str(name) for name in _inputs(args.inputs)]
    planned = pipeline.plan(inputs, args.output, job, recursive=args.recursive, report=args.report,
                            cluster=args.ray is not None)
    for problem in planned.problems:
        console.error(problem)
    for warning in planned.unreadable:
        console.warn(warning)
    failures += planned.problems
    if not planned.pairs and not planned.skipped:
        raise ScenePrivError("no photos found in the inputs" + (" that could be read" if failures else ""))
    if planned.skipped:
        console.info(f"{len(planned.skipped)} photos already in {_shown(args.report)}: skipped")
    pairs = planned.pairs
    report = pipeline.Report(args.report, {Path(source).resolve() for source, _ in pairs if "://" not in str(source)})
    records: list[dict] = []
    start = time.perf_counter()
    interrupted = False
    if args.ray is not None:  # the same pairs and job on a Ray cluster, whose workers load the models
        from . import distributed

        results = distributed.protect_pairs(pairs, job, report=report, models=_models(args),
                                            cluster=distributed.Cluster(args.ray, args.workers or 1,
                                                                        args.gpus_per_worker or 0))
    else:
        models = _models(args).load(args.size)
        args.device = models[0].device.type  # as resolved, for the summary
        console.detail(f"{'+'.join(args.model)} on {args.device}, precision {args.precision}, resize "
                       f"{models[0].resize}; {args.method} with {settings}")
        results = pipeline.protect_files(pairs, models, job, report=report, progress=console.steps)
    with console.bar(len(pairs), "photo") as progress:
        try:
            for result in results:
                _show_result(console, result, failures)
                records += [result.record] if result.record else []
                if report.error and report.error not in failures:
                    failures.append(report.error)
                    console.error(report.error)
                progress.update(1)
        except KeyboardInterrupt:
            interrupted = True
            results.close()  # the files being written are saved and reported
        progress.update(len(pairs) - progress.n)
        console.close_steps()
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
        ("time", f"{elapsed:.1f} s ({args.method}, {'+'.join(args.model)}, {args.device})"),
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
        raise ScenePrivError(f"evaluate: {error}") from None
    try:
        rows = evaluate.select_rows(args.methods)
        dataset = evaluate.load_dataset(Path(args.dataset), MODELS[args.model].labels(),
                                        private_classes=args.private_classes, limit=args.limit)
        classifier = _classifier(args)
        unseen = [_classifier(args, name) for name in args.transfer_to if name != args.model]
        failures = evaluate.evaluate(dataset, classifier, rows, Path(args.output), seed=args.seed,
                                     batch_size=args.batch_size, save_images=args.save_images, transfer_to=unseen,
                                     progress=False if console.verbosity < 0 else None)
    except evaluate.EvaluationError as error:
        raise ScenePrivError(f"{error}") from None
    output = Path(args.output)
    console.info((output / "table1.md").read_text(encoding="utf-8"))
    console.info((output / "table2.md").read_text(encoding="utf-8"))
    console.info(f"results, tables and figures in {output}/ (summary.md)")
    return 1 if failures else 0


# --- verify ---------------------------------------------------------------------------------------------------------


def command_verify(args: argparse.Namespace, console: Console) -> int:
    from . import verify

    failures: list[str] = []
    sources = _find(args, args.files, console, failures)
    if not sources:
        raise ScenePrivError("no protected photos found in the inputs")
    judges = [_classifier(args), *(_classifier(args, name) for name in args.models if name != args.model)]
    preset = PRESETS[args.strength]
    own = judges[0].resize if judges[0].resize in RESAMPLERS else "bilinear-antialias"
    chosen = args.jpeg is not None or args.scale is not None or args.resamplers
    args.jpeg = list(preset.jpeg) if args.jpeg is None else args.jpeg
    args.scale = list(preset.scales) if args.scale is None else args.scale
    args.resamplers = args.resamplers or (list(RESAMPLERS) if preset.all_resamplers else [own])
    all_checks = verify.checks(args.jpeg, args.scale, args.resamplers)
    console.info(("checking" if chosen else f"checking what {args.strength} promises:") + " the file as saved"
                 + (f" and after JPEG {', '.join(map(str, args.jpeg))}" if args.jpeg else "")
                 + f" at scale {', '.join(f'{s:g}' for s in args.scale)}, through {', '.join(args.resamplers)}"
                 + " (--strength, --jpeg, --scale, --resamplers check others)")
    results = []
    with console.bar(len(sources), "photo") as progress:
        for _, verdicts, error in verify.verify_files(sources, judges, all_checks,
                                                      Path(args.original) if args.original else None):
            progress.update(1)
            if error:
                console.error(error)
                failures.append(error)
            results += verdicts
    console.progress = None
    broken_files = [r for r in results if verify.failed_checks(r)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        verb = "hold" if args.original else "keep the target"
        for judge in judges:
            on = f" on {judge.name}" if len(judges) > 1 else ""
            verdicts = [r for r in results if r["model"] == judge.name]
            for result in verdicts:
                passed = len(result["checks"]) - len(verify.failed_checks(result))
                console.info(f"{_shown(result['file'])}: {passed}/{len(result['checks'])} checks {verb}{on} "
                             f"({result['target']})")
            if verdicts:
                title = f"share of files {'holding' if args.original else 'keeping the target'}{on}"
                console.info("\n" + "\n".join(verify.share_table(verdicts, args.jpeg, args.scale, args.resamplers,
                                                                 title)) + "\n")
    for result in broken_files:
        broken = verify.failed_checks(result)
        console.error(f"{_shown(result['file'])}: {len(broken)} of {len(result['checks'])} checks fail"
                      + (f" on {result['model']}" if len(judges) > 1 else "") + f" ({', '.join(broken)})")
    if broken_files:
        console.info(f"\n{len(broken_files)} of {len(results)} checked files do not hold under every check: protect "
                     "their originals again (each run draws another target), with --strength high for harsher "
                     "re-encoding or against the other models with --model a,b; or share them at a higher quality")
    return 1 if failures or broken_files else 0


# --- serve ----------------------------------------------------------------------------------------------------------


def command_serve(args: argparse.Namespace, console: Console) -> int:
    """The web page (:mod:`scenepriv.serve`, imported here: --help needs neither FastAPI nor PyTorch; without the
    serve extra, one line says how to install it): the models protected against are loaded now; the other Lite
    models installed are checked on, each loaded when first used."""
    from functools import partial

    from . import serve

    serve.require_extra()  # before the models load: FastAPI and uvicorn come with the serve extra
    models = _models(args).load("full")
    others = {name: partial(_classifier, args, name) for name in serve.other_model_names(args.model)}
    return serve.run(models, other_models=others, host=args.host, port=args.port, strength=args.strength,
                     max_upload_mb=args.max_upload_mb, say=console.info, warn=console.warn)
