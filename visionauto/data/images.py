"""Decode images the same way everywhere: EXIF orientation applied, always 8-bit RGB.

Grayscale, palette, RGBA, CMYK and 16-bit images are converted, never rejected; only data that
Pillow cannot decode (missing, truncated, not an image) raises :class:`DataError`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from visionauto.data.urls import is_remote, read_image_bytes
from visionauto.errors import DataError

ImageSource = str | Path | bytes
_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 or 270 degrees
_WHITE = (255, 255, 255, 255)


def _describe(src: ImageSource) -> str:
    return f"<{len(src)} bytes>" if isinstance(src, (bytes, bytearray)) else str(src)


def _open(src: ImageSource) -> Image.Image:
    if isinstance(src, (bytes, bytearray)):
        return Image.open(io.BytesIO(src))
    if is_remote(str(src)):
        return Image.open(io.BytesIO(read_image_bytes(str(src))))
    return Image.open(src)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make a decodable image unreadable
        return 1


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale -> 8-bit, scaled instead of clipped at 255."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        arr = arr.astype(np.uint32) >> 8
    else:
        arr = arr.astype(np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if top > 255.0:
            arr = arr * (255.0 / top)
        arr = np.clip(arr, 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent pixels are composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        return _high_depth_to_l(img).convert("RGB")
    return img.convert("RGB")


def load_image(src: ImageSource, *, draft_size: int | None = None) -> Image.Image:
    """Decode an image fully and return it as RGB with its EXIF orientation applied.

    Args:
        src: a local path, a URL (read through fsspec) or the encoded bytes.
        draft_size: for JPEGs, let the decoder downscale by 1/2, 1/4 or 1/8 as long as both
            sides stay >= this many pixels (much faster for large photos). None = full size.

    Returns:
        An ``RGB`` :class:`PIL.Image.Image` of the displayed (EXIF-corrected) size.

    Raises:
        DataError: the file is missing, unreadable, truncated or not an image.
    """
    try:
        with _open(src) as img:
            if draft_size is not None and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))
            img.load()
            orientation = _orientation(img)
            if orientation != 1:
                img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image {_describe(src)} does not exist.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        # Pillow reports truncated and unknown data as OSError (UnidentifiedImageError).
        raise DataError(f"image {_describe(src)} cannot be decoded: {err}") from None


def read_image_size(src: ImageSource) -> tuple[int, int, str | None]:
    """Read ``(width, height, format)`` from the header only (no decode), EXIF-corrected.

    ``format`` is Pillow's format name in lower case (``"jpeg"``, ``"png"``), or None.

    Raises:
        DataError: the file is missing or its header is not an image.
    """
    try:
        with _open(src) as img:
            width, height = img.size
            if _orientation(img) in _SWAPS_AXES:
                width, height = height, width
            return width, height, img.format.lower() if img.format else None
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image {_describe(src)} does not exist.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"image {_describe(src)} cannot be read: {err}") from None
