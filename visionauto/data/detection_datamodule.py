"""LightningDataModule for object detection and instance segmentation."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from visionauto.data.detection import (
    DetectionDataset,
    DetectionTransform,
    collate_detection,
    object_class_counts,
)
from visionauto.data.detection_transforms import build_detection_transforms
from visionauto.data.records import ImageRecord

DatasetWrapper = Callable[[DetectionDataset], Dataset]


class DetectionDataModule(L.LightningDataModule):
    """Train and validation loaders of a detection / instance segmentation job.

    Batches are ``{"images": list[f32[3, Hi, Wi]], "targets": list[dict]}`` (see
    :func:`visionauto.data.detection.collate_detection`). Transforms default to Azure's R-CNN
    presets; another model family (e.g. YOLO with mosaic and letterbox) passes its own
    ``train_transform`` / ``val_transform`` and may wrap the training set.
    """

    def __init__(
        self,
        *,
        train_records: Sequence[ImageRecord],
        val_records: Sequence[ImageRecord],
        class_names: Sequence[str],
        masks: bool,
        training_batch_size: int,
        validation_batch_size: int,
        num_workers: int,
        augment: bool,
        cache_images: bool,
        seed: int,
        train_transform: DetectionTransform | None = None,
        val_transform: DetectionTransform | None = None,
        train_dataset_wrapper: DatasetWrapper | None = None,
    ) -> None:
        """Store the settings; datasets are built in :meth:`setup`.

        Args:
            train_records / val_records: validated records of each split.
            class_names: class order of the model outputs.
            masks: instance segmentation (targets carry ``masks``).
            training_batch_size / validation_batch_size: loader batch sizes.
            num_workers: DataLoader worker processes (0 = load in the main process).
            augment: Azure's training augmentations (``apply_automl_train_augmentations``);
                only used by the default R-CNN train transform.
            cache_images: decode every image once and keep it in memory.
            seed: seed of the training shuffle.
            train_transform / val_transform: v2 transforms of ``(image, target)``; None =
                ``build_detection_transforms(train=..., augment=...)``.
            train_dataset_wrapper: called with the training :class:`DetectionDataset` (its
                transform already set); the loader uses what it returns (mosaic, tiling...).
                Items of the wrapped set must still be ``(image, target)`` pairs.
        """
        super().__init__()
        self.train_records = list(train_records)
        self.val_records = list(val_records)
        self.class_names = list(class_names)
        self.masks = masks
        self.training_batch_size = training_batch_size
        self.validation_batch_size = validation_batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.cache_images = cache_images
        self.seed = seed
        self.train_transform = train_transform
        self.val_transform = val_transform
        self.train_dataset_wrapper = train_dataset_wrapper
        self.train_dataset: Dataset | None = None
        self.val_dataset: DetectionDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_object_counts(self) -> torch.Tensor:
        """Training objects per class, ``f32[C]``."""
        return object_class_counts(self.train_records, self.class_names)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once (decoding into the cache when ``cache_images``)."""
        if self.train_dataset is None and stage in (None, "fit"):
            transform = self.train_transform
            if transform is None:
                transform = build_detection_transforms(train=True, augment=self.augment)
            dataset = DetectionDataset(
                self.train_records,
                self.class_names,
                transform=transform,
                masks=self.masks,
                cache_images=self.cache_images,
            )
            wrapper = self.train_dataset_wrapper
            self.train_dataset = wrapper(dataset) if wrapper is not None else dataset
        if self.val_dataset is None:
            transform = self.val_transform
            if transform is None:
                transform = build_detection_transforms(train=False, augment=False)
            self.val_dataset = DetectionDataset(
                self.val_records,
                self.class_names,
                transform=transform,
                masks=self.masks,
                cache_images=self.cache_images,
            )

    def _loader_kwargs(self) -> dict:
        kwargs: dict = {
            "num_workers": self.num_workers,
            "pin_memory": torch.cuda.is_available(),
            "collate_fn": collate_detection,
        }
        if self.num_workers > 0:
            kwargs["persistent_workers"] = True
            # Forked workers share the decoded-image cache; spawned ones would copy it.
            if self.cache_images and sys.platform.startswith("linux"):
                kwargs["multiprocessing_context"] = multiprocessing.get_context("fork")
        return kwargs

    def train_dataloader(self) -> DataLoader:
        """Shuffled with a seeded generator; drops only a last batch of one image."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        size = len(self.train_dataset)  # type: ignore[arg-type]
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_dataset,
            batch_size=self.training_batch_size,
            shuffle=True,
            generator=generator,
            # BatchNorm (YOLO, unfrozen backbones) cannot train on a batch of one image.
            drop_last=size % self.training_batch_size == 1 and size > 1,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation images in file order: ``image_id`` is the index into ``val_records``."""
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        return DataLoader(
            self.val_dataset,
            batch_size=self.validation_batch_size,
            shuffle=False,
            **self._loader_kwargs(),
        )
