"""Reading and writing photos: Pillow, EXIF orientation, colour modes, atomic writes."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from threading import Thread
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .settings import ScenePrivError


class ImageError(ScenePrivError):
    """A file that cannot be used as a photo; the message is one line that names the file."""


class _Refused(Exception):
    """A decoded image this module will not use; the message is the reason, without the file name."""


try:  # HEIC/HEIF (iPhone photos) through pillow-heif; without it they are reported as a format not read here
    from pillow_heif import register_heif_opener
except ImportError:
    pass
else:
    register_heif_opener()


def _one_line(text: str) -> str:
    """``text`` with control and other unprintable characters escaped as in Python literals (a newline as ``\\n``)."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def shown(path: os.PathLike | str) -> str:
    """``path`` for one line of text: a newline or terminal escape in a file name cannot split or forge a line."""
    return _one_line(str(path))


def _reason(error: BaseException) -> str:
    """What went wrong, in one line: the exception's class and message (an OSError's message without file names)."""
    message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return _one_line(f"{type(error).__name__}: {message}" if message else type(error).__name__)


@dataclass
class Photo:
    """A decoded photo: RGB pixels (3, H, W) in [0, 1] (or 0-255 as uint8), and what was done to get them."""

    path: Path
    pixels: torch.Tensor
    warnings: list[str] = field(default_factory=list)
    icc_profile: bytes | None = None  # an RGB colour profile, kept on output
    exif: bytes | None = None  # EXIF without location and with the orientation applied (for --keep-metadata)
    jpeg_quality: int | None = None  # a JPEG's quality, estimated from its luminance table (None: not a JPEG)
    jpeg_subsampling: str | None = None  # a JPEG's chroma subsampling, upright (:func:`jpeg_subsampling`)


@dataclass(frozen=True)
class JpegFormat:
    """How a JPEG is written: ``quality`` 1-100 and chroma ``subsampling``, one of Pillow's "4:4:4" (none), "4:2:2"
    (half the columns) and "4:2:0" (half the columns and rows, what cameras and platforms write)."""

    quality: int
    subsampling: str = "4:2:0"


def image_extensions() -> set[str]:
    """File extensions Pillow can open, lower case with the dot."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


# Extensions of photos and pictures that a folder may hold even where this installation cannot read them:
# skipping one of these is reported, unlike a README or a sidecar file.
PHOTO_EXTENSIONS = set(".heic .heif .avif .jxl .raw .cr2 .cr3 .nef .arw .dng .orf .rw2 .raf .psd .svg".split())


def find_images(
    inputs: list[Path], recursive: bool = False, problems: list[str] | None = None, skipped: list[str] | None = None
) -> list[tuple[Path, Path]]:
    """(source, relative output stem) for every photo named or inside a named folder.

    A file named on the command line is always tried; inside a folder only files with an image
    extension are taken (hidden files and folders skipped), so a README beside the photos is not an error.
    An input or folder that cannot be used (missing, a symbolic link loop, unreadable) is one line naming it,
    appended to ``problems`` so the other inputs still count; without that list it raises ImageError.
    Photos in a format this installation cannot read are one line each in ``skipped``, when given.
    """

    def problem(message: str) -> None:
        if problems is None:
            raise ImageError(message)
        problems.append(message)

    def unreadable_folder(error: OSError) -> None:
        problem(f"{shown(error.filename)}: folder cannot be read ({_reason(error)})")

    extensions = image_extensions()
    found = []
    for root in inputs:
        try:
            folder = stat.S_ISDIR(root.stat().st_mode)
        except FileNotFoundError:
            problem(f"{shown(root)}: no such file or folder")
            continue
        except (OSError, RuntimeError, ValueError) as error:  # a link loop, no permission, a NUL in the name
            problem(f"{shown(root)}: cannot be used ({_reason(error)})")
            continue
        if not folder:
            found.append((root, Path(root.stem)))
            continue
        photos = []
        for parent, folders, files in os.walk(root, onerror=unreadable_folder):  # links to folders not followed
            folders[:] = [name for name in folders if not name.startswith(".")] if recursive else []
            for name in sorted(files):
                path = Path(parent, name)
                suffix = path.suffix.lower()
                try:
                    if name.startswith(".") or not path.is_file():  # a link loop is not a file
                        continue
                except (OSError, ValueError) as error:  # a folder that can be listed but not entered
                    problem(f"{shown(path)}: cannot be used ({_reason(error)})")
                    continue
                if suffix in extensions:
                    photos.append((path, path.relative_to(root).with_suffix("")))
                elif suffix in PHOTO_EXTENSIONS and skipped is not None:
                    skipped.append(f"{shown(path)}: skipped: {suffix} is not a format this installation reads")
        found.extend(sorted(photos))
    return found


def _float_levels(image: Image.Image) -> np.ndarray:
    """8-bit levels of a floating-point image: values in [0, 1] are fractions, values up to 255 are levels."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise _Refused("floating-point image with NaN or infinite values")
    low, high = float(values.min(initial=0)), float(values.max(initial=0))
    if low < 0 or high > 255:
        raise _Refused(f"floating-point values from {low:g} to {high:g}: only [0, 1] or [0, 255] are understood")
    return np.round(values * (255.0 if high <= 1 else 1.0)).astype(np.uint8)


