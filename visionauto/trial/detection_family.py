"""Detection and instance segmentation family: detector + box/mask data + reports + packaging.

One family serves every detector (torchvision R-CNN / RetinaNet on any backbone, the YOLOv5-style
model, Mask R-CNN): what differs per family is only the training data pipeline (R-CNN presets,
or mosaic + affine for YOLO), the inference defaults, and tiling.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback

from visionauto.config.schema import RootConfig
from visionauto.data.datasets import should_cache
from visionauto.data.detection_datamodule import DetectionDataModule
from visionauto.data.records import ImageRecord, parse_object_label
from visionauto.metrics.detection_plots import plot_detections, plot_pr_curves
from visionauto.metrics.plots import plot_training_curves
from visionauto.models.freeze import freeze_layers
from visionauto.models.registry import get_model_spec, is_yolo
from visionauto.packaging.pyfunc import save_model
from visionauto.packaging.settings import INFERENCE_DEFAULTS, build_settings
from visionauto.tasks.classification import optim_settings
from visionauto.tasks.detection import DetectionTask
from visionauto.trial.callbacks import MosaicSchedule
from visionauto.trial.checkpoint import apply_warm_start, load_warm_start

log = logging.getLogger("visionauto.trial")


def inference_settings(cfg: RootConfig) -> dict[str, Any]:
    """The detector's inference settings (runtime short names) from the training config."""
    t = cfg.training
    settings: dict[str, Any] = {
        "box_score_thresh": t.box_score_threshold,
        "nms_iou_thresh": t.nms_iou_threshold,
        "box_detections_per_img": t.box_detections_per_image,
    }
    if is_yolo(cfg.model.name):
        settings["img_size"] = t.image_size
    else:
        settings.update(min_size=t.min_size, max_size=t.max_size)
    return settings


def tiling_settings(cfg: RootConfig) -> dict[str, Any] | None:
    """``TiledDetector`` settings when ``tile_grid_size`` is set (detection only), else None."""
    t = cfg.training
    if not t.tile_grid_size:
        return None
    from visionauto.data.tiling import parse_tile_grid_size

    return {"tile_grid_size": parse_tile_grid_size(t.tile_grid_size),
            "tile_overlap_ratio": t.tile_overlap_ratio,
            "tile_predictions_nms_thresh": t.tile_predictions_nms_threshold}


def box_sizes(records: list[ImageRecord], task: str, img_size: int) -> np.ndarray:
    """f32[N,2] widths and heights of every training box after a letterbox to ``img_size``."""
    sizes = []
    for record in records:
        if not record.width or not record.height:
            continue
        scale = img_size / max(record.width, record.height)
        for obj in parse_object_label(record.label, task=task):
            if "topX" in obj:
                sizes.append(((obj["bottomX"] - obj["topX"]) * record.width * scale,
                              (obj["bottomY"] - obj["topY"]) * record.height * scale))
    return np.asarray(sizes, dtype=np.float32).reshape(-1, 2)


def yolo_model_kwargs(cfg: RootConfig, train: list[ImageRecord]) -> dict[str, Any]:
    """yolov5 builder options; anchors refit (k-means) when the defaults cover the boxes badly."""
    from visionauto.models.yolo import DEFAULT_ANCHORS, anchor_fit_quality, fit_anchors

    t = cfg.training
    kwargs: dict[str, Any] = {"model_size": t.model_size, "multi_scale": t.multi_scale}
    wh = box_sizes(train, cfg.task.name, t.image_size)
    if len(wh) >= 9:
        default = np.asarray(DEFAULT_ANCHORS, dtype=np.float32) * t.image_size / 640
        quality = anchor_fit_quality(wh, default)
        if quality < 0.98:
            anchors = fit_anchors(wh, n=9)
            log.info("default anchors cover %.1f%% of the boxes; refit by k-means: %.1f%%",
                     100 * quality, 100 * anchor_fit_quality(wh, anchors))
            kwargs["anchors"] = [[round(float(w), 2), round(float(h), 2)] for w, h in anchors]
    return kwargs


def backbone_training_options(cfg: RootConfig, *, warm_start: bool) -> dict[str, Any]:
    """Frozen layers of a torchvision-family backbone (training only: not saved with the model).

    ``layers_to_freeze`` counts Azure's five backbone groups (stem, stage 1..4), so it maps onto
    torchvision's ``trainable_backbone_layers = 5 - layers_to_freeze``. A warm start builds the
    network without pretrained weights, so it asks for the pretrained-style freezing explicitly.
    """
    options: dict[str, Any] = {}
    if cfg.training.layers_to_freeze is not None:
        options["trainable_backbone_layers"] = 5 - min(5, cfg.training.layers_to_freeze)
    if warm_start:
        options["freeze_bn"] = True
        options.setdefault("trainable_backbone_layers", 3)
    return options


