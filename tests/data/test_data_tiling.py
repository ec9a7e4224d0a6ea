"""Tiling: grid parsing, tile geometry (spec §6), cutting targets, TiledDataset, small-object sets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from visionauto.data.detection import DetectionDataset
from visionauto.data.detection_transforms import build_detection_transforms
from visionauto.data.jsonl import load_records
from visionauto.data.synthetic_small import write_small_object_set
from visionauto.data.tiling import (
    TiledDataset,
    crop_target,
    format_tile_grid_size,
    parse_tile_grid_size,
    tile_windows,
    validate_tiling,
)
from visionauto.errors import ConfigError

# ---------------------------------------------------------------- parse_tile_grid_size


@pytest.mark.parametrize(
    "value",
    ["3x2", "3X2", "(3, 2)", "(3,2)", "3,2", " 3 x 2 ", "(3 X 2)", (3, 2), [3, 2]],
)
def test_parse_accepts_every_form(value) -> None:
    assert parse_tile_grid_size(value) == (3, 2)


@pytest.mark.parametrize("value", [None, "", "  ", "none", "None", "null"])
def test_parse_unset_means_off(value) -> None:
    assert parse_tile_grid_size(value) is None


def test_parse_other_grids() -> None:
    assert parse_tile_grid_size("1x2") == (1, 2)
    assert parse_tile_grid_size("5x3") == (5, 3)
    assert parse_tile_grid_size("10X1") == (10, 1)


@pytest.mark.parametrize("value", ["1x1", "(1, 1)", (1, 1)])
def test_parse_rejects_1x1(value) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^training\.tile_grid_size=.* is invalid: a 1x1 grid is just the full image; use at "
        r"least two tiles \(e\.g\. '2x1' or '3x2'\), or leave it unset \(null\) to turn tiling off\.$",
    ):
        parse_tile_grid_size(value)


@pytest.mark.parametrize("value", ["0x2", "3x0", "-3x2", "3x-1", "(0, 0)", (0, 2)])
def test_parse_rejects_zero_and_negative(value) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^training\.tile_grid_size=.* is invalid: both tile counts must be positive "
        r"integers, e\.g\. '3x2'\.$",
    ):
        parse_tile_grid_size(value)


@pytest.mark.parametrize(
    "value",
    ["3", "3x", "x2", "3x2x1", "3.5x2", "threexTwo", "3*2", "3 2", (3,), (3, 2.0), [True, 2]],
)
def test_parse_rejects_junk(value) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^training\.tile_grid_size=.* is invalid: expected '<nx>x<ny>' such as '3x2' "
        r"\(also accepted: '3X2', '\(3, 2\)', '3,2'\)\.$",
    ):
        parse_tile_grid_size(value)


def test_parse_names_the_given_key() -> None:
    with pytest.raises(ConfigError, match=r"^settings\.json: tile_grid_size='2y2' is invalid"):
        parse_tile_grid_size("2y2", key="settings.json: tile_grid_size")


def test_format_round_trips() -> None:
    assert format_tile_grid_size((3, 2)) == "3x2"
    assert format_tile_grid_size(None) is None
    assert parse_tile_grid_size(format_tile_grid_size((5, 3))) == (5, 3)


# ---------------------------------------------------------------- validate_tiling


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.99])
@pytest.mark.parametrize("nms", [0.0, 0.25, 1.0])
def test_validate_accepts_ranges(overlap, nms) -> None:
    validate_tiling((3, 2), overlap, nms)
    validate_tiling(None, overlap, nms)


@pytest.mark.parametrize("overlap", [1.0, -0.1, 1.5, float("nan"), "0.2", True])
def test_validate_rejects_overlap(overlap) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^training\.tile_overlap_ratio=.* is invalid: expected a number in \[0, 1\), the "
        r"fraction of a tile shared with its neighbour \(default 0\.25\)\.$",
    ):
        validate_tiling((3, 2), overlap, 0.25)


@pytest.mark.parametrize("nms", [-0.01, 1.01, float("inf"), None])
def test_validate_rejects_nms(nms) -> None:
    with pytest.raises(
        ConfigError,
        match=r"^training\.tile_predictions_nms_threshold=.* is invalid: expected a number in "
        r"\[0, 1\], the IoU above which merged tile predictions are suppressed \(default 0\.25\)\.$",
    ):
        validate_tiling((3, 2), 0.25, nms)


def test_validate_rejects_bad_grid() -> None:
    with pytest.raises(ConfigError, match=r"^training\.tile_grid_size=\(1, 1\) is invalid: a 1x1"):
        validate_tiling((1, 1), 0.25, 0.25)


# ---------------------------------------------------------------- tile_windows


def test_windows_600x400_3x2_by_hand() -> None:
    # tile_w = 600 / (0.25 + 0.75 * 3) = 240; x origins 0, 180, 360 -> ends 240, 420, 600.
    # tile_h = 400 / (0.25 + 0.75 * 2) = 228.571...; y origins 0, 171.43 -> 171; ends 228.57 ->
    # 229 and 400.
    assert tile_windows(600, 400, (3, 2), 0.25) == [
        (0, 0, 240, 229),
        (180, 0, 420, 229),
        (360, 0, 600, 229),
        (0, 171, 240, 400),
        (180, 171, 420, 400),
        (360, 171, 600, 400),
    ]


def test_windows_round_half_up_without_overlap() -> None:
    # tile_w = 10 / 4 = 2.5: corners 0, 2.5, 5, 7.5, 10 round half up to 0, 3, 5, 8, 10.
    windows = tile_windows(10, 6, (4, 1), 0.0)
    assert [(x0, x1) for x0, _, x1, _ in windows] == [(0, 3), (3, 5), (5, 8), (8, 10)]
    assert {(y0, y1) for _, y0, _, y1 in windows} == {(0, 6)}


def test_windows_one_axis_untiled() -> None:
    # nx = 1: tile_w = W / (r + 1 - r) = W, the full width.
    assert tile_windows(100, 80, (1, 2), 0.5) == [(0, 0, 100, 53), (0, 27, 100, 80)]


@pytest.mark.parametrize("width,height", [(600, 400), (97, 61), (1333, 800), (33, 1000)])
@pytest.mark.parametrize("grid", [(2, 1), (3, 2), (5, 3), (4, 4)])
@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.25, 0.5, 0.9])
def test_windows_cover_image_with_spec_overlap(width, height, grid, overlap) -> None:
    windows = tile_windows(width, height, grid, overlap)
    assert len(windows) == grid[0] * grid[1]
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    for axis, (length, count) in enumerate([(width, grid[0]), (height, grid[1])]):
        tile = length / (overlap + (1 - overlap) * count)
        spans = sorted({(w[axis], w[axis + 2]) for w in windows})
        assert len(spans) == count
        assert spans[0][0] == 0 and spans[-1][1] == length
        for (_, e0), (s1, _) in zip(spans[:-1], spans[1:], strict=True):
            assert abs((e0 - s1) - overlap * tile) <= 1.0  # shared pixels ~ r * tile size
        for start, end in spans:
            assert abs((end - start) - tile) <= 1.0


def test_windows_row_major_order() -> None:
    windows = tile_windows(200, 100, (2, 2), 0.0)
    assert windows == [(0, 0, 100, 50), (100, 0, 200, 50), (0, 50, 100, 100), (100, 50, 200, 100)]


def test_windows_validate_settings() -> None:
    with pytest.raises(ConfigError, match="tile_overlap_ratio=1.0 is invalid"):
        tile_windows(100, 100, (2, 2), 1.0)


# ---------------------------------------------------------------- crop_target


def _target(boxes: list[list[float]], height: int = 50, width: int = 100) -> dict:
    n = len(boxes)
    masks = torch.zeros(n, height, width, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, int(y0) : int(y1), int(x0) : int(x1)] = 1
    return {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32), format="XYXY", canvas_size=(height, width)
        ),
        "labels": torch.arange(n, dtype=torch.int64),
        "iscrowd": torch.tensor([0, 1] * (n // 2) + [0] * (n % 2), dtype=torch.int64),
        "masks": tv_tensors.Mask(masks),
        "image_id": 7,
    }


def test_crop_target_clips_shifts_and_drops() -> None:
    target = _target(
        [
            [10, 10, 30, 30],  # half inside (x 20..30 of 10..30): kept
            [50, 10, 70, 30],  # half inside (x 50..60): kept
            [55, 30, 75, 45],  # 5 of 20 px wide inside = 25%: kept (the bound is inclusive)
            [57, 5, 77, 25],  # 3 of 20 px inside = 15%: dropped
            [80, 10, 90, 20],  # outside: dropped
            [60, 0, 70, 10],  # touches the border only (zero width inside): dropped
            [25, 0, 35, 50],  # fully inside: kept whole
        ]
    )
    out = crop_target(target, (20, 0, 60, 50))
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes)
    assert tuple(out["boxes"].canvas_size) == (50, 40)
    assert out["boxes"].dtype == torch.float32
    torch.testing.assert_close(
        out["boxes"].as_subclass(torch.Tensor),
        torch.tensor(
            [[0, 10, 10, 30], [30, 10, 40, 30], [35, 30, 40, 45], [5, 0, 15, 50]],
            dtype=torch.float32,
        ),
    )
    assert out["labels"].tolist() == [0, 1, 2, 6]
    assert out["iscrowd"].tolist() == [0, 1, 0, 0]
    assert out["image_id"] == 7
    assert isinstance(out["masks"], tv_tensors.Mask)
    assert out["masks"].shape == (4, 50, 40)
    assert out["masks"].sum(dim=(1, 2)).tolist() == [10 * 20, 10 * 20, 5 * 15, 10 * 50]
    # The input target is left untouched.
    assert target["boxes"].shape == (7, 4) and target["masks"].shape == (7, 50, 100)


def test_crop_target_min_visible_is_configurable() -> None:
    target = _target([[50, 10, 70, 30], [57, 5, 77, 25]])
    assert crop_target(target, (20, 0, 60, 50), min_visible=0.6)["labels"].tolist() == []
    assert crop_target(target, (20, 0, 60, 50), min_visible=0.0)["labels"].tolist() == [0, 1]


def test_crop_target_without_boxes_or_masks() -> None:
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(50, 100)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "iscrowd": torch.zeros(0, dtype=torch.int64),
        "image_id": 0,
    }
    out = crop_target(target, (10, 5, 40, 45))
    assert out["boxes"].shape == (0, 4) and tuple(out["boxes"].canvas_size) == (40, 30)
    assert out["labels"].shape == (0,) and "masks" not in out


# ---------------------------------------------------------------- TiledDataset


class _StandIn:
    """Minimal object with DetectionDataset's ``load``/``transform``/``__len__``."""

    def __init__(self, images: list[torch.Tensor], targets: list[dict], transform=None) -> None:
        self.images, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int):
        return tv_tensors.Image(self.images[index]), dict(self.targets[index])


