"""Fuzz test of :mod:`scenepriv.images`: no damaged file may escape as anything but a one-line ImageError.

A seeded corpus is built at test time: small valid JPEG, PNG, TIFF and WebP images whose bytes are mutated
(bytes changed, the file cut short, chunks inserted or deleted), and JPEGs whose EXIF block or colour profile
alone is mutated. Each case is made from ``numpy.random.default_rng([SEED, index])``, so a failure is
reproduced by its index alone (with the same Pillow): ``pytest tests/test_fuzz.py -k case017``.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageCms

from scenepriv.images import ImageError, load_photo, save_image

SEED = 20240611
CASES = 300
WIDTH, HEIGHT = 24, 16


def _encoded(image: Image.Image, file_format: str, **options) -> bytes:
    stream = io.BytesIO()
    image.save(stream, format=file_format, **options)
    return stream.getvalue()


def _camera_exif() -> Image.Exif:
    """EXIF as a phone writes it: orientation, camera, time, and a GPS block with a position."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Fuzzcam"
    exif[ExifTags.Base.Model] = "Model 7"
    exif[ExifTags.Base.DateTime] = "2024:06:11 12:34:56"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:06:11 12:34:56"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update(
        {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (50.0, 52.0, 43.5),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (4.0, 42.0, 2.25),
        }
    )
    return exif


@cache
def _sources() -> dict[str, tuple[str, bytes]]:
    """The valid images every case starts from: name -> (file extension, bytes)."""
    rng = np.random.default_rng(SEED)
    gradient = np.linspace(0, 255, WIDTH)[None, :, None] * np.ones((HEIGHT, 1, 3))
    rgb = np.clip(gradient + rng.normal(0, 30, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    alpha = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8))
    rgba = image.copy()
    rgba.putalpha(alpha)
    levels = Image.fromarray(rng.random((HEIGHT, WIDTH), dtype=np.float32), mode="F")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return {
        "jpeg": (".jpg", _encoded(image, "JPEG", quality=90)),
        "png": (".png", _encoded(rgba, "PNG")),
        "tiff": (".tif", _encoded(image, "TIFF", compression="tiff_lzw")),
        "tiff-float": (".tif", _encoded(levels, "TIFF")),
        "webp": (".webp", _encoded(image, "WEBP", quality=80)),
        "jpeg-exif": (".jpg", _encoded(image, "JPEG", quality=90, exif=_camera_exif())),
        "jpeg-icc": (".jpg", _encoded(image, "JPEG", quality=90, icc_profile=srgb)),
    }


def _jpeg_block(data: bytes, signature: bytes) -> tuple[int, int]:
    """(start, end) of the payload that follows ``signature`` in its JPEG segment (the EXIF or ICC block)."""
    start = data.index(signature)
    length = int.from_bytes(data[start - 2 : start], "big")  # the segment length field, counting itself
    return start + len(signature), start - 2 + length


