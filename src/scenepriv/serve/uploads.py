"""The page's uploads: names made safe and unique, each file saved within its limit and opened before it is taken."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..images import ImageError, image_extensions, load_photo, shown
from .jobs import Entry

# The photo formats the page takes (one Pillow cannot open here, such as HEIC without pillow-heif, is left out).
FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".heic": "HEIC", ".heif": "HEIC", ".webp": "WebP"}


class TooLarge(Exception):
    """A file, or the whole request, larger than the server takes."""


def formats_here() -> dict[str, str]:
    """:data:`FORMATS` that this installation can open."""
    return {extension: kind for extension, kind in FORMATS.items() if extension in image_extensions()}


def safe_name(name: str, fallback: str) -> str:
    """A file name from a browser made harmless: no folders, no leading dots, no control or shell characters,
    at most 100 characters; ``fallback`` when nothing is left."""
    name = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    name = re.sub(r"[^\w.\- ]", "_", name).strip(" .")
    stem, dot, suffix = name.rpartition(".")
    if dot and len(suffix) <= 10:
        name = f"{stem[:90].rstrip(' .')}.{suffix}" if stem.rstrip(" .") else f"{fallback}.{suffix}"
    return name[:100] or fallback


def unique_names(given: list[str]) -> list[str]:
    """:func:`safe_name` of each, numbered (``x-2.jpg``) where two would be one file (case-insensitively)."""
    names, taken = [], set()
    for index, name in enumerate(given):
        name = safe_name(name, f"photo-{index + 1}")
        stem, dot, suffix = name.rpartition(".")
        candidate, number = name, 1
        while candidate.casefold() in taken:
            number += 1
            candidate = f"{stem}-{number}{dot}{suffix}" if dot else f"{name}-{number}"
        taken.add(candidate.casefold())
        names.append(candidate)
    return names


def saver(stream: BinaryIO, limit: int) -> Callable[[Path], int]:
    """A function writing ``stream`` to a path and returning its size, raising :class:`TooLarge` past ``limit``."""

    def save(path: Path) -> int:
        size = 0
        stream.seek(0)
        with open(path, "wb") as file:
            while chunk := stream.read(2**20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge
                file.write(chunk)
        return size

    return save


def take_uploads(folder: Path, uploads: list[tuple[str, Callable[[Path], int]]], formats: dict[str, str],
                 max_upload_mb: float) -> list[Entry]:
    """An entry per upload (name, a function saving the file to a path and returning its size), saved under
    ``folder``: each is checked by extension, then size, then decoded with load_photo; one refused is a failed
    entry with its message (and no file)."""
    entries = []
    for index, (name, (_, save)) in enumerate(zip(unique_names([given for given, _ in uploads]), uploads,
                                                  strict=True)):
        entry = Entry(index, name, None)
        entries.append(entry)
        if Path(name).suffix.lower() not in formats:
            kinds = ", ".join(dict.fromkeys(formats.values()))
            entry.state, entry.message = "failed", f"{name}: not a photo this page takes ({kinds} only)"
            continue
        path = folder / name
        try:
            size = save(path)
            load_photo(path)
        except TooLarge:
            path.unlink(missing_ok=True)
            entry.state, entry.message = "failed", (f"{name}: larger than the {max_upload_mb:g} MB a photo may have "
                                                    "here (scenepriv serve --max-upload-mb)")
            continue
        except ImageError as error:
            path.unlink(missing_ok=True)
            entry.state, entry.message = "failed", str(error).replace(shown(path), name)
            continue
        entry.source, entry.size = path, size
    return entries


def limited(receive: Callable[[], Any], limit: int) -> Callable[[], Any]:
    """``receive`` of an ASGI request whose body may not exceed ``limit`` bytes (:class:`TooLarge` past it)."""
    received = 0

    async def limited_receive():
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise TooLarge
        return message

    return limited_receive


@dataclass(frozen=True)
class Limits:
    """What one upload may hold: photos of ``formats`` (extension -> kind) up to ``max_upload_mb`` each, at most
    ``max_photos`` of them."""

    max_upload_mb: float
    max_photos: int
    formats: dict[str, str]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_request_bytes(self) -> int:
        """The largest request body read: every photo at its limit, and a megabyte for the form around them."""
        return self.max_upload_bytes * self.max_photos + 2**20
