"""labelme JSON files -> Azure JSONL lines (instance polygons, or boxes).

- Each ``shapes`` entry with ``shape_type`` ``polygon`` (also when null), ``rectangle`` or
  ``circle`` is an outline; points, lines and other shape types are skipped with a reason.
- Shapes with the same ``label`` and the same non-null ``group_id`` form one instance with one
  polygon segment per shape (labelme's own convention, as its ``labelme2coco`` example does).
- Labels ``__ignore__`` and ``_background_`` (labelme's ignore / background markers) are not
  objects; they are skipped and counted.
- The image is ``imagePath`` relative to the JSON file, else looked up under ``--images`` by
  name or by the JSON's stem. Coordinates refer to ``imageWidth`` x ``imageHeight``.
- Task: polygons are written when any outline is a polygon or circle (rectangles become
  4-corner polygons then); a set of rectangles only gives boxes. ``task`` overrides it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from visionauto.data.converters.common import (
    Conversion,
    ImageFinder,
    image_info,
    image_url,
    make_object,
    normalize_box,
    normalize_segments,
    raise_bad,
    require_path,
)
from visionauto.errors import DataError

TASKS = ("detection", "instance_segmentation")
IGNORED_LABELS = ("__ignore__", "_background_")
_CIRCLE_POINTS = 24


def _points(shape: dict[str, Any]) -> list[tuple[float, float]] | None:
    try:
        return [(float(p[0]), float(p[1])) for p in shape.get("points") or []]
    except (TypeError, ValueError, IndexError):
        return None


def shape_segment(shape: dict[str, Any]) -> tuple[list[float] | None, str | None]:
    """A labelme outline as a flat pixel ``[x1, y1, ...]`` segment, or None and the reason."""
    kind = shape.get("shape_type") or "polygon"
    points = _points(shape)
    if points is None:
        return None, "points are not [x, y] numbers"
    if kind == "polygon":
        if len(points) < 3:
            return None, "polygon with fewer than 3 points"
        return [v for p in points for v in p], None
    if kind == "rectangle" and len(points) == 2:
        (x0, x1), (y0, y1) = sorted(p[0] for p in points), sorted(p[1] for p in points)
        return [x0, y0, x1, y0, x1, y1, x0, y1], None
    if kind == "circle" and len(points) == 2:
        (cx, cy), (px, py) = points
        radius = math.hypot(px - cx, py - cy)
        angles = [2 * math.pi * i / _CIRCLE_POINTS for i in range(_CIRCLE_POINTS)]
        return [
            v for a in angles for v in (cx + radius * math.cos(a), cy + radius * math.sin(a))
        ], None
    return None, f"shape_type {kind!r} with {len(points)} points is not an object outline"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read it: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError("no 'shapes' list: it is not a labelme file")
    data.pop("imageData", None)  # the embedded image can be megabytes; it is never used
    return data


def _instances(data: dict[str, Any], path: Path, conv: Conversion) -> list[dict[str, Any]]:
    """``{"name", "segments" (pixel flat lists), "where"}`` per instance, in shape order."""
    groups: dict[Any, dict[str, Any]] = {}
    for index, shape in enumerate(data["shapes"], start=1):
        shape = shape if isinstance(shape, dict) else {}
        name = str(shape.get("label") or "").strip()
        where = f"{path}: shape {index} {name!r}"
        if not name:
            conv.skip(where, "no label")
            continue
        if name in IGNORED_LABELS:
            conv.skip(where, f"labelme marker label {name}")
            continue
        segment, problem = shape_segment(shape)
        if segment is None:
            conv.skip(where, problem or "bad shape")
            continue
        group = shape.get("group_id")
        key = (name, group) if group is not None else ("shape", index)
        entry = groups.setdefault(key, {"name": name, "segments": [], "where": where, "kinds": []})
        entry["segments"].append(segment)
        entry["kinds"].append(shape.get("shape_type") or "polygon")
    return list(groups.values())


def _objects(
    instances: list[dict[str, Any]], frame: tuple[float, float], polygons: bool, conv: Conversion
) -> list[dict[str, Any]]:
    out = []
    for inst in instances:
        segments = normalize_segments(inst["segments"], frame)
        xs = [v for s in inst["segments"] for v in s[0::2]]
        ys = [v for s in inst["segments"] for v in s[1::2]]
        box, problem, clipped = normalize_box((min(xs), min(ys), max(xs), max(ys)), frame)
        if box is None or not segments:
            conv.skip(inst["where"], problem or "outline outside the image")
            continue
        conv.clipped += clipped
        out.append(make_object(inst["name"], box, 0, segments if polygons else None))
    return out


def _json_files(annotations: Path) -> list[Path]:
    if annotations.is_file():
        return [annotations]
    files = sorted(annotations.rglob("*.json"))
    if not files:
        raise DataError(f"no .json files in --annotations {annotations}.")
    return files


def _find_image(path: Path, data: dict[str, Any], finder: ImageFinder) -> Path:
    image_path = str(data.get("imagePath") or "").replace("\\", "/")
    beside = path.parent / image_path
    if image_path and beside.is_file():
        return beside
    return finder.find([image_path], [path.stem])


def convert_labelme(
    annotations: Path,
    output: Path,
    *,
    images: Path | None = None,
    base_url: str | None = None,
    task: str | None = None,
) -> Conversion:
    """Convert labelme JSON files to Azure JSONL lines.

    Args:
        annotations: a folder of labelme ``.json`` files (searched recursively) or one file.
        output: the JSONL file to be written (``image_url`` is relative to its folder).
        images: folder to look for images in when ``imagePath`` does not lead to one (and the
            root of ``base_url`` paths); default: the annotations folder.
        base_url: write ``image_url`` as ``base_url/<path relative to images>`` instead.
        task: ``detection`` or ``instance_segmentation``; None = polygons when any outline is
            a polygon or circle.

    Raises:
        DataError: listing every JSON file that is unreadable or has no image.
    """
    require_path(annotations, "--annotations")
    if task is not None and task not in TASKS:
        raise DataError(f"--task {task!r} is not one of {', '.join(TASKS)}.")
    root = images or (annotations if annotations.is_dir() else annotations.parent)
    require_path(root, "--images", folder=True)
    conv, bad, parsed, finder = Conversion("labelme"), [], [], ImageFinder(root)
    for path in _json_files(annotations):
        try:
            data = _read(path)
            parsed.append((path, data, _find_image(path, data, finder)))
        except DataError as err:
            bad.append(f"{path}: {err}")
    if bad:
        raise_bad("unusable labelme file(s)", bad, "Fix or remove these files and rerun.")
    instances = [_instances(data, path, conv) for path, data, _ in parsed]
    if task is None:
        outlines = {k for group in instances for inst in group for k in inst["kinds"]}
        task = "instance_segmentation" if outlines - {"rectangle"} else "detection"
        conv.notes.append(f"task {task} (chosen from the shapes; set --task to choose)")
    for (path, data, image), group in zip(parsed, instances, strict=True):
        points = [v for inst in group for s in inst["segments"] for v in s]
        extent = (max(points[0::2], default=0.0), max(points[1::2], default=0.0))
        size = (data.get("imageWidth"), data.get("imageHeight"))
        try:
            info = image_info(image, size, extent, conv.warnings, str(path))
        except DataError as err:
            bad.append(f"{path}: {err}")
            continue
        objects = _objects(group, info.frame, task == "instance_segmentation", conv)
        url = image_url(info.path, output, root, base_url)
        conv.lines.append({"image_url": url, "image_details": info.details(), "label": objects})
    if bad:
        raise_bad("unreadable image(s)", bad, "Fix or remove these images and rerun.")
    return conv