def _mutated(data: bytes, rng: np.random.Generator, mutation: str, span: tuple[int, int] | None = None) -> bytes:
    """``data`` with one kind of damage; a ``span`` limits byte changes to that range (one EXIF or ICC block)."""
    buffer = bytearray(data)
    start, end = span or (0, len(buffer))
    if mutation == "flip":
        for position in rng.integers(start, end, size=int(rng.integers(1, 17))):
            buffer[position] = int(rng.integers(0, 256))
    elif mutation == "truncate":
        del buffer[int(rng.integers(0, len(buffer))) :]
    elif mutation == "insert":
        position = int(rng.integers(0, len(buffer) + 1))
        buffer[position:position] = rng.integers(0, 256, size=int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    elif mutation == "delete":
        position = int(rng.integers(0, len(buffer)))
        del buffer[position : position + int(rng.integers(1, 65))]
    return bytes(buffer)


def fuzz_case(index: int) -> tuple[str, bytes]:
    """Case ``index`` of the corpus: (file name, bytes), the same on every run."""
    rng = np.random.default_rng([SEED, index])
    names = sorted(_sources())
    source = names[index % len(names)]
    extension, data = _sources()[source]
    if source in ("jpeg-exif", "jpeg-icc") and rng.random() < 0.75:  # damage the metadata only
        signature = b"Exif\x00\x00" if source == "jpeg-exif" else b"ICC_PROFILE\x00\x01\x01"
        data = _mutated(data, rng, "flip", _jpeg_block(data, signature))
        mutation = "block-flip"
    else:
        mutation = str(rng.choice(["flip", "truncate", "insert", "delete"]))
        data = _mutated(data, rng, mutation)
    return f"case{index:03d}-{source}-{mutation}{extension}", data


def _one_line_naming(message: str, name: str) -> bool:
    return name in message and message.isprintable() and message.strip() == message


@pytest.fixture(autouse=True)
def small_bomb_limit(monkeypatch):
    # A mutated header may claim millions of pixels: refuse those quickly instead of decoding them.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250_000)


@pytest.mark.filterwarnings("ignore")  # Pillow warns about the damage it tolerates ("Corrupt EXIF data")
@pytest.mark.parametrize("index", range(CASES), ids=lambda index: f"case{index:03d}")
def test_damaged_file_loads_or_raises_one_line_image_error(tmp_path, index):
    name, data = fuzz_case(index)
    path = tmp_path / name
    path.write_bytes(data)
    reproduce = f"seed {SEED}, case {index} ({name})"

    try:
        photo = load_photo(path)
    except ImageError as error:
        assert _one_line_naming(str(error), name), f"{reproduce}: {error!r}"
        return
    except Exception as error:  # anything else escapes the contract
        pytest.fail(f"{reproduce}: load_photo raised {type(error).__name__}: {error}")

    pixels = photo.pixels
    assert pixels.dtype == torch.float32 and pixels.ndim == 3 and pixels.shape[0] == 3, reproduce
    assert pixels.shape[1] >= 1 and pixels.shape[2] >= 1, reproduce
    assert bool(torch.isfinite(pixels).all()) and 0.0 <= float(pixels.min()) <= float(pixels.max()) <= 1.0, reproduce

    levels = (pixels.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    for output in (tmp_path / "out" / "protected.png", tmp_path / "out" / "protected.jpg"):
        try:
            save_image(levels, output, icc_profile=photo.icc_profile, exif=photo.exif)
        except ImageError as error:
            assert _one_line_naming(str(error), output.name), f"{reproduce}: {error!r}"
            assert list(output.parent.iterdir()) == [], f"{reproduce}: a temporary file was left behind"
            continue
        except Exception as error:
            pytest.fail(f"{reproduce}: save_image to {output.name} raised {type(error).__name__}: {error}")
        with Image.open(output) as written:
            written.load()
            assert written.size == (levels.shape[1], levels.shape[0]), reproduce
        output.unlink()


BATCH_CASES = 60


@pytest.mark.filterwarnings("ignore")
def test_a_folder_of_damaged_files_is_protected_or_reported_file_by_file(tmp_path, capsys):
    """The whole command on a folder of damaged files beside a good one: each file is either saved or named on
    exactly one error line; no traceback, and the batch is never lost."""
    from scenepriv.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    names = []
    for index in range(BATCH_CASES):
        name, data = fuzz_case(index)
        (folder / name).write_bytes(data)
        names.append(name)
    Image.new("RGB", (WIDTH, HEIGHT), (90, 140, 200)).save(folder / "good.png")

    code = main(["protect", str(folder), "-o", str(tmp_path / "out"), "--method", "fgsm", "--seed", "0"])

    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 1)
    errors = [line for line in err.splitlines() if line.startswith("error:") and "not protected" not in line]
    saved = {path.stem for path in (tmp_path / "out").iterdir()}
    assert "good" in saved
    for name in names:
        stem = name.rsplit(".", 1)[0]
        naming = [line for line in errors if name in line]
        assert (stem in saved) != bool(naming), f"{name}: saved={stem in saved}, error lines {naming}"
        assert len(naming) <= 1, naming
