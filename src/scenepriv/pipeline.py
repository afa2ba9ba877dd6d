"""The file pipeline: photos in, protected photos and report records out.

The command line, the web page (:mod:`scenepriv.serve`) and the cluster backend all protect files
through :func:`protect_files`, so they name outputs, batch, strip metadata, report and fail alike:

    pairs = output_pairs(find_images([Path("holiday")]), Path("protected"))
    for result in protect_files(pairs, [load_classifier("efficientnet-lite0")], Job()):
        print(result.source, result.error or result.record["success"])

A file that cannot be read, protected or written is one :class:`FileResult` with an ``error`` line
naming it; the others go on.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .settings import DEFAULT_STRENGTH, METHODS, PRESETS, STRENGTHS, ScenePrivError, Settings

if TYPE_CHECKING:
    from .images import JpegFormat

BATCH_PIXELS = 16_000_000  # the most pixels protected in one batch
SHARED_PIXELS = 4_000_000  # a batch of at most this many pixels is protected beside another, on a share of the cores
T = TypeVar("T")
SETTING_NAMES = ("eps", "max_iter", "threshold", "sigma", "iterations", "max_perturbation")


@dataclass(frozen=True)
class Job:
    """How to protect and save: the method and its settings, and the output's size, format and metadata."""

    method: str = "p-fgsm"
    settings: Settings = field(default_factory=lambda: resolve_settings()[1])
    strength: str = DEFAULT_STRENGTH  # the preset the settings came from, for the records
    seed: int | None = None
    size: str = "full"  # "full": the photo's own size; "model": the classifier's input size (the paper's)
    batch_size: int = 8
    format: str = "auto"  # "auto": JPEG for a photo that came in a lossy format, else PNG; or "png", "jpeg"
    quality: int | None = None  # JPEG quality; None: the photo's own (85-95), 90 for one that was not a JPEG
    keep_metadata: bool = False  # EXIF without location; a valid colour profile is always kept
    compare: Path | None = None  # also write the most changed crop, original | protected, under this folder
    # batches protected at once on a CPU, each on its share of the cores (None: 2 where there are 2 cores or more and
    # 2 photos or more; batches of more than SHARED_PIXELS always alone, on all of them)
    at_once: int | None = None

    @property
    def output_format(self) -> str:
        """``format``, where ``auto`` means PNG for a lossless strength (``low``: a JPEG's loss would show)."""
        preset = PRESETS.get(self.strength)
        return "png" if self.format == "auto" and preset is not None and preset.lossless else self.format


@dataclass
class FileResult:
    """One photo: saved with its report ``record`` (whose ``success`` says whether the goal was reached), or not
    saved, with an ``error`` line naming the file. ``warnings`` are lines about what was kept or dropped."""

    source: Path
    output: Path
    record: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def saved_as(job: Job, photo: Any, output: str | os.PathLike) -> JpegFormat | None:
    """How ``photo`` is saved: None for a PNG; for a JPEG, at ``job.quality`` or the photo's own quality within
    85-95 (so the file is about as large as it was; 90 for a photo that was not a JPEG), with the photo's own chroma
    subsampling (4:2:0 for one that was not a JPEG): a JPEG's own loss shows less than at a coarser one."""
    from .images import JpegFormat

    if Path(output).suffix.lower() != ".jpg":
        return None
    quality = job.quality or (90 if photo.jpeg_quality is None else min(95, max(85, photo.jpeg_quality)))
    return JpegFormat(quality, photo.jpeg_subsampling or "4:2:0")


