"""The web page of ``scenepriv serve``: photos dropped in a browser, protected through :mod:`scenepriv.pipeline`.

A job is the photos of one upload, saved into a folder of its own under one temporary folder of the server. One
worker thread protects the jobs in turn with :func:`scenepriv.pipeline.protect_files` (one model in memory; each
browser tab follows its own job), then checks each photo with :func:`scenepriv.verify.judge` and cuts the most
changed region, before and after, for the page's slider. A job's photos are deleted when its zip (or its last
photo) is downloaded, when it expires, and when the server stops. Nothing is sent anywhere: the page loads no
resource from another site, and its Content-Security-Policy forbids it to.
"""

from __future__ import annotations

import inspect
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
import unicodedata
import zipfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import pipeline, verify
from ..attack import to_uint8
from ..images import ImageError, image_extensions, load_photo, most_changed_box, save_image, shown
from ..settings import PRESETS, RESAMPLERS, STRENGTHS

STATIC = Path(__file__).resolve().parent / "static"
# The photo formats the page takes (one Pillow cannot open here, such as HEIC without pillow-heif, is left out).
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".heic": "HEIC", ".heif": "HEIC", ".webp": "WebP"}
# What the page checks: the file as saved and after real JPEG re-encoding at 75 and 50, at full and half size, each
# through the resampler of the model protected against (scenepriv verify offers every combination).
CHECK_QUALITIES, CHECK_SCALES = [75, 50], [1.0, 0.5]
CROP_SIZE = 384  # the slider's region (images.most_changed_box, as `scenepriv protect --compare` finds it)
HEADERS = {  # the page may load and contact nothing but this server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REQUEST_HEADER = "X-Scenepriv"  # asked of requests that change something: another site's form cannot send it


ModelSource = Sequence[Any] | Callable[[], Sequence[Any]]


@dataclass
class Entry:
    """One uploaded file of a job, and what became of it."""

    index: int
    name: str  # the uploaded name, made safe; also the name of the saved upload
    source: Path | None  # the saved upload; None when it was refused
    output: Path | None = None
    state: str = "waiting"  # waiting, protecting, checking, done, failed
    step: int = 0  # while protecting: the steps taken
    shrinking: bool = False  # while protecting: the change is being scaled down, the last stage
    message: str | None = None
    result: dict[str, Any] | None = None
    size: int | None = None  # bytes uploaded
    downloaded: bool = False


@dataclass
class WebJob:
    id: str
    folder: Path
    strength: str
    entries: list[Entry]
    touched: float = field(default_factory=time.monotonic)
    state: str = "waiting"  # waiting, running, done
    finished: float | None = None
    files_removed: bool = False  # the folder is gone (downloaded or expired); the results stay on the page


def safe_name(name: str, fallback: str) -> str:
    """A file name from a browser made harmless: no folders, no leading dots, no control or shell characters,
    at most 100 characters; ``fallback`` when nothing is left."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = re.sub(r"[^\w.\- ]", "_", name).strip(" .")
    stem, dot, suffix = name.rpartition(".")
    if dot and len(suffix) <= 10:
        name = f"{stem[:90].rstrip(' .')}.{suffix}" if stem.rstrip(" .") else f"{fallback}.{suffix}"
    return name[:100] or fallback


def _check_label(check: verify.Check) -> str:
    jpeg = "as saved" if check.quality is None else f"JPEG {check.quality}"
    return f"{jpeg}, {'full size' if check.scale == 1 else f'x{check.scale:g}'}"


class _TooLarge(Exception):
    pass


class Service:
    """The jobs, the worker that protects them in order, and the sweep that deletes expired ones."""

    def __init__(self, models: ModelSource, other_models: Mapping[str, Callable[[], Any]], *, strength: str,
                 max_upload_mb: float, max_photos: int, expiry_s: float, seed: int | None) -> None:
        if strength not in STRENGTHS:
            raise ValueError(f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
        self._models_source = models
        self.models: list | None = None if callable(models) else list(models)
        self.other_models = dict(other_models)
        self.loaded_others: dict[str, Any] = {}
        self.strength, self.max_upload_mb, self.max_photos = strength, max_upload_mb, max_photos
        self.expiry_s, self.seed = expiry_s, seed
        self.formats = {ext: kind for ext, kind in FORMATS.items() if ext in image_extensions()}
        self.root = Path(tempfile.mkdtemp(prefix="scenepriv-serve-"))  # mode 0700: this user's only
        self.jobs: dict[str, WebJob] = {}
        self.pending: list[str] = []  # ids of the jobs not finished, in order
        self.lock = threading.Lock()
        self.queue: Queue[str | None] = Queue()
        self.stopping = threading.Event()
        self.worker = threading.Thread(target=self._work, name="scenepriv-worker", daemon=True)
        self.sweeper = threading.Thread(target=self._sweep_every, args=(min(60.0, max(1.0, expiry_s / 4)),),
                                        name="scenepriv-sweep", daemon=True)
        self.worker.start()
        self.sweeper.start()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    # --- jobs in, views out -----------------------------------------------------------------------------------------

    def add_job(self, strength: str, uploads: list[tuple[str, Callable[[Path], int]]]) -> tuple[WebJob | None, list]:
        """A job of the ``uploads`` (name, a function saving the file to a path and returning its size): each is
        type-checked (extension, then decoded with load_photo); one refused is a failed entry with its message.
        Returns (job, entries), job None (and its folder deleted) when no file can be protected."""
        if strength not in STRENGTHS:
            raise HTTPException(400, f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
        job_id = secrets.token_urlsafe(16)
        folder = self.root / job_id
        (folder / "uploads").mkdir(parents=True)
        entries, taken = [], set()
        for index, (given, save) in enumerate(uploads):
            name = safe_name(given, f"photo-{index + 1}")
            stem, dot, suffix = name.rpartition(".")
            candidate, number = name, 1
            while candidate.casefold() in taken:
                number += 1
                candidate = f"{stem}-{number}{dot}{suffix}" if dot else f"{name}-{number}"
            taken.add(candidate.casefold())
            entry = Entry(index, candidate, None)
            entries.append(entry)
            extension = Path(candidate).suffix.lower()
            if extension not in self.formats:
                entry.state = "failed"
                kinds = ", ".join(dict.fromkeys(self.formats.values()))
                entry.message = f"{candidate}: not a photo this page takes ({kinds} only)"
                continue
            path = folder / "uploads" / candidate
            try:
                size = save(path)
            except _TooLarge:
                path.unlink(missing_ok=True)
                entry.state = "failed"
                entry.message = (f"{candidate}: larger than the {self.max_upload_mb:g} MB a photo may have here "
                                 "(scenepriv serve --max-upload-mb)")
                continue
            try:
                load_photo(path)
            except ImageError as error:
                path.unlink(missing_ok=True)
                entry.state = "failed"
                entry.message = str(error).replace(shown(path), candidate)
                continue
            entry.source, entry.size = path, size
        if not any(entry.source for entry in entries):
            shutil.rmtree(folder, ignore_errors=True)
            return None, entries
        job = WebJob(job_id, folder, strength, entries)
        with self.lock:
            self.jobs[job_id] = job
            self.pending.append(job_id)
        self.queue.put(job_id)
        return job, entries

    def job(self, job_id: str) -> WebJob:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise HTTPException(404, "no such job: it has expired, or the server was restarted")
            job.touched = time.monotonic()
            return job

    def view(self, job: WebJob) -> dict[str, Any]:
        """The job as the page shows it."""
        with self.lock:
            ahead = self.pending.index(job.id) if job.id in self.pending and job.state == "waiting" else 0
            files = []
            for entry in job.entries:
                available = entry.state == "done" and not job.files_removed
                files.append({"index": entry.index, "name": entry.name, "state": entry.state, "step": entry.step,
                              "shrinking": entry.shrinking,
                              "message": entry.message, "size": entry.size, "result": entry.result,
                              "output_name": entry.output.name if entry.output and entry.state == "done" else None,
                              "download": f"/api/jobs/{job.id}/files/{entry.index}" if available else None,
                              "downloaded": entry.downloaded})
            done = sum(entry.state in ("done", "failed") for entry in job.entries)
            expires_in = None
            if job.finished is not None:
                expires_in = max(0, round(job.finished + self.expiry_s - time.monotonic()))
            protected = [entry for entry in job.entries if entry.state == "done"]
            return {"id": job.id, "state": job.state, "strength": job.strength, "ahead": ahead, "done": done,
                    "total": len(job.entries), "files": files, "files_removed": job.files_removed,
                    "zip": f"/api/jobs/{job.id}/zip" if job.state == "done" and protected and not job.files_removed
                    else None, "expires_in": expires_in}

    def config(self) -> dict[str, Any]:
        return {"strengths": [{"name": name, "help": PRESETS[name].promise} for name in STRENGTHS],
                "strength": self.strength, "max_upload_mb": self.max_upload_mb, "max_photos": self.max_photos,
                "formats": sorted(self.formats), "expiry_minutes": round(self.expiry_s / 60),
                "models": [model.name for model in self.models or []], "other_models": list(self.other_models),
                "checks": [_check_label(check) for check in verify.checks(CHECK_QUALITIES, CHECK_SCALES, ["area"])]}

    # --- the worker -------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job_id = self.queue.get()
            if job_id is None:
                return
            with self.lock:
                job = self.jobs.get(job_id)
                if job is None or job.files_removed:
                    continue
                job.state = "running"
            try:
                self._run(job)
            except Exception as error:  # a bug: its traceback on the server's console, one line on the page
                traceback.print_exc()
                with self.lock:
                    for entry in job.entries:
                        if entry.state not in ("done", "failed"):
                            entry.state, entry.message = "failed", f"{entry.name}: internal error ({error})"
            finally:
                with self.lock:
                    job.state, job.finished = "done", time.monotonic()
                    if job.id in self.pending:
                        self.pending.remove(job.id)
                    protected = [entry for entry in job.entries if entry.state == "done"]
                    downloaded = bool(protected) and all(entry.downloaded for entry in protected)
                if job.files_removed or downloaded:  # deleted while it ran (files written since go too)
                    self.remove_files(job)

    def _loaded_models(self) -> list:
        if self.models is None:
            self.models = list(self._models_source())  # type: ignore[operator]
        return self.models

    def _judges(self) -> list:
        """The models protected against, then the others, each loaded on first use; one that cannot be loaded is
        left out (and said on the server's console)."""
        for name, load in self.other_models.items():
            if name not in self.loaded_others:
                try:
                    self.loaded_others[name] = load()
                except (Exception, SystemExit) as error:  # a check on another model is a bonus, not the job
                    print(f"warning: scenepriv serve: model {name} left out of the checks: {error}", flush=True)
                    self.loaded_others[name] = None
        protected_against = self._loaded_models()
        names = {model.name for model in protected_against}
        return protected_against + [m for m in self.loaded_others.values() if m is not None and m.name not in names]

    def _run(self, job: WebJob) -> None:
        entries = [entry for entry in job.entries if entry.source is not None]
        pairs = pipeline.output_pairs([(entry.source, Path(entry.source.stem)) for entry in entries],
                                      job.folder / "protected")
        _, settings = pipeline.resolve_settings(strength=job.strength)
        work = pipeline.Job(settings=settings, strength=job.strength, seed=self.seed, batch_size=1)
        models = self._loaded_models()
        with self.lock:
            entries[0].state = "protecting"
        working = {entry.source: entry for entry in entries}

        def progress(sources: list[Path], stage: str, step: int) -> None:
            with self.lock:
                for source in sources:
                    working[source].step, working[source].shrinking = step, stage == "shrink"

        results = pipeline.protect_files(pairs, models, work, progress=progress)
        for position, result in enumerate(results):
            entry = entries[position]
            with self.lock:
                removed = job.files_removed
                entry.output = result.output
                entry.state = "failed" if result.error else "checking"
                entry.message = self._plain(result.error, entry) if result.error else None
            if removed:
                results.close()
                return
            if not result.error:
                try:
                    outcome = self._outcome(job, entry, result)
                except (ImageError, OSError):
                    if job.files_removed:  # deleted from the page while it was checked
                        results.close()
                        return
                    raise
                with self.lock:
                    entry.result, entry.state = outcome, "done"
            with self.lock:
                if position + 1 < len(entries):
                    entries[position + 1].state = "protecting"

    @staticmethod
    def _plain(message: str, entry: Entry) -> str:
        """A pipeline line with the temporary paths replaced by the uploaded name."""
        for path in (entry.source, entry.output):
            if path is not None:
                message = message.replace(shown(path), entry.name)
        return message

    def _outcome(self, job: WebJob, entry: Entry, result: pipeline.FileResult) -> dict[str, Any]:
        """What the page shows of a protected photo: top-1 before and after, the checks on every judge, and the
        most changed region of the original and the protected photo, saved for the slider."""
        record = result.record
        original, protected = load_photo(entry.source).pixels, load_photo(result.output).pixels
        resampler = self._loaded_models()[0].resize
        checks = verify.checks(CHECK_QUALITIES, CHECK_SCALES,
                               [resampler if resampler in RESAMPLERS else "bilinear-antialias"])
        verdicts = []
        for judge in self._judges():
            verdict = verify.judge(judge, protected, original, checks)
            verdicts.append({"model": verdict["model"], "checks": [
                {"check": _check_label(check), "holds": row["holds"], "top1": row["top1"],
                 "original_top1": row["original_top1"]}
                for check, row in zip(checks, verdict["checks"], strict=True)]})
        before, after = to_uint8(original[None])[0], to_uint8(protected[None])[0]
        rows, columns = most_changed_box(before, after, CROP_SIZE)
        crops = job.folder / "crops"
        save_image(before[rows, columns], crops / f"{entry.index}-before.png")
        save_image(after[rows, columns], crops / f"{entry.index}-after.png")
        held = [check["holds"] for verdict in verdicts for check in verdict["checks"]]
        return {
            "before": record["clean_top5"][0], "after": record["final_top5"][0],
            "success": record["success"], "top1_changed": record["top1_changed"], "iterations": record["iterations"],
            "psnr": record["psnr"], "ssim": record["ssim"], "butteraugli": record["butteraugli"],
            "size": [int(original.shape[2]), int(original.shape[1])],
            "crop": {"before": f"/api/jobs/{job.id}/files/{entry.index}/crop/before",
                     "after": f"/api/jobs/{job.id}/files/{entry.index}/crop/after",
                     "left": columns.start, "top": rows.start, "width": columns.stop - columns.start,
                     "height": rows.stop - rows.start},
            "checks": verdicts, "holds": sum(held), "checked": len(held),
            "warnings": [self._plain(warning, entry) for warning in result.warnings],
        }

    # --- downloads and deletion -------------------------------------------------------------------------------------

    def protected_file(self, job: WebJob, index: int) -> Entry:
        with self.lock:
            if not 0 <= index < len(job.entries) or job.entries[index].state != "done":
                raise HTTPException(404, "no protected photo with this number in the job")
            if job.files_removed:
                raise HTTPException(410, "this photo was deleted from the server after its download or expiry; "
                                         "protect it again")
            return job.entries[index]

    def downloaded(self, job: WebJob, index: int) -> None:
        """After a photo's download: the job's files are deleted once every protected photo was downloaded."""
        with self.lock:
            job.entries[index].downloaded = True
            last = job.state == "done" and all(e.downloaded for e in job.entries if e.state == "done")
        if last:
            self.remove_files(job)

    def remove_files(self, job: WebJob) -> None:
        with self.lock:
            job.files_removed = True
        shutil.rmtree(job.folder, ignore_errors=True)

    def forget(self, job: WebJob) -> None:
        self.remove_files(job)
        with self.lock:
            self.jobs.pop(job.id, None)
            if job.id in self.pending and job.state == "waiting":
                self.pending.remove(job.id)

    def sweep(self) -> None:
        """Delete the jobs finished more than ``expiry_s`` ago, and those waiting that no page asked about for as
        long (a tab closed); a running job is left to finish."""
        now = time.monotonic()
        with self.lock:
            expired = [job for job in self.jobs.values()
                       if (job.state == "done" and now - (job.finished or now) >= self.expiry_s)
                       or (job.state == "waiting" and now - job.touched >= self.expiry_s)]
        for job in expired:
            self.forget(job)

    def _sweep_every(self, period: float) -> None:
        while not self.stopping.wait(period):
            self.sweep()

    def close(self) -> None:
        """Stop the threads (the job running finishes its photo first) and delete every job's photos."""
        self.stopping.set()
        self.queue.put(None)
        with self.lock:
            for job in self.jobs.values():
                job.files_removed = True
        self.worker.join(timeout=10)  # it stops after the photo it is on; a long one is not waited for
        shutil.rmtree(self.root, ignore_errors=True)


def _limited(receive, limit: int):
    """``receive`` of an ASGI request whose body may not exceed ``limit`` bytes."""
    received = 0

    async def limited_receive():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _TooLarge
        return message

    return limited_receive


def create_app(models: ModelSource, *, other_models: Mapping[str, Callable[[], Any]] | None = None,
               strength: str = pipeline.DEFAULT_STRENGTH, max_upload_mb: float = 50, max_photos: int = 50,
               expiry_s: float = 30 * 60, seed: int | None = None,
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The web application. ``models``: the classifiers to protect against (a list, or a function loading them
    on the first job); ``other_models``: name -> a function loading a classifier that the checks also ask,
    loaded on first use. ``strength``: the page's default preset. ``max_upload_mb``: the largest photo taken;
    ``max_photos``: the most photos of one upload. ``expiry_s``: how long a finished job's photos are kept at
    most. ``seed``: reproducible targets (tests). ``allowed_hosts``: the Host names answered (None: any)."""
    service = Service(models, other_models or {}, strength=strength, max_upload_mb=max_upload_mb,
                      max_photos=max_photos, expiry_s=expiry_s, seed=seed)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(service.close)

    quiet = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:  # newer FastAPI can export OpenTelemetry spans: never
        quiet["telemetry"] = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    app = FastAPI(title="scenepriv", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan, **quiet)
    app.state.service = service
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def headers(request: Request, call_next):
        if request.method not in ("GET", "HEAD") and request.headers.get(REQUEST_HEADER) != "1":
            return JSONResponse({"detail": f"requests that change something need the header {REQUEST_HEADER}: 1 "
                                           "(sent by the page)"}, status_code=403)
        response = await call_next(request)
        response.headers.update(HEADERS)
        return response

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/config")
    def config() -> dict:
        return service.config()

    @app.post("/api/jobs", status_code=201)
    async def create_job(request: Request):
        """Multipart form: ``files`` (several) and ``strength``."""
        per_file = service.max_upload_bytes
        total = per_file * service.max_photos + 2**20
        declared = request.headers.get("content-length")
        too_large = (f"the upload is larger than the {service.max_upload_mb:g} MB x {service.max_photos} photos "
                     "the server takes at once (scenepriv serve --max-upload-mb)")
        if declared and declared.isdigit() and int(declared) > total:
            return JSONResponse({"detail": too_large}, status_code=413)
        limited = Request(request.scope, _limited(request.receive, total))
        try:
            form = await limited.form(max_files=service.max_photos, max_fields=10)
        except _TooLarge:
            return JSONResponse({"detail": too_large}, status_code=413)
        except HTTPException as error:  # Starlette's own limits (too many files) and malformed bodies
            detail = error.detail
            if "files" in str(detail).lower():
                detail = f"at most {service.max_photos} photos at once"
            return JSONResponse({"detail": detail}, status_code=400)
        try:
            uploads = [upload for upload in form.getlist("files") if not isinstance(upload, str)]
            if not uploads:
                return JSONResponse({"detail": "no photos in the upload: choose or drop some"}, status_code=400)
            strength = form.get("strength") or service.strength
            if not isinstance(strength, str):
                return JSONResponse({"detail": "strength must be a name"}, status_code=400)

            def saver(upload):
                def save(path: Path) -> int:
                    size = 0
                    upload.file.seek(0)
                    with open(path, "wb") as stream:
                        while chunk := upload.file.read(2**20):
                            size += len(chunk)
                            if size > per_file:
                                raise _TooLarge
                            stream.write(chunk)
                    return size

                return save

            job, entries = await run_in_threadpool(
                service.add_job, strength, [(upload.filename or "", saver(upload)) for upload in uploads])
        finally:
            await form.close()
        if job is None:
            messages = "; ".join(entry.message or entry.name for entry in entries)
            status = 413 if all("larger than" in (entry.message or "") for entry in entries) else 400
            return JSONResponse({"detail": f"nothing to protect: {messages}",
                                 "files": [{"name": e.name, "message": e.message} for e in entries]},
                                status_code=status)
        return service.view(job)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict:
        return service.view(service.job(job_id))

    @app.delete("/api/jobs/{job_id}", status_code=204)
    def delete_job(job_id: str) -> None:
        service.forget(service.job(job_id))

    @app.get("/api/jobs/{job_id}/files/{index}")
    def download(job_id: str, index: int) -> FileResponse:
        job = service.job(job_id)
        entry = service.protected_file(job, index)
        return FileResponse(entry.output, media_type="image/png", filename=entry.output.name,
                            background=BackgroundTask(service.downloaded, job, index))

    @app.get("/api/jobs/{job_id}/files/{index}/crop/{which}")
    def crop(job_id: str, index: int, which: str) -> FileResponse:
        if which not in ("before", "after"):
            raise HTTPException(404, "crop is before or after")
        job = service.job(job_id)
        service.protected_file(job, index)
        path = job.folder / "crops" / f"{index}-{which}.png"
        if not path.is_file():
            raise HTTPException(410, "deleted from the server")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/jobs/{job_id}/zip")
    def download_all(job_id: str) -> FileResponse:
        job = service.job(job_id)
        with service.lock:
            ready = job.state == "done" and not job.files_removed
            entries = [entry for entry in job.entries if entry.state == "done"]
        if not ready or not entries:
            raise HTTPException(410 if job.files_removed else 409,
                                "deleted from the server after download or expiry" if job.files_removed
                                else "the job is not finished yet" if job.state != "done" else "no protected photo")
        archive = job.folder / "scenepriv-protected.zip"
        try:
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # PNG is compressed already
                for entry in entries:
                    bundle.write(entry.output, entry.output.name)
        except OSError:
            raise HTTPException(410, "deleted from the server after download or expiry") from None
        return FileResponse(archive, media_type="application/zip", filename="scenepriv-protected.zip",
                            background=BackgroundTask(service.remove_files, job))

    return app