def _to_rgb(image: Image.Image, warnings: list[str]) -> Image.Image:
    if image.mode == "F":
        warnings.append("32-bit floating-point image reduced to 8 bits")
        return Image.fromarray(_float_levels(image)).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if values.max(initial=0) > 255 or image.mode.startswith("I;16") else 1.0
        warnings.append("16-bit image reduced to 8 bits")
        return Image.fromarray(np.clip(np.round(values / scale), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        warnings.append("transparency flattened onto white")
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _rgb_profile(data: bytes | None, warnings: list[str]) -> bytes | None:
    """The colour profile as lcms writes it back, if it is a profile for RGB; else None and a warning.

    Parsing, not a glance at the header, so text stored as a "profile" (or after a real one) is not copied out.
    """
    if not data:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(data))
        if profile.profile.xcolor_space == "RGB ":
            return profile.tobytes()
    except MemoryError:
        raise
    except Exception:  # lcms refuses it: OSError, PyCMSError, or another error from a damaged profile
        pass
    warnings.append("colour profile unreadable or not RGB: dropped")
    return None


def _upright(image: Image.Image, warnings: list[str]) -> tuple[Image.Image, bytes | None]:
    """The image turned as its EXIF orientation says, and that EXIF without location or orientation.

    A damaged EXIF block costs the metadata (and the orientation), not the photo.
    """
    try:
        upright = ImageOps.exif_transpose(image)  # a copy whose EXIF has no orientation left
    except MemoryError:
        raise
    except Exception:
        warnings.append("EXIF unreadable: orientation not applied and metadata dropped")
        return image, None
    try:
        return upright, _exif_without_location(upright)
    except MemoryError:
        raise
    except Exception:
        warnings.append("EXIF unreadable: metadata dropped")
        return upright, None


def load_photo(path: Path, dtype: torch.dtype = torch.float32) -> Photo:
    """Decode ``path`` into RGB in [0, 1] (``torch.uint8``: 0-255, a quarter of the memory), EXIF orientation
    applied; ImageError (one line) if it cannot be.

    Any exception of the decoders becomes that ImageError, so one damaged file never stops a batch.
    """
    warnings: list[str] = []
    try:
        if not path.is_file():
            raise ImageError(f"{shown(path)}: {'not a regular file' if path.exists() else 'no such file'}")
        with Image.open(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                warnings.append(f"animated image with {image.n_frames} frames: only the first is protected")
            image.load()
            icc_profile = _rgb_profile(image.info.get("icc_profile"), warnings)
            quality, subsampling = jpeg_quality(image), jpeg_subsampling(image)
            upright, exif = _upright(image, warnings)
            rgb = _to_rgb(upright, warnings)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)
        pixels = pixels if dtype == torch.uint8 else pixels.to(dtype) / 255
    except ImageError:
        raise
    except _Refused as error:
        raise ImageError(f"{shown(path)}: {error}") from None
    except Image.DecompressionBombError as error:
        raise ImageError(f"{shown(path)}: refused as a possible decompression bomb ({_one_line(str(error))})") from None
    except UnidentifiedImageError:
        suffix = path.suffix.lower()
        if suffix in PHOTO_EXTENSIONS and suffix not in image_extensions():
            raise ImageError(f"{shown(path)}: {suffix} is not a format this installation reads") from None
        raise ImageError(f"{shown(path)}: not an image Pillow can read") from None
    except MemoryError:
        raise ImageError(f"{shown(path)}: too large to decode in the memory of this computer") from None
    except Exception as error:  # decoders raise anything on damaged data: TypeError, struct.error, IndexError...
        raise ImageError(f"{shown(path)}: unreadable image ({_reason(error)})") from None
    return Photo(path, pixels, warnings, icc_profile, exif, quality, subsampling)


# The luminance table of the JPEG standard (Annex K) for quality 50, in natural order, as libjpeg scales it.
_LUMA_TABLE = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104,
                        113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])