def resolve_settings(method: str = "p-fgsm", size: str = "full", strength: str | None = None,
                     robust: bool = False, **given: Any) -> tuple[str, Settings]:
    """The strength preset's settings with those ``given`` (not None) winning: the presets are made for P-FGSM
    on full-size photos, so the paper's other methods and 224 px work keep the paper's settings unless a
    strength is named. A bound given (``max_perturbation``) replaces the preset's texture budget. Returns the
    strength's name and the settings; ValueError names a wrong value."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    strength = strength or ("paper" if size == "model" or method != "p-fgsm" else DEFAULT_STRENGTH)
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
    values = dict(STRENGTHS[strength])
    if given.get("max_perturbation") is not None:
        values = {k: v for k, v in values.items() if k not in ("texture_budget", "budget_growth", "tighten")}
    values.update({k: v for k, v in given.items() if v is not None})
    values["robust"] = values.get("robust", False) or robust
    settings = Settings(**values)
    METHODS[method].fixed_steps(settings.iterations)  # iterations=k where the method takes none: ValueError
    return strength, settings


# Lossy formats: a photo that came as one of these is saved as a JPEG with --format auto (the others as PNG).
LOSSY_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".heic", ".heif", ".avif", ".webp"}


def output_suffix(source: str | os.PathLike, format: str = "auto") -> str:
    """``.jpg`` or ``.png``: the format asked for, or with ``auto`` a JPEG for a photo that came in a lossy format
    (a file people can upload, no larger than they had) and a PNG for a lossless one."""
    if format not in ("auto", "png", "jpeg"):
        raise ValueError(f"unknown format {format!r}; choose auto, png or jpeg")
    lossy = format == "jpeg" or format == "auto" and Path(source).suffix.lower() in LOSSY_EXTENSIONS
    return ".jpg" if lossy else ".png"


def output_pairs(sources: Sequence[tuple[Path, Path]], outdir: Path, format: str = "auto") -> list[tuple[Path, Path]]:
    """(source, output) for each (source, name relative to its input) of :func:`scenepriv.images.find_images`:
    OUTDIR/<relative name><suffix of :func:`output_suffix`>, keeping the source's extension where two would take
    one name (``x.jpg.jpg``, ``x.jpeg.jpg``); a name still taken (the same name in two input folders) gets a
    number: ``x.jpg-2.jpg``."""
    names = [relative.as_posix() + output_suffix(source, format) for source, relative in sources]
    counts: dict[str, int] = {}
    for name in names:
        counts[name.casefold()] = counts.get(name.casefold(), 0) + 1
    pairs, used = [], set()
    for (source, relative), name in zip(sources, names, strict=True):
        suffix = output_suffix(source, format)
        stem = (relative.with_name(source.name) if counts[name.casefold()] > 1 else relative).as_posix()
        candidate, number = stem + suffix, 1
        while candidate.casefold() in used:  # casefold: also distinct on case-insensitive file systems
            number += 1
            candidate = f"{stem}-{number}{suffix}"
        used.add(candidate.casefold())
        pairs.append((source, outdir / candidate))
    return pairs


@dataclass
class Plan:
    """What a run will do: each (source, output) to protect, in order; the sources skipped because the report
    already has them; one line per input that cannot be used; photos in formats this installation cannot read."""

    pairs: list[tuple[Any, Any]]
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def plan(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, job: Job, *, recursive: bool = False,
         report: str | None = None, cluster: bool = False) -> Plan:
    """The photos of ``inputs`` and their outputs under ``output``, named alike for every way of running
    (:func:`output_pairs`). For a ``cluster``, inputs and output may be URIs of its file systems, and the photos
    already in ``report`` are left out (a run resumes where it stopped). ScenePrivError (one line) before any work
    where the run would replace photos (``output`` or the comparison folder is an input folder) or cannot write."""
    from .images import find_images, shown

    result = Plan([])
    uris = [str(name) for name in [*inputs, output] if cluster and "://" in str(name)]
    if uris:  # a cluster's file systems: listed by pyarrow (scenepriv.distributed)
        from .distributed import find_pairs

        result.pairs = find_pairs(inputs, output, recursive=recursive, problems=result.problems,
                                  format=job.output_format)
    else:
        sources = find_images([Path(name) for name in inputs], recursive=recursive, problems=result.problems,
                              skipped=result.unreadable)
        result.pairs = output_pairs(sources, Path(output), job.output_format)
    folders = {Path(name).resolve() for name in inputs if "://" not in str(name) and Path(name).is_dir()}
    if not uris and Path(output).resolve() in folders:
        raise ScenePrivError(f"-o {shown(output)} is an input folder; protected photos would replace the originals: "
                             "choose another folder")
    if job.compare is not None and Path(job.compare).resolve() in {
            Path(output).resolve(), *folders, *(Path(source).parent.resolve() for source, _ in result.pairs)}:
        raise ScenePrivError(f"--compare {shown(job.compare)} is the output or an input folder; its crops would "
                             "replace photos: choose another folder")
    if cluster:
        done = reported_sources(report)
        result.skipped = [str(source) for source, _ in result.pairs if str(source) in done]
        result.pairs = [(source, target) for source, target in result.pairs if str(source) not in done]
    if result.pairs and not uris:
        writable_folder(Path(output))
    return result


def reported_sources(report: str | os.PathLike | None) -> set[str]:
    """The ``file`` of every record in a JSON-lines report: the photos a resumed run skips. A line cut off by a
    killed run is ignored (its photo is protected again)."""
    if report is None or str(report) == "-" or not Path(report).is_file():
        return set()
    done = set()
    with open(report, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("file"), str):
                done.add(record["file"])
    return done


def writable_folder(folder: Path) -> None:
    """ScenePrivError, before any work, if ``folder`` cannot be created or written to."""
    from .images import shown

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ScenePrivError(f"cannot write to the output folder {shown(folder)}: {error.strerror or error}") from None


class Report:
    """One JSON line per photo, appended to a file (``"-"``: stdout). A failed write sets ``error`` (one line) and
    the run goes on without the report."""

    def __init__(self, name: str | None, inputs: Iterable[Path] = ()) -> None:
        from .images import image_extensions, shown

        self.stream, self.name, self.error = None, name, None
        if name is None:
            return
        if name == "-":
            self.stream = sys.stdout
            return
        path = Path(name)
        if path.resolve() in set(inputs) or path.suffix.lower() in image_extensions():
            raise ScenePrivError(f"--report {shown(path)} is a photo; name a .jsonl file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (closed in close())
            if self.stream.tell() > 0:  # a last line cut off (a run killed mid-write) must not swallow the next record
                self.stream.seek(self.stream.tell() - 1)
                if self.stream.read(1) != "\n":
                    self.stream.write("\n")
        except (OSError, UnicodeDecodeError) as error:
            raise ScenePrivError(f"cannot write the report {shown(path)}: {error}") from None

    def write(self, record: dict[str, Any]) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        except OSError as error:
            from .images import shown

            self.error = (f"{shown(self.name)}: cannot write the report ({error.strerror or error}); the photos are "
                          "still saved, without report records from here on")
            self.close()

    def close(self) -> None:
        if self.stream not in (None, sys.stdout):
            try:
                self.stream.close()
            except OSError:
                pass
        self.stream = None


def batch_groups(items: Iterable[T], size_of: Callable[[T], tuple[int, int] | None],
                 batch_size: int) -> Iterator[list[T]]:
    """Consecutive ``items`` of one size (height, width), at most ``batch_size`` and about :data:`BATCH_PIXELS`
    pixels in a group; an item without a size (a photo that cannot be used) alone. float32 results depend on a
    batch's composition, so everything that protects files (the cluster backend too) groups them this way."""
    batch: list[T] = []
    first: tuple[int, int] | None = None
    for item in items:
        size = size_of(item)
        if size is None or (batch and (len(batch) == batch_size or size != first
                                       or (len(batch) + 1) * size[0] * size[1] > BATCH_PIXELS)):
            if batch:
                yield batch
            batch = []
        if size is None:
            yield [item]
        else:
            first = size if not batch else first
            batch.append(item)
    if batch:
        yield batch


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error) or "allocate memory" in str(error)))


