"""Polygon <-> mask geometry for instance segmentation (spec §3.1, §3.3 ``masktools``, §4.2).

An instance is a list of *segments*; each segment is a flat list of normalized, alternating
``x, y`` coordinates in [0, 1] (top-left origin, divided by image width/height). The segments of
one instance are OR-ed.

Pixel convention (the COCO / pycocotools one, which Azure's data loader also uses): pixel
``(col, row)`` covers the square ``[col, col + 1) x [row, row + 1)`` in pixel units and belongs
to a polygon when its centre lies inside it. So the square with corners (2, 2) and (6, 6) fills
exactly 4 x 4 pixels, and a mask's area matches the polygon's area to within its boundary
pixels. ``mask_to_polygons`` uses the same convention, so masks round-trip.

Holes: Azure's ``masktools`` returns every ``find_contours`` contour as its own segment, so a
hole comes back as a filled segment and the hole is lost when the segments are OR-ed. Here each
hole is instead spliced into its outer contour through a zero-width "keyhole" cut (the classic
way to write a polygon with holes as one ring); the segment then rasterizes with the hole empty
(even-odd and non-zero fill agree, since holes run opposite to their outer contour) and still
draws as one outline. Each connected component of the mask is one segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as coco_mask
from scipy import ndimage
from skimage import measure

from visionauto.errors import DataError

# Douglas-Peucker tolerances (pixels) tried in turn until a segment fits ``max_points``: first the
# contour without its collinear points, then 0.5 px growing by 1.5x. 25 passes as Azure's masktools.
_KEEP_ALL = -1.0  # first pass: every point left after dropping collinear ones
_SECOND_TOLERANCE = 0.5
_TOLERANCE_GROWTH = 1.5
_MAX_REFINEMENT_PASSES = 25
_EDGE_PADDING = 1  # zero border so that components touching the image edge give closed contours
_MIN_HOLE_AREA = 1.0  # px^2; smaller holes are pixel noise of the contour tracer


def polygons_to_mask(polygons: list[list[float]], width: int, height: int) -> np.ndarray:
    """Rasterize one instance's polygon segments.

    Args:
        polygons: segments of normalized ``[x1, y1, x2, y2, ...]``; several segments are OR-ed.
            Segments with fewer than 3 points cover no pixel and are ignored; coordinates
            outside [0, 1] are clipped by the image border.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        bool[H, W] mask, True where a pixel centre lies inside a segment.

    Raises:
        DataError: a segment has an odd number of coordinates.
    """
    mask = np.zeros((height, width), dtype=bool)
    for index, segment in enumerate(polygons):
        if len(segment) % 2:
            raise DataError(
                f"polygon segment {index} has an odd number of coordinates ({len(segment)}); "
                "write it as alternating x, y pairs."
            )
        if len(segment) < 6:
            continue
        coords = np.asarray(segment, dtype=np.float64).reshape(-1, 2) * (width, height)
        # pycocotools reads a 4-number list as a box, hence the >= 3 points guard above.
        rle = coco_mask.frPyObjects([coords.ravel().tolist()], height, width)
        mask |= coco_mask.decode(rle)[:, :, 0].astype(bool)
    return mask


def mask_to_polygons(mask: np.ndarray, *, max_points: int = 100) -> list[list[float]]:
    """Trace a binary mask into normalized polygon segments (Azure ``masktools`` approach).

    The mask gets a 1-pixel zero border, each 4-connected component is traced with
    ``skimage.measure.find_contours`` at level 0.5, its holes are spliced in as keyholes (see the
    module docstring), and the ring is simplified with Douglas-Peucker at growing tolerance (at
    most 25 passes) until it has at most ``max_points`` points.

    Args:
        mask: bool[H, W] (or any array where non-zero means foreground).
        max_points: maximum number of points (x, y pairs) per segment; at least 3.

    Returns:
        One segment per connected component, largest first; each a flat normalized
        ``[x1, y1, ...]`` list clipped to [0, 1] with 3 to ``max_points`` points. Empty for an
        empty mask.
    """
    if max_points < 3:
        raise ValueError(f"max_points must be at least 3, got {max_points}")
    binary = np.asarray(mask).astype(bool)
    if binary.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {binary.shape}")
    height, width = binary.shape
    rows, cols = np.flatnonzero(binary.any(axis=1)), np.flatnonzero(binary.any(axis=0))
    if rows.size == 0:
        return []
    # Label only the mask's extent: detector masks are image-sized but mostly empty.
    crop = binary[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    labels, _ = ndimage.label(crop)  # default structure = 4-connectivity, as find_contours
    segments: list[tuple[int, list[float]]] = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[window] == index
        ring = _component_ring(component, max_points)
        if ring is None:
            continue
        ring += (window[1].start + cols[0], window[0].start + rows[0])  # back to image pixels
        ring /= (width, height)
        np.clip(ring, 0.0, 1.0, out=ring)
        segments.append((int(component.sum()), ring.ravel().tolist()))
    segments.sort(key=lambda item: -item[0])
    return [segment for _, segment in segments]


def polygon_bbox(polygons: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """Box around all segments of an instance.

    Args:
        polygons: segments of normalized ``[x1, y1, ...]``.

    Returns:
        ``(x0, y0, x1, y1)`` normalized: min/max of all x and y coordinates.

    Raises:
        DataError: no segment has a coordinate pair.
    """
    xs = [float(v) for segment in polygons for v in segment[0 : len(segment) // 2 * 2 : 2]]
    ys = [float(v) for segment in polygons for v in segment[1 : len(segment) // 2 * 2 : 2]]
    if not xs:
        raise DataError("polygon has no points, so it has no bounding box; give x, y pairs.")
    return min(xs), min(ys), max(xs), max(ys)


def polygon_area(segment: Sequence[float]) -> float:
    """Area enclosed by one segment (shoelace formula, absolute value, in input units squared).

    Args:
        segment: flat ``[x1, y1, ...]``; fewer than 3 points gives 0.
    """
    points = np.asarray(segment[: len(segment) // 2 * 2], dtype=np.float64).reshape(-1, 2)
    if len(points) < 3:
        return 0.0
    return abs(float(_signed_area(points)))


def segment_self_intersects(segment: Sequence[float]) -> bool:
    """Whether two edges of a closed segment properly cross (vectorized O(n^2) edge test).

    Only proper crossings count: edges that merely touch or run along each other (a pinch
    vertex, or the zero-width cut :func:`mask_to_polygons` uses for holes) rasterize fine.

    Args:
        segment: flat ``[x1, y1, ...]``; fewer than 4 distinct points gives False.
    """
    points = _distinct_points(segment)
    if len(points) < 4:
        return False  # a triangle cannot cross itself
    start, end = points, np.roll(points, -1, axis=0)

    def side(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        # sign of cross(b - a, c - a) for every edge a-b (rows) and point c (columns)
        direction = (b - a)[:, None, :]
        offset = c[None, :, :] - a[:, None, :]
        return np.sign(direction[..., 0] * offset[..., 1] - direction[..., 1] * offset[..., 0])

    # Edges i and j cross when each one's ends lie strictly on opposite sides of the other.
    straddle = side(start, end, start) * side(start, end, end) < 0
    return bool(np.any(straddle & straddle.T))


def _distinct_points(segment: Sequence[float]) -> np.ndarray:
    """f64[N, 2] points without repeated consecutive points nor a repeated closing point."""
    points = np.asarray(segment[: len(segment) // 2 * 2], dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return points
    keep = np.ones(len(points), dtype=bool)
    keep[1:] = np.any(points[1:] != points[:-1], axis=1)
    points = points[keep]
    if len(points) > 1 and np.array_equal(points[0], points[-1]):
        points = points[:-1]  # users often close the ring explicitly
    return points


def _signed_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _component_ring(component: np.ndarray, max_points: int) -> np.ndarray | None:
    """One component (bool[h, w]) -> f64[N, 2] x, y ring in crop pixels, holes spliced in."""
    padded = np.pad(component, _EDGE_PADDING, mode="constant", constant_values=False)
    contours = measure.find_contours(padded.astype(np.float32), 0.5)
    # (row, col) of the padded array -> (x, y) pixel units: drop the padding, then move from
    # pixel-centre indices to the pixel-corner frame that polygons_to_mask rasterizes in.
    rings = [
        _drop_collinear(np.flip(c, axis=1) - _EDGE_PADDING + 0.5) for c in contours if len(c) >= 4
    ]
    if not rings:
        return None
    areas = [_signed_area(r) for r in rings]
    outer_index = int(np.argmax(np.abs(areas)))
    outer = rings[outer_index]
    holes = [r for i, r in enumerate(rings) if i != outer_index and abs(areas[i]) >= _MIN_HOLE_AREA]
    holes.sort(key=lambda h: -abs(_signed_area(h)))
    # Holes turn opposite to their outer ring so they stay empty under non-zero fill as well.
    holes = [h if _signed_area(h) * areas[outer_index] < 0 else h[::-1] for h in holes]
    ranked = [(ring, _douglas_peucker_rank(ring, _SECOND_TOLERANCE)) for ring in [outer, *holes]]
    tolerance = _KEEP_ALL
    for _ in range(_MAX_REFINEMENT_PASSES):
        ring = _simplify_with_holes(ranked, tolerance)
        if ring is not None and len(ring) <= max_points:
            return ring
        tolerance = max(_SECOND_TOLERANCE, tolerance * _TOLERANCE_GROWTH)
    ring = _simplify_with_holes(ranked[:1], tolerance)
    if ring is None:
        return None
    # Unreachable in practice (the last tolerance is thousands of pixels); keeps the guarantee.
    keep = np.linspace(0, len(ring) - 1, num=min(len(ring), max_points)).round().astype(int)
    return ring[keep]


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Closed ring (first == last point) without points on the line through their neighbours."""
    points = ring[:-1]
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    kept = points[np.abs(turn) > 1e-9]
    if len(kept) < 3:
        return ring
    return np.concatenate([kept, kept[:1]])


