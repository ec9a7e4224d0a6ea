"""R-CNN detection presets: boxes, labels, crowd flags and masks stay with their objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from visionauto.data.detection import DetectionDataset
from visionauto.data.detection_transforms import (
    IMAGENET_MEAN_UINT8,
    RandomIoUCropWithBoxes,
    build_detection_transforms,
    shrink_boxes_to_masks,
)
from visionauto.data.records import ImageRecord

CLASSES = ["red", "green", "blue", "yellow"]
COLORS = {"red": (230, 20, 20), "green": (20, 210, 40), "blue": (30, 40, 240),
          "yellow": (240, 230, 20)}  # fmt: skip
BACKGROUND = (15, 15, 15)
# Pixel boxes [x0, y0, x1) of filled rectangles on a 120x80 image; one crowd object.
OBJECTS = [("red", (5, 6, 40, 30), 0), ("green", (60, 4, 110, 36), 1),
           ("blue", (8, 44, 30, 76), 0), ("yellow", (50, 48, 100, 70), 0)]  # fmt: skip
WIDTH, HEIGHT = 120, 80


def _rect_polygon(box: tuple[int, int, int, int]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0 / WIDTH, y0 / HEIGHT, x1 / WIDTH, y0 / HEIGHT, x1 / WIDTH, y1 / HEIGHT,
            x0 / WIDTH, y1 / HEIGHT]  # fmt: skip


@pytest.fixture(scope="module")
def colored_dataset(tmp_path_factory: pytest.TempPathFactory) -> DetectionDataset:
    path = tmp_path_factory.mktemp("boxes") / "objects.png"
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(image)
    label = []
    for name, (x0, y0, x1, y1), crowd in OBJECTS:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=COLORS[name])
        label.append({"label": name, "topX": x0 / WIDTH, "topY": y0 / HEIGHT,
                      "bottomX": x1 / WIDTH, "bottomY": y1 / HEIGHT, "isCrowd": crowd,
                      "polygon": [_rect_polygon((x0, y0, x1, y1))]})  # fmt: skip
    image.save(path)
    record = ImageRecord(image=str(path), label=label, source="objects.jsonl:1")
    return DetectionDataset([record], CLASSES, masks=True)


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Plain u8[3, H, W] of a float image in [0, 1] (plain tensors keep the checks fast)."""
    return (image.as_subclass(torch.Tensor) * 255).round().to(torch.uint8)


def _color_mask(pixels: torch.Tensor, color: tuple[int, int, int]) -> torch.Tensor:
    """bool[H, W]: pixels of exactly ``color`` in a u8[3, H, W] image."""
    return (pixels == torch.tensor(color, dtype=torch.uint8).view(3, 1, 1)).all(dim=0)


def _extent(mask: torch.Tensor) -> list[float]:
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def test_train_transform_keeps_boxes_on_their_objects(colored_dataset: DetectionDataset) -> None:
    transform = build_detection_transforms(train=True, augment=True)
    crowd_of = {CLASSES.index(name): crowd for name, _, crowd in OBJECTS}
    sizes, counts, cut = set(), set(), 0
    sides = {CLASSES.index(name): (x1 - x0, y1 - y0) for name, (x0, y0, x1, y1), _ in OBJECTS}
    for seed in range(40):
        torch.manual_seed(seed)
        image, target = transform(*colored_dataset.load(0))
        assert isinstance(image, tv_tensors.Image) and image.dtype == torch.float32
        boxes = target["boxes"]
        assert boxes.canvas_size == tuple(image.shape[1:])
        assert len(target["labels"]) == len(target["iscrowd"]) == len(boxes) == len(target["masks"])
        sizes.add(tuple(image.shape[1:]))
        counts.add(len(boxes))
        pixels = _to_uint8(image)
        for box, label, crowd, mask in zip(
            boxes.tolist(), target["labels"].tolist(), target["iscrowd"].tolist(),
            target["masks"], strict=True,
        ):  # fmt: skip
            name = CLASSES[label]
            assert crowd == crowd_of[label], f"seed {seed}: crowd flag left its object"
            x0, y0, x1, y1 = (round(v) for v in box)
            inside = pixels[:, y0:y1, x0:x1].float()
            # The box frames its own color (mean inside == the object's color) ...
            mean = inside.mean(dim=(1, 2)).tolist()
            assert mean == pytest.approx(COLORS[name], abs=1.0), f"seed {seed}: {name} {box}"
            # ... tightly: the visible extent of that color is the box (a crop cuts both).
            color_mask = _color_mask(pixels, COLORS[name])
            extent = _extent(color_mask)
            assert box == pytest.approx(extent, abs=1.0), f"seed {seed}: {name}"
            # Masks moved with the boxes.
            assert _extent(mask.as_subclass(torch.Tensor).bool()) == pytest.approx(box, abs=1.0)
            assert torch.equal(mask.as_subclass(torch.Tensor).bool(), color_mask)
            cut += (x1 - x0, y1 - y0) != sides[label]
    assert len(sizes) > 10, "the crop / zoom-out never changed the image size"
    assert min(counts) < len(OBJECTS), "the crop never removed an object"
    assert cut > 0, "the crop never cut an object"


