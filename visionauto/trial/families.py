"""Task families: what a trial builds for each task (module + data + reports + packaging).

The runner is task-agnostic; each family turns a resolved config and validated records into a
LightningModule and a LightningDataModule, and knows how to report and package its model.
Detection and segmentation live in :mod:`visionauto.trial.detection_family`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule

from visionauto.config.schema import RootConfig
from visionauto.data.datamodule import ClassificationDataModule
from visionauto.data.datasets import class_counts, should_cache
from visionauto.data.records import ImageRecord
from visionauto.errors import ConfigError
from visionauto.metrics.plots import (
    plot_confusion_matrix,
    plot_per_class_metrics,
    plot_training_curves,
)
from visionauto.packaging.pyfunc import save_model
from visionauto.packaging.settings import build_settings
from visionauto.tasks.classification import ClassificationTask, optim_settings
from visionauto.trial.checkpoint import apply_warm_start, load_warm_start

log = logging.getLogger("visionauto.trial")


class TaskFamily(Protocol):
    module: LightningModule
    datamodule: LightningDataModule
    n_train: int
    n_val: int

    def callbacks(self) -> list[Callback]: ...

    def final_metrics(self) -> dict[str, float]: ...

    def write_reports(self, run_dir: Path, plots: Path, history: list[dict[str, float]]) -> None: ...

    def save_model(self, model_dir: Path) -> None: ...


def build_family(cfg: RootConfig, train: list[ImageRecord], val: list[ImageRecord],
                 class_names: list[str]) -> TaskFamily:
    """Pick the family for ``cfg.task.name``."""
    if cfg.task.name in ("classification", "multilabel"):
        return ClassificationFamily(cfg, train, val, class_names)
    if cfg.task.name in ("detection", "instance_segmentation"):
        from visionauto.trial.detection_family import DetectionFamily

        return DetectionFamily(cfg, train, val, class_names)
    raise ConfigError(f"task={cfg.task.name} cannot be trained by this version of visionauto.")


def class_weights(counts: torch.Tensor, n_images: int, *, multilabel: bool,
                  mode: int) -> list[float] | None:
    """Azure's ``weighted_loss``: 0 none, 1 √(w), 2 w.

    Multiclass: w_c = N / (C · n_c) (inverse frequency, mean 1 on balanced data).
    Multilabel: BCE positive weights w_c = (N − n_c) / n_c.
    """
    if mode == 0:
        return None
    counts = counts.clamp(min=1.0)
    if multilabel:
        w = (n_images - counts).clamp(min=1.0) / counts
    else:
        w = n_images / (len(counts) * counts)
    if mode == 1:
        w = w.sqrt()
    return [round(float(x), 6) for x in w]


class ClassificationFamily:
    """Multiclass and multilabel classification."""

    def __init__(self, cfg: RootConfig, train: list[ImageRecord], val: list[ImageRecord],
                 class_names: list[str]) -> None:
        t, multilabel = cfg.training, cfg.task.multilabel
        self.cfg, self.class_names, self.multilabel = cfg, class_names, multilabel
        self.n_train, self.n_val = len(train), len(val)
        counts = class_counts(train, class_names, multilabel)
        warm = load_warm_start(t.checkpoint) if t.checkpoint else None
        self.module = ClassificationTask(
            model_name=cfg.model.name, class_names=class_names, multilabel=multilabel,
            # a warm start replaces the initial weights: don't fetch pretrained ones first
            pretrained=cfg.model.pretrained and warm is None, weights_path=cfg.model.weights_path,
            optim=optim_settings(t), layers_to_freeze=t.layers_to_freeze,
            class_weights=class_weights(counts, len(train), multilabel=multilabel,
                                        mode=t.weighted_loss),
            channels_last=cfg.trainer.channels_last,
        )
        if warm is not None:
            fresh = apply_warm_start(self.module.model, warm, model_name=cfg.model.name,
                                     class_names=class_names, new_head=t.checkpoint_new_head)
            log.info("warm start from %s (%d tensors newly initialised)", warm.source, len(fresh))
        cache = should_cache(train + val, cfg.data.cache_images)
        self.datamodule = ClassificationDataModule(
            train_records=train, val_records=val, class_names=class_names, multilabel=multilabel,
            training_batch_size=t.training_batch_size, validation_batch_size=t.validation_batch_size,
            num_workers=t.number_of_workers, training_crop_size=t.training_crop_size,
            validation_resize_size=t.validation_resize_size,
            validation_crop_size=t.validation_crop_size,
            augment=cfg.augmentation.name != "none", cache_images=cache, seed=t.random_seed,
        )

    def callbacks(self) -> list[Callback]:
        return []

    def final_metrics(self) -> dict[str, float]:
        result = self.module.last_result
        return dict(result.scalars) if result else {}

    def write_reports(self, run_dir: Path, plots: Path, history: list[dict[str, float]]) -> None:
        result = self.module.last_result
        if result is not None:
            (run_dir / "per_class_metrics.json").write_text(
                json.dumps(result.per_class, indent=2) + "\n")
            plot_per_class_metrics(result.per_class, plots / "per_class_metrics.png")
            if result.confusion_matrix is not None:
                (run_dir / "confusion_matrix.json").write_text(json.dumps(
                    {"labels": self.class_names, "matrix": result.confusion_matrix}) + "\n")
                plot_confusion_matrix(result.confusion_matrix, self.class_names,
                                      plots / "confusion_matrix.png")
        if history:
            plot_training_curves(history, plots / "training_curves.png",
                                 primary_metric=self.cfg.task.primary_metric)

    def save_model(self, model_dir: Path) -> None:
        t = self.cfg.training
        settings = build_settings(
            task=self.cfg.task.name, model_name=self.cfg.model.name, class_names=self.class_names,
            inference={"valid_resize_size": t.validation_resize_size,
                       "valid_crop_size": t.validation_crop_size},
        )
        state = {k: v.detach().cpu() for k, v in self.module.model.state_dict().items()}
        save_model(model_dir, state_dict=state, settings=settings, overwrite=True)
