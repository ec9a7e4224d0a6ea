"""Instance masks (VOC ``SegmentationObject`` PNGs) -> polygon objects.

A VOC instance mask holds one value per pixel: 0 background, 255 border / void (ignored), and
``k`` for the k-th instance. With XML annotations the k-th instance is the k-th ``<object>``
(see :mod:`visionauto.data.converters.voc`). Without them, :func:`convert_voc_masks` takes each
instance's class from the ``SegmentationClass`` PNG (the most frequent class value under the
instance) and a class-name list (line i = class value i, as labelme's ``class_names.txt``).
Palette (``P``) and grayscale PNGs are read as values; RGB PNGs are mapped back through the
standard VOC color map.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionauto.data.converters.common import (
    DEFAULT_MAX_POLYGON_POINTS,
    Conversion,
    ImageFinder,
    image_info,
    image_url,
    make_object,
    raise_bad,
    require_path,
    round_segments,
)
from visionauto.errors import DataError

BACKGROUND = 0
VOID = 255


def voc_colormap(size: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: u8[size, 3], color of value i (bit-interleaved, as VOC's devkit)."""
    colors = np.zeros((size, 3), dtype=np.uint8)
    for index in range(size):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colors[index] = (r, g, b)
    return colors


def _rgb_to_values(rgb: np.ndarray, path: Path) -> np.ndarray:
    colors = voc_colormap()
    codes = (colors[:, 0].astype(np.int64) << 16) | (colors[:, 1] << 8) | colors[:, 2]
    lookup = {int(c): i for i, c in enumerate(codes)}
    pixel_codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    unique, inverse = np.unique(pixel_codes, return_inverse=True)
    unknown = [f"#{int(c):06x}" for c in unique if int(c) not in lookup]
    if unknown:
        raise DataError(
            f"mask {path} has colors outside the VOC palette ({', '.join(unknown[:5])}); save "
            "masks as palette ('P') or grayscale PNGs with one value per instance."
        )
    return np.array([lookup[int(c)] for c in unique], dtype=np.int64)[inverse].reshape(
        pixel_codes.shape
    )


def read_value_mask(path: Path) -> np.ndarray:
    """Read a VOC-style mask PNG as i64[H, W] values (palette indices, gray levels).

    Raises:
        DataError: the file is missing, unreadable, or RGB with colors outside the VOC palette.
    """
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA"):
                return _rgb_to_values(np.asarray(img.convert("RGB")), path)
            if img.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                img = img.convert("L")
            return np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"mask {path} does not exist: add it or leave out --masks.") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"mask {path} cannot be read: {err}") from None


def instance_values(mask: np.ndarray) -> list[int]:
    """Instance values present in a mask, ascending, without background (0) and void (255)."""
    return [int(v) for v in np.unique(mask) if v not in (BACKGROUND, VOID)]


def mask_polygons(mask: np.ndarray, max_points: int) -> list[list[float]]:
    """Normalized polygon segments of one instance (bool[H, W]), rounded to 6 decimals."""
    # Imported here: polygons.py pulls in scikit-image, which box-only conversions do not need.
    from visionauto.data.polygons import mask_to_polygons

    return round_segments(mask_to_polygons(mask, max_points=max_points))


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Normalized box covering every True pixel of bool[H, W] (pixel k spans [k, k + 1))."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        round(cols[0] / width, 6),
        round(rows[0] / height, 6),
        round((cols[-1] + 1) / width, 6),
        round((rows[-1] + 1) / height, 6),
    )


def check_mask_size(mask: np.ndarray, width: int, height: int, path: Path) -> None:
    """Raise when the mask's size is not the image's."""
    if mask.shape != (height, width):
        raise DataError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} but its image is "
            f"{width}x{height}: masks must have the image's size."
        )


def read_class_names(path: Path) -> list[str]:
    """Class names, one per line (line i = value i; blank lines keep their index)."""
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except OSError as err:
        raise DataError(f"cannot read --classes {path}: {err}") from None


def _majority_class(classes: np.ndarray, instance: np.ndarray) -> int | None:
    values = classes[instance]
    values = values[(values != BACKGROUND) & (values != VOID)]
    if values.size == 0:
        return None
    counts = np.bincount(values)
    return int(np.argmax(counts))


def _mask_line(
    object_mask: Path,
    class_mask: Path,
    names: list[str],
    finder: ImageFinder,
    conv: Conversion,
    max_points: int,
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    instances = read_value_mask(object_mask)
    classes = read_value_mask(class_mask)
    info = image_info(
        finder.find([], [object_mask.stem]), None, (0.0, 0.0), conv.warnings, str(object_mask)
    )
    check_mask_size(instances, info.width, info.height, object_mask)
    check_mask_size(classes, info.width, info.height, class_mask)
    objects = []
    for value in instance_values(instances):
        where = f"{object_mask}: instance {value}"
        instance = instances == value
        class_value = _majority_class(classes, instance)
        if class_value is None:
            conv.skip(where, "no class under the instance in the class mask")
            continue
        if class_value >= len(names) or not names[class_value]:
            conv.skip(where, f"class value {class_value} has no name in --classes")
            continue
        polygon = mask_polygons(instance, max_points)
        if not polygon:
            conv.skip(where, "mask too small for a polygon")
            continue
        objects.append(make_object(names[class_value], mask_box(instance), 0, polygon))
    return info.path, info.details(), objects


def convert_voc_masks(
    masks: Path,
    class_masks: Path,
    classes: Path,
    images: Path,
    output: Path,
    *,
    base_url: str | None = None,
    max_points: int = DEFAULT_MAX_POLYGON_POINTS,
) -> Conversion:
    """Convert VOC ``SegmentationObject`` + ``SegmentationClass`` PNGs to polygon JSONL lines.

    Args:
        masks: folder of instance masks (``<stem>.png``: 0 background, 255 void, k instance k).
        class_masks: folder of class masks with the same file names (value = class index).
        classes: text file of class names, line i naming class value i.
        images: folder with the images (matched by the mask's stem).
        output: the JSONL file to be written (``image_url`` is relative to its folder).
        base_url: write ``image_url`` as ``base_url/<path relative to images>`` instead.
        max_points: at most this many points per polygon segment.

    Raises:
        DataError: listing every mask without image or class mask, or of the wrong size.
    """
    for path, flag in ((masks, "--masks"), (class_masks, "--class-masks"), (images, "--images")):
        require_path(path, flag, folder=True)
    require_path(classes, "--classes", folder=False)
    names = read_class_names(classes)
    files = sorted(p for p in masks.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"no .png masks in --masks {masks}.")
    finder, conv, bad = ImageFinder(images), Conversion("masks"), []
    for file in files:
        try:
            path, details, objects = _mask_line(
                file, class_masks / file.name, names, finder, conv, max_points
            )
        except DataError as err:
            bad.append(f"{file}: {err}")
            continue
        conv.lines.append(
            {
                "image_url": image_url(path, output, images, base_url),
                "image_details": details,
                "label": objects,
            }
        )
    if bad:
        raise_bad("unusable mask(s)", bad, "Fix or remove these masks and rerun.")
    return conv