def test_tiled_dataset_items_of_a_stand_in() -> None:
    image = torch.arange(3 * 400 * 600, dtype=torch.int64).remainder(251).to(torch.uint8)
    image = image.reshape(3, 400, 600)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[200.0, 180.0, 260.0, 220.0], [10.0, 10.0, 40.0, 40.0]]),
            format="XYXY",
            canvas_size=(400, 600),
        ),
        "labels": torch.tensor([1, 0]),
        "iscrowd": torch.tensor([0, 0]),
        "image_id": 0,
    }
    base = _StandIn([image, image.flip(-1)], [target, dict(target, image_id=1)])
    data = TiledDataset(base, (3, 2), 0.25)
    assert len(data) == 2 * 7
    assert data.locate(0) == (0, 0) and data.locate(7) == (1, 0) and data.locate(13) == (1, 6)
    full_image, full_target = data[0]
    assert torch.equal(full_image, image)
    assert full_target["labels"].tolist() == [1, 0]
    # Item 5 = tile 4 of image 0 = window (180, 171, 420, 400) (see the by-hand test above).
    tile_image, tile_target = data[5]
    assert isinstance(tile_image, tv_tensors.Image)
    assert torch.equal(tile_image, image[:, 171:400, 180:420])
    torch.testing.assert_close(
        tile_target["boxes"].as_subclass(torch.Tensor), torch.tensor([[20.0, 9.0, 80.0, 49.0]])
    )
    assert tile_target["labels"].tolist() == [1]
    assert tile_target["image_id"] == 0
    assert data[13][1]["image_id"] == 1
    with pytest.raises(IndexError):
        data[14]


