"""Decoding: EXIF orientation, every color mode to RGB, corrupt data, JPEG draft."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionauto.data.images import load_image, read_image_size, to_rgb
from visionauto.errors import DataError


def _two_tone(size: tuple[int, int]) -> Image.Image:
    """Top half red, bottom half blue."""
    width, height = size
    arr = np.zeros((height, width, 3), np.uint8)
    arr[: height // 2] = (255, 0, 0)
    arr[height // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    displayed = _two_tone((40, 56))
    stored = displayed.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    assert Image.open(path).size == (56, 40)
    image = load_image(path)
    assert (image.mode, image.size) == ("RGB", (40, 56))
    top, bottom = image.getpixel((20, 5)), image.getpixel((20, 50))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    assert read_image_size(path) == (40, 56, "jpeg")


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "1", "I", "F"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    image = load_image(
        _encode(
            Image.new("RGB", (12, 8), (90, 90, 90)).convert(mode),
            "JPEG" if mode == "CMYK" else "TIFF" if mode in ("I", "F") else "PNG",
        )
    )
    assert (image.mode, image.size) == ("RGB", (12, 8))


def test_in_memory_modes_become_rgb() -> None:
    for mode in ("PA", "RGBa", "YCbCr", "HSV", "I;16"):
        image = to_rgb(
            Image.new("RGB", (5, 3), (90, 90, 90)).convert(mode)
            if mode != "I;16"
            else Image.new(mode, (5, 3), 1000)
        )
        assert (image.mode, image.size) == ("RGB", (5, 3)), mode


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    image = load_image(_encode(rgba, "PNG"))
    assert image.getpixel((0, 0)) == (255, 0, 0)
    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    image = load_image(_encode(Image.fromarray(arr), "PNG"))
    assert [image.getpixel((x, 0)) for x in range(3)] == [
        (0, 0, 0),
        (128, 128, 128),
        (255, 255, 255),
    ]


def test_cmyk_jpeg_colors_survive() -> None:
    image = load_image(_encode(Image.new("RGB", (8, 8), (220, 30, 30)).convert("CMYK"), "JPEG"))
    red, green, blue = image.getpixel((4, 4))
    assert red > 180 and green < 70 and blue < 70


def test_corrupt_missing_and_non_image(tmp_path: Path) -> None:
    good = _encode(_two_tone((64, 64)), "JPEG")
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg cannot be decoded: .*[Tt]runcated"):
        load_image(tmp_path / "cut.jpg")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(DataError, match=r"text\.png cannot be decoded: cannot identify"):
        load_image(str(tmp_path / "text.png"))
    with pytest.raises(DataError, match=r"gone\.png does not exist"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(DataError, match=r"<5 bytes> cannot be decoded"):
        load_image(b"hello")


def test_jpeg_draft_keeps_both_sides_above_the_size() -> None:
    data = _encode(_two_tone((400, 300)), "JPEG")
    assert load_image(data, draft_size=100).size == (200, 150)
    assert load_image(data).size == (400, 300)
    assert load_image(_encode(_two_tone((400, 300)), "PNG"), draft_size=100).size == (400, 300)