def protect_files(pairs: Sequence[tuple[Path, Path]], models: Sequence, job: Job, *,
                  report: Report | None = None,
                  progress: Callable[[list[Path], str, int], None] | None = None) -> Iterator[FileResult]:
    """Protect each (source, output) against ``models`` (one perturbation against all) and save it; yield one
    :class:`FileResult` per pair, in order, once its file is written (and its record appended to ``report``).

    Photos are decoded ahead in a background thread and written in another while the next batch is protected;
    consecutive photos of one size form a batch. On a CPU two batches of small photos are protected at once, each on
    half the cores (:attr:`Job.at_once`: a network's passes over a few small images use two cores poorly). A batch
    that runs out of memory is retried photo by photo. Closing the generator early (an interrupt) still writes and
    reports the files already being written; the batches still at work stop.
    ``progress(sources, stage, step)`` follows the work within a batch (see :func:`scenepriv.protect`), then
    ``("done", steps)``; two batches may be at work at once (:attr:`Job.at_once`), so it is called from their threads.
    """
    import torch

    from . import metrics
    from .attack import to_uint8
    from .images import ImageError, JpegFormat, jpeg_pixels, load_photo, most_changed_crop, prefetch, save_image, shown
    from .methods import protect
    from .transforms import resize_to_input

    inputs = {source.resolve() for source, _ in pairs}
    outdir = Path(os.path.commonpath([Path(output).parent for _, output in pairs])) if pairs else Path()
    model_name = "+".join(model.name for model in models)
    run = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report = report or Report(None)

    def decoded() -> Iterator[FileResult | tuple]:
        """Each photo's pixels (shrunk for ``size="model"``), or a FileResult saying why it cannot be used."""
        for source, output in pairs:
            try:
                if Path(output).resolve() in inputs:
                    raise ImageError(f"{shown(source)}: its output {shown(output)} would overwrite an input file; "
                                     "choose another output folder")
                photo = load_photo(source, torch.uint8)  # full-size photos wait in the queue: a quarter of floats
            except ImageError as error:
                yield FileResult(source, output, error=str(error))
                continue
            pixels = photo.pixels
            if job.size == "model":
                pixels = resize_to_input(pixels[None].float() / 255, models[0].input_size, models[0].resize)[0]
            yield photo, output, pixels

    def pixel_size(item) -> tuple[int, int] | None:
        return None if isinstance(item, FileResult) else tuple(item[2].shape[-2:])

    threads = torch.get_num_threads()
    at_once = job.at_once or (2 if len(pairs) > 1 and threads > 1 and models[0].device.type == "cpu" else 1)
    abandoned = threading.Event()  # set when the run stops early: the batches at work stop at their next step

    def protected(batch: list, threads: int) -> list:
        """(photo, output, original, 8-bit result, record) per photo, or a FileResult where it does not fit; in a
        thread of the pool, on ``threads`` cores (a photo's float results depend on how many)."""
        torch.set_num_threads(threads)
        sources = [photo.path for photo, _, _ in batch]

        def step(stage: str, step: int) -> None:
            if abandoned.is_set():
                raise _Abandoned
            if progress is not None:
                progress(sources, stage, step)
        try:
            result = protect(torch.stack([pixels for _, _, pixels in batch]), models, job.method, seed=job.seed,
                             settings=job.settings, saved_as=[saved_as(job, photo, output)
                                                              for photo, output, _ in batch], progress=step)
            step("done", int(result.iterations.max()))
            return list(zip(batch, to_uint8(result.images), result.records, result.butteraugli, strict=True))
        except Exception as error:  # noqa: BLE001 (only out-of-memory errors are handled; others are re-raised)
            if not is_out_of_memory(error):
                raise
        if len(batch) > 1:
            return [done for item in batch for done in protected([item], threads)]
        photo, output, pixels = batch[0]
        return [FileResult(photo.path, output, error=f"{shown(photo.path)}: not enough memory to protect this "
                                                     f"{pixels[0].numel() / 1e6:.0f}-megapixel photo; close other "
                                                     "programs, or use --size model")]

    def write(photo, output: Path, original, pixels, distance: float | None) -> tuple[list[str], float | None]:
        """In the writer thread: save the photo (and its comparison crop); measure how visible the change is on the
        file as saved, unless protect() did (``distance``). ``original``: the pixels protect() was given, brought to 8
        bits here, off the protecting thread."""
        jpeg = saved_as(job, photo, output) or JpegFormat(0)
        warnings = save_image(pixels, output, quality=jpeg.quality, subsampling=jpeg.subsampling,
                              icc_profile=photo.icc_profile, exif=photo.exif if job.keep_metadata else None)
        original = original.permute(1, 2, 0).numpy() if original.dtype == torch.uint8 else to_uint8(original[None])[0]
        if jpeg.quality:  # the file's own pixels: the perturbation and the JPEG's loss together
            pixels = jpeg_pixels(pixels, jpeg.quality, jpeg.subsampling)
        if job.compare is not None:
            crop = Path(job.compare) / Path(output).relative_to(outdir).with_suffix(".png")
            save_image(most_changed_crop(original, pixels), crop)
        return warnings, metrics.butteraugli(original, pixels) if distance is None else distance

    def result_of(future: Future, photo, output: Path, record: dict) -> FileResult:
        warnings = [f"{shown(photo.path)}: {warning}" for warning in photo.warnings]
        try:
            saved_warnings, distance = future.result()
        except ImageError as error:
            return FileResult(photo.path, output, error=f"{shown(photo.path)}: {error}", warnings=warnings)
        jpeg = saved_as(job, photo, output)
        record = {"file": str(photo.path), "output": str(output), "model": model_name, "run": run,
                  "strength": job.strength, "jpeg_quality": jpeg and jpeg.quality,
                  "jpeg_subsampling": jpeg and jpeg.subsampling, **record,
                  "butteraugli": distance}
        report.write(record)
        return FileResult(photo.path, output, record=record,
                          warnings=warnings + [f"{shown(photo.path)}: {w}" for w in saved_warnings])

    def ready(item) -> FileResult:
        return item if isinstance(item, FileResult) else result_of(*item)

    # In order: FileResults, Futures of the batches at work, and (future, photo, output, record) of the files handed
    # to the writer. Up to ``at_once`` batches are protected while the files of earlier ones are written and yielded.
    queue: list = []

    def hand_over(position: int) -> None:
        """Wait for the batch at work at ``position`` of the queue; hand its files to the writer in its place."""
        items = []
        for item in queue[position].result():
            if not isinstance(item, FileResult):
                (photo, output, original), pixels, record, distance = item
                item = writer.submit(write, photo, output, original, pixels, distance), photo, output, record
            items.append(item)
        queue[position:position + 1] = items

    def at_work() -> list[int]:
        return [position for position, item in enumerate(queue) if isinstance(item, Future)]

    with ThreadPoolExecutor(max_workers=1) as writer, ThreadPoolExecutor(max_workers=at_once) as pool:
        try:
            for batch in batch_groups(prefetch(decoded(), depth=job.batch_size), pixel_size, job.batch_size):
                if isinstance(batch[0], FileResult):
                    queue.extend(batch)
                else:
                    alone = sum(pixels[0].numel() for _, _, pixels in batch) > SHARED_PIXELS
                    while len(at_work()) >= at_once or (alone and at_work()):
                        wait([queue[position] for position in at_work()], return_when=FIRST_COMPLETED)
                        for position in reversed(at_work()):
                            if queue[position].done():
                                hand_over(position)
                    if alone or at_once == 1:  # here, on all the cores
                        queue.append(Future())
                        queue[-1].set_result(protected(batch, threads))
                    else:
                        queue.append(pool.submit(protected, batch, max(1, threads // at_once)))
                while queue and not isinstance(queue[0], Future):
                    yield ready(queue.pop(0))
            while queue:
                if isinstance(queue[0], Future):
                    hand_over(0)
                yield ready(queue.pop(0))
        except (KeyboardInterrupt, GeneratorExit) as stop:  # closed early (by the caller): the batches still at work
            abandoned.set()  # stop; those protected are saved and reported (yielded on an interrupt), then it stops
            for position in reversed(at_work()):
                if queue[position].done() and queue[position].exception() is None:
                    hand_over(position)
            finished = [ready(item) for item in queue if not isinstance(item, Future)]
            if isinstance(stop, KeyboardInterrupt):
                yield from finished
            raise
        except BaseException:
            abandoned.set()
            raise


class _Abandoned(Exception):
    """Raised in the batches at work when the run stops early (an interrupt, an error, the caller closing it)."""