def test_zoom_out_canvas_is_the_imagenet_mean(colored_dataset: DetectionDataset) -> None:
    transform = build_detection_transforms(train=True, augment=True)
    grown = 0
    for seed in range(30):
        torch.manual_seed(seed)
        image, _ = transform(*colored_dataset.load(0))
        if image.shape[1] > HEIGHT and image.shape[2] > WIDTH:
            grown += 1
            assert _color_mask(_to_uint8(image), IMAGENET_MEAN_UINT8).any()
    assert grown > 0
    assert IMAGENET_MEAN_UINT8 == (124, 116, 104)


@pytest.mark.parametrize("train", [True, False])
def test_no_augmentation_leaves_geometry_unchanged(
    colored_dataset: DetectionDataset, train: bool
) -> None:
    transform = build_detection_transforms(train=train, augment=False)
    source_image, source = colored_dataset.load(0)
    for seed in range(5):
        torch.manual_seed(seed)
        image, target = transform(source_image, source)
        assert image.dtype == torch.float32
        torch.testing.assert_close(image.as_subclass(torch.Tensor), source_image.float() / 255)
        assert torch.equal(target["boxes"], source["boxes"])
        assert torch.equal(target["masks"], source["masks"])
        assert target["labels"].tolist() == [0, 1, 2, 3]
        assert target["iscrowd"].tolist() == [0, 1, 0, 0]
        assert target["image_id"] == 0


def test_sanitize_drops_degenerate_boxes_with_their_labels_and_flags() -> None:
    image = tv_tensors.Image(torch.zeros(3, 20, 30, dtype=torch.uint8))
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor([[1.0, 1.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0], [2.0, 3.0, 29.0, 19.0]]),
            format="XYXY", canvas_size=(20, 30),
        ),
        "labels": torch.tensor([2, 0, 1]),
        "iscrowd": torch.tensor([0, 1, 1]),
        "image_id": 4,
    }  # fmt: skip
    _, out = build_detection_transforms(train=False, augment=False)(image, target)
    assert out["boxes"].tolist() == [[1.0, 1.0, 10.0, 10.0], [2.0, 3.0, 29.0, 19.0]]
    assert out["labels"].tolist() == [2, 1] and out["iscrowd"].tolist() == [0, 1]


def test_negative_images_pass_the_train_transform(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    Image.new("RGB", (40, 30), BACKGROUND).save(path)
    record = ImageRecord(image=str(path), label=[], source="train.jsonl:9")
    dataset = DetectionDataset(
        [record],
        CLASSES,
        masks=True,
        transform=build_detection_transforms(train=True, augment=True),
    )
    crop = RandomIoUCropWithBoxes(p=1.0)
    for seed in range(10):
        torch.manual_seed(seed)
        image, target = dataset[0]
        assert tuple(target["boxes"].shape) == (0, 4)
        assert tuple(target["masks"].shape) == (0, *image.shape[1:])
        # The crop never touches an image without boxes (it would search in vain).
        loaded = dataset.load(0)
        assert crop(*loaded)[0].shape == loaded[0].shape


def test_shrink_boxes_to_masks_is_exact() -> None:
    masks = torch.zeros(3, 10, 12, dtype=torch.uint8)
    masks[0, 2:5, 3:9] = 1  # extent x 3..9, y 2..5
    masks[1, 0, 11] = 1  # one pixel in the corner: x 11..12, y 0..1
    boxes = tv_tensors.BoundingBoxes(
        torch.tensor([[0.0, 0.0, 12.0, 4.0], [10.0, 0.0, 12.0, 10.0], [1.0, 1.0, 5.0, 5.0]]),
        format="XYXY",
        canvas_size=(10, 12),
    )
    out = shrink_boxes_to_masks(boxes, masks)
    assert isinstance(out, tv_tensors.BoundingBoxes) and out.canvas_size == (10, 12)
    # Never grows a box (the first keeps its y1 = 4); an empty mask empties its box.
    assert out.tolist() == [[3.0, 2.0, 9.0, 4.0], [11.0, 0.0, 12.0, 1.0], [0.0, 0.0, 0.0, 0.0]]


def test_cropped_boxes_follow_the_visible_part_of_masks(tmp_path: Path) -> None:
    path = tmp_path / "triangle.png"
    Image.new("RGB", (96, 64), BACKGROUND).save(path)
    # A right triangle: a crop through it leaves far less of it than of its box.
    triangle = [8 / 96, 4 / 64, 88 / 96, 4 / 64, 8 / 96, 60 / 64]
    record = ImageRecord(
        image=str(path), label=[{"label": "red", "polygon": [triangle]}], source="seg.jsonl:1"
    )
    dataset = DetectionDataset(
        [record],
        CLASSES,
        masks=True,
        transform=build_detection_transforms(train=True, augment=True),
    )
    cropped = 0
    for seed in range(25):
        torch.manual_seed(seed)
        image, target = dataset[0]
        cropped += image.shape[1] < 64 or image.shape[2] < 96
        for box, mask in zip(target["boxes"].tolist(), target["masks"], strict=True):
            assert box == pytest.approx(_extent(mask.as_subclass(torch.Tensor).bool()), abs=1.0)
    assert cropped > 0
