"""The page's worker: protects the jobs in turn through :mod:`scenepriv.pipeline`, then checks each photo on every
judge and cuts the most changed region, before and after, for the page's slider."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from queue import Queue
from typing import Any

from .. import pipeline, verify
from ..attack import to_uint8
from ..images import ImageError, load_photo, most_changed_box, save_image, shown
from ..settings import RESAMPLERS
from .jobs import Entry, JobStore, WebJob
from .wording import CHECK_QUALITIES, CHECK_SCALES, check_label, verdict, visibility

CROP_SIZE = 384  # the slider's region (images.most_changed_box, as `scenepriv protect --compare` finds it)

ModelSource = Sequence[Any] | Callable[[], Sequence[Any]]


def max_steps(strength: str) -> int:
    """The most steps ``strength`` takes on a photo (before the change is scaled down)."""
    return pipeline.resolve_settings(strength=strength)[1].max_iter


def plain(message: str, entry: Entry) -> str:
    """A pipeline line with the temporary paths replaced by the uploaded name."""
    for path in (entry.source, entry.output):
        if path is not None:
            message = message.replace(shown(path), entry.name)
    return message


class Worker:
    """One thread protecting the jobs of ``store`` in the order given (one model in memory; each tab follows its
    own job). ``models``: the classifiers protected against, or a function loading them on the first job;
    ``other_models``: name -> a function loading a classifier the checks also ask, on first use (one that cannot
    be loaded is ``warn``-ed about and left out)."""

    def __init__(self, store: JobStore, models: ModelSource, other_models: Mapping[str, Callable[[], Any]], *,
                 seed: int | None, warn: Callable[[str], None]) -> None:
        self.store, self.seed, self.warn = store, seed, warn
        self._models_source = models
        self.models: list | None = None if callable(models) else list(models)
        self.other_models = dict(other_models)
        self.loaded_others: dict[str, Any] = {}
        self.queue: Queue[str | None] = Queue()
        self.thread = threading.Thread(target=self._work, name="scenepriv-worker", daemon=True)
        self.thread.start()

    def submit(self, job: WebJob) -> None:
        self.queue.put(job.id)

    def close(self) -> None:
        """Stop after the photo at work (a long one is not waited for beyond 10 s)."""
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _work(self) -> None:
        while (job_id := self.queue.get()) is not None:
            job = self.store.start(job_id)
            if job is None:
                continue
            try:
                self._run(job)
            except Exception as error:  # a bug: its traceback on the server's console, one line on the page
                self.warn(f"scenepriv serve: internal error:\n{''.join(traceback.format_exception(error))}")
                with self.store.lock:
                    for entry in job.entries:
                        if entry.state not in ("done", "failed"):
                            entry.state, entry.message = "failed", f"{entry.name}: internal error ({error})"
            finally:
                self.store.finish(job)

    def loaded_models(self) -> list:
        if self.models is None:
            self.models = list(self._models_source())  # type: ignore[operator]
        return self.models

    def _judges(self) -> list:
        """The models protected against, then the others, each loaded on first use."""
        for name, load in self.other_models.items():
            if name not in self.loaded_others:
                try:
                    self.loaded_others[name] = load()
                except (Exception, SystemExit) as error:  # a check on another model is a bonus, not the job
                    self.warn(f"scenepriv serve: model {name} left out of the checks: {error}")
                    self.loaded_others[name] = None
        protected_against = self.loaded_models()
        names = {model.name for model in protected_against}
        return protected_against + [m for m in self.loaded_others.values() if m is not None and m.name not in names]

    def _run(self, job: WebJob) -> None:
        """Protect the job's photos, checking each as it is written; stop where the page deleted the job."""
        lock = self.store.lock
        entries = [entry for entry in job.entries if entry.source is not None]
        _, settings = pipeline.resolve_settings(strength=job.strength)
        work = pipeline.Job(settings=settings, strength=job.strength, seed=self.seed, batch_size=1)
        pairs = pipeline.output_pairs([(entry.source, Path(entry.source.stem)) for entry in entries],
                                      job.folder / "protected", work.output_format)
        models = self.loaded_models()
        working = {entry.source: entry for entry in entries}

        def progress(sources: list[Path], stage: str, step: int) -> None:
            with lock:
                for source in sources:  # a photo is at work from its first step (two may be at once)
                    working[source].step, working[source].shrinking = step, stage == "shrink"
                    if stage != "done" and working[source].state == "waiting":
                        working[source].state = "protecting"

        results = pipeline.protect_files(pairs, models, work, progress=progress)
        for position, result in enumerate(results):
            entry = entries[position]
            with lock:
                entry.output, entry.state = result.output, "failed" if result.error else "checking"
                entry.message = plain(result.error, entry) if result.error else None
            outcome = None
            if not result.error and not job.files_removed:
                try:
                    outcome = self._outcome(job, entry, result)
                except (ImageError, OSError):
                    if not job.files_removed:  # not a file deleted from the page while it was checked: a bug
                        raise
            if job.files_removed:  # deleted from the page: the photo at work was the last
                results.close()
                return
            if outcome is not None:
                with lock:
                    entry.result, entry.state = outcome, "done"

    def _outcome(self, job: WebJob, entry: Entry, result: pipeline.FileResult) -> dict[str, Any]:
        """What the page shows of a protected photo: the plain verdict, top-1 before and after, the checks on every
        judge, how visible the change is, and the most changed region before and after, saved for the slider."""
        record = result.record
        original, protected = load_photo(entry.source).pixels, load_photo(result.output).pixels
        resampler = self.loaded_models()[0].resize
        checks = verify.checks(CHECK_QUALITIES, CHECK_SCALES,
                               [resampler if resampler in RESAMPLERS else "bilinear-antialias"])
        names = {model.name for model in self.loaded_models()}
        verdicts = []
        for judge in self._judges():
            judged = verify.judge(judge, protected, original, checks)
            verdicts.append({"model": judged["model"], "protected_against": judge.name in names, "checks": [
                {"check": check_label(check), "holds": row["holds"], "top1": row["top1"],
                 "original_top1": row["original_top1"]}
                for check, row in zip(checks, judged["checks"], strict=True)]})
        before, after = to_uint8(original[None])[0], to_uint8(protected[None])[0]
        rows, columns = most_changed_box(before, after, CROP_SIZE)
        crops = job.folder / "crops"
        save_image(before[rows, columns], crops / f"{entry.index}-before.png")
        save_image(after[rows, columns], crops / f"{entry.index}-after.png")
        held = [check["holds"] for judged in verdicts for check in judged["checks"]]
        return {
            "verdict": verdict(checks, verdicts, job.strength), "visibility": visibility(record["butteraugli"]),
            "before": record["clean_top5"][0], "after": record["final_top5"][0],
            "success": record["success"], "top1_changed": record["top1_changed"], "iterations": record["iterations"],
            "psnr": record["psnr"], "ssim": record["ssim"], "butteraugli": record["butteraugli"],
            "size": [int(original.shape[2]), int(original.shape[1])],
            "crop": {"before": f"/api/jobs/{job.id}/files/{entry.index}/crop/before",
                     "after": f"/api/jobs/{job.id}/files/{entry.index}/crop/after",
                     "left": columns.start, "top": rows.start, "width": columns.stop - columns.start,
                     "height": rows.stop - rows.start},
            "checks": verdicts, "holds": sum(held), "checked": len(held),
            "warnings": [plain(warning, entry) for warning in result.warnings],
        }
