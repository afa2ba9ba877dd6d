"""The web page's routes (FastAPI): the page and its settings, jobs in, their progress, results and downloads out.

A job is the photos of one upload, in a folder of its own (:mod:`.jobs`), protected in turn by one worker thread
(:mod:`.worker`). A job's photos can be downloaded as often as wanted until the page deletes them, they expire, or
the server stops. Nothing is sent anywhere: the page loads no resource from another site, and its
Content-Security-Policy forbids it to.
"""

from __future__ import annotations

import inspect
import logging
import secrets
import shutil
import zipfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import verify
from ..settings import DEFAULT_STRENGTH, PRESETS, STRENGTHS
from .jobs import Entry, JobStore, Refused, WebJob
from .uploads import Limits, TooLarge, formats_here, limited, saver, take_uploads
from .wording import CHECK_QUALITIES, CHECK_SCALES, check_label
from .worker import ModelSource, Worker, max_steps

STATIC = Path(__file__).resolve().parent / "static"
HEADERS = {  # the page may load and contact nothing but this server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
REQUEST_HEADER = "X-Scenepriv"  # asked of requests that change something: another site's form cannot send it
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}
ZIP_NAME = "scenepriv-protected.zip"


def create_app(models: ModelSource, *, other_models: Mapping[str, Callable[[], Any]] | None = None,
               strength: str = DEFAULT_STRENGTH, max_upload_mb: float = 50, max_photos: int = 50,
               expiry_s: float = 30 * 60, seed: int | None = None, allowed_hosts: Sequence[str] | None = None,
               warn: Callable[[str], None] | None = None) -> FastAPI:
    """The web application. ``models``: the classifiers to protect against (a list, or a function loading them
    on the first job); ``other_models``: name -> a function loading a classifier that the checks also ask,
    loaded on first use. ``strength``: the page's default preset. ``max_upload_mb``: the largest photo taken;
    ``max_photos``: the most photos of one upload. ``expiry_s``: how long a finished job's photos are kept at
    most. ``seed``: reproducible targets (tests). ``allowed_hosts``: the Host names answered (None: any).
    ``warn``: where the server's own problems are said (default: the ``scenepriv.serve`` logger)."""
    if strength not in STRENGTHS:
        raise ValueError(f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
    store = JobStore(expiry_s)
    worker = Worker(store, models, other_models or {}, seed=seed,
                    warn=warn or logging.getLogger("scenepriv.serve").warning)
    limits = Limits(max_upload_mb, max_photos, formats_here())
    app = _application(store, worker, allowed_hosts)
    app.state.store, app.state.worker, app.state.limits = store, worker, limits
    _page_routes(app, store, worker, limits, strength)
    _job_routes(app, store, worker, limits, strength)
    _download_routes(app, store)
    return app


def _application(store: JobStore, worker: Worker, allowed_hosts: Sequence[str] | None) -> FastAPI:
    """FastAPI without documentation pages or telemetry, answering only ``allowed_hosts``, refusing changes
    without the page's header, adding :data:`HEADERS`; its photos deleted when it stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await run_in_threadpool(store.close)
        await run_in_threadpool(worker.close)  # it stops after the photo it is on
        await run_in_threadpool(store.remove_all)

    quiet = {}
    if "telemetry" in inspect.signature(FastAPI).parameters:  # newer FastAPI can export OpenTelemetry spans: never
        quiet["telemetry"] = {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    app = FastAPI(title="scenepriv", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan, **quiet)
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

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    return app


def _page_routes(app: FastAPI, store: JobStore, worker: Worker, limits: Limits, strength: str) -> None:
    """The page, its files, and its settings (``/api/config``)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/config")
    def config() -> dict:
        names = [model.name for model in worker.models or []]
        return {"strengths": [{"name": name, "help": PRESETS[name].promise} for name in STRENGTHS],
                "strength": strength, "max_upload_mb": limits.max_upload_mb, "max_photos": limits.max_photos,
                "formats": sorted(limits.formats), "expiry_minutes": round(store.expiry_s / 60),
                "models": names, "other_models": list(worker.other_models),
                "names": classes_named(worker.models or []),
                "checks": [check_label(check) for check in verify.checks(CHECK_QUALITIES, CHECK_SCALES, ["area"])]}


def classes_named(models: Sequence[Any]) -> str | None:
    """What the classifiers protected against name: "scenes" (Places365), "objects" (ImageNet's 1000 classes), or
    None (other classes, or models not loaded yet)."""
    if models and all(model.name.endswith("-places365") for model in models):
        return "scenes"
    if models and all(len(model.labels) == 1000 for model in models):
        return "objects"
    return None


def new_job(store: JobStore, worker: Worker, limits: Limits, strength: str,
            uploads: list[tuple[str, Callable[[Path], int]]]) -> tuple[WebJob | None, list[Entry]]:
    """A job of the ``uploads`` (see :func:`.uploads.take_uploads`) handed to the worker; None (and its folder
    deleted) when no file can be protected."""
    if strength not in STRENGTHS:
        raise Refused(400, f"unknown strength {strength!r}; choose one of {', '.join(STRENGTHS)}")
    job_id, folder = store.new_folder()
    entries = take_uploads(folder / "uploads", uploads, limits.formats, limits.max_upload_mb)
    if not any(entry.source for entry in entries):
        shutil.rmtree(folder, ignore_errors=True)
        return None, entries
    job = WebJob(job_id, folder, strength, entries, max_steps=max_steps(strength))
    store.add(job)
    worker.submit(job)
    return job, entries


def _job_routes(app: FastAPI, store: JobStore, worker: Worker, limits: Limits, default_strength: str) -> None:
    """A job created from an upload (multipart form: ``files``, several, and ``strength``), followed, deleted."""
    too_large = (f"the upload is larger than the {limits.max_upload_mb:g} MB x {limits.max_photos} photos the "
                 "server takes at once (scenepriv serve --max-upload-mb)")

    @app.post("/api/jobs", status_code=201)
    async def create_job(request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_request_bytes:
            return JSONResponse({"detail": too_large}, status_code=413)
        try:
            form = await Request(request.scope, limited(request.receive, limits.max_request_bytes)).form(
                max_files=limits.max_photos, max_fields=10)
        except TooLarge:
            return JSONResponse({"detail": too_large}, status_code=413)
        except HTTPException as error:  # Starlette's own limits (too many files) and malformed bodies
            detail = error.detail
            if "files" in str(detail).lower():
                detail = f"at most {limits.max_photos} photos at once"
            return JSONResponse({"detail": detail}, status_code=400)
        try:
            files = [upload for upload in form.getlist("files") if isinstance(upload, UploadFile)]
            strength = form.get("strength") or default_strength
            if not files:
                return JSONResponse({"detail": "no photos in the upload: choose or drop some"}, status_code=400)
            if not isinstance(strength, str):
                return JSONResponse({"detail": "strength must be a name"}, status_code=400)
            uploads = [(upload.filename or "", saver(upload.file, limits.max_upload_bytes)) for upload in files]
            job, entries = await run_in_threadpool(new_job, store, worker, limits, strength, uploads)
        finally:
            await form.close()
        if job is None:
            messages = "; ".join(entry.message or entry.name for entry in entries)
            status = 413 if all("larger than" in (entry.message or "") for entry in entries) else 400
            return JSONResponse({"detail": f"nothing to protect: {messages}",
                                 "files": [{"name": e.name, "message": e.message} for e in entries]},
                                status_code=status)
        return store.view(job)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict:
        return store.view(store.job(job_id))

    @app.delete("/api/jobs/{job_id}", status_code=204)
    def delete_job(job_id: str) -> None:
        store.forget(store.job(job_id))


def _download_routes(app: FastAPI, store: JobStore) -> None:
    """A protected photo, the slider's crops, and every protected photo of a job as a zip: as often as asked, while
    the job's files are kept."""

    @app.get("/api/jobs/{job_id}/files/{index}")
    def download(job_id: str, index: int) -> FileResponse:
        job = store.job(job_id)
        output = store.protected_entry(job, index).output
        return FileResponse(output, media_type=MEDIA_TYPES.get(output.suffix, "application/octet-stream"),
                            filename=output.name, background=BackgroundTask(store.downloaded, job, [index]))

    @app.get("/api/jobs/{job_id}/files/{index}/crop/{which}")
    def crop(job_id: str, index: int, which: str) -> FileResponse:
        if which not in ("before", "after"):
            raise Refused(404, "crop is before or after")
        job = store.job(job_id)
        store.protected_entry(job, index)
        path = job.folder / "crops" / f"{index}-{which}.png"
        if not path.is_file():
            raise Refused(410, "deleted from the server")
        return FileResponse(path, media_type="image/png")

    @app.get("/api/jobs/{job_id}/zip")
    def download_all(job_id: str) -> FileResponse:
        job = store.job(job_id)
        with store.lock:
            ready = job.state == "done" and not job.files_removed
            entries = [entry for entry in job.entries if entry.state == "done"]
        if not ready or not entries:
            raise Refused(410 if job.files_removed else 409,
                          "deleted from the server" if job.files_removed
                          else "the job is not finished yet" if job.state != "done" else "no protected photo")
        archive = job.folder / f"zip-{secrets.token_hex(8)}.zip"  # one per download: two may run at once
        try:
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:  # JPEG and PNG are compressed
                for entry in entries:
                    bundle.write(entry.output, entry.output.name)
        except OSError:  # deleted meanwhile
            archive.unlink(missing_ok=True)
            raise Refused(410, "deleted from the server") from None

        def sent() -> None:
            archive.unlink(missing_ok=True)
            store.downloaded(job, [entry.index for entry in entries])

        return FileResponse(archive, media_type="application/zip", filename=ZIP_NAME, background=BackgroundTask(sent))
