"""Unit tests of :mod:`scenepriv.images`: decoding any photo Pillow reads into RGB in [0, 1], and atomic PNG writes.

Every image is generated with Pillow in ``tmp_path``; only the truncated-JPEG case reads an example photo.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from scenepriv.images import ImageError, find_images, load_photo, save_image

EXAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "examples" / "photos"

RED, GREEN, BLUE, WHITE = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0)


def pixel(photo, row: int, column: int) -> tuple[float, ...]:
    return tuple(float(v) for v in photo.pixels[:, row, column])


def assert_rgb_unit(photo, height: int, width: int) -> None:
    assert photo.pixels.shape == (3, height, width)
    assert photo.pixels.dtype == torch.float32
    assert float(photo.pixels.min()) >= 0.0 and float(photo.pixels.max()) <= 1.0


# --- EXIF orientation -----------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, blue with a red top-left corner; Orientation 6 = "rotate 90 degrees clockwise".
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    path = tmp_path / "camera.jpg"
    image.save(path, exif=exif, quality=95, subsampling=0)

    photo = load_photo(path)

    assert_rgb_unit(photo, 40, 20)  # displayed: 20 wide x 40 high
    # The stored top-left corner is displayed at the top right; the rest stays blue.
    assert pixel(photo, 3, 16) == pytest.approx(RED, abs=0.1)
    assert pixel(photo, 3, 3) == pytest.approx(BLUE, abs=0.1)
    assert pixel(photo, 36, 3) == pytest.approx(BLUE, abs=0.1)
    assert pixel(photo, 36, 16) == pytest.approx(BLUE, abs=0.1)


def test_without_exif_nothing_is_rotated(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    image.save(tmp_path / "plain.png")

    photo = load_photo(tmp_path / "plain.png")

    assert_rgb_unit(photo, 20, 40)
    assert pixel(photo, 3, 3) == pytest.approx(RED)
    assert pixel(photo, 16, 36) == pytest.approx(BLUE)
    assert photo.warnings == []


# --- colour modes -------------------------------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels(tmp_path):
    image = Image.new("L", (3, 1))
    for x, value in enumerate((0, 128, 255)):
        image.putpixel((x, 0), value)
    image.save(tmp_path / "gray.png")

    photo = load_photo(tmp_path / "gray.png")

    assert_rgb_unit(photo, 1, 3)
    expected = torch.tensor([0, 128, 255], dtype=torch.float32) / 255
    for channel in range(3):
        torch.testing.assert_close(photo.pixels[channel, 0], expected)


def test_rgba_transparency_is_flattened_onto_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (10, 20, 30, 0))  # fully transparent: white, whatever its colour
    image.putpixel((1, 0), (255, 0, 0, 255))  # opaque red
    image.putpixel((2, 0), (0, 0, 0, 128))  # half-transparent black over white: mid grey
    image.save(tmp_path / "rgba.png")

    photo = load_photo(tmp_path / "rgba.png")

    assert_rgb_unit(photo, 1, 3)
    assert pixel(photo, 0, 0) == pytest.approx(WHITE)
    assert pixel(photo, 0, 1) == pytest.approx(RED)
    assert pixel(photo, 0, 2) == pytest.approx((0.5, 0.5, 0.5), abs=0.01)
    assert any("transparen" in warning for warning in photo.warnings)


def test_palette_image_uses_its_palette(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.putpixel((0, 0), 1)
    image.putpixel((1, 0), 0)
    image.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"

    photo = load_photo(tmp_path / "palette.png")

    assert_rgb_unit(photo, 1, 2)
    assert pixel(photo, 0, 0) == pytest.approx(GREEN)
    assert pixel(photo, 0, 1) == pytest.approx(RED)


def test_cmyk_is_converted_to_rgb(tmp_path):
    image = Image.new("CMYK", (4, 1))
    for x, value in enumerate([(0, 0, 0, 0), (255, 0, 0, 0), (0, 0, 0, 255), (0, 255, 0, 0)]):
        image.putpixel((x, 0), value)
    image.save(tmp_path / "cmyk.tif")  # TIFF keeps CMYK exactly
    assert Image.open(tmp_path / "cmyk.tif").mode == "CMYK"

    photo = load_photo(tmp_path / "cmyk.tif")

    assert_rgb_unit(photo, 1, 4)
    assert pixel(photo, 0, 0) == pytest.approx(WHITE)
    assert pixel(photo, 0, 1) == pytest.approx((0.0, 1.0, 1.0))  # cyan
    assert pixel(photo, 0, 2) == pytest.approx((0.0, 0.0, 0.0))  # black
    assert pixel(photo, 0, 3) == pytest.approx((1.0, 0.0, 1.0))  # magenta


def test_16_bit_grayscale_is_scaled_to_unit_range(tmp_path):
    values = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")

    photo = load_photo(tmp_path / "deep.png")

    assert_rgb_unit(photo, 1, 4)
    for channel in range(3):
        row = photo.pixels[channel, 0]
        assert float(row[0]) == pytest.approx(1.0)
        assert float(row[1]) == pytest.approx(0.5, abs=0.01)
        assert float(row[2]) == pytest.approx(0.0)
        assert float(row[3]) == pytest.approx(1 / 255)


def test_animated_gif_gives_its_first_frame_and_a_warning(tmp_path):
    frames = [Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 2

    photo = load_photo(path)

    assert_rgb_unit(photo, 6, 8)
    assert pixel(photo, 2, 3) == pytest.approx(RED)
    assert any("frame" in warning for warning in photo.warnings)


def test_still_image_has_no_frame_warning(tmp_path):
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "still.gif")
    assert not any("frame" in warning for warning in load_photo(tmp_path / "still.gif").warnings)


# --- files that are not usable photos --------------------------------------------------------------------------


def _not_an_image(tmp_path: Path) -> Path:
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, bread\n")
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.touch()
    return path


def _truncated(tmp_path: Path) -> Path:
    data = (EXAMPLE_PHOTOS / "home.jpg").read_bytes()
    path = tmp_path / "cut_in_half.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _bomb(tmp_path: Path) -> Path:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (50, 50), (0, 128, 0)).save(path)
    return path


@pytest.mark.parametrize("make", [_not_an_image, _empty, _truncated, _bomb], ids=["text", "empty", "truncated", "bomb"])
def test_unusable_file_raises_a_one_line_error_naming_it(tmp_path, monkeypatch, make):
    path = make(tmp_path)
    # 50 x 50 = 2500 pixels, over twice this limit: Pillow refuses it as a decompression bomb.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(ImageError) as caught:
        load_photo(path)

    message = str(caught.value)
    assert path.name in message
    assert "\n" not in message and message.strip() == message
    if make is _bomb:
        assert "bomb" in message


def test_bomb_limit_does_not_refuse_normal_images(tmp_path):
    Image.new("RGB", (50, 50), (0, 128, 0)).save(tmp_path / "fine.png")
    assert_rgb_unit(load_photo(tmp_path / "fine.png"), 50, 50)


# --- finding photos ---------------------------------------------------------------------------------------------


@pytest.fixture
def photo_tree(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    (root / "trip" / "day1").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    for relative in ("a.jpg", "B.PNG", "trip/c.png", "trip/day1/d.gif", ".thumbnails/e.jpg", ".hidden.jpg"):
        file_format = Image.registered_extensions()[Path(relative).suffix.lower()]
        Image.new("RGB", (4, 4)).save(root / relative, format=file_format)
    (root / "README.txt").write_text("holiday photos\n")
    return root


def test_find_images_in_a_folder_takes_only_its_photos(photo_tree):
    found = find_images([photo_tree])

    assert found == [(photo_tree / "B.PNG", Path("B")), (photo_tree / "a.jpg", Path("a"))]


def test_find_images_recursive_mirrors_the_tree(photo_tree):
    found = find_images([photo_tree], recursive=True)

    assert sorted(found) == sorted(
        [
            (photo_tree / "a.jpg", Path("a")),
            (photo_tree / "B.PNG", Path("B")),
            (photo_tree / "trip" / "c.png", Path("trip/c")),
            (photo_tree / "trip" / "day1" / "d.gif", Path("trip/day1/d")),
        ]
    )


def test_find_images_always_tries_a_named_file(photo_tree):
    # A file named explicitly is taken whatever its extension: load_photo then decides whether it is a photo.
    readme = photo_tree / "README.txt"
    found = find_images([readme, photo_tree / "trip" / "c.png"])

    assert found == [(readme, Path("README")), (photo_tree / "trip" / "c.png", Path("c"))]


def test_find_images_missing_path_raises(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(ImageError, match="no_such_folder"):
        find_images([tmp_path, missing])


# --- writing PNGs -------------------------------------------------------------------------------------------------


def test_save_image_round_trips_exactly_and_leaves_no_temporary_file(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    destination = tmp_path / "out" / "nested" / "protected.png"

    save_image(pixels, destination)

    with Image.open(destination) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(image), pixels)
    assert sorted(p.name for p in destination.parent.iterdir()) == ["protected.png"]


def test_saved_photo_gets_the_permissions_of_a_normally_created_file(tmp_path):
    umask = os.umask(0o027)
    try:
        save_image(np.zeros((4, 4, 3), dtype=np.uint8), tmp_path / "protected.png")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "protected.png").stat().st_mode) == 0o640  # 0o666 minus the umask, not 0o600


def test_save_image_replaces_an_existing_output(tmp_path):
    destination = tmp_path / "protected.png"
    save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination)
    save_image(np.full((4, 4, 3), 200, dtype=np.uint8), destination)

    np.testing.assert_array_equal(np.asarray(Image.open(destination)), np.full((4, 4, 3), 200, dtype=np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["protected.png"]


def test_failed_save_leaves_no_file_behind(tmp_path, monkeypatch):
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    destination = tmp_path / "protected.png"

    with pytest.raises(OSError, match="disk full"):
        save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination)

    assert not destination.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_output_intact(tmp_path, monkeypatch):
    destination = tmp_path / "protected.png"
    save_image(np.full((4, 4, 3), 7, dtype=np.uint8), destination)
    before = destination.read_bytes()

    def half_written_save(self, stream, *args, **kwargs):
        stream.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", half_written_save)
    with pytest.raises(OSError):
        save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination)

    assert destination.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["protected.png"]
