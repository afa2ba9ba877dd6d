"""A small on-disk cache for downloaded weights: fetched once, checked by SHA-256, reused offline."""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

import platformdirs
from tqdm import tqdm

from ..settings import ScenePrivError

TIMEOUT_S = 30
CHUNK = 1 << 20


class WeightsUnavailable(ScenePrivError, RuntimeError):
    """Weights cannot be obtained or trusted; the message says what to do, so no traceback is needed."""


def read_checkpoint(path: str | Path) -> object:
    """``torch.load`` of a checkpoint that holds tensors and plain containers only (``weights_only``).

    A file that holds code or other objects is refused without running it; the error is one line with
    the cause, not PyTorch's advice to pass ``weights_only=False`` (which would run the file's code).
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
        reason = detail.group(1) if detail else (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: cannot be read as a PyTorch checkpoint without running code ({reason})") from None


def cache_dir() -> Path:
    """Where downloaded weights live: ``$SCENEPRIV_CACHE_DIR``, else the user's cache folder."""
    override = os.environ.get("SCENEPRIV_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("scenepriv")) / "weights"


def record_path(path: Path) -> Path:
    """The file beside ``path`` holding the SHA-256 recorded on its first download."""
    return path.with_name(path.name + ".sha256")


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, read in chunks so large checkpoints need little memory."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_hash(sha256: str | None, record: Path) -> tuple[str | None, str]:
    """The hash a file must have and where that hash comes from (published, recorded, or none)."""
    if sha256:
        return sha256.lower(), "the published checksum"
    if record.is_file():
        return record.read_text(encoding="utf-8").split()[0].lower(), f"the checksum recorded in {record}"
    return None, ""


def _by_hand(url: str, path: Path) -> str:
    """The advice for fetching weights without this program's help."""
    return (f"Download {url} by hand and pass --weights PATH (or weights=PATH in Python), "
            f"or place the file at {path}.")


def _download(url: str, out: BinaryIO, label: str) -> str:
    """Stream ``url`` into ``out`` with a progress bar; return its SHA-256; raise if cut short."""
    digest = hashlib.sha256()
    received = 0
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise ConnectionError(f"transfer interrupted after {received} of {total} bytes")
    return digest.hexdigest()


def fetch(url: str, filename: str, sha256: str | None) -> Path:
    """Return the cached copy of ``url`` as ``cache_dir()/filename``, downloading and verifying it once.

    Without a published ``sha256`` the hash of the first download is recorded beside the file
    (trust on first use) and every later use is checked against it.
    """
    path = cache_dir() / filename
    record = record_path(path)
    expected, source = _expected_hash(sha256, record)
    if path.exists():
        if expected is not None and (actual := sha256_of(path)) != expected:
            raise WeightsUnavailable(
                f"The cached file {path} does not match {source} (expected SHA-256 {expected}, "
                f"found {actual}); it is damaged or was replaced. Delete it and run again to re-download it.")
        return path

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f"{filename}.", suffix=".part")
    part = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out:
            try:
                actual = _download(url, out, filename)
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
                http_error = isinstance(error, urllib.error.HTTPError)
                reason = error if http_error else getattr(error, "reason", error)
                raise WeightsUnavailable(f"Could not download {url}: {reason}. {_by_hand(url, path)}") from error
        if expected is not None and actual != expected:
            raise WeightsUnavailable(
                f"The checksum of {url} did not match {source}: expected SHA-256 {expected}, got {actual}. "
                f"The download was discarded. {_by_hand(url, path)}"
                + (f" If the publisher changed the file, delete {record} to accept it." if not sha256 else ""))
        if expected is None:
            record.write_text(f"{actual}  {filename}\n", encoding="utf-8")
            print(f"scenepriv: no published checksum for {filename}; recorded SHA-256 {actual} in {record} "
                  "(trusted on first use)", file=sys.stderr)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path
