"""Protect a photo collection on a Ray cluster: Ray Data's batch-inference pattern around the file pipeline.

The driver lists the photos, names the outputs (:func:`scenepriv.pipeline.output_pairs` on the whole listing),
skips the photos its report already holds and groups the rest into the batches the local pipeline would form.
A pool of Ray actors, each holding the classifier(s) once, runs :func:`scenepriv.pipeline.protect_files` on
chunks of those batches; the driver appends the records to the report as chunks finish:

    from scenepriv.distributed import Cluster, protect_dataset
    run = protect_dataset("holiday/", "protected/", report="protected/report.jsonl", cluster=Cluster(workers=2))
    print(len(run.results), "protected or failed,", len(run.skipped), "already in the report")

Sources and outputs are local paths (on a file system every node sees) or URIs that ``pyarrow.fs`` reads and
writes (``s3://``, ``gs://``, ``hdfs://``): an actor fetches such a photo into a temporary folder, protects it
there and puts the output with one write. A photo that fails is a :class:`~scenepriv.pipeline.FileResult` with
an ``error``; an actor that dies is restarted by Ray and its chunk protected again (the same bytes with a seed;
files are moved into place whole, and the report, written by the driver alone, has each photo once).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from . import pipeline
from .images import ORIENTATION
from .pipeline import FileResult, Job, Report
from .settings import ScenePrivError
from .zoo import Models

CHUNKS_PER_WORKER = 4  # chunks per worker at least, so that the workers finish together
CHUNK_PHOTOS = 64  # photos in a chunk at most: a killed worker's chunk is protected again
ENVIRONMENT = ("SCENEPRIV_PLACES365_URL", "SCENEPRIV_CACHE_DIR")  # carried to the workers of a remote cluster


@dataclass(frozen=True)
class Cluster:
    """Where and how wide to run. ``address``: None or ``"auto"`` joins the cluster that ``RAY_ADDRESS`` or
    ``ray start`` names, else starts one on this machine; otherwise a Ray address (``host:6379``,
    ``ray://host:10001``). Without ``cpus_per_worker``, a CPU-only worker takes its share of the cluster's
    cores (at most one node's), a GPU worker one core. A Ray session already open in this process is used as is."""

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None
    progress: bool = False  # Ray Data's own progress bars (the command line draws its own)


@dataclass
class DatasetRun:
    """What :func:`protect_dataset` did: one result per photo protected (or failed) in this run, in the order
    they finished; the sources skipped because the report already had them; listing problems (one line each)."""

    results: list[FileResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --- where photos are: local paths, or URIs of pyarrow file systems ------------------------------------------------


def is_uri(name: str | os.PathLike) -> bool:
    return "://" in str(name)


@functools.lru_cache(maxsize=16)
def _filesystem(root: str):
    """The pyarrow file system of ``scheme://authority`` and its path there (``bucket`` for s3, ``/`` for hdfs)."""
    from pyarrow import fs

    return fs.FileSystem.from_uri(root + "/")


def _remote(uri: str) -> tuple[Any, str]:
    """(file system, path inside it) of a URI such as ``s3://bucket/photos/a.jpg``."""
    scheme, rest = uri.split("://", 1)
    authority, _, key = rest.partition("/")
    filesystem, base = _filesystem(f"{scheme}://{authority}")
    return filesystem, f"{base.rstrip('/')}/{key}"


class _Uri(str):
    """A URI with the ``name`` that :func:`scenepriv.pipeline.output_pairs` asks a source for."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]


def _list_uri(uri: str, recursive: bool, problems: list[str]) -> list[tuple[_Uri, PurePosixPath]]:
    """(source, relative stem) of the photos at ``uri``, as :func:`scenepriv.images.find_images` lists a folder."""
    from pyarrow import fs

    from .images import image_extensions

    filesystem, path = _remote(uri)
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.File:
            return [(_Uri(uri), PurePosixPath(PurePosixPath(path).stem))]
        if info.type != fs.FileType.Directory:
            problems.append(f"{uri}: no such file or folder")
            return []
        listed = filesystem.get_file_info(fs.FileSelector(path, recursive=recursive))
    except (OSError, ValueError) as error:
        problems.append(f"{uri}: cannot be listed ({error})")
        return []
    extensions, base = image_extensions(), uri.rstrip("/")
    photos = []
    for entry in listed:
        relative = PurePosixPath(entry.path).relative_to(path)
        if (entry.type == fs.FileType.File and relative.suffix.lower() in extensions
                and not any(part.startswith(".") for part in relative.parts)):
            photos.append((_Uri(f"{base}/{relative}"), relative.with_suffix("")))
    return sorted(photos)


def find_pairs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, *, recursive: bool = False,
               format: str = "auto", problems: list[str] | None = None) -> list[tuple[Any, Any]]:
    """(source, output) of every photo in ``inputs``, named as the local pipeline names them. Local inputs are
    listed by :func:`scenepriv.images.find_images` (so the pairs are the command line's); a URI by pyarrow.
    Sources and outputs are Paths, or URI strings. Each input that cannot be used is one line in ``problems``."""
    from .images import find_images

    problems = [] if problems is None else problems
    sources: list = []
    for name in inputs:
        sources += _list_uri(str(name), recursive, problems) if is_uri(name) else find_images(
            [Path(name)], recursive=recursive, problems=problems)
    if not is_uri(output):
        return [(str(source) if is_uri(source) else source, target)
                for source, target in pipeline.output_pairs(sources, Path(output), format)]
    root = str(output).rstrip("/")
    pairs = pipeline.output_pairs(sources, PurePosixPath("/"), format)  # names under the output's root
    return [(str(source) if is_uri(source) else source, f"{root}{target}") for source, target in pairs]


# --- the batches of the local pipeline -----------------------------------------------------------------------------


def _photo_size(source) -> tuple[int, int] | None:
    """(height, width) of the photo as the pipeline decodes it (EXIF orientation applied), from its header;
    None where the header cannot be read (the pipeline will report the photo alone)."""
    from PIL import Image

    try:
        if is_uri(source):  # buffered: some of Pillow's format probes read lines, which pyarrow's files cannot
            filesystem, path = _remote(str(source))
            opened = io.BufferedReader(filesystem.open_input_file(path))
        else:
            opened = open(source, "rb")  # noqa: SIM115 (closed below)
        with opened, Image.open(opened) as image:
            width, height = image.size
            turned = image.getexif().get(ORIENTATION) in (5, 6, 7, 8)  # turned by 90 degrees
    except Exception:  # noqa: BLE001 (any damage: the photo is decoded, and its error said, by the pipeline)
        return None
    return (width, height) if turned else (height, width)


def local_batches(pairs: Sequence[tuple[Any, Any]], job: Job) -> list[list[int]]:
    """The indices of ``pairs`` grouped as :func:`scenepriv.pipeline.protect_files` groups them: consecutive
    photos of one size, at most ``job.batch_size`` and about 16 megapixels; a photo that cannot be read alone.
    float32 results depend on a batch's composition (docs/cluster.md), so the cluster keeps these batches.
    Sizes come from the headers, read by 16 threads here (local files) or through pyarrow (URIs)."""
    with ThreadPoolExecutor(max_workers=16) as readers:
        sizes = list(readers.map(_photo_size, [source for source, _ in pairs]))
    if job.size == "model":  # every photo is shrunk to the model's input: only readability counts
        sizes = [None if size is None else (1, 1) for size in sizes]
    return list(pipeline.batch_groups(range(len(pairs)), sizes.__getitem__, job.batch_size))


def chunked(batches: list[list[int]], photos: int) -> list[list[int]]:
    """Consecutive batches joined into chunks of at least ``photos`` photos (at most :data:`CHUNK_PHOTOS`): one
    chunk is one call of a worker, where protect_files writes a batch while it protects the next. A chunk starts
    where a batch starts, so protect_files forms the same batches in it."""
    chunks: list[list[int]] = []
    for batch in batches:
        if chunks and len(chunks[-1]) < min(max(1, photos), CHUNK_PHOTOS):
            chunks[-1] += batch
        else:
            chunks.append(list(batch))
    return chunks


# --- the workers ---------------------------------------------------------------------------------------------------


def _fetch(source: str, folder: Path) -> Path:
    """A copy of a remote photo in ``folder``, under its own name (the decoders and messages use the suffix)."""
    filesystem, path = _remote(source)
    local = folder / PurePosixPath(path).name
    with filesystem.open_input_stream(path) as stream, open(local, "wb") as copy:
        shutil.copyfileobj(stream, copy, 1 << 20)
    return local


def _put(local: Path, output: str) -> None:
    """Write a protected photo to a remote output at once: one put on an object store; on a file system, a
    temporary name then a move, so no reader sees half a file."""
    filesystem, path = _remote(output)
    parent = str(PurePosixPath(path).parent)
    filesystem.create_dir(parent, recursive=True)
    atomic_put = filesystem.type_name not in ("local", "hdfs")
    target = path if atomic_put else f"{parent}/.scenepriv-{os.getpid()}-{PurePosixPath(path).name}.part"
    with filesystem.open_output_stream(target) as stream, open(local, "rb") as data:
        shutil.copyfileobj(data, stream, 1 << 20)
    if not atomic_put:
        filesystem.move(target, path)


class Protector:
    """A Ray Data worker (a callable class for ``map_batches``): loads the classifier(s) once, then protects one
    chunk of the local pipeline's batches per row with :func:`scenepriv.pipeline.protect_files`; one row out per
    photo. Each photo is saved under ``staging`` (a folder of this run beside the outputs) and moved into place
    once whole, so a worker killed mid-write leaves its half file there, never among the outputs."""

    def __init__(self, job: Job, models: Models, threads: int, staging: str | None,
                 exit_after_first_photo: str | None = None) -> None:
        import torch

        from .runtime import PHOTO_HEAP_BLOCKS, keep_freed_memory

        torch.set_num_threads(max(1, threads))
        keep_freed_memory(None if job.size == "model" else PHOTO_HEAP_BLOCKS)  # as the command line does
        self.job, self.staging, self.models, self.problem = job, staging, [], None
        try:
            self.models = models.load(job.size)
        except (ScenePrivError, OSError, ValueError, RuntimeError) as error:  # missing weights: each photo says so
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            self.problem = f"not protected: this worker cannot load {'+'.join(models.names)}: {reason}"
        self.exit_after_first_photo = exit_after_first_photo  # a test hook: see _maybe_exit

    def __call__(self, rows: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "record": [], "error": [], "warnings": []}
        for indices, sources, outputs in zip(rows["indices"], rows["sources"], rows["outputs"], strict=True):
            indices = [int(index) for index in indices]
            for index, (record, error, warnings) in zip(indices, self.protect(indices, list(sources),
                                                                              list(outputs)), strict=True):
                out["index"].append(index)
                out["record"].append(json.dumps(record) if record is not None else "")
                out["error"].append(error or "")
                out["warnings"].append(json.dumps(warnings))
        return out

    def protect(self, indices: list[int], sources: list[str],
                outputs: list[str]) -> list[tuple[dict | None, str | None, list[str]]]:
        """(record, error, warnings) per photo of one chunk, in order; never raises for a photo."""
        import torch

        if self.problem is not None:
            return [(None, f"{source}: {self.problem}", []) for source in sources]

        done: list[tuple[dict | None, str | None, list[str]] | None] = [None] * len(sources)
        with tempfile.TemporaryDirectory(prefix="scenepriv-") as scratch:
            pairs, slots, names = [], [], {}  # what protect_files sees, where its results go, the names given
            for slot, (index, source, output) in enumerate(zip(indices, sources, outputs, strict=True)):
                folder = Path(scratch, str(slot))
                local_source = Path(source)
                if is_uri(output):
                    local_output = folder / "out" / PurePosixPath(output).name
                else:
                    local_output = Path(self.staging, str(index), Path(output).name)
                names[str(local_output)] = output
                if is_uri(source):
                    try:
                        folder.mkdir(exist_ok=True)
                        local_source = _fetch(source, folder)
                    except (OSError, ValueError) as error:
                        done[slot] = (None, f"{source}: cannot be read ({error})", [])
                        continue
                    names[str(local_source)] = source
                pairs.append((local_source, local_output))
                slots.append(slot)
            finished = 0
            try:
                with torch.enable_grad():
                    for result in pipeline.protect_files(pairs, self.models, self.job):  # in the order of pairs
                        done[slots[finished]] = self._placed(result, names)
                        finished += 1
                        self._maybe_exit()
            except Exception as error:  # noqa: BLE001 (a bug or a lost device: these photos fail, not the job)
                reason = (f"{type(error).__name__}: {error}".splitlines() or [""])[0]
                for slot in slots[finished:]:
                    done[slot] = (None, f"{sources[slot]}: not protected ({reason})", [])
        return done

    @staticmethod
    def _placed(result: FileResult, names: dict[str, str]) -> tuple[dict | None, str | None, list[str]]:
        """The saved photo moved (local) or put (URI) to its output; (record, error, warnings) under the names
        the driver gave, not the staging or temporary ones."""

        def named(text: str) -> str:
            for local, name in names.items():
                text = text.replace(local, name)
            return text

        source, output = names.get(str(result.source), str(result.source)), names[str(result.output)]
        record = result.record
        if record is not None:
            try:
                if is_uri(output):
                    _put(Path(result.output), output)
                else:
                    Path(output).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(result.output, output)
            except (OSError, ValueError) as problem:
                return None, f"{source}: cannot write {output} ({problem})", []
            record = {**record, "file": source, "output": output}
        return record, named(result.error) if result.error else None, [named(w) for w in result.warnings]

    def _maybe_exit(self) -> None:
        """Test hook: the first worker to finish a photo dies (``os._exit``) once; the marker file says it did.
        Reachable only through :func:`protect_pairs`'s private ``_exit_after_first_photo``."""
        if self.exit_after_first_photo is None:
            return
        try:
            os.close(os.open(self.exit_after_first_photo, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(1)


# --- the driver ----------------------------------------------------------------------------------------------------


@contextmanager
def _ray_session(cluster: Cluster):
    """Ray for this run: a session already open in this process as is; else the cluster at ``address``, or for
    None/"auto" the running one (``RAY_ADDRESS``, ``ray start``) or a new one on this machine, left after the run.
    Yields whether the cluster was started here (then nothing can add nodes to it)."""
    import ray

    if ray.is_initialized():
        yield False
        return
    options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    started = False
    try:
        if cluster.address not in (None, "auto"):
            ray.init(address=cluster.address, **options)
        else:
            try:
                ray.init(address="auto", **options)
            except ConnectionError:  # none running: one on this machine
                ray.init(**options)
                started = True
    except (ConnectionError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ScenePrivError(f"cannot join the Ray cluster at {cluster.address}: {reason}") from None
    try:
        yield started
    finally:
        ray.shutdown()


def _check_fit(cluster: Cluster, cpus: float, started_here: bool) -> None:
    """ScenePrivError where no node of a cluster started here can hold one worker (Ray would wait forever);
    on another cluster a warning only, as an autoscaler may add such a node."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= cluster.gpus_per_worker for node in nodes):
        return
    gpus = cluster.gpus_per_worker
    need = f"a worker needs {cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
    if started_here:
        raise ScenePrivError(f"{need}, and this machine has {nodes[0].get('CPU', 0):g} CPUs and "
                             f"{nodes[0].get('GPU', 0):g} GPUs for Ray: lower --gpus-per-worker")
    logging.getLogger(__name__).warning(f"{need}, and no node of the cluster has them now: waiting for one (an "
                                        "autoscaler may add it; Ctrl-C to stop)")


def _cpus_per_worker(cluster: Cluster) -> float:
    import ray

    if cluster.cpus_per_worker is not None:
        return cluster.cpus_per_worker
    if cluster.gpus_per_worker > 0:
        return 1.0
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=1)
    return max(1.0, min(ray.cluster_resources().get("CPU", 1) // cluster.workers, largest))


def protect_pairs(pairs: Sequence[tuple[Any, Any]], job: Job, *, models: Models | None = None,
                  cluster: Cluster = Cluster(), report: Report | None = None,
                  _exit_after_first_photo: str | None = None) -> Iterator[FileResult]:
    """Protect each (source, output) on a Ray cluster; yield one :class:`FileResult` per pair as its chunk
    finishes (not in order), after appending its record to ``report`` (written here, on the driver, only).
    The batches are the local pipeline's, so with a seed every output equals the local pipeline's.
    ScenePrivError at once for a job the cluster does not do (``compare``)."""
    if job.compare is not None:
        raise ScenePrivError("--compare works on this machine only: run it without --ray on the photos to look at")
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ScenePrivError("the Ray backend needs Ray Data: pip install 'scenepriv[cluster]'") from None
    return _protected(list(pairs), job, models or Models(), cluster, report or Report(None), _exit_after_first_photo)


def _protected(pairs: list[tuple[Any, Any]], job: Job, models: Models, cluster: Cluster, report: Report,
               exit_after_first_photo: str | None) -> Iterator[FileResult]:
    if not pairs:
        return
    import ray.data

    from .images import shown

    pairs = [(str(source), str(output)) for source, output in pairs]
    inputs = {os.path.realpath(source) for source, _ in pairs if not is_uri(source)}
    run = datetime.now(timezone.utc).isoformat(timespec="seconds")
    folders = [os.path.dirname(os.path.abspath(output)) for _, output in pairs if not is_uri(output)]
    staging = os.path.join(os.path.commonpath(folders), f".scenepriv-ray-{uuid.uuid4().hex[:12]}") if folders else None
    failed, planned = [], []
    for index, (source, output) in enumerate(pairs):  # as the pipeline refuses it; its batches break there too
        if not is_uri(output) and os.path.realpath(output) in inputs:
            failed.append(FileResult(Path(source), Path(output), error=(
                f"{shown(source)}: its output {shown(output)} would overwrite an input file; choose another "
                "output folder")))
        else:
            planned.append(index)
    for result in failed:
        yield result
    kept = [pairs[index] for index in planned]
    batches = [[planned[i] for i in batch] for batch in local_batches(kept, job)]
    chunks = chunked(batches, math.ceil(len(kept) / (CHUNKS_PER_WORKER * cluster.workers)))

    def result_of(row: dict) -> FileResult:
        source, output = pairs[row["index"]]
        record = json.loads(row["record"]) if row["record"] else None
        if record is not None:
            record["run"] = run  # one run stamp for the whole job, as locally
        return FileResult(source if is_uri(source) else Path(source), output if is_uri(output) else Path(output),
                          record=record, error=row["error"] or None, warnings=json.loads(row["warnings"]))

    with _ray_session(cluster) as started_here:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = cluster.progress
        context.execution_options.preserve_order = False
        logging.getLogger("ray.data").setLevel(logging.INFO if cluster.progress else logging.ERROR)  # our own lines
        cpus = _cpus_per_worker(cluster)
        _check_fit(cluster, cpus, started_here)
        environment = {name: os.environ[name] for name in ENVIRONMENT if name in os.environ}
        dataset = ray.data.from_items(
            [{"indices": chunk, "sources": [pairs[i][0] for i in chunk], "outputs": [pairs[i][1] for i in chunk]}
             for chunk in chunks], override_num_blocks=len(chunks))
        protected = dataset.map_batches(
            Protector, batch_size=1, num_cpus=cpus, num_gpus=cluster.gpus_per_worker or None,
            compute=ray.data.ActorPoolStrategy(size=cluster.workers, max_tasks_in_flight_per_actor=1),
            fn_constructor_kwargs={"job": job, "models": models, "threads": int(cpus), "staging": staging,
                                   "exit_after_first_photo": exit_after_first_photo},
            runtime_env={"env_vars": environment} if environment else None)
        try:
            for row in protected.iter_rows():
                result = result_of(row)
                if result.record is not None:
                    report.write(result.record)
                yield result
        finally:  # what killed workers left half written
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)


def protect_dataset(source: str | os.PathLike | Sequence[str | os.PathLike], destination: str | os.PathLike, *,
                    job: Job | None = None, models: Models | None = None, cluster: Cluster = Cluster(progress=True),
                    report: str | None = None, recursive: bool = False) -> DatasetRun:
    """Protect every photo of ``source`` (folders, files or URIs) into ``destination`` on a Ray cluster; append
    a record per photo to ``report`` (a local JSON-lines file) and skip the photos it already has (resumable).
    Raises ScenePrivError (one line) where the output folder or report cannot be written or Ray not reached."""
    job = job or Job()
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    planned = pipeline.plan(sources, destination, job, recursive=recursive, report=report, cluster=True)
    log = Report(report, {Path(s).resolve() for s, _ in planned.pairs if not is_uri(s)})
    try:
        results = list(protect_pairs(planned.pairs, job, models=models, cluster=cluster, report=log))
    finally:
        log.close()
    return DatasetRun(results, planned.skipped, planned.problems)
