"""COCO instances JSON -> Azure JSONL lines (boxes; polygons and RLE for segmentation).

- One line per entry of ``images``, in file order; images without annotations get ``[]``.
- ``file_name`` may hold folders (``JPEGImages/a.jpg``): it is looked up under ``--images``
  first as written, then by its file name.
- Category ids can be anything (0, 5, 1000, gaps). The JSONL has no category list: a class
  exists when an object uses it, so unused categories such as labelme's ``0 _background_`` are
  simply absent (the summary lists them). A used ``_background_`` is kept, with a warning.
- ``bbox`` is ``[x, y, w, h]`` in pixels (Azure's trick of treating boxes under 1.5 as already
  normalized is not copied: a 1-pixel box is a real box).
- ``iscrowd`` becomes ``isCrowd``. Segmentation polygons are normalized; RLE (uncompressed
  ``counts`` lists, as COCO writes for crowds, or compressed strings) is decoded and traced with
  ``mask_to_polygons``.
- Task: ``instance_segmentation`` writes polygons (objects without segmentation are skipped);
  ``detection`` writes boxes only. Default: segmentation when any annotation has one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from visionauto.data.converters.common import (
    DEFAULT_MAX_POLYGON_POINTS,
    Conversion,
    ImageFinder,
    format_box,
    image_info,
    image_url,
    make_object,
    normalize_box,
    normalize_segments,
    raise_bad,
    require_path,
    segments_box,
)
from visionauto.data.converters.masks import mask_box, mask_polygons
from visionauto.errors import DataError

TASKS = ("detection", "instance_segmentation")
_MAX_NAMED = 10


def _load(path: Path) -> dict[str, Any]:
    require_path(path, "--annotations", folder=False)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} has no 'images' list: it is not a COCO instances file.")
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise DataError(f"{path}: '{key}' must be a list.")
    return data


def _categories(data: dict[str, Any], path: Path) -> dict[Any, str]:
    names: dict[Any, str] = {}
    for index, cat in enumerate(data.get("categories", [])):
        if not isinstance(cat, dict) or "id" not in cat or not str(cat.get("name", "")).strip():
            raise DataError(f"{path}: categories[{index}] needs an 'id' and a 'name': {cat!r}")
        if cat["id"] in names:
            raise DataError(f"{path}: category id {cat['id']!r} is defined twice.")
        names[cat["id"]] = str(cat["name"]).strip()
    return names


def _image_entries(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    seen, bad = set(), []
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not image.get("file_name"):
            bad.append(f"images[{index}] needs an 'id' and a 'file_name': {image!r}")
        elif image["id"] in seen:
            bad.append(f"images[{index}]: image id {image['id']!r} is used twice")
        else:
            seen.add(image["id"])
    if bad:
        raise_bad(f"bad image entr(ies) in {path}", bad, "Fix the 'images' list and rerun.")
    return data["images"]


def _pixel_box(ann: dict[str, Any]) -> tuple[float, float, float, float] | None:
    bbox = ann.get("bbox")
    try:
        x, y, w, h = (float(v) for v in bbox)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return x, y, x + w, y + h


def _polygon_lists(seg: Any) -> list[list[float]] | None:
    """COCO polygon segmentation as lists of numbers (a lone flat list is one segment)."""
    if not isinstance(seg, list) or not seg:
        return None
    segments = [seg] if not isinstance(seg[0], list) else seg
    try:
        return [[float(v) for v in s] for s in segments]
    except (TypeError, ValueError):
        return None


def has_segmentation(ann: Any) -> bool:
    """Whether a COCO annotation carries a non-empty polygon list or an RLE dict."""
    seg = ann.get("segmentation") if isinstance(ann, dict) else None
    return bool(seg) and isinstance(seg, (list, dict))


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (``counts`` list or compressed string, ``size`` [h, w]) -> bool[h, w].

    Raises:
        ValueError: the RLE is malformed.
    """
    # Imported here: only files with RLE need the COCO mask codec.
    from faster_coco_eval.core import mask as mask_utils

    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, (str, bytes)):
        raw = counts.encode("ascii") if isinstance(counts, str) else counts
        encoded = {"size": [height, width], "counts": raw}
    else:
        raise ValueError(f"counts must be a list or a string, got {type(counts).__name__}")
    mask = np.asarray(mask_utils.decode(encoded)).astype(bool)
    if mask.shape != (height, width) or (isinstance(counts, list) and sum(counts) != mask.size):
        raise ValueError(f"counts do not cover the {width}x{height} size")
    return mask


def _segmentation(
    seg: Any, frame: tuple[float, float], max_points: int
) -> tuple[list[list[float]], tuple[float, float, float, float] | None, str | None]:
    """``(normalized segments, normalized box of them, problem)`` of a COCO segmentation."""
    if isinstance(seg, dict):
        try:
            mask = decode_rle(seg)
        except (KeyError, TypeError, ValueError) as err:
            return [], None, f"unreadable RLE ({err})"
        if not mask.any():
            return [], None, "empty RLE mask"
        polygon = mask_polygons(mask, max_points)
        return polygon, mask_box(mask), None if polygon else "mask too small for a polygon"
    lists = _polygon_lists(seg)
    if lists is None:
        return [], None, "no segmentation"
    polygon = normalize_segments(lists, frame)
    if not polygon:
        return [], None, "polygon with fewer than 3 points"
    return polygon, segments_box(polygon), None


