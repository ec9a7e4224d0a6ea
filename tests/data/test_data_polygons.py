"""Polygon <-> mask geometry: exact rasters on small grids, tracing, holes, simplification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionauto.data.polygons import (
    mask_to_polygons,
    polygon_area,
    polygon_bbox,
    polygons_to_mask,
    segment_self_intersects,
)
from visionauto.errors import DataError

SQUARE = [0.2, 0.2, 0.6, 0.2, 0.6, 0.6, 0.2, 0.6]  # corners (2, 2) and (6, 6) on a 10x10 grid


def _grid(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_square_fills_exactly_the_pixels_whose_centres_are_inside() -> None:
    mask = polygons_to_mask([SQUARE], 10, 10)
    expected = np.zeros((10, 10), dtype=bool)
    expected[2:6, 2:6] = True
    assert mask.dtype == np.bool_ and mask.shape == (10, 10)
    np.testing.assert_array_equal(mask, expected)


def test_triangle_raster_on_a_10x10_grid() -> None:
    mask = polygons_to_mask([[0.2, 0.2, 0.8, 0.2, 0.2, 0.8]], 10, 10)
    expected = _grid(
        [
            "..........",
            "..........",
            "..#####...",
            "..####....",
            "..###.....",
            "..##......",
            "..#.......",
            "..........",
            "..........",
            "..........",
        ]
    )
    np.testing.assert_array_equal(mask, expected)


def test_segments_are_or_ed_and_scaled_by_width_and_height() -> None:
    left = [0.0, 0.0, 0.2, 0.0, 0.2, 0.5, 0.0, 0.5]
    right = [0.5, 0.5, 1.0, 0.5, 1.0, 1.0, 0.5, 1.0]
    mask = polygons_to_mask([left, right], 20, 10)  # W=20, H=10
    expected = np.zeros((10, 20), dtype=bool)
    expected[0:5, 0:4] = True
    expected[5:10, 10:20] = True
    np.testing.assert_array_equal(mask, expected)


def test_degenerate_segments_are_ignored_and_odd_ones_rejected() -> None:
    assert not polygons_to_mask([], 8, 6).any()
    assert polygons_to_mask([], 8, 6).shape == (6, 8)
    # 2 points (4 numbers) must not be read as a box, as pycocotools would.
    assert not polygons_to_mask([[0.1, 0.1, 0.9, 0.9]], 10, 10).any()
    with pytest.raises(
        DataError, match=r"polygon segment 1 has an odd number of coordinates \(5\)"
    ):
        polygons_to_mask([SQUARE, [0.1, 0.1, 0.5, 0.5, 0.3]], 10, 10)


def test_coordinates_outside_the_image_are_clipped_by_the_border() -> None:
    mask = polygons_to_mask([[-0.2, -0.2, 1.2, -0.2, 1.2, 0.5, -0.2, 0.5]], 10, 10)
    assert mask[:5].all() and not mask[5:].any()


def test_square_mask_traces_to_its_chamfered_outline_and_back() -> None:
    mask = polygons_to_mask([SQUARE], 10, 10)
    polygons = mask_to_polygons(mask)
    # find_contours cuts each pixel corner by half a pixel, in pixel-corner coordinates.
    expected = [0.55, 0.6, 0.25, 0.6, 0.2, 0.55, 0.2, 0.25, 0.25, 0.2, 0.55, 0.2, 0.6, 0.25, 0.6]
    assert polygons == [pytest.approx(expected + [0.55])]
    assert polygon_bbox(polygons) == pytest.approx((0.2, 0.2, 0.6, 0.6))
    np.testing.assert_array_equal(polygons_to_mask(polygons, 10, 10), mask)


def test_components_become_segments_largest_first_touching_the_border() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[10:20, 20:30] = True  # touches the right and bottom border
    mask[0:5, 0:5] = True  # touches the left and top border
    mask[12, 2] = True  # one pixel
    polygons = mask_to_polygons(mask)
    assert [len(p) // 2 for p in polygons] == [8, 8, 4]
    assert polygon_bbox(polygons[:1]) == pytest.approx((20 / 30, 0.5, 1.0, 1.0))
    assert polygon_bbox(polygons[1:2]) == pytest.approx((0.0, 0.0, 5 / 30, 0.25))
    assert all(0.0 <= v <= 1.0 for p in polygons for v in p)
    np.testing.assert_array_equal(polygons_to_mask(polygons, 30, 20), mask)


def test_a_hole_is_kept_as_a_keyhole_in_one_segment() -> None:
    yy, xx = np.mgrid[:64, :64]
    ring = ((xx - 32) ** 2 + (yy - 30) ** 2 < 25**2) & ((xx - 30) ** 2 + (yy - 32) ** 2 >= 8**2)
    polygons = mask_to_polygons(ring)
    assert len(polygons) == 1 and len(polygons[0]) // 2 <= 100
    back = polygons_to_mask(polygons, 64, 64)
    assert _iou(back, ring) >= 0.9
    assert not back[32, 30]  # the hole stays empty
    # The zero-width cut to the hole is not a crossing.
    assert not segment_self_intersects(polygons[0])


def test_max_points_is_respected_and_shape_kept() -> None:
    yy, xx = np.mgrid[:128, :128]
    angle = np.arctan2(yy - 64, xx - 64)
    star = np.hypot(xx - 64, yy - 64) < 40 + 15 * np.sin(7 * angle)
    full = mask_to_polygons(star, max_points=1000)
    assert len(full) == 1 and len(full[0]) // 2 > 100
    for limit in (100, 30, 10, 3):
        polygons = mask_to_polygons(star, max_points=limit)
        assert len(polygons) == 1 and 3 <= len(polygons[0]) // 2 <= limit, limit
    assert _iou(polygons_to_mask(mask_to_polygons(star, max_points=30), 128, 128), star) > 0.9
    with pytest.raises(ValueError, match="max_points must be at least 3"):
        mask_to_polygons(star, max_points=2)


def test_empty_mask_has_no_polygon() -> None:
    assert mask_to_polygons(np.zeros((5, 7), dtype=bool)) == []


def test_real_voc_instance_masks_round_trip(shared_data: Path) -> None:
    folder = shared_data / "labelme_voc2011_examples/instance_segmentation/data_dataset_voc"
    for path in sorted((folder / "SegmentationObject").glob("*.png")):
        objects = np.array(Image.open(path))  # palette indices: 0 background, 255 void
        height, width = objects.shape
        for value in set(np.unique(objects).tolist()) - {0, 255}:
            mask = objects == value
            polygons = mask_to_polygons(mask)
            assert all(len(p) // 2 <= 100 for p in polygons)
            assert _iou(polygons_to_mask(polygons, width, height), mask) > 0.98, (path, value)


def test_area_bbox_and_self_intersection() -> None:
    assert polygon_area([0, 0, 1, 0, 1, 1, 0, 1]) == 1.0
    assert polygon_area([0, 0, 1, 0, 0, 1]) == 0.5
    assert polygon_area([0, 0, 1, 1]) == 0.0
    assert polygon_bbox([[0.5, 0.1, 0.9, 0.4, 0.6, 0.8], [0.2, 0.3, 0.3, 0.3, 0.3, 0.5]]) == (
        0.2,
        0.1,
        0.9,
        0.8,
    )
    with pytest.raises(DataError, match="polygon has no points"):
        polygon_bbox([[]])
    assert segment_self_intersects([0, 0, 1, 1, 1, 0, 0, 1])  # bow-tie
    assert not segment_self_intersects([0, 0, 1, 0, 1, 1, 0, 1])
    assert not segment_self_intersects([0, 0, 1, 0, 1, 1, 0, 1, 0, 0])  # explicitly closed
    assert not segment_self_intersects([0, 0, 1, 1, 2, 0, 2, 2, 1, 1, 0, 2])  # pinch vertex