def _douglas_peucker_rank(points: np.ndarray, floor: float) -> np.ndarray:
    """f64[N]: the largest tolerance at which Douglas-Peucker still keeps each point.

    Douglas-Peucker's split tree does not depend on the tolerance, and a point survives tolerance
    ``t`` when its own split distance and those of all its ancestors exceed ``t``. Ranking once
    makes every refinement pass a threshold instead of a new run (the ring here is closed, first
    point == last point, as ``skimage.measure.approximate_polygon`` treats it). Ranks at or below
    ``floor`` (the smallest tolerance used) are not refined: such sub-trees stay at 0.
    """
    rank = np.zeros(len(points))
    rank[0] = rank[-1] = np.inf
    stack = [(0, len(points) - 1, np.inf)]
    while stack:
        first, last, cap = stack.pop()
        if last - first < 2:
            continue
        inner = points[first + 1 : last]
        chord = points[last] - points[first]
        offset = inner - points[first]
        # Distance to the chord *segment* (as skimage): beyond an end it is the end's distance;
        # for the closed ring's first chord (both ends equal) it is the distance to that point.
        length2 = float(chord @ chord)
        along = np.clip(offset @ chord / length2, 0.0, 1.0) if length2 > 0 else 0.0
        gap = offset - np.multiply.outer(along, chord)
        distance = np.hypot(gap[:, 0], gap[:, 1])
        far = int(np.argmax(distance))
        value = min(float(distance[far]), cap)
        rank[first + 1 + far] = value
        if value <= floor:
            continue
        stack.append((first, first + 1 + far, value))
        stack.append((first + 1 + far, last, value))
    return rank


