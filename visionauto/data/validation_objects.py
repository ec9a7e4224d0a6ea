"""Checks of the objects of detection / instance segmentation labels (boxes and polygons).

Used by :func:`visionauto.data.validation.validate_records`. Problems concern one object, so an
object is dropped from its image instead of the whole image being dropped:

- errors (``fatal_for_record=True``: ``data.on_invalid=error`` stops the job and lists them;
  with ``on_invalid=drop`` the object is removed and the image kept): ``box_out_of_range``,
  ``box_inverted``, ``polygon_too_few_points``, ``polygon_odd_coordinates``,
  ``polygon_out_of_range``;
- warnings (never stop the job): ``zero_area_box`` and ``zero_area_polygon`` (the object or
  segment covers no pixel, so it is removed), ``polygon_self_intersection`` (kept: the polygon is
  rasterized as drawn, with even-odd fill);
- ``no_valid_object`` (error): every object of an image was removed. The image is dropped too,
  since keeping it would teach the model that its objects are background. An image whose label
  list is empty from the start is a valid negative.

Coordinates at most one pixel (and at least 0.001) outside [0, 1] are annotation-tool noise (a
click just past the image border, float rounding) and are clipped silently; without a known image
size the margin is 0.001.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from visionauto.data.polygons import segment_self_intersects
from visionauto.data.records import BOX_KEYS, ImageRecord, parse_object_label
from visionauto.data.validation import OBJECT_ISSUE_CODES, Issue

RANGE_TOLERANCE = 1e-3  # normalized; widened to one pixel when the image size is known
MAX_POINTS_INTERSECTION_CHECK = 200  # the O(n^2) test is skipped for longer segments
_DROPPED = "with data.on_invalid=drop only this object is dropped"
_FIX = {
    "box_out_of_range": "write box corners normalized by the image size (pixel x / width, "
    "pixel y / height), so that every value lies in [0, 1]",
    "box_inverted": "give the top-left corner as topX/topY and the bottom-right corner as "
    "bottomX/bottomY (a box written as x, y, width, height must be converted to corners)",
    "zero_area_box": "give the box a width and a height, or remove the object",
    "polygon_too_few_points": "give every polygon segment at least 3 x, y points",
    "polygon_odd_coordinates": "write polygon segments as alternating x, y numbers "
    "[x1, y1, x2, y2, ...]",
    "polygon_out_of_range": "write polygon points normalized by the image size (pixel x / width, "
    "pixel y / height), so that every value lies in [0, 1]",
    "zero_area_polygon": "draw the polygon around the object's area, or remove the segment",
    "polygon_self_intersection": "redraw the outline so that it does not cross itself, "
    "if the rasterized mask is not what you meant",
    "no_valid_object": "fix the objects listed for this image, or write an empty label list [] "
    "if the image really shows none of the classes",
}


def object_issue(code: str, message: str, location: str, *, fatal: bool) -> Issue:
    """An :class:`~visionauto.data.validation.Issue` with the fix text of ``code``."""
    assert code in OBJECT_ISSUE_CODES or code == "no_valid_object", code
    return Issue(code, message, location, _FIX[code], fatal_for_record=fatal)


def check_objects(
    record: ImageRecord, task: str, *, image_size: tuple[int, int] | None = None
) -> tuple[ImageRecord | None, list[Issue]]:
    """Check every object of a record whose label parses (see the module docstring).

    Args:
        record: a record with a parseable detection / instance segmentation label.
        task: ``"detection"`` or ``"instance_segmentation"``.
        image_size: ``(width, height)`` in pixels when known; sets the clipping margin.

    Returns:
        ``(cleaned, issues)``: the record with parsed, clipped objects and without the dropped
        ones (None when every object was dropped), and the issues found.
    """
    objects = parse_object_label(record.label, task=task)
    margin = _margins(image_size)
    kept: list[dict[str, Any]] = []
    issues: list[Issue] = []
    for index, obj in enumerate(objects):
        where = f"object {index} ({obj['label']!r})"
        cleaned, found = _check_object(obj, _Where(where, record.source, margin), task)
        issues.extend(found)
        if cleaned is not None:
            kept.append(cleaned)
    if objects and not kept:
        message = (
            f"none of the image's {len(objects)} object(s) is usable (see their problems), so "
            "the image is dropped too: kept, it would teach the model that they are background"
        )
        return None, [*issues, object_issue("no_valid_object", message, record.source, fatal=True)]
    return replace(record, label=kept), issues


class _Where(NamedTuple):
    """Which object is checked, for messages, and the clipping margins that apply to it."""

    name: str  # e.g. "object 2 ('can')"
    location: str  # e.g. "train.jsonl:42"
    margin: tuple[float, float]  # how far outside [0, 1] x and y are clipped silently

    def issue(self, code: str, message: str, *, fatal: bool) -> Issue:
        return object_issue(code, f"{self.name}: {message}", self.location, fatal=fatal)

    def inside(self, value: float, axis: int) -> bool:
        return -self.margin[axis] <= value <= 1.0 + self.margin[axis]


def _margins(image_size: tuple[int, int] | None) -> tuple[float, float]:
    if image_size is None:
        return RANGE_TOLERANCE, RANGE_TOLERANCE
    width, height = image_size
    return max(RANGE_TOLERANCE, 1.0 / max(width, 1)), max(RANGE_TOLERANCE, 1.0 / max(height, 1))


def _check_object(
    obj: dict[str, Any], where: _Where, task: str
) -> tuple[dict[str, Any] | None, list[Issue]]:
    issues: list[Issue] = []
    obj = dict(obj)
    if all(key in obj for key in BOX_KEYS):
        box, issues = _check_box(obj, where)
        if box is None:
            return None, issues
        obj.update(box)
    if task == "instance_segmentation":
        segments, found = _check_polygon(obj["polygon"], where)
        issues += found
        if segments is None:
            return None, issues
        obj["polygon"] = segments
    return obj, issues


def _check_box(obj: dict[str, Any], where: _Where) -> tuple[dict[str, float] | None, list[Issue]]:
    values = {key: float(obj[key]) for key in BOX_KEYS}
    outside = [
        f"{k}={v:g}" for i, (k, v) in enumerate(values.items()) if not where.inside(v, i % 2)
    ]
    if outside:
        verb = "is" if len(outside) == 1 else "are"
        message = f"{', '.join(outside)} {verb} outside [0, 1]; {_DROPPED}"
        return None, [where.issue("box_out_of_range", message, fatal=True)]
    values = {key: min(max(v, 0.0), 1.0) for key, v in values.items()}
    x0, y0, x1, y1 = (values[key] for key in BOX_KEYS)
    inverted = [
        f"{big}={values[big]:g} < {small}={values[small]:g}"
        for small, big in (("topX", "bottomX"), ("topY", "bottomY"))
        if values[big] < values[small]
    ]
    if inverted:
        message = f"{', '.join(inverted)} (corners swapped); {_DROPPED}"
        return None, [where.issue("box_inverted", message, fatal=True)]
    if x1 == x0 or y1 == y0:
        message = (
            f"the box topX={x0:g}, topY={y0:g}, bottomX={x1:g}, bottomY={y1:g} "
            "has zero area, so the object is dropped (a warning: the job goes on)"
        )
        return None, [where.issue("zero_area_box", message, fatal=False)]
    return values, []


def _check_polygon(
    segments: list[list[float]], where: _Where
) -> tuple[list[list[float]] | None, list[Issue]]:
    """Errors in any segment drop the object; zero-area segments are left out (warning)."""
    errors = [issue for j, seg in enumerate(segments) for issue in _segment_errors(seg, j, where)]
    if errors:
        return None, errors
    clipped = [[min(max(v, 0.0), 1.0) for v in segment] for segment in segments]
    flat = [j for j, segment in enumerate(clipped) if _is_degenerate(segment)]
    kept = [segment for j, segment in enumerate(clipped) if j not in flat]
    issues = []
    for j in flat:
        result = "the segment is left out" if kept else "the object is dropped"
        message = (
            f"polygon segment {j} has zero area (its points lie on one line), so "
            f"{result} (a warning: the job goes on)"
        )
        issues.append(where.issue("zero_area_polygon", message, fatal=False))
    for j, segment in enumerate(clipped):
        too_long = len(segment) // 2 > MAX_POINTS_INTERSECTION_CHECK
        if j in flat or too_long or not segment_self_intersects(segment):
            continue
        message = (
            f"polygon segment {j} crosses itself; it is kept and rasterized as drawn "
            "(even-odd fill: an area its outline encloses twice counts as outside)"
        )
        issues.append(where.issue("polygon_self_intersection", message, fatal=False))
    return (kept or None), issues


def _segment_errors(segment: list[float], j: int, where: _Where) -> list[Issue]:
    if len(segment) % 2:
        message = f"polygon segment {j} has {len(segment)} coordinates, an odd number "
        message += f"(x without y); {_DROPPED}"
        return [where.issue("polygon_odd_coordinates", message, fatal=True)]
    if len(segment) < 6:
        message = f"polygon segment {j} has {len(segment) // 2} point(s), fewer than 3; {_DROPPED}"
        return [where.issue("polygon_too_few_points", message, fatal=True)]
    points = list(zip(segment[0::2], segment[1::2], strict=True))
    outside = [
        f"point {k} ({x:g}, {y:g})"
        for k, (x, y) in enumerate(points)
        if not (where.inside(x, 0) and where.inside(y, 1))
    ]
    if outside:
        more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
        message = f"polygon segment {j} has {', '.join(outside[:3])}{more} outside [0, 1]; "
        message += _DROPPED
        return [where.issue("polygon_out_of_range", message, fatal=True)]
    return []


def _is_degenerate(segment: list[float]) -> bool:
    """True when all points are collinear or equal (the segment encloses no area).

    Collinearity, not the shoelace area, because a symmetric bow-tie has zero signed area
    but covers pixels.
    """
    points = np.asarray(segment, dtype=np.float64).reshape(-1, 2)
    offsets = points - points[0]
    far = offsets[int(np.argmax(np.hypot(offsets[:, 0], offsets[:, 1])))]
    cross = far[0] * offsets[:, 1] - far[1] * offsets[:, 0]
    return bool(np.all(np.abs(cross) <= 1e-12))