_SCALES = np.array([5000 / q if q < 50 else 200 - 2 * q for q in range(1, 101)])
_TABLES = np.clip((_LUMA_TABLE[None] * _SCALES[:, None] + 50) // 100, 1, 255)  # (100, 64): quality 1-100


def jpeg_quality(image: Image.Image) -> int | None:
    """The quality 1-100 whose standard luminance table is closest to a JPEG's own (exact for libjpeg's files, the
    nearest match for a camera's tables); None for an image that is not a JPEG."""
    tables = getattr(image, "quantization", None) if image.format in ("JPEG", "MPO") else None
    if not tables or len(tables.get(0, ())) != 64:
        return None
    distance = np.abs(np.log(_TABLES) - np.log(np.maximum(np.asarray(tables[0], dtype=np.float64), 1))).sum(1)
    return int(distance.argmin()) + 1


GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg_subsampling(image: Image.Image) -> str | None:
    """The coarsest of Pillow's subsamplings that loses none of a JPEG's chroma resolution, for the photo turned
    upright: "4:2:0" where the chroma has half the luma's columns and rows (or fewer), "4:2:2" where only half its
    columns (after the EXIF orientation's turn), else "4:4:4"; None for an image that is not a 3-component JPEG."""
    layers = getattr(image, "layer", None) if image.format in ("JPEG", "MPO") else None
    if not layers or len(layers) != 3:
        return None
    (_, luma_h, luma_v, _), chroma = layers[0], layers[1:]
    halved_h = all(luma_h >= 2 * h for _, h, _, _ in chroma)
    halved_v = all(luma_v >= 2 * v for _, _, v, _ in chroma)
    with contextlib.suppress(Exception):  # orientations 5-8 turn the photo a quarter: columns become rows
        if image.getexif().get(ORIENTATION) in (5, 6, 7, 8):
            halved_h, halved_v = halved_v, halved_h
    return "4:2:0" if halved_h and halved_v else "4:2:2" if halved_h else "4:4:4"


def _exif_without_location(image: Image.Image) -> bytes | None:
    """The EXIF of an upright copy, with the GPS block removed (and no orientation: it is in the pixels)."""
    exif = image.getexif()
    if not exif:
        return None
    exif.pop(GPS_IFD, None)
    exif.pop(ORIENTATION, None)
    return exif.tobytes() if exif else None


def jpeg_pixels(pixels: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """(H, W, 3) uint8: what a JPEG of ``pixels`` at ``quality`` (and ``subsampling``), as :func:`save_image` writes
    it, decodes to."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


PNG_LEVEL = 3  # zlib level: measured on a 12-megapixel photo, 2.7x faster than Pillow's default 6, 12% larger


def save_image(
    pixels: np.ndarray, path: Path, *, quality: int = 95, subsampling: str = "4:2:0", icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> list[str]:
    """Write an (H, W, 3) uint8 array atomically: a temporary file beside it, then a rename.

    PNG (lossless) unless ``path`` ends in .jpg/.jpeg: then JPEG at ``quality`` with ``subsampling`` (4:2:0 chroma
    by default, as cameras and platforms write it), so its pixels are exactly
    :func:`scenepriv.reencode.jpeg_round_trip`'s. Nothing but the given colour profile and EXIF is written: no
    XMP, IPTC or GPS data. EXIF that a JPEG cannot hold (over 64 KiB) is left out and said in the returned
    warnings. Any failure raises ImageError naming ``path``, and leaves no temporary file and any earlier ``path``
    as it was.
    """
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    options = {"quality": quality, "subsampling": subsampling} if jpeg else {"compress_level": PNG_LEVEL}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = exif
    file_format = "JPEG" if jpeg else "PNG"
    warnings: list[str] = []
    # A short name: the photo's own name may already be near the 255-byte limit of file names.
    temporary = path.parent / f".scenepriv-{secrets.token_hex(6)}.part"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never someone else's file; mode 0o666 less the umask, as any new file (mkstemp's 0600 hid photos)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except (OSError, ValueError) as error:
        raise ImageError(f"{shown(path)}: cannot write ({_reason(error)})") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            image = Image.fromarray(pixels)
            try:
                image.save(stream, format=file_format, **options)
            except ValueError as error:  # "EXIF data is too long": a JPEG holds 64 KiB of it
                if not options.pop("exif", None):
                    raise
                stream.seek(0)
                stream.truncate()
                image.save(stream, format=file_format, **options)
                warnings.append(f"EXIF left out: it does not fit in this format ({_one_line(str(error))})")
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, MemoryError):
            raise ImageError(f"{shown(path)}: cannot write: too large for the memory of this computer") from None
        if isinstance(error, Exception):  # a disk full, or an encoder error: this photo fails, not the batch
            raise ImageError(f"{shown(path)}: cannot write ({_reason(error)})") from None
        raise  # KeyboardInterrupt and the like go on, once the temporary file is gone
    return warnings


T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """Produce ``items`` in a background thread, up to ``depth`` ahead, so decoding overlaps compute."""
    queue: Queue = Queue(maxsize=max(1, depth))
    end = object()

    def produce() -> None:
        try:
            for item in items:
                queue.put((item, None))
        except BaseException as error:  # handed to the consumer, raised there
            queue.put((None, error))
        queue.put((end, None))

    Thread(target=produce, daemon=True).start()
    while True:
        item, error = queue.get()
        if error is not None:
            raise error
        if item is end:
            return
        yield item


def most_changed_box(original: np.ndarray, protected: np.ndarray, size: int = 256) -> tuple[slice, slice]:
    """The rows and columns of the ``size`` x ``size`` window (or the whole photo, if smaller) where the
    perturbation between two (H, W, 3) uint8 photos is largest: where a person should look to judge it."""
    height, width = original.shape[:2]
    rows, columns = min(size, height), min(size, width)
    change = np.abs(protected.astype(np.int16) - original.astype(np.int16)).sum(2, dtype=np.int64)
    summed = np.pad(change.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # summed-area table: any window in O(1)
    totals = (summed[rows:, columns:] - summed[:-rows, columns:] - summed[rows:, :-columns]
              + summed[:-rows, :-columns])
    top, left = np.unravel_index(int(totals.argmax()), totals.shape)
    return slice(int(top), int(top) + rows), slice(int(left), int(left) + columns)


def _label_font(size: int):
    """Pillow's own font at ``size`` pixels (FreeType), or its small bitmap font where Pillow lacks FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def _centred_text(draw, centre: tuple[float, float], texts: list[str], font, fill: tuple[int, int, int],
                  width: int) -> None:
    """The first of ``texts`` that fits in ``width`` pixels (else the last), centred on ``centre``."""
    for text in texts:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= width - 8:  # a margin on either side
            break
    draw.text((centre[0] - (left + right) / 2, centre[1] - (top + bottom) / 2), text, fill=fill, font=font)


def most_changed_crop(original: np.ndarray, protected: np.ndarray, size: int = 256, gap: int = 8) -> np.ndarray:
    """What ``protect --compare`` writes: original (left) and protected (right), labelled on the image. On top the
    ``size`` x ``size`` window of :func:`most_changed_box` at 100%, where a person should judge the perturbation;
    below it, when the photo is larger than that window, the whole photo downsized to the window's width with the
    window outlined, so the crop has its context. (H, W, 3) uint8."""
    from PIL import ImageDraw

    rows, columns = most_changed_box(original, protected, size)
    height, width = original.shape[:2]
    crop_height, column = rows.stop - rows.start, columns.stop - columns.start
    whole = crop_height < height or column < width
    scale = column / width
    overview = (column, max(1, round(height * scale)))
    header, caption = 24, (20 if whole else 0)
    canvas = Image.new("RGB", (2 * column + gap, header + crop_height + caption + (overview[1] if whole else 0)),
                       "white")
    draw = ImageDraw.Draw(canvas)
    title, small = _label_font(15), _label_font(12)
    for side, (name, pixels) in enumerate((("original", original), ("protected", protected))):
        left = side * (column + gap)
        _centred_text(draw, (left + column / 2, header / 2), [name], title, (30, 30, 30), column)
        canvas.paste(Image.fromarray(pixels[rows, columns]), (left, header))
        if whole:
            top = header + crop_height + caption
            canvas.paste(Image.fromarray(pixels).resize(overview, Image.Resampling.LANCZOS), (left, top))
            box = [left + columns.start * scale, top + rows.start * scale,
                   left + columns.stop * scale - 1, top + rows.stop * scale - 1]
            draw.rectangle(box, outline=(230, 0, 0), width=2)
    if whole:
        notes = [f"top: the most changed {column}x{crop_height} at 100%; bottom: the whole photo, the crop boxed",
                 "top: most changed region, 100%; bottom: whole photo", "top: 100%; bottom: whole"]
        _centred_text(draw, (canvas.width / 2, header + crop_height + caption / 2), notes, small, (90, 90, 90),
                      canvas.width)
    return np.asarray(canvas)