def _simplify_with_holes(
    ranked: list[tuple[np.ndarray, np.ndarray]], tolerance: float
) -> np.ndarray | None:
    """Keep the points ranked above ``tolerance``; splice surviving holes (ranked[1:]) in."""
    ring = _simplify_closed(*ranked[0], tolerance)
    if ring is None:
        return None
    for points, rank in ranked[1:]:
        hole = _simplify_closed(points, rank, tolerance)
        if hole is not None:
            ring = _splice_hole(ring, hole)
    return ring


def _simplify_closed(points: np.ndarray, rank: np.ndarray, tolerance: float) -> np.ndarray | None:
    """Open ring (no repeated last point) of the points kept at ``tolerance``; None if < 3."""
    simple = points[rank > tolerance][:-1]
    if len(simple) < 3 or abs(_signed_area(simple)) <= 0.0:
        return None
    return simple


def _splice_hole(ring: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join ``hole`` into ``ring`` by a zero-width cut between their two closest vertices."""
    distances = ((ring[:, None, :] - hole[None, :, :]) ** 2).sum(axis=2)
    i, j = np.unravel_index(int(np.argmin(distances)), distances.shape)
    around_hole = np.concatenate([hole[j:], hole[: j + 1]])  # starts and ends at hole[j]
    return np.concatenate([ring[: i + 1], around_hole, ring[i:]])