class DetectionFamily:
    """Object detection (boxes) and instance segmentation (boxes + masks)."""

    def __init__(self, cfg: RootConfig, train: list[ImageRecord], val: list[ImageRecord],
                 class_names: list[str]) -> None:
        t, task = cfg.training, cfg.task.name
        self.cfg, self.class_names, self.task = cfg, class_names, task
        self.n_train, self.n_val = len(train), len(val)
        self.yolo = is_yolo(cfg.model.name)
        self.tiling = tiling_settings(cfg)
        aug = cfg.augmentation
        self.mosaic = self.yolo and aug.name != "none" and aug.apply_mosaic_for_yolo
        self.model_kwargs: dict[str, Any] = inference_settings(cfg)
        warm = load_warm_start(t.checkpoint) if t.checkpoint else None
        if self.yolo:
            self.model_kwargs.update(yolo_model_kwargs(cfg, train))
        else:
            self.model_kwargs.update(backbone_training_options(cfg, warm_start=warm is not None))
        self.module = DetectionTask(
            model_name=cfg.model.name, class_names=class_names, task=task,
            pretrained=cfg.model.pretrained and warm is None, weights_path=cfg.model.weights_path,
            model_kwargs=self.model_kwargs, optim=optim_settings(t),
            metric_type=t.validation_metric_type, iou_threshold=t.validation_iou_threshold,
            tiling=self.tiling,
        )
        if self.yolo and t.layers_to_freeze:
            # R-CNN backbones freeze through trainable_backbone_layers (above); YOLO's backbone
            # layers are Azure's yolov5_backbone groups (or efficientnet_lite0's stem and stages).
            groups = get_model_spec(cfg.model.name, task).layer_groups
            frozen = freeze_layers(self.module.model.model, groups, t.layers_to_freeze)
            log.info("layers_to_freeze=%d: %s frozen", t.layers_to_freeze, ", ".join(frozen))
        if warm is not None:
            fresh = apply_warm_start(self.detector, warm, model_name=cfg.model.name,
                                     class_names=class_names, new_head=t.checkpoint_new_head)
            log.info("warm start from %s (%d tensors newly initialised)", warm.source, len(fresh))
        self.datamodule = self._datamodule(train, val)

    @property
    def detector(self) -> torch.nn.Module:
        """The detector without the tiling wrapper (what gets saved and warm-started)."""
        model = self.module.model
        return getattr(model, "detector", model)

    def _datamodule(self, train: list[ImageRecord], val: list[ImageRecord]) -> DetectionDataModule:
        cfg, t = self.cfg, self.cfg.training
        aug = cfg.augmentation
        augment = aug.name != "none" and aug.apply_automl_train_augmentations
        train_transform = wrapper = None
        if self.yolo:
            from visionauto.data.yolo_transforms import MosaicDataset, build_yolo_train_transform

            train_transform = build_yolo_train_transform(t.image_size, augment=augment)
            if self.mosaic:
                def wrapper(base):  # noqa: ANN001, ANN202 - a DetectionDataset
                    return MosaicDataset(base, t.image_size, seed=t.random_seed)
        elif self.tiling is not None:
            from visionauto.data.tiling import TiledDataset

            grid, overlap = self.tiling["tile_grid_size"], self.tiling["tile_overlap_ratio"]

            def wrapper(base):  # noqa: ANN001, ANN202 - a DetectionDataset
                return TiledDataset(base, grid, overlap)
        return DetectionDataModule(
            train_records=train, val_records=val, class_names=self.class_names,
            masks=self.task == "instance_segmentation",
            training_batch_size=t.training_batch_size,
            validation_batch_size=t.validation_batch_size, num_workers=t.number_of_workers,
            augment=augment, cache_images=should_cache(train + val, cfg.data.cache_images),
            seed=t.random_seed, train_transform=train_transform,
            train_dataset_wrapper=wrapper,
        )

    def callbacks(self) -> list[Callback]:
        """Trainer callbacks of this family: yolov5's end-of-training mosaic switch-off."""
        off = (self.cfg.training.mosaic_off_epochs or 0) if self.mosaic else 0
        return [MosaicSchedule(off)] if off else []

    def final_metrics(self) -> dict[str, float]:
        result = self.module.last_result
        return dict(result.scalars) if result else {}

    def write_reports(self, run_dir: Path, plots: Path, history: list[dict[str, float]]) -> None:
        result = self.module.last_result
        if result is not None:
            (run_dir / "per_label_metrics.json").write_text(
                json.dumps(result.per_class, indent=2) + "\n")
            if result.pr_curves:
                plot_pr_curves(result, plots / "precision_recall.png")
        samples = self.module.plot_samples
        if samples:
            images, preds, targets = (list(x) for x in zip(*samples, strict=True))
            threshold = self.model_kwargs.get("box_score_thresh") or 0.3
            plot_detections(images, preds, targets, self.class_names,
                            plots / "validation_predictions.png", score_threshold=threshold)
        if history:
            plot_training_curves(history, plots / "training_curves.png",
                                 primary_metric=self.cfg.task.primary_metric)

    def save_model(self, model_dir: Path) -> None:
        t = self.cfg.training
        builder_only = ("model_size", "multi_scale", "anchors")
        inference = {k: v for k, v in self.model_kwargs.items()
                     if k in INFERENCE_DEFAULTS[self.task]}
        if self.tiling is not None:
            inference.update(tile_grid_size=t.tile_grid_size,
                             tile_overlap_ratio=t.tile_overlap_ratio,
                             tile_predictions_nms_thresh=t.tile_predictions_nms_threshold)
        if self.task == "instance_segmentation":
            inference.update(mask_pixel_score_threshold=t.mask_pixel_score_threshold,
                             max_number_of_polygon_points=t.max_number_of_polygon_points,
                             export_as_image=t.export_as_image, image_type=t.image_type)
        model_kwargs = {k: v for k, v in self.model_kwargs.items() if k in builder_only}
        settings = build_settings(task=self.task, model_name=self.cfg.model.name,
                                  class_names=self.class_names, inference=inference,
                                  model_kwargs=model_kwargs)
        state = {k: v.detach().cpu() for k, v in self.detector.state_dict().items()}
        save_model(model_dir, state_dict=state, settings=settings, overwrite=True)