def test_tiled_dataset_rejects_bad_settings() -> None:
    base = _StandIn([], [])
    with pytest.raises(ConfigError, match="tile_grid_size=\\(1, 1\\) is invalid"):
        TiledDataset(base, (1, 1), 0.25)
    with pytest.raises(ConfigError, match="tile_overlap_ratio=-0.5 is invalid"):
        TiledDataset(base, (2, 2), -0.5)


def test_tiled_dataset_over_detection_dataset(tmp_path) -> None:
    jsonl = write_small_object_set(
        tmp_path, 2, size=(96, 64), object_px=(4, 8), objects_per_image=(6, 6), seed=3
    )
    records, issues = load_records(jsonl, task="detection")
    assert not issues
    base = DetectionDataset(
        records, ["dot", "cross"], transform=build_detection_transforms(train=False, augment=False)
    )
    data = TiledDataset(base, (2, 2), 0.25)
    assert len(data) == 2 * 5
    windows = tile_windows(96, 64, (2, 2), 0.25)
    raw_image, raw_target = base.load(1)
    for tile in range(1, 5):
        image, target = data[5 + tile]
        x0, y0, x1, y1 = windows[tile - 1]
        assert image.dtype == torch.float32 and image.shape == (3, y1 - y0, x1 - x0)
        torch.testing.assert_close(image, raw_image[:, y0:y1, x0:x1].float() / 255)
        expected = crop_target(raw_target, windows[tile - 1])
        torch.testing.assert_close(
            target["boxes"].as_subclass(torch.Tensor), expected["boxes"].as_subclass(torch.Tensor)
        )
        assert target["labels"].tolist() == expected["labels"].tolist()
    # Every object is whole in at least one tile (objects <= 8 px, overlap ~ 13 x 9 px).
    seen = sum(len(data[5 + t][1]["labels"]) for t in range(1, 5))
    assert seen >= len(raw_target["labels"])


