"""YOLO augmentations: letterbox geometry, and boxes staying on their objects (draw and compare)."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from visionauto.data.yolo_transforms import (
    PAD_VALUE,
    MosaicDataset,
    RandomZoomShift,
    build_yolo_train_transform,
    letterbox,
    letterbox_info,
    unletterbox_boxes,
)

# One saturated colour per class; the background is black, padding is gray 114.
COLORS = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)


def _scene(height: int, width: int, boxes: list[list[int]], labels: list[int]):
    """A black image with a filled rectangle of the class colour for each box."""
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    for (x0, y0, x1, y1), label in zip(boxes, labels, strict=True):
        image[:, y0:y1, x0:x1] = COLORS[label].view(3, 1, 1)
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=(height, width),
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "iscrowd": torch.tensor([i % 2 for i in range(len(labels))], dtype=torch.int64),
    }
    return tv_tensors.Image(image), target


class SceneDataset:
    """Synthetic ``load(i)`` dataset: images of different sizes, 1-3 coloured rectangles."""

    def __init__(self, count: int = 6) -> None:
        self.transform = None
        gen = torch.Generator().manual_seed(7)
        self.samples = []
        for index in range(count):
            height, width = (48 + 8 * index, 80 - 4 * index)
            boxes, labels = [], []
            for k in range(1 + index % 3):
                # Non-overlapping columns so every box holds only its own colour.
                x0 = 2 + k * (width // 3)
                w = int(torch.randint(8, width // 3 - 4, (1,), generator=gen))
                y0 = int(torch.randint(0, height - 20, (1,), generator=gen))
                h = int(torch.randint(10, height - y0, (1,), generator=gen))
                boxes.append([x0, y0, x0 + w, y0 + h])
                labels.append((index + k) % 3)
            image, target = _scene(height, width, boxes, labels)
            target["image_id"] = index
            self.samples.append((image, target))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int):
        image, target = self.samples[index]
        return image.clone(), dict(target)


def _assert_boxes_on_objects(image: torch.Tensor, target: dict, *, margin: int = 2) -> int:
    """Every box's interior (shrunk by ``margin``) has its class colour; returns boxes checked."""
    pixels = image.as_subclass(torch.Tensor).to(torch.float32)
    if pixels.max() <= 1.0:
        pixels = pixels * 255
    checked = 0
    boxes = target["boxes"].as_subclass(torch.Tensor)
    for box, label in zip(boxes, target["labels"], strict=True):
        x0, y0 = (int(torch.ceil(v)) + margin for v in box[:2])
        x1, y1 = (int(torch.floor(v)) - margin for v in box[2:])
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        mean = pixels[:, y0:y1, x0:x1].mean(dim=(1, 2))
        expected = COLORS[int(label)].to(torch.float32)
        assert (mean - expected).abs().max() < 40, (box.tolist(), mean.tolist(), int(label))
        checked += 1
    return checked


def test_letterbox_geometry_and_exact_inverse() -> None:
    image, target = _scene(50, 80, [[10, 5, 30, 45], [40, 20, 79, 50]], [0, 1])
    out, moved, info = letterbox(image, target, 64)
    assert out.shape == (3, 64, 64) and isinstance(out, tv_tensors.Image)
    assert (info.scale_x, info.scale_y, info.pad_x, info.pad_y) == (0.8, 0.8, 0, 12)
    assert torch.allclose(
        moved["boxes"].as_subclass(torch.Tensor),
        torch.tensor([[8.0, 16.0, 24.0, 48.0], [32.0, 28.0, 63.2, 52.0]]),
    )
    assert moved["boxes"].canvas_size == (64, 64)
    # Gray padding above and below, the picture in between.
    assert int(out[0, 0, 0]) == PAD_VALUE and int(out[0, 63, 10]) == PAD_VALUE
    back = unletterbox_boxes(moved["boxes"].as_subclass(torch.Tensor), info)
    assert torch.allclose(back, target["boxes"].as_subclass(torch.Tensor), atol=1e-5)
    assert _assert_boxes_on_objects(out, moved) == 2


def test_letterbox_float_image_pads_with_scaled_gray_and_clips_inverse() -> None:
    image = torch.ones(3, 90, 30)
    out, _, info = letterbox(image, None, 64)
    assert out.dtype == torch.float32
    assert out[0, 0, 0].item() == pytest.approx(PAD_VALUE / 255)
    assert info == letterbox_info(90, 30, 64)
    # A box reaching into the padding maps back clipped to the image.
    back = unletterbox_boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]]), info)
    assert back.tolist() == [[0.0, 0.0, 30.0, 90.0]]


