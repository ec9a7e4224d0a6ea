"""Detection / instance segmentation datasets: record -> target, collate, datamodule."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from visionauto.data.detection import (
    DetectionDataset,
    collate_detection,
    object_class_counts,
)
from visionauto.data.detection_datamodule import DetectionDataModule
from visionauto.data.jsonl import load_records
from visionauto.data.records import ImageRecord
from visionauto.data.synthetic import make_synthetic_dataset
from visionauto.errors import DataError

CLASSES = ["can", "carton", "milk_bottle"]


def _png(path: Path, width: int, height: int, color: tuple[int, int, int] = (90, 90, 90)) -> str:
    Image.new("RGB", (width, height), color).save(path)
    return str(path)


def _record(image: str, label: object, source: str = "train.jsonl:1") -> ImageRecord:
    return ImageRecord(image=image, label=label, source=source)


def test_targets_from_jsonl_objects_are_exact_pixel_boxes(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 100, 50)
    _png(tmp_path / "b.png", 100, 50)
    objects = [
        {"label": "can", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6, "isCrowd": 0},
        # Azure's how-to writes numbers and flags as strings.
        {"label": "milk_bottle", "topX": "0.25", "topY": "0", "bottomX": "1", "bottomY": "1",
         "isCrowd": "true"},
    ]  # fmt: skip
    lines = [{"image_url": "a.png", "label": objects}, {"image_url": "b.png", "label": []}]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records, issues = load_records(jsonl, task="detection")
    assert issues == []

    dataset = DetectionDataset(records, CLASSES)
    image, target = dataset.load(0)
    assert isinstance(image, tv_tensors.Image)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 50, 100)
    assert isinstance(target["boxes"], tv_tensors.BoundingBoxes)
    assert target["boxes"].canvas_size == (50, 100)
    assert target["boxes"].dtype == torch.float32
    torch.testing.assert_close(
        target["boxes"].as_subclass(torch.Tensor),
        torch.tensor([[10.0, 10.0, 50.0, 30.0], [25.0, 0.0, 100.0, 50.0]]),
    )
    assert target["labels"].tolist() == [0, 2] and target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [0, 1] and target["iscrowd"].dtype == torch.int64
    assert target["image_id"] == 0 and "masks" not in target

    _, empty = dataset.load(1)
    assert tuple(empty["boxes"].shape) == (0, 4)
    assert empty["labels"].shape == (0,) and empty["iscrowd"].shape == (0,)
    assert empty["image_id"] == 1


def test_raw_string_labels_are_parsed_and_box_uses_real_image_size(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 80, 40)
    # image_details claim 800x400; the decoded image is what the boxes refer to.
    record = ImageRecord(
        image=image,
        label=[{"label": "carton", "topX": "0.5", "topY": "0.25", "bottomX": "0.75",
                "bottomY": "1.0"}],
        source="train.jsonl:3", width=800, height=400,
    )  # fmt: skip
    _, target = DetectionDataset([record], CLASSES).load(0)
    assert target["boxes"].tolist() == [[40.0, 10.0, 60.0, 40.0]]
    assert target["labels"].tolist() == [1] and target["iscrowd"].tolist() == [0]


def test_degenerate_boxes_are_clipped_or_dropped_with_a_debug_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = _png(tmp_path / "a.png", 100, 50)
    label = [
        {"label": "can", "topX": -0.2, "topY": 0.5, "bottomX": 0.3, "bottomY": 1.4},  # clipped
        {"label": "carton", "topX": 0.5, "topY": 0.1, "bottomX": 0.505, "bottomY": 0.9},  # 0.5px
        {"label": "can", "topX": 1.0, "topY": 0.0, "bottomX": 1.2, "bottomY": 0.5},  # outside
    ]
    with caplog.at_level(logging.DEBUG, logger="visionauto.data.detection"):
        _, target = DetectionDataset([_record(image, label, "val.jsonl:7")], CLASSES).load(0)
    assert target["boxes"].tolist() == [[0.0, 25.0, 30.0, 50.0]]
    assert target["labels"].tolist() == [0]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped) == 2
    assert dropped[0].startswith("val.jsonl:7: object 1 (carton) dropped")


def test_unknown_class_and_malformed_label_raise_data_errors(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 20, 20)
    box = {"topX": 0.1, "topY": 0.1, "bottomX": 0.9, "bottomY": 0.9}
    with pytest.raises(DataError, match=r"train.jsonl:5: class 'dog' is not one of the model"):
        DetectionDataset([_record(image, [{"label": "dog", **box}], "train.jsonl:5")], CLASSES)
    bad = [{"label": "can", "topX": "left", "topY": 0, "bottomX": 1, "bottomY": 1}]
    with pytest.raises(DataError, match=r"train.jsonl:2: object 0: topX='left' is not a number"):
        DetectionDataset([_record(image, bad, "train.jsonl:2")], CLASSES)
    with pytest.raises(DataError, match=r'train.jsonl:4: object 0: object .can. has no "polygon"'):
        DetectionDataset([_record(image, [{"label": "can", **box}], "train.jsonl:4")], CLASSES,
                         masks=True)  # fmt: skip


def test_masks_are_rasterized_and_boxes_derived_from_masks(tmp_path: Path) -> None:
    image = _png(tmp_path / "a.png", 100, 50)
    square = [0.1, 0.2, 0.3, 0.2, 0.3, 0.6, 0.1, 0.6]  # pixels x 10..30, y 10..30
    label = [
        {"label": "can", "polygon": [square], "isCrowd": 1},  # no box keys: box from the mask
        {"label": "carton", "polygon": [[0.5, 0.0, 0.9, 0.0, 0.9, 0.5], [0.0, 0.9, 0.02, 0.9]],
         "topX": 0.5, "topY": 0.0, "bottomX": 0.9, "bottomY": 0.5},
    ]  # fmt: skip
    image_t, target = DetectionDataset([_record(image, label)], CLASSES, masks=True).load(0)
    masks = target["masks"]
    assert isinstance(masks, tv_tensors.Mask)
    assert masks.dtype == torch.uint8 and tuple(masks.shape) == (2, 50, 100)
    assert int(masks[0].sum()) == 20 * 20
    assert masks[0, 10:30, 10:30].all()
    assert target["boxes"].tolist() == [[10.0, 10.0, 30.0, 30.0], [50.0, 0.0, 90.0, 25.0]]
    assert target["iscrowd"].tolist() == [1, 0]
    # Without masks the polygon-only object still gets its box (from the polygon).
    _, plain = DetectionDataset([_record(image, label)], CLASSES).load(0)
    assert plain["boxes"].tolist() == [[10.0, 10.0, 30.0, 30.0], [50.0, 0.0, 90.0, 25.0]]
    assert "masks" not in plain
    # A negative image in a segmentation set: empty masks of the image's size.
    _, empty = DetectionDataset([_record(image, [])], CLASSES, masks=True).load(0)
    assert tuple(empty["masks"].shape) == (0, 50, 100)


def test_cache_gives_the_same_samples_and_counts_objects(tmp_path: Path) -> None:
    jsonl = make_synthetic_dataset(tmp_path / "det", "detection", n_images=4, image_size=48)
    records, _ = load_records(jsonl, task="detection")
    classes = ["circle", "square", "triangle"]
    plain = DetectionDataset(records, classes)
    cached = DetectionDataset(records, classes, cache_images=True)
    assert cached.cached and not plain.cached
    for index in range(len(records)):
        (a, ta), (b, tb) = plain.load(index), cached.load(index)
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    counts = object_class_counts(records, classes)
    names = [obj["label"] for r in records for obj in r.label]
    assert counts.tolist() == [float(names.count(c)) for c in classes]


def test_collate_returns_lists_of_plain_tensors(tmp_path: Path) -> None:
    jsonl = make_synthetic_dataset(
        tmp_path / "seg", "instance_segmentation", n_images=3, image_size=40
    )
    records, _ = load_records(jsonl, task="instance_segmentation")
    records.append(_record(records[0].image, []))
    from visionauto.data.detection_transforms import build_detection_transforms

    dataset = DetectionDataset(
        records,
        ["circle", "square", "triangle"],
        masks=True,
        transform=build_detection_transforms(train=False, augment=False),
    )
    batch = collate_detection([dataset[i] for i in range(4)])
    assert set(batch) == {"images", "targets"}
    assert len(batch["images"]) == len(batch["targets"]) == 4
    for index, (image, target) in enumerate(zip(batch["images"], batch["targets"], strict=True)):
        assert type(image) is torch.Tensor and image.dtype == torch.float32
        assert tuple(image.shape) == (3, 40, 40) and float(image.max()) <= 1.0
        n = len(records[index].label)
        assert type(target["boxes"]) is torch.Tensor and tuple(target["boxes"].shape) == (n, 4)
        assert type(target["masks"]) is torch.Tensor and tuple(target["masks"].shape) == (n, 40, 40)
        assert target["labels"].shape == (n,) and target["iscrowd"].shape == (n,)
        assert target["image_id"] == index
    # uint8 images (a transform-less dataset) are scaled to [0, 1].
    raw = collate_detection([DetectionDataset(records, ["circle", "square", "triangle"])[0]])
    image, _ = DetectionDataset(records, ["circle", "square", "triangle"]).load(0)
    torch.testing.assert_close(raw["images"][0], image.as_subclass(torch.Tensor) / 255.0)


class _Doubled(Dataset):
    """A wrapper in the shape mosaic / tiling use: several source items per item."""

    def __init__(self, source: DetectionDataset) -> None:
        self.source = source

    def __len__(self) -> int:
        return 2 * len(self.source)

    def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
        return self.source[index // 2]


def test_datamodule_yields_batches_and_applies_hooks(tmp_path: Path) -> None:
    jsonl = make_synthetic_dataset(tmp_path / "det", "detection", n_images=6, image_size=48)
    records, _ = load_records(jsonl, task="detection")
    calls: list[int] = []

    def val_transform(image, target):  # type: ignore[no-untyped-def]
        calls.append(target["image_id"])
        return image, target

    module = DetectionDataModule(
        train_records=records[:5], val_records=records[5:] + records[:2],
        class_names=["circle", "square", "triangle"], masks=False, training_batch_size=2,
        validation_batch_size=2, num_workers=0, augment=True, cache_images=False, seed=3,
        val_transform=val_transform, train_dataset_wrapper=_Doubled,
    )  # fmt: skip
    assert module.num_classes == 3
    train = list(module.train_dataloader())
    assert isinstance(module.train_dataset, _Doubled)
    assert [len(b["images"]) for b in train] == [2] * 5  # 10 items through the wrapper
    ids = sorted(t["image_id"] for b in train for t in b["targets"])
    assert ids == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert all(img.dtype == torch.float32 for b in train for img in b["images"])
    again = [t["image_id"] for b in module.train_dataloader() for t in b["targets"]]
    assert again == [t["image_id"] for b in train for t in b["targets"]]  # seeded shuffle

    val = list(module.val_dataloader())
    assert [t["image_id"] for b in val for t in b["targets"]] == [0, 1, 2]
    assert calls == [0, 1, 2]
    first = val[0]["targets"][1]
    expected = DetectionDataset(records[:1], ["circle", "square", "triangle"]).load(0)[1]
    assert torch.equal(first["boxes"], expected["boxes"].as_subclass(torch.Tensor))
    counts = module.train_object_counts()
    assert float(counts.sum()) == sum(len(r.label) for r in records[:5])


def test_datamodule_with_workers_and_cache(tmp_path: Path) -> None:
    jsonl = make_synthetic_dataset(tmp_path / "seg", "instance_segmentation", n_images=4,
                                   image_size=32)  # fmt: skip
    records, _ = load_records(jsonl, task="instance_segmentation")
    module = DetectionDataModule(
        train_records=records, val_records=records, class_names=["circle", "square", "triangle"],
        masks=True, training_batch_size=3, validation_batch_size=4, num_workers=1, augment=True,
        cache_images=True, seed=0,
    )  # fmt: skip
    train = list(module.train_dataloader())
    # 4 % 3 == 1: the last batch of one image is dropped.
    assert [len(b["images"]) for b in train] == [3]
    (val,) = list(module.val_dataloader())
    for image, target in zip(val["images"], val["targets"], strict=True):
        assert np.array_equal(target["masks"].shape[1:], image.shape[1:])
