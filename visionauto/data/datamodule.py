"""LightningDataModule for multiclass and multilabel classification."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader

from visionauto.data.datasets import ClassificationDataset, class_counts
from visionauto.data.records import ImageRecord
from visionauto.data.transforms import build_classification_transforms


class ClassificationDataModule(L.LightningDataModule):
    """Train and validation loaders of a classification job.

    Batches are ``{"image": f32[B, 3, S, S], "target": i64[B] | f32[B, C]}``.
    """

    def __init__(
        self,
        *,
        train_records: Sequence[ImageRecord],
        val_records: Sequence[ImageRecord],
        class_names: Sequence[str],
        multilabel: bool,
        training_batch_size: int,
        validation_batch_size: int,
        num_workers: int,
        training_crop_size: int,
        validation_resize_size: int,
        validation_crop_size: int,
        augment: bool,
        cache_images: bool,
        seed: int,
    ) -> None:
        """Store the settings; datasets are built in :meth:`setup`.

        Args:
            train_records / val_records: validated records of each split.
            class_names: class order of the model outputs.
            multilabel: multi-hot targets.
            training_batch_size / validation_batch_size: loader batch sizes.
            num_workers: DataLoader worker processes (0 = load in the main process).
            training_crop_size / validation_resize_size / validation_crop_size: Azure presets.
            augment: Azure's training augmentations (False: resize + center crop only).
            cache_images: decode every image once and keep it in memory.
            seed: seed of the training shuffle.
        """
        super().__init__()
        self.train_records = list(train_records)
        self.val_records = list(val_records)
        self.class_names = list(class_names)
        self.multilabel = multilabel
        self.training_batch_size = training_batch_size
        self.validation_batch_size = validation_batch_size
        self.num_workers = num_workers
        self.training_crop_size = training_crop_size
        self.validation_resize_size = validation_resize_size
        self.validation_crop_size = validation_crop_size
        self.augment = augment
        self.cache_images = cache_images
        self.seed = seed
        self.train_dataset: ClassificationDataset | None = None
        self.val_dataset: ClassificationDataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_class_counts(self) -> torch.Tensor:
        """Training images per class, ``f32[C]`` (for ``weighted_loss``)."""
        return class_counts(self.train_records, self.class_names, self.multilabel)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once (decoding into the cache when ``cache_images``)."""
        sizes = {
            "training_crop_size": self.training_crop_size,
            "validation_resize_size": self.validation_resize_size,
            "validation_crop_size": self.validation_crop_size,
        }
        if self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = ClassificationDataset(
                self.train_records,
                self.class_names,
                multilabel=self.multilabel,
                transform=build_classification_transforms(
                    train=True, augment=self.augment, **sizes
                ),
                cache=self.cache_images,
            )
        if self.val_dataset is None:
            # Validation only resizes to validation_resize_size, so a JPEG may be decoded
            # at a reduced scale (1/2..1/8) as long as its shorter side stays above it.
            self.val_dataset = ClassificationDataset(
                self.val_records,
                self.class_names,
                multilabel=self.multilabel,
                transform=build_classification_transforms(train=False, augment=False, **sizes),
                cache=self.cache_images,
                draft_size=self.validation_resize_size,
            )

    def _loader_kwargs(self) -> dict:
        kwargs: dict = {"num_workers": self.num_workers, "pin_memory": torch.cuda.is_available()}
        if self.num_workers > 0:
            kwargs["persistent_workers"] = True
            # Forked workers share the decoded-image cache; spawned ones would copy it.
            if self.cache_images and sys.platform.startswith("linux"):
                kwargs["multiprocessing_context"] = multiprocessing.get_context("fork")
        return kwargs

    def train_dataloader(self) -> DataLoader:
        """Shuffled with a seeded generator; drops the last partial batch when there are more
        images than one batch (keeps BatchNorm away from batches of one)."""
        if self.train_dataset is None:
            self.setup("fit")
        assert self.train_dataset is not None
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_dataset,
            batch_size=self.training_batch_size,
            shuffle=True,
            generator=generator,
            # Drop only a last batch of one image (BatchNorm cannot train on it): dropping a
            # whole partial batch would waste up to half of a small dataset every epoch.
            drop_last=len(self.train_dataset) % self.training_batch_size == 1
            and len(self.train_dataset) > 1,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation images in file order."""
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        return DataLoader(
            self.val_dataset,
            batch_size=self.validation_batch_size,
            shuffle=False,
            **self._loader_kwargs(),
        )