def test_mosaic_boxes_stay_on_objects() -> None:
    base = SceneDataset()
    mosaic = MosaicDataset(base, 96, seed=3)
    checked = 0
    for index in range(len(base)):
        image, target = mosaic.load(index)
        assert image.shape == (3, 96, 96) and image.dtype == torch.uint8
        assert target["boxes"].canvas_size == (96, 96)
        assert len(target["labels"]) == len(target["iscrowd"]) == len(target["boxes"])
        assert target["image_id"] == index
        checked += _assert_boxes_on_objects(image, target)
    assert checked >= 8


def test_mosaic_is_reproducible_and_p0_returns_the_image() -> None:
    base = SceneDataset()
    first = MosaicDataset(base, 64, seed=5).load(2)
    again = MosaicDataset(base, 64, seed=5).load(2)
    assert torch.equal(first[0], again[0])
    plain_image, plain_target = MosaicDataset(base, 64, p=0.0).load(2)
    assert torch.equal(plain_image, base.samples[2][0])
    assert plain_target["image_id"] == 2
    # The base's transform runs once, after the mosaic (the base's own loading skips it).
    base.transform = build_yolo_train_transform(64, augment=False)
    image, target = MosaicDataset(base, 64, seed=5)[2]
    assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
    assert torch.allclose(image, first[0].float() / 255, atol=1e-6)


@pytest.mark.parametrize("degrees", [0.0, 10.0])
def test_train_transform_keeps_boxes_on_objects(degrees: float) -> None:
    torch.manual_seed(0)
    base = SceneDataset()
    transform = build_yolo_train_transform(96, augment=True, degrees=degrees)
    mosaic = MosaicDataset(base, 96, seed=1, transform=transform)
    checked = 0
    for _ in range(3):
        for index in range(len(base)):
            image, target = mosaic[index]
            assert image.dtype == torch.float32 and image.shape == (3, 96, 96)
            assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
            assert len(target["labels"]) == len(target["iscrowd"]) == len(target["boxes"])
            # Rotated boxes enclose the rotated rectangle: check their centre pixel only.
            checked += (
                _assert_boxes_on_objects(image, target)
                if degrees == 0
                else _centres_on_objects(image, target)
            )
    assert checked >= 12


def _centres_on_objects(image: torch.Tensor, target: dict) -> int:
    """Centre pixel of each box has its class colour (boxes cut by the frame are skipped: the
    enclosing box of a rotated rectangle's clipped corner need not contain it at its centre)."""
    boxes = target["boxes"].as_subclass(torch.Tensor)
    side = image.shape[-1]
    checked = 0
    for box, label in zip(boxes, target["labels"], strict=True):
        if float(box.min()) <= 0.5 or float(box.max()) >= side - 0.5:
            continue
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        pixel = image[:, cy, cx] * 255
        assert (pixel - COLORS[int(label)].float()).abs().max() < 60, box.tolist()
        checked += 1
    return checked


def test_flip_only_pipeline_mirrors_boxes() -> None:
    # scale 0 and translate 0 leave only the flip (applied or not) after the letterbox.
    image, target = _scene(64, 64, [[4, 10, 20, 30]], [2])
    transform = build_yolo_train_transform(64, augment=True, scale=0.0, translate=0.0)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, moved = transform(image, dict(target))
        seen.add(tuple(moved["boxes"].as_subclass(torch.Tensor)[0].tolist()))
        _assert_boxes_on_objects(out, moved)
    assert seen == {(4.0, 10.0, 20.0, 30.0), (44.0, 10.0, 60.0, 30.0)}


def test_no_augment_pipeline_only_letterboxes_and_scales() -> None:
    image, target = _scene(40, 80, [[0, 0, 40, 20]], [1])
    out, moved = build_yolo_train_transform(64, augment=False)(image, target)
    assert out.dtype == torch.float32 and out.shape == (3, 64, 64)
    assert moved["boxes"].as_subclass(torch.Tensor).tolist() == [[0.0, 16.0, 32.0, 32.0]]
    assert float(out[1, 20, 10]) == pytest.approx(1.0)


def test_zoom_shift_drops_boxes_pushed_out_with_their_labels() -> None:
    # Zoom x1.5 about the centre: a box in the far corner leaves the frame, the central stays.
    image, target = _scene(60, 60, [[0, 0, 8, 8], [25, 25, 35, 35]], [0, 1])
    target["iscrowd"] = torch.tensor([1, 0])
    out, moved = RandomZoomShift((1.5, 1.5), 0.0)(image, target)
    assert moved["labels"].tolist() == [1] and moved["iscrowd"].tolist() == [0]
    assert moved["boxes"].as_subclass(torch.Tensor).tolist() == [[22.5, 22.5, 37.5, 37.5]]
    assert _assert_boxes_on_objects(out, moved) == 1
