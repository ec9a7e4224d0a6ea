"""Azure JSONL -> COCO instances JSON (for interchange with COCO tools).

- ``images``: one per record, ids from 1 in file order; ``file_name`` relative to the COCO
  file's folder (or to ``images_root``), URLs kept as they are; ``width``/``height`` read from
  the image header when the file is local, else taken from ``image_details``.
- ``categories``: ids from 1, in sorted name order (default) or in first-seen order.
- ``annotations``: ``bbox`` ``[x, y, w, h]`` in pixels (from the box keys, or the polygon's
  extent when an object has none), ``iscrowd``, ``area``; with instance segmentation also
  ``segmentation`` as pixel polygons and ``area`` as the polygons' area.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from visionauto.data.converters.common import raise_bad
from visionauto.data.images import read_image_size
from visionauto.data.jsonl import load_records
from visionauto.data.records import BOX_KEYS, ImageRecord
from visionauto.data.urls import is_remote
from visionauto.errors import DataError

TASKS = ("detection", "instance_segmentation")
CATEGORY_ORDERS = ("sorted", "first-seen")
_PIXEL_DECIMALS = 3


def _has_polygons(path: Path) -> bool:
    """Whether any object of a JSONL file has a ``polygon`` (decides the default task)."""
    if not path.is_file():
        return False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if '"polygon"' not in line:
            continue
        try:
            label = json.loads(line).get("label")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(label, list) and any(isinstance(o, dict) and "polygon" in o for o in label):
            return True
    return False


def _image_size(record: ImageRecord) -> tuple[int, int]:
    if not is_remote(record.image) and os.path.isfile(record.image):
        width, height, _ = read_image_size(record.image)
        return width, height
    if record.width and record.height:
        return record.width, record.height
    raise DataError(
        f"image {record.image} cannot be read and the record has no image_details "
        "width/height: add the image or the size"
    )


def _file_name(record: ImageRecord, base: Path) -> str:
    if is_remote(record.image):
        return record.image
    return Path(os.path.relpath(record.image, base.absolute())).as_posix()


def _categories(records: list[ImageRecord], order: str) -> dict[str, int]:
    names = [obj["label"] for record in records for obj in record.label]
    unique = sorted(set(names)) if order == "sorted" else list(dict.fromkeys(names))
    return {name: index for index, name in enumerate(unique, start=1)}


def _annotation(
    obj: dict[str, Any], size: tuple[int, int], with_segmentation: bool
) -> dict[str, Any]:
    # Imported here: polygons.py pulls in scikit-image, which the other converters do not need.
    from visionauto.data.polygons import polygon_area, polygon_bbox

    width, height = size
    polygon = obj.get("polygon")
    box = [obj[k] for k in BOX_KEYS] if all(k in obj for k in BOX_KEYS) else None
    if box is None:
        box = list(polygon_bbox(polygon))
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    ann: dict[str, Any] = {
        "bbox": [round(v, _PIXEL_DECIMALS) for v in (x0, y0, x1 - x0, y1 - y0)],
        "area": round((x1 - x0) * (y1 - y0), _PIXEL_DECIMALS),
        "iscrowd": int(obj.get("isCrowd", 0)),
    }
    if with_segmentation and polygon:
        segments = [
            [round(v * (width if i % 2 == 0 else height), _PIXEL_DECIMALS) for i, v in enumerate(s)]
            for s in polygon
        ]
        ann["segmentation"] = segments
        ann["area"] = round(sum(polygon_area(s) for s in segments), _PIXEL_DECIMALS)
    return ann


def jsonl_to_coco(
    input_path: Path,
    output: Path,
    *,
    task: str | None = None,
    category_order: str = "sorted",
    images_root: Path | None = None,
    datastore_root: str | None = None,
) -> dict[str, Any]:
    """Convert an Azure JSONL file (or MLTable folder) to a COCO instances dict and write it.

    Args:
        input_path: the ``.jsonl`` file or MLTable folder.
        output: the COCO ``.json`` file to write.
        task: ``detection`` or ``instance_segmentation`` (adds ``segmentation``); None =
            instance segmentation when any object has a ``polygon``.
        category_order: ``sorted`` names or ``first-seen`` order for category ids 1, 2, ...
        images_root: write ``file_name`` relative to this folder instead of the output's.
        datastore_root: local folder standing for the datastore of ``azureml://`` URLs.

    Returns:
        The COCO dict that was written (``info``, ``licenses``, ``images``, ``annotations``,
        ``categories``).

    Raises:
        DataError: the input cannot be read, or listing every unusable record.
    """
    if task is not None and task not in TASKS:
        raise DataError(f"--task {task!r} is not one of {', '.join(TASKS)}.")
    if category_order not in CATEGORY_ORDERS:
        raise DataError(f"--category-order must be one of {', '.join(CATEGORY_ORDERS)}.")
    task = task or ("instance_segmentation" if _has_polygons(input_path) else "detection")
    records, issues = load_records(input_path, task=task, datastore_root=datastore_root)
    problems = [f"{i.location}: {i.message}" for i in issues if i.fatal_for_record]
    if problems:
        raise_bad("unusable record(s)", problems, f"Fix them (task {task}) and rerun.")
    categories = _categories(records, category_order)
    base = images_root or output.absolute().parent
    images, annotations, bad = [], [], []
    for image_id, record in enumerate(records, start=1):
        try:
            size = _image_size(record)
        except DataError as err:
            bad.append(f"{record.source}: {err}")
            continue
        file_name = _file_name(record, base)
        images.append({"id": image_id, "file_name": file_name, "width": size[0], "height": size[1]})
        for obj in record.label:
            ann = _annotation(obj, size, task == "instance_segmentation")
            ann.update(image_id=image_id, category_id=categories[obj["label"]])
            annotations.append({"id": len(annotations) + 1, **ann})
    if bad:
        raise_bad("record(s) without a usable image size", bad, "Fix them and rerun.")
    coco = {
        "info": {"description": f"converted from {Path(input_path).name} by visionauto"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in categories.items()],
    }
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(coco, separators=(",", ":")) + "\n", encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot write --output {output}: {err}") from None
    return coco


def coco_summary(coco: dict[str, Any], output: Path) -> str:
    """The report printed by ``to-coco``: images, annotations per category, output path."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    counts = Counter(names[a["category_id"]] for a in coco["annotations"])
    crowd = sum(a["iscrowd"] for a in coco["annotations"])
    segmented = sum("segmentation" in a for a in coco["annotations"])
    lines = [
        f"to-coco: {len(coco['images'])} images, {len(coco['annotations'])} annotations "
        f"({crowd} crowd, {segmented} with segmentation), {len(names)} categories"
    ]
    width = max((len(n) for n in names.values()), default=0)
    lines.extend(f"  {i:>3} {n:<{width}}  {counts[n]}" for i, n in names.items())
    lines.append(f"written to {output}")
    return "\n".join(lines)
