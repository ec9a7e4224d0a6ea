"""Synthetic small-object detection sets: many tiny shapes on a cluttered background.

Made to show what tiling (spec §6) is for: objects of 6-12 px in a 640x480 image shrink to
2-5 px when a detector resizes the image to its ``min_size``, and classes differ only by shape
(every class draws from the same colors), so a model must see them at a useful scale. Clutter
(large muted blobs and lines, pixel noise, a brightness gradient) keeps the background from
being trivially separable. Output is deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1/y1 exclusive
# Saturated colors shared by every class: color never gives the class away.
_PALETTE = ((255, 220, 40), (40, 230, 255), (255, 60, 200), (120, 255, 80), (255, 255, 255))
_GAP = 2  # free pixels kept between objects, so boxes never touch


def _dot(draw: ImageDraw.ImageDraw, box: Box, color: tuple[int, int, int]) -> None:
    draw.ellipse((box[0], box[1], box[2] - 1, box[3] - 1), fill=color)


def _cross(draw: ImageDraw.ImageDraw, box: Box, color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    side = x1 - x0
    arm = max(2, side // 3)
    lo = x0 + (side - arm) // 2
    top = y0 + (side - arm) // 2
    draw.rectangle((lo, y0, lo + arm - 1, y1 - 1), fill=color)
    draw.rectangle((x0, top, x1 - 1, top + arm - 1), fill=color)


def _square(draw: ImageDraw.ImageDraw, box: Box, color: tuple[int, int, int]) -> None:
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=color)


def _ring(draw: ImageDraw.ImageDraw, box: Box, color: tuple[int, int, int]) -> None:
    width = max(1, (box[2] - box[0]) // 4)
    draw.ellipse((box[0], box[1], box[2] - 1, box[3] - 1), outline=color, width=width)


SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, Box, tuple[int, int, int]], None]] = {
    "dot": _dot,
    "cross": _cross,
    "square": _square,
    "ring": _ring,
}


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Noisy gray with a random brightness gradient."""
    gx, gy = rng.uniform(-30, 30, size=2)
    ramp = gx * np.linspace(-1, 1, width)[None, :] + gy * np.linspace(-1, 1, height)[:, None]
    base = 100 + ramp[..., None] + rng.normal(0, 14, size=(height, width, 3))
    return Image.fromarray(base.clip(0, 255).astype(np.uint8))


def _muted(rnd: random.Random) -> tuple[int, int, int]:
    gray = rnd.randint(60, 170)
    return tuple(max(0, min(255, gray + rnd.randint(-25, 25))) for _ in range(3))  # type: ignore[return-value]


def _clutter(
    draw: ImageDraw.ImageDraw, rnd: random.Random, width: int, height: int, big: int
) -> None:
    """Large muted blobs and thin lines: structure that is not an object."""
    for _ in range(max(4, width * height // 12000)):
        w, h = rnd.randint(big, 5 * big), rnd.randint(big, 5 * big)
        x, y = rnd.randint(-w // 2, width), rnd.randint(-h // 2, height)
        draw.ellipse((x, y, x + w, y + h), fill=_muted(rnd))
    for _ in range(max(3, width * height // 25000)):
        points = [(rnd.randint(0, width), rnd.randint(0, height)) for _ in range(2)]
        draw.line(points, fill=_muted(rnd), width=rnd.randint(1, 2))


def _place(
    rnd: random.Random, count: int, width: int, height: int, object_px: tuple[int, int]
) -> list[Box]:
    """Up to ``count`` square boxes with sides in ``object_px`` that keep ``_GAP`` apart."""
    boxes: list[Box] = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        side = rnd.randint(*object_px)
        x0, y0 = rnd.randint(0, width - side), rnd.randint(0, height - side)
        box = (x0, y0, x0 + side, y0 + side)
        if all(
            box[0] >= b[2] + _GAP
            or b[0] >= box[2] + _GAP
            or box[1] >= b[3] + _GAP
            or b[1] >= box[3] + _GAP
            for b in boxes
        ):
            boxes.append(box)
    return boxes


def _check_args(
    n_images: int,
    size: tuple[int, int],
    object_px: tuple[int, int],
    classes: Sequence[str],
    objects_per_image: tuple[int, int],
) -> None:
    unknown = [name for name in classes if name not in SHAPES]
    if not classes or unknown:
        raise ValueError(f"classes must be shape names from {sorted(SHAPES)}, got {list(classes)}")
    lo, hi = object_px
    if not 3 <= lo <= hi or hi * 4 > min(size):
        raise ValueError(f"object_px={object_px} must satisfy 3 <= min <= max <= min(size) / 4")
    if n_images < 1 or not 1 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(
            f"need n_images >= 1 and 1 <= objects_per_image[0] <= objects_per_image[1], got "
            f"{n_images} and {objects_per_image}"
        )


def write_small_object_set(
    out_dir: Path,
    n_images: int,
    *,
    size: tuple[int, int] = (640, 480),
    object_px: tuple[int, int] = (6, 12),
    classes: Sequence[str] = ("dot", "cross"),
    objects_per_image: tuple[int, int] = (10, 25),
    seed: int = 0,
) -> Path:
    """Write PNG images of many tiny objects and an Azure detection JSONL describing them.

    Args:
        out_dir: folder to write ``images/`` and ``annotations.jsonl`` into (created).
        n_images: number of images.
        size: ``(width, height)`` of every image in pixels.
        object_px: smallest and largest object side in pixels (objects are square).
        classes: shape names, from ``dot``, ``cross``, ``square``, ``ring``; each object's class
            is drawn uniformly.
        objects_per_image: smallest and largest number of objects per image (fewer when the
            image is too crowded to place them without touching).
        seed: random seed; the same arguments give byte-identical files.

    Returns:
        The path of the JSONL file: one line per image with ``image_url`` relative to it,
        ``image_details`` (format, width, height) and ``label`` = list of objects with
        normalized ``topX``/``topY``/``bottomX``/``bottomY`` (the exact pixel extent of the
        drawn shape) and ``isCrowd`` 0.

    Raises:
        ValueError: unknown shape name, or sizes/counts that cannot work.
    """
    _check_args(n_images, size, object_px, classes, objects_per_image)
    width, height = size
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rnd, rng = random.Random(seed), np.random.default_rng(seed)
    lines = []
    for index in range(n_images):
        image = _background(rng, width, height)
        draw = ImageDraw.Draw(image)
        _clutter(draw, rnd, width, height, big=3 * object_px[1])
        boxes = _place(rnd, rnd.randint(*objects_per_image), width, height, object_px)
        label = []
        for box in boxes:
            name = rnd.choice(list(classes))
            SHAPES[name](draw, box, rnd.choice(_PALETTE))
            label.append(
                {
                    "label": name,
                    "topX": box[0] / width,
                    "topY": box[1] / height,
                    "bottomX": box[2] / width,
                    "bottomY": box[3] / height,
                    "isCrowd": 0,
                }
            )
        relative = f"images/{index:04d}.png"
        image.save(out_dir / relative, format="PNG")
        lines.append(
            {
                "image_url": relative,
                "image_details": {"format": "png", "width": width, "height": height},
                "label": label,
            }
        )
    path = out_dir / "annotations.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path
