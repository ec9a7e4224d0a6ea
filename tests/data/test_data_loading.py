"""Transforms, datasets, the image cache decision and the classification datamodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionauto.data import datasets as datasets_module
from visionauto.data.datamodule import ClassificationDataModule
from visionauto.data.datasets import ClassificationDataset, class_counts, should_cache
from visionauto.data.jsonl import load_records
from visionauto.data.records import ImageRecord
from visionauto.data.synthetic import make_synthetic_dataset
from visionauto.data.transforms import (
    COLOR_JITTER,
    IMAGENET_MEAN,
    IMAGENET_STD,
    FloatColorJitter,
    build_classification_transforms,
)
from visionauto.errors import DataError

SIZES = {"training_crop_size": 32, "validation_resize_size": 40, "validation_crop_size": 36}


@pytest.mark.parametrize(
    ("train", "augment", "side"), [(True, True, 32), (True, False, 32), (False, False, 36)]
)
def test_transform_shapes_and_dtype(train: bool, augment: bool, side: int) -> None:
    transform = build_classification_transforms(train=train, augment=augment, **SIZES)
    for image in (
        Image.new("RGB", (70, 50), (10, 20, 30)),
        torch.zeros(3, 50, 70, dtype=torch.uint8),
    ):
        out = transform(image)
        assert type(out) is torch.Tensor
        assert (out.shape, out.dtype) == (torch.Size([3, side, side]), torch.float32)


def test_validation_transform_normalizes_with_imagenet_stats() -> None:
    transform = build_classification_transforms(train=False, augment=False, **SIZES)
    out = transform(Image.new("RGB", (64, 48), (51, 102, 204)))
    expected = [
        (v / 255 - m) / s
        for v, m, s in zip((51, 102, 204), IMAGENET_MEAN, IMAGENET_STD, strict=True)
    ]
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_training_augmentation_is_random_but_seedable() -> None:
    transform = build_classification_transforms(train=True, augment=True, **SIZES)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), np.uint8))
    torch.manual_seed(1)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(transform(image), first)
    assert not torch.equal(transform(image), first)


@pytest.fixture
def records(tmp_path: Path) -> list[ImageRecord]:
    path = make_synthetic_dataset(tmp_path / "s", "multilabel", n_images=12, image_size=40)
    return load_records(path, task="multilabel")[0]


def test_datasets_items_and_class_counts(records: list[ImageRecord]) -> None:
    classes = ["circle", "square", "triangle"]
    transform = build_classification_transforms(train=False, augment=False, **SIZES)
    ml = ClassificationDataset(records, classes, multilabel=True, transform=transform)
    item = ml[0]
    assert item["image"].shape == (3, 36, 36) and item["image"].dtype == torch.float32
    assert item["target"].dtype == torch.float32
    assert item["target"].tolist() == [float(c in records[0].label) for c in classes]
    counts = class_counts(records, classes, multilabel=True)
    assert counts.tolist() == [float(sum(c in r.label for r in records)) for c in classes]

    single = [ImageRecord(r.image, r.label[0], r.source) for r in records]
    mc = ClassificationDataset(single, classes, multilabel=False, transform=transform)
    assert mc[3]["target"].dtype == torch.int64 and mc[3]["target"].shape == ()
    assert mc[3]["target"].item() == classes.index(single[3].label)
    assert class_counts(single, classes, False).sum().item() == 12.0
    with pytest.raises(DataError, match=r"class 'circle' is not one of the model's classes"):
        ClassificationDataset(single, ["square", "triangle"], multilabel=False, transform=transform)


def test_cached_dataset_gives_the_same_items(records: list[ImageRecord]) -> None:
    classes = ["circle", "square", "triangle"]
    transform = build_classification_transforms(train=False, augment=False, **SIZES)
    plain = ClassificationDataset(records, classes, multilabel=True, transform=transform)
    cached = ClassificationDataset(
        records, classes, multilabel=True, transform=transform, cache=True
    )
    assert cached.cached and not plain.cached
    for index in (0, 5, 11):
        assert torch.equal(plain[index]["image"], cached[index]["image"])


def test_should_cache(records: list[ImageRecord], monkeypatch: pytest.MonkeyPatch) -> None:
    assert should_cache(records, "true") and not should_cache(records, "false")
    assert should_cache(records, True)
    monkeypatch.setattr(datasets_module, "available_memory_bytes", lambda: 10**9)
    assert should_cache(records, "auto")
    # 12 images of 40x40x3 bytes: cached only when that is below a quarter of the memory.
    monkeypatch.setattr(datasets_module, "available_memory_bytes", lambda: 4 * 12 * 4800)
    assert not should_cache(records, "auto")
    monkeypatch.setattr(datasets_module, "available_memory_bytes", lambda: 4 * 12 * 4800 + 4)
    assert should_cache(records, "AUTO")
    no_details = [ImageRecord(r.image, r.label, r.source) for r in records]
    assert datasets_module.estimate_decoded_bytes(no_details) == 12 * 4800


def test_available_memory_is_known_on_linux() -> None:
    memory = datasets_module.available_memory_bytes()
    assert memory is None or memory > 0


def _datamodule(tmp_path: Path, n_train: int, **overrides: object) -> ClassificationDataModule:
    path = make_synthetic_dataset(
        tmp_path / "dm", "classification", n_images=n_train + 4, image_size=40
    )
    recs = load_records(path, task="classification")[0]
    kwargs = dict(
        train_records=recs[:n_train],
        val_records=recs[n_train:],
        class_names=["circle", "square", "triangle"],
        multilabel=False,
        training_batch_size=4,
        validation_batch_size=3,
        num_workers=0,
        augment=True,
        cache_images=False,
        seed=5,
        **SIZES,
    )
    kwargs.update(overrides)
    return ClassificationDataModule(**kwargs)


def test_datamodule_batches(tmp_path: Path) -> None:
    dm = _datamodule(tmp_path, 10)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [len(b["target"]) for b in batches] == [4, 4, 2]  # a partial batch is kept
    assert batches[0]["image"].shape == (4, 3, 32, 32)
    assert batches[0]["target"].shape == (4,) and batches[0]["target"].dtype == torch.int64
    val = list(dm.val_dataloader())
    assert [b["image"].shape[0] for b in val] == [3, 1]
    assert val[0]["image"].shape[1:] == (3, 36, 36)
    assert dm.num_classes == 3 and dm.train_class_counts().sum().item() == 10
    again = _datamodule(tmp_path, 10)
    again.setup("fit")
    assert torch.equal(next(iter(again.train_dataloader()))["target"], batches[0]["target"])


def test_datamodule_drops_a_last_batch_of_one_image(tmp_path: Path) -> None:
    dm = _datamodule(tmp_path, 9)  # 9 = 4 + 4 + 1: BatchNorm cannot train on one image
    dm.setup("fit")
    assert [len(b["target"]) for b in dm.train_dataloader()] == [4, 4]


def test_datamodule_small_train_set_keeps_its_only_batch(tmp_path: Path) -> None:
    dm = _datamodule(tmp_path, 3)
    dm.setup("fit")
    assert [b["image"].shape[0] for b in dm.train_dataloader()] == [3]


def test_datamodule_workers_share_the_cache(tmp_path: Path) -> None:
    dm = _datamodule(tmp_path, 8, num_workers=1, cache_images=True, multilabel=False)
    dm.setup("fit")
    assert dm.train_dataset.cached
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.multiprocessing_context is not None
    assert sum(b["image"].shape[0] for b in loader) == 8


def test_float_color_jitter_ranges() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16)
    assert torch.equal(FloatColorJitter(0, 0, 0, 0)(image), image)
    gray = torch.full((3, 8, 8), 0.4)
    hue_only = FloatColorJitter(0, 0, 0, 0.5)
    assert torch.allclose(hue_only(gray), gray, atol=1e-5)  # hue leaves gray alone
    shifted = hue_only(image)
    # A hue rotation keeps the luma (Y of YIQ) of every pixel.
    luma = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    inside = (shifted > 0) & (shifted < 1)
    mask = inside.all(dim=0)
    assert torch.allclose((shifted * luma).sum(0)[mask], (image * luma).sum(0)[mask], atol=1e-5)
    jittered = FloatColorJitter(**COLOR_JITTER)(image)
    assert jittered.shape == image.shape and 0.0 <= jittered.min() and jittered.max() <= 1.0
