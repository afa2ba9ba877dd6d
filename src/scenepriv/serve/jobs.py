"""The page's jobs: each upload's photos in a folder of their own, what became of them, and their deletion."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Refused(Exception):
    """A request the page cannot answer: its HTTP ``status`` and a line for the person (the routes send both)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


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
    """The photos of one upload: protected in turn at ``strength``, kept until deleted or expired."""

    id: str
    folder: Path
    strength: str
    entries: list[Entry]
    max_steps: int = 0  # the most steps the strength takes per photo (the page's progress)
    touched: float = field(default_factory=time.monotonic)
    state: str = "waiting"  # waiting, running, done
    finished: float | None = None
    files_removed: bool = False  # the folder is gone (deleted from the page, or expired); the results stay shown


class JobStore:
    """The jobs by id under one temporary folder (mode 0700), and a sweep that deletes those expired: a finished
    job ``expiry_s`` after it finished, a waiting one no page asked about for as long (a tab closed). A job's
    files stay until then, however often they are downloaded, unless the page deletes them sooner."""

    def __init__(self, expiry_s: float) -> None:
        self.expiry_s = expiry_s
        self.root = Path(tempfile.mkdtemp(prefix="scenepriv-serve-"))
        self.jobs: dict[str, WebJob] = {}
        self.pending: list[str] = []  # ids of the jobs not finished, in order
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sweeper = threading.Thread(target=self._sweep_every, args=(min(60.0, max(1.0, expiry_s / 4)),),
                                        name="scenepriv-sweep", daemon=True)
        self.sweeper.start()

    def new_folder(self) -> tuple[str, Path]:
        """A new job's id and its folder, with ``uploads`` inside."""
        job_id = secrets.token_urlsafe(16)
        (self.root / job_id / "uploads").mkdir(parents=True)
        return job_id, self.root / job_id

    def add(self, job: WebJob) -> None:
        with self.lock:
            self.jobs[job.id] = job
            self.pending.append(job.id)

    def job(self, job_id: str) -> WebJob:
        """The job (asked about: not abandoned), or 404."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise Refused(404, "no such job: it has expired, or the server was restarted")
            job.touched = time.monotonic()
            return job

    def start(self, job_id: str) -> WebJob | None:
        """The job marked running, or None where it was deleted before its turn."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.files_removed:
                return None
            job.state = "running"
            return job

    def finish(self, job: WebJob) -> None:
        """The job done; files written after the page deleted it go too."""
        with self.lock:
            job.state, job.finished = "done", time.monotonic()
            if job.id in self.pending:
                self.pending.remove(job.id)
        if job.files_removed:
            self.remove_files(job)

    def expires_in(self, job: WebJob) -> int | None:
        """Seconds until a finished job is deleted (None while it is not finished)."""
        if job.finished is None:
            return None
        return max(0, round(job.finished + self.expiry_s - time.monotonic()))

    def view(self, job: WebJob) -> dict[str, Any]:
        """The job as the page shows it."""
        with self.lock:
            ahead = self.pending.index(job.id) if job.id in self.pending and job.state == "waiting" else 0
            available = not job.files_removed
            files = [{"index": entry.index, "name": entry.name, "state": entry.state, "step": entry.step,
                      "shrinking": entry.shrinking, "message": entry.message, "size": entry.size,
                      "result": entry.result,
                      "output_name": entry.output.name if entry.output and entry.state == "done" else None,
                      "download": f"/api/jobs/{job.id}/files/{entry.index}"
                      if entry.state == "done" and available else None,
                      "downloaded": entry.downloaded}
                     for entry in job.entries]
            protected = any(entry.state == "done" for entry in job.entries)
            return {"id": job.id, "state": job.state, "strength": job.strength, "ahead": ahead,
                    "done": sum(entry.state in ("done", "failed") for entry in job.entries),
                    "total": len(job.entries), "max_steps": job.max_steps, "files": files,
                    "files_removed": job.files_removed,
                    "zip": f"/api/jobs/{job.id}/zip" if job.state == "done" and protected and available else None,
                    "expires_in": self.expires_in(job)}

    def protected_entry(self, job: WebJob, index: int) -> Entry:
        """The entry of a protected photo still on the server, or 404/410."""
        with self.lock:
            if not 0 <= index < len(job.entries) or job.entries[index].state != "done":
                raise Refused(404, "no protected photo with this number in the job")
            if job.files_removed:
                raise Refused(410, "this photo was deleted from the server; protect it again")
            return job.entries[index]

    def downloaded(self, job: WebJob, indices: list[int]) -> None:
        """The photos ``indices`` sent to the page (it says so beside them); their files stay."""
        with self.lock:
            for index in indices:
                job.entries[index].downloaded = True

    def remove_files(self, job: WebJob) -> None:
        with self.lock:
            job.files_removed = True
        shutil.rmtree(job.folder, ignore_errors=True)

    def forget(self, job: WebJob) -> None:
        """Delete the job's photos and the job (a running one stops after the photo it is on)."""
        self.remove_files(job)
        with self.lock:
            self.jobs.pop(job.id, None)
            if job.id in self.pending and job.state == "waiting":
                self.pending.remove(job.id)

    def sweep(self) -> None:
        """Forget the jobs expired (see the class); a running job is left to finish."""
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
        """Stop the sweep and mark every job deleted (the worker stops writing); :meth:`remove_all` deletes."""
        self.stopping.set()
        with self.lock:
            for job in self.jobs.values():
                job.files_removed = True

    def remove_all(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
