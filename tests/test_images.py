"""Unit tests of :mod:`scenepriv.images`: decoding any photo Pillow reads into RGB in [0, 1], and atomic PNG writes.

Every image is generated with Pillow in ``tmp_path``; only the truncated-JPEG case reads an example photo.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageCms, features

from scenepriv.images import ImageError, find_images, load_photo, save_image, shown

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


def test_damaged_exif_costs_the_metadata_not_the_photo(tmp_path):
    # A camera JPEG whose Make field was changed into an ImageWidth field holding text: Pillow's EXIF
    # writer raises struct.error inside exif_transpose. The pixels are fine and must still be protected.
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Fuzzcam"
    stream = io.BytesIO()
    image.save(stream, format="JPEG", exif=exif, quality=95, subsampling=0)
    make_entry = struct.pack(">HH", ExifTags.Base.Make, 2)  # big-endian tag and type ASCII, as Pillow writes them
    path = tmp_path / "camera.jpg"
    path.write_bytes(stream.getvalue().replace(make_entry, struct.pack(">HH", ExifTags.Base.ImageWidth, 2), 1))

    photo = load_photo(path)

    assert_rgb_unit(photo, 20, 40)  # as stored: the orientation could not be applied
    assert pixel(photo, 3, 3) == pytest.approx(RED, abs=0.1)
    assert photo.exif is None
    assert "EXIF unreadable: orientation not applied and metadata dropped" in photo.warnings


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


def test_float_tiff_in_unit_range_is_taken_as_fractions(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"

    photo = load_photo(tmp_path / "float.tif")

    assert_rgb_unit(photo, 1, 4)
    for channel in range(3):
        torch.testing.assert_close(photo.pixels[channel, 0], torch.tensor([0, 128, 255, 64]) / 255)
    assert any("floating-point" in warning for warning in photo.warnings)


def test_float_tiff_above_one_is_taken_as_8_bit_levels(tmp_path):
    values = np.array([[0.0, 2.0, 127.6, 255.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")

    photo = load_photo(tmp_path / "float.tif")

    torch.testing.assert_close(photo.pixels[1, 0], torch.tensor([0, 2, 128, 255]) / 255)


@pytest.mark.parametrize(
    ("value", "reason"), [(float("nan"), "NaN"), (float("inf"), "infinite"), (-0.5, "-0.5"), (1000.0, "1000")]
)
def test_float_tiff_outside_the_known_ranges_is_refused(tmp_path, value, reason):
    values = np.array([[0.0, 0.5, value]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "float.tif")

    with pytest.raises(ImageError, match=rf"float\.tif: floating-point .*{reason}"):
        load_photo(tmp_path / "float.tif")


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


# --- colour profiles ----------------------------------------------------------------------------------------------


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _photo_with_profile(tmp_path: Path, profile: bytes) -> Path:
    path = tmp_path / "profiled.jpg"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path, icc_profile=profile)
    assert Image.open(path).info["icc_profile"] == profile
    return path


def test_rgb_colour_profile_is_kept(tmp_path):
    profile = _srgb_profile()
    photo = load_photo(_photo_with_profile(tmp_path, profile))

    assert photo.icc_profile == profile
    assert photo.warnings == []


@pytest.mark.parametrize(
    "profile",
    [
        bytes(16) + b"RGB " + b"home: 12 Elm Street, 50.88N 4.70E" * 4,  # passes a look at the colour space bytes
        ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes(),  # a real profile, but not for RGB
    ],
    ids=["junk", "lab"],
)
def test_colour_profile_that_is_not_an_rgb_profile_is_dropped(tmp_path, profile):
    photo = load_photo(_photo_with_profile(tmp_path, profile))

    assert photo.icc_profile is None
    assert "colour profile unreadable or not RGB: dropped" in photo.warnings


def test_text_after_a_real_colour_profile_is_not_kept(tmp_path):
    profile = _srgb_profile()
    photo = load_photo(_photo_with_profile(tmp_path, profile + b"home: 12 Elm Street, 50.88N 4.70E"))

    assert photo.icc_profile is not None and b"Elm Street" not in photo.icc_profile
    assert ImageCms.ImageCmsProfile(io.BytesIO(photo.icc_profile)).profile.xcolor_space == "RGB "


# --- formats beyond Pillow's own ----------------------------------------------------------------------------------


def _two_colours() -> Image.Image:
    image = Image.new("RGB", (32, 16), (255, 0, 0))
    image.paste((0, 0, 255), (16, 0, 32, 16))
    return image


def test_heic_photo_is_read(tmp_path):
    pytest.importorskip("pillow_heif")
    path = tmp_path / "iphone.heic"
    try:
        _two_colours().save(path, quality=95)
    except (KeyError, OSError, ValueError) as error:  # pillow-heif without an encoder
        pytest.skip(f"pillow-heif cannot encode HEIC here: {error}")

    photo = load_photo(path)

    assert_rgb_unit(photo, 16, 32)
    assert pixel(photo, 8, 4) == pytest.approx(RED, abs=0.1)
    assert pixel(photo, 8, 28) == pytest.approx(BLUE, abs=0.1)
    assert find_images([tmp_path]) == [(path, Path("iphone"))]


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow does not read AVIF")
def test_avif_photo_is_read_and_a_damaged_one_is_one_error(tmp_path):
    path = tmp_path / "photo.avif"
    _two_colours().save(path, quality=95)
    photo = load_photo(path)
    assert_rgb_unit(photo, 16, 32)
    assert pixel(photo, 8, 4) == pytest.approx(RED, abs=0.1)

    data = path.read_bytes()
    damaged = tmp_path / "damaged.avif"
    start = data.index(b"mdat") + 4  # the compressed colour planes, zeroed: libavif raises RuntimeError
    damaged.write_bytes(data[:start] + bytes(len(data) - start))
    with pytest.raises(ImageError, match="damaged.avif: "):
        load_photo(damaged)


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


@pytest.mark.parametrize(
    "error",
    [
        TypeError("Missing dimensions"),
        RuntimeError("Failed to decode frame 0"),
        struct.error("unpack requires a buffer of 4 bytes"),
        IndexError("tuple index out of range"),
        ZeroDivisionError("division by zero"),
        KeyError(256),
    ],
    ids=lambda error: type(error).__name__,
)
def test_any_decoder_exception_becomes_one_line_naming_the_file(tmp_path, monkeypatch, error):
    path = tmp_path / "damaged.tif"
    Image.new("RGB", (4, 4)).save(path)

    def failing_open(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", failing_open)
    with pytest.raises(ImageError) as caught:
        load_photo(path)

    assert str(caught.value).startswith(f"{path}: unreadable image ({type(error).__name__}")
    assert "\n" not in str(caught.value)


def test_photo_too_large_for_the_memory_is_one_error(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (4, 4)).save(path)

    def exhausted(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image.Image, "convert", exhausted)
    with pytest.raises(ImageError, match="huge.png: too large .* memory"):
        load_photo(path)


def test_interrupting_a_decode_is_not_turned_into_an_image_error(tmp_path, monkeypatch):
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image, "open", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_photo(tmp_path / "photo.png")


def test_raw_photo_named_explicitly_says_its_format_is_not_read(tmp_path):
    path = tmp_path / "IMG_0001.CR2"
    path.write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(64))

    with pytest.raises(ImageError, match=r"IMG_0001.CR2: \.cr2 is not a format this installation reads"):
        load_photo(path)


def test_file_name_with_a_newline_stays_on_one_line(tmp_path):
    path = tmp_path / "holiday\nerror: forged line.jpg"
    path.write_text("not a photo")

    with pytest.raises(ImageError) as caught:
        load_photo(path)

    message = str(caught.value)
    assert "\n" not in message and message.isprintable()
    assert "holiday\\nerror: forged line.jpg" in message


def test_shown_escapes_control_characters_only():
    assert shown(Path("/photos/été 2024/a\tb\r\x1b[31m.jpg")) == "/photos/été 2024/a\\tb\\r\\x1b[31m.jpg"


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


def test_find_images_missing_path_or_link_loop_is_a_problem_and_the_rest_carries_on(photo_tree, tmp_path):
    missing = tmp_path / "no_such\nfolder"
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    problems: list[str] = []

    found = find_images([missing, loop, photo_tree], problems=problems)

    assert found == [(photo_tree / "B.PNG", Path("B")), (photo_tree / "a.jpg", Path("a"))]
    assert problems == [
        f"{tmp_path}/no_such\\nfolder: no such file or folder",
        f"{loop}: cannot be used (OSError: Too many levels of symbolic links)",
    ]


def test_find_images_link_loop_without_a_problem_list_raises(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ImageError, match="loop: "):
        find_images([loop])


def test_find_images_unreadable_folder_is_a_problem(photo_tree, monkeypatch):
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == photo_tree / "trip":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # chmod does not stop root, who may run the tests
    problems: list[str] = []

    found = find_images([photo_tree], recursive=True, problems=problems)

    assert [relative for _, relative in found] == [Path("B"), Path("a")]
    assert problems == [f"{photo_tree / 'trip'}: folder cannot be read (PermissionError: Permission denied)"]


def test_find_images_link_loops_inside_a_folder_do_not_stop_the_walk(photo_tree):
    (photo_tree / "trip" / "back").symlink_to(photo_tree, target_is_directory=True)
    (photo_tree / "self.jpg").symlink_to(photo_tree / "self.jpg")
    problems: list[str] = []

    found = find_images([photo_tree], recursive=True, problems=problems)

    assert [relative for _, relative in found] == [Path("B"), Path("a"), Path("trip/c"), Path("trip/day1/d")]
    assert problems == []


def test_find_images_reports_photos_in_formats_it_cannot_read(photo_tree):
    for name in ("IMG_0001.CR2", "scan.jxl", "notes.md"):
        (photo_tree / name).write_bytes(b"\x00" * 16)
    skipped: list[str] = []

    found = find_images([photo_tree], skipped=skipped)

    assert [relative for _, relative in found] == [Path("B"), Path("a")]
    assert skipped == [
        f"{photo_tree / 'IMG_0001.CR2'}: skipped: .cr2 is not a format this installation reads",
        f"{photo_tree / 'scan.jxl'}: skipped: .jxl is not a format this installation reads",
    ]
    assert find_images([photo_tree]) == found  # without the list, as quiet as before


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

    with pytest.raises(ImageError, match="protected.png.*disk full"):
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
    with pytest.raises(ImageError):
        save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination)

    assert destination.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["protected.png"]


def test_save_image_failure_is_one_line_naming_the_output(tmp_path):
    (tmp_path / "taken").write_text("a file where the output folder should be")
    destination = tmp_path / "taken" / "new\nline.png"

    with pytest.raises(ImageError) as caught:
        save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination)

    message = str(caught.value)
    assert message.startswith(f"{shown(destination)}: cannot write (") and message.isprintable()


def test_save_image_with_a_name_of_245_characters(tmp_path):
    destination = tmp_path / ("p" * 241 + ".png")

    assert save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination) == []

    assert [p.name for p in tmp_path.iterdir()] == [destination.name]


def _long_exif() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Fuzzcam"
    exif[ExifTags.Base.ImageDescription] = "x" * 70_000  # over the 64 KiB a JPEG segment holds
    return exif.tobytes()


def test_exif_too_long_for_a_jpeg_is_left_out_with_a_warning(tmp_path):
    destination = tmp_path / "protected.jpg"

    warnings = save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination, exif=_long_exif())

    assert len(warnings) == 1 and warnings[0].startswith("EXIF left out")
    with Image.open(destination) as image:
        assert image.format == "JPEG" and "exif" not in image.info
    assert [p.name for p in tmp_path.iterdir()] == ["protected.jpg"]


def test_long_exif_is_kept_in_a_png(tmp_path):
    destination = tmp_path / "protected.png"

    assert save_image(np.zeros((4, 4, 3), dtype=np.uint8), destination, exif=_long_exif()) == []

    with Image.open(destination) as image:
        assert image.getexif()[ExifTags.Base.Make] == "Fuzzcam"


def test_most_changed_crop_shows_where_the_change_is_largest_side_by_side_labelled_over_the_whole_photo():
    from scenepriv.images import most_changed_box, most_changed_crop

    original = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    protected = original.copy()
    protected[200:230, 40:70] ^= 8  # the largest change, near the bottom left
    protected[10:12, 400:402] ^= 1  # a small one elsewhere
    compare = most_changed_crop(original, protected, size=64, gap=4)
    rows, columns = most_changed_box(original, protected, 64)

    header, caption, overview = 24, 20, round(300 * 64 / 500)
    assert compare.shape == (header + 64 + caption + overview, 2 * 64 + 4, 3)
    left, right = compare[header:header + 64, :64], compare[header:header + 64, 68:]
    assert (left == original[rows, columns]).all() and (right == protected[rows, columns]).all()  # at 100%
    assert (left != right).sum() == 30 * 30 * 3  # the whole changed square is inside the window
    assert (compare[header:header + 64, 64:68] == 255).all() and (compare[-overview:, 64:68] == 255).all()  # gap
    labels = compare[:header].min(axis=2) < 128  # dark text on white: "original" and "protected"
    assert labels[:, :64].sum() > 20 and labels[:, 68:].sum() > labels[:, :64].sum()  # "protected" is longer
    assert (compare[header + 64:header + 64 + caption].min(axis=2) < 200).any()  # the caption between the rows
    for half in (compare[-overview:, :64], compare[-overview:, 68:]):  # the whole photo, the window boxed in red
        red = (half[..., 0] > 200) & (half[..., 1] < 40) & (half[..., 2] < 40)
        ys, xs = np.nonzero(red)
        scale = 64 / 500
        assert abs(xs.min() - columns.start * scale) <= 1 and abs(xs.max() - (columns.stop * scale - 1)) <= 1
        assert abs(ys.min() - rows.start * scale) <= 1 and abs(ys.max() - (rows.stop * scale - 1)) <= 1
    downsized = np.asarray(Image.fromarray(original).resize((64, overview), Image.Resampling.LANCZOS))
    assert np.abs(compare[-overview:, :64].astype(int) - downsized).mean() < 20  # mostly the photo, not the box

    small = most_changed_crop(original[:20, :30], protected[:20, :30], size=64)  # the window is the whole photo
    assert small.shape == (header + 20, 2 * 30 + 8, 3)  # no second view of the same pixels
    assert (small[header:, :30] == original[:20, :30]).all() and (small[header:, 38:] == protected[:20, :30]).all()