def _coco_object(
    ann: dict[str, Any],
    name: str,
    frame: tuple[float, float],
    task: str,
    max_points: int,
    where: str,
    conv: Conversion,
) -> dict[str, Any] | None:
    crowd = int(ann.get("iscrowd") in (1, True, "1", "true"))
    pixels = _pixel_box(ann)
    box, problem, clipped = normalize_box(pixels, frame) if pixels else (None, "no bbox", False)
    polygon, seg_box, seg_problem = None, None, None
    if task == "instance_segmentation" or (box is None and has_segmentation(ann)):
        polygon, seg_box, seg_problem = _segmentation(ann.get("segmentation"), frame, max_points)
    if task == "instance_segmentation" and seg_problem:
        conv.skip(where, seg_problem)
        return None
    if box is None and seg_box is not None and seg_box[2] > seg_box[0] and seg_box[3] > seg_box[1]:
        box, clipped = seg_box, False  # no usable bbox: the segmentation's extent is the box
    if box is None:
        conv.skip(where, problem or "no bbox", format_box(pixels) if pixels else "")
        return None
    conv.clipped += clipped
    return make_object(name, box, crowd, polygon if task == "instance_segmentation" else None)


def _extent(anns: list[dict[str, Any]]) -> tuple[float, float]:
    xs, ys = [0.0], [0.0]
    for ann in anns:
        box = _pixel_box(ann)
        if box:
            xs.append(box[2])
            ys.append(box[3])
        for segment in _polygon_lists(ann.get("segmentation")) or []:
            xs.extend(segment[0::2])
            ys.extend(segment[1::2])
    return max(xs), max(ys)


def _group_annotations(
    data: dict[str, Any], images: set[Any], names: dict[Any, str], path: Path, conv: Conversion
) -> dict[Any, list[dict[str, Any]]]:
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for index, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotations[{index}]"
        if not isinstance(ann, dict):
            conv.skip(where, "not a JSON object")
        elif ann.get("image_id") not in images:
            conv.skip(where, f"unknown image_id {ann.get('image_id')!r}")
        elif ann.get("category_id") not in names:
            conv.skip(where, f"unknown category_id {ann.get('category_id')!r}")
        else:
            by_image[ann["image_id"]].append({**ann, "_where": f"{where} (id {ann.get('id')})"})
    return by_image


def _category_notes(
    names: dict[Any, str], by_image: dict[Any, list[dict[str, Any]]], conv: Conversion
) -> None:
    used = {ann["category_id"] for anns in by_image.values() for ann in anns}
    unused = [names[c] for c in names if c not in used]
    if unused:
        listed = ", ".join(unused[:_MAX_NAMED]) + (", ..." if len(unused) > _MAX_NAMED else "")
        conv.notes.append(f"{len(unused)} categories without annotations are not written: {listed}")
    for cid in sorted(used, key=str):
        if names[cid].strip("_").lower() == "background":
            conv.warnings.append(
                f"category {cid} {names[cid]!r} is used by annotations: kept as a class; "
                "delete those annotations if they only mark background"
            )


def convert_coco(
    annotations: Path,
    images: Path,
    output: Path,
    *,
    base_url: str | None = None,
    task: str | None = None,
    max_points: int = DEFAULT_MAX_POLYGON_POINTS,
) -> Conversion:
    """Convert a COCO instances JSON file to Azure JSONL lines.

    Args:
        annotations: the COCO ``.json`` file.
        images: the folder ``file_name`` is relative to (or any folder holding the images).
        output: the JSONL file to be written (``image_url`` is relative to its folder).
        base_url: write ``image_url`` as ``base_url/<path relative to images>`` instead.
        task: ``detection`` (boxes) or ``instance_segmentation`` (polygons); None = segmentation
            when any annotation has one.
        max_points: at most this many points per polygon traced from an RLE mask.

    Raises:
        DataError: the file is not COCO, or listing every image that cannot be found or read.
    """
    require_path(images, "--images", folder=True)
    if task is not None and task not in TASKS:
        raise DataError(f"--task {task!r} is not one of {', '.join(TASKS)}.")
    data = _load(annotations)
    names = _categories(data, annotations)
    entries = _image_entries(data, annotations)
    conv = Conversion("coco")
    by_image = _group_annotations(data, {e["id"] for e in entries}, names, annotations, conv)
    if task is None:
        segmented = any(has_segmentation(a) for anns in by_image.values() for a in anns)
        task = "instance_segmentation" if segmented else "detection"
        conv.notes.append(f"task {task} (chosen from the data; set --task to choose)")
    _category_notes(names, by_image, conv)
    finder, bad = ImageFinder(images), []
    for entry in entries:
        anns = by_image.get(entry["id"], [])
        location = f"{annotations}: image {entry['file_name']}"
        try:
            path = finder.find([str(entry["file_name"])])
            size = (entry.get("width"), entry.get("height"))
            info = image_info(path, size, _extent(anns), conv.warnings, location)
        except DataError as err:
            bad.append(f"{location}: {err}")
            continue
        objects = [
            _coco_object(
                a, names[a["category_id"]], info.frame, task, max_points, a["_where"], conv
            )
            for a in anns
        ]
        conv.lines.append(
            {
                "image_url": image_url(info.path, output, images, base_url),
                "image_details": info.details(),
                "label": [obj for obj in objects if obj is not None],
            }
        )
    if bad:
        raise_bad("image(s) not found or unreadable", bad, "Fix --images or the 'images' list.")
    return conv