# ---------------------------------------------------------------- synthetic small objects


def test_small_object_set_boxes_match_pixels(tmp_path) -> None:
    jsonl = write_small_object_set(
        tmp_path / "a", 3, size=(128, 96), object_px=(6, 12), objects_per_image=(5, 9), seed=1
    )
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert line["image_details"] == {"format": "png", "width": 128, "height": 96}
        assert 5 <= len(line["label"]) <= 9
        pixels = np.asarray(Image.open(jsonl.parent / line["image_url"]), dtype=np.int16)
        assert pixels.shape == (96, 128, 3)
        for obj in line["label"]:
            assert obj["label"] in ("dot", "cross") and obj["isCrowd"] == 0
            x0, x1 = round(obj["topX"] * 128), round(obj["bottomX"] * 128)
            y0, y1 = round(obj["topY"] * 96), round(obj["bottomY"] * 96)
            assert 6 <= x1 - x0 == y1 - y0 <= 12
            # The shape reaches all four box edges: its middle row and column are painted.
            row, col = pixels[(y0 + y1) // 2, x0:x1], pixels[y0:y1, (x0 + x1) // 2]
            assert (row.max(axis=1) >= 200).all() and (col.max(axis=1) >= 200).all()
    again = write_small_object_set(
        tmp_path / "b", 3, size=(128, 96), object_px=(6, 12), objects_per_image=(5, 9), seed=1
    )
    assert again.read_text() == jsonl.read_text()
    assert (tmp_path / "a/images/0002.png").read_bytes() == (
        tmp_path / "b/images/0002.png"
    ).read_bytes()


def test_small_object_set_rejects_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="classes must be shape names"):
        write_small_object_set(tmp_path, 1, classes=("dot", "star"))
    with pytest.raises(ValueError, match="object_px=\\(2, 4\\) must satisfy"):
        write_small_object_set(tmp_path, 1, object_px=(2, 4))
