"""Synthetic but real image data sets for tests and demos (circles, squares, triangles).

Each class has its own color and shape on a noisy gray background, so a small CNN learns it in a
few epochs. Boxes are the exact pixel extent of each drawn shape, normalized to [0, 1];
polygons follow the shape outlines. Output is deterministic for a given seed.
"""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from visionauto.data.records import CLASSIFICATION_TASKS, OBJECT_TASKS

CLASSES = ("circle", "square", "triangle")
_COLORS = {"circle": (220, 40, 40), "square": (40, 190, 60), "triangle": (40, 80, 230)}
_CIRCLE_POINTS = 24


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    noise = rng.normal(128, 18, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(noise)


def _color(name: str, rnd: random.Random) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rnd.randint(-20, 20))) for c in _COLORS[name])  # type: ignore[return-value]


def _outline(name: str, box: tuple[int, int, int, int]) -> list[tuple[float, float]]:
    """Polygon of the shape inside the inclusive pixel box ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = box
    if name == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if name == "triangle":
        return [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return [
        (
            cx + rx * math.cos(2 * math.pi * k / _CIRCLE_POINTS),
            cy + ry * math.sin(2 * math.pi * k / _CIRCLE_POINTS),
        )
        for k in range(_CIRCLE_POINTS)
    ]


def _draw(
    draw: ImageDraw.ImageDraw,
    name: str,
    box: tuple[int, int, int, int],
    color: tuple[int, int, int],
) -> None:
    if name == "circle":
        draw.ellipse(box, fill=color)
    elif name == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon(_outline(name, box), fill=color)


def _boxes(n: int, size: int, rnd: random.Random) -> list[tuple[int, int, int, int]]:
    """``n`` non-overlapping inclusive pixel boxes, one per cell of a 2x2 grid (one: anywhere)."""
    if n == 1:
        side = rnd.randint(int(size * 0.35), int(size * 0.6))
        x0, y0 = rnd.randint(0, size - side), rnd.randint(0, size - side)
        return [(x0, y0, x0 + side - 1, y0 + side - 1)]
    cell = size // 2
    boxes = []
    for cx, cy in rnd.sample([(0, 0), (1, 0), (0, 1), (1, 1)], n):
        side = rnd.randint(int(cell * 0.55), int(cell * 0.9))
        x0 = cx * cell + rnd.randint(0, cell - side)
        y0 = cy * cell + rnd.randint(0, cell - side)
        boxes.append((x0, y0, x0 + side - 1, y0 + side - 1))
    return boxes


def _object(name: str, box: tuple[int, int, int, int], size: int, task: str) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    # Inclusive pixel box -> continuous extent [x0, x1 + 1).
    obj: dict[str, Any] = {
        "label": name,
        "topX": x0 / size,
        "topY": y0 / size,
        "bottomX": (x1 + 1) / size,
        "bottomY": (y1 + 1) / size,
        "isCrowd": 0,
    }
    if task == "instance_segmentation":
        outline = _outline(name, (x0, y0, x1 + 1, y1 + 1))  # continuous extent, as the box
        flat = [min(1.0, max(0.0, v / size)) for point in outline for v in point]
        obj["polygon"] = [flat]
    return obj


def _sample(task: str, index: int, rnd: random.Random) -> list[str]:
    if task == "classification":
        return [CLASSES[index % len(CLASSES)]]  # balanced classes
    count = rnd.randint(1, 3)
    if task == "multilabel":
        return sorted(rnd.sample(CLASSES, count))
    return [rnd.choice(CLASSES) for _ in range(count)]


def _save(image: Image.Image, path: Path, image_format: str) -> None:
    fmt = "JPEG" if image_format.lower() in ("jpg", "jpeg") else image_format.upper()
    options = {"quality": 95} if fmt == "JPEG" else {}
    image.save(path, format=fmt, **options)


def make_synthetic_dataset(
    out_dir: Path,
    task: str,
    *,
    n_images: int = 40,
    image_size: int = 64,
    seed: int = 0,
    image_format: str = "png",
) -> Path:
    """Write ``n_images`` shape images and an Azure JSONL file describing them.

    Args:
        out_dir: folder to write ``images/`` and ``annotations.jsonl`` into (created).
        task: ``classification`` (one shape, balanced classes), ``multilabel`` (1-3 distinct
            shapes, label = sorted list), ``detection`` (1-3 shapes with exact boxes) or
            ``instance_segmentation`` (boxes plus outline polygons).
        n_images: number of images.
        image_size: side of the square images in pixels.
        seed: random seed; the same arguments give byte-identical files.
        image_format: ``png`` or ``jpg``.

    Returns:
        The path of the JSONL file (``image_url`` relative to it).
    """
    if task not in CLASSIFICATION_TASKS + OBJECT_TASKS:
        raise ValueError(f"unknown task {task!r}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rnd, rng = random.Random(seed), np.random.default_rng(seed)
    ext = "jpg" if image_format.lower() in ("jpg", "jpeg") else image_format.lower()
    lines = []
    for index in range(n_images):
        names = _sample(task, index, rnd)
        boxes = _boxes(len(names), image_size, rnd)
        image = _background(rng, image_size)
        draw = ImageDraw.Draw(image)
        for name, box in zip(names, boxes, strict=True):
            _draw(draw, name, box, _color(name, rnd))
        relative = f"images/{index:04d}.{ext}"
        _save(image, out_dir / relative, image_format)
        if task == "classification":
            label: Any = names[0]
        elif task == "multilabel":
            label = names
        else:
            label = [_object(n, b, image_size, task) for n, b in zip(names, boxes, strict=True)]
        lines.append(
            {
                "image_url": relative,
                "label": label,
                "image_details": {"format": ext, "width": image_size, "height": image_size},
            }
        )
    path = out_dir / "annotations.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _shape_image(name: str, size: int, seed: int) -> Image.Image:
    rnd, rng = random.Random(seed), np.random.default_rng(seed)
    image = _background(rng, size)
    _draw(ImageDraw.Draw(image), name, _boxes(1, size, rnd)[0], _color(name, rnd))
    return image


def _exif_rotated_jpeg(image: Image.Image) -> bytes:
    """JPEG whose pixels are stored rotated; EXIF orientation 6 says "rotate 90° clockwise"."""
    stored = image.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise: undone by 6
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def _unusual_images(size: int) -> dict[str, tuple[str, str, bytes, tuple[int, int]]]:
    """Good images in unusual encodings: name -> (class, file name, bytes, displayed size)."""
    out = {}
    for name, (cls, mode, fmt, ext) in {
        "grayscale": ("circle", "L", "PNG", "png"),
        "rgba": ("square", "RGBA", "PNG", "png"),
        "cmyk": ("triangle", "CMYK", "JPEG", "jpg"),
        "palette": ("circle", "P", "PNG", "png"),
    }.items():
        image = _shape_image(cls, size, seed=len(out) + 100)
        converted = image.convert(mode)
        if mode == "RGBA":
            converted.putalpha(200)
        buffer = io.BytesIO()
        converted.save(buffer, format=fmt)
        out[name] = (cls, f"{name}.{ext}", buffer.getvalue(), (size, size))
    # Displayed 40x56 (portrait); stored as 56x40 with EXIF orientation 6.
    portrait = _shape_image("square", size, seed=200).resize((40, 56))
    out["exif_rotated"] = ("square", "exif_rotated.jpg", _exif_rotated_jpeg(portrait), (40, 56))
    return out


def make_messy_dataset(out_dir: Path) -> Path:
    """Write a multiclass ``train.jsonl`` mixing good, unusual-but-good and bad records.

    Good (accepted): 12 plain PNGs (4 per class); grayscale PNG, RGBA PNG, CMYK JPEG, palette PNG,
    and a JPEG with EXIF orientation 6 (displayed 40x56); one good image whose
    ``image_details`` disagree with its real size (a warning, the record is kept).
    Bad (rejected), one each: a malformed JSON line, a missing file, a truncated JPEG, a text file
    posing as an image, an empty label.

    Returns:
        The path of ``train.jsonl`` (``image_url`` relative to it).
    """
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    size = 48
    lines: list[str] = []

    def add(relative: str, label: Any, details: dict[str, Any] | None = None) -> None:
        obj: dict[str, Any] = {"image_url": relative, "label": label}
        if details:
            obj["image_details"] = details
        lines.append(json.dumps(obj))

    for index in range(12):
        cls = CLASSES[index % len(CLASSES)]
        _shape_image(cls, size, seed=index).save(images / f"good_{index:02d}.png")
        add(f"images/good_{index:02d}.png", cls, {"format": "png", "width": size, "height": size})
    for cls, file_name, data, (width, height) in _unusual_images(size).values():
        (images / file_name).write_bytes(data)
        add(f"images/{file_name}", cls, {"width": f"{width}px", "height": f"{height}px"})
    _shape_image("circle", size, seed=300).save(images / "wrong_details.png")
    add("images/wrong_details.png", "circle", {"format": "png", "width": 100, "height": 80})

    lines.append('{"image_url": "images/good_00.png", "label": "circle"')  # malformed JSON
    add("images/missing.png", "square")
    buffer = io.BytesIO()
    _shape_image("triangle", size, seed=301).save(buffer, format="JPEG", quality=95)
    (images / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    add("images/truncated.jpg", "triangle")
    (images / "not_an_image.jpg").write_text("this is a text file, not a JPEG\n")
    add("images/not_an_image.jpg", "circle")
    _shape_image("square", size, seed=302).save(images / "empty_label.png")
    add("images/empty_label.png", "")
    path = out_dir / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
