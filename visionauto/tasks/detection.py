"""One LightningModule for object detection and instance segmentation (every detector family).

Batch contract (:func:`visionauto.data.detection.collate_detection`):
``{"images": list[f32[3,H,W] in [0,1]], "targets": list[dict]}`` with boxes in absolute pixels and
0-based labels. The detector (:class:`visionauto.models.detectors.Detector`) owns resizing,
normalization and its losses; this module owns optimisation, evaluation and the plots' samples.
``__init__`` takes plain values and saves them, so ``load_from_checkpoint`` needs no config.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from visionauto.metrics.detection import DetectionEvaluator, DetectionResult
from visionauto.models.registry import create_model
from visionauto.tasks.optim import OptimSettings, lightning_optimizers

# Validation images kept (downscaled) with their predictions for the plots of the run folder.
PLOT_SAMPLES = 8
# AP integrates precision over every score, so validation asks the model for its low-score
# predictions too (torchvision's COCO evaluation setting); precision and recall still count only
# predictions at or above the model's own box_score_thresh, and the saved model keeps it.
VALIDATION_SCORE_THRESHOLD = 0.05
PLOT_MAX_SIDE = 512


class DetectionTask(LightningModule):
    """Train any :class:`Detector` and evaluate it with Azure's detection metrics.

    Args:
        model_name: a detection / instance segmentation catalog name (``fasterrcnn_resnet50_fpn``,
            ``fasterrcnn_efficientnet_lite0_fpn``, ``yolov5``, ``maskrcnn_resnet50_fpn``...).
        class_names: labels in training order (0-based indices in targets and predictions).
        task: ``"detection"`` or ``"instance_segmentation"``.
        pretrained / weights_path: initial weights (see :func:`create_model`).
        model_kwargs: builder options and inference settings under runtime short names
            (``min_size``, ``box_score_thresh``, ``model_size``, ``img_size``, ``anchors``...).
        optim: optimizer and scheduler knobs (a dict of :class:`OptimSettings` fields).
        metric_type / iou_threshold: ``validation_metric_type`` and ``validation_iou_threshold``.
        tiling: ``{"tile_grid_size": (nx, ny), "tile_overlap_ratio": r,
            "tile_predictions_nms_thresh": t}`` to validate on the full image + tiles, or None.
    """

    def __init__(self, *, model_name: str, class_names: list[str], task: str = "detection",
                 pretrained: bool = False, weights_path: str | None = None,
                 model_kwargs: dict[str, Any] | None = None, optim: dict[str, Any] | None = None,
                 metric_type: str = "voc", iou_threshold: float = 0.5,
                 tiling: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.task_name = task
        self.primary_metric = "mean_average_precision"
        self.optim = OptimSettings(**(optim or {}))
        self.model = create_model(task, model_name, num_classes=len(class_names),
                                  pretrained=pretrained, weights_path=weights_path,
                                  **(model_kwargs or {}))
        if tiling:
            from visionauto.models.tiled import TiledDetector

            self.model = TiledDetector(self.model)
            self.model.set_inference_settings(**tiling)
        score_threshold = self.model.inference_settings().get("box_score_thresh", 0.3)
        self.evaluator = DetectionEvaluator(
            self.class_names, iou_threshold=iou_threshold, metric_type=metric_type,
            score_threshold=score_threshold,
            iou_type="segm" if task == "instance_segmentation" else "bbox")
        self.last_result: DetectionResult | None = None
        self.plot_samples: list[tuple[torch.Tensor, dict, dict]] = []
        self._serving_threshold: float | None = None

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """list of f32[3,H,W] in [0,1] -> one prediction dict per image (eval mode)."""
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.model(batch["images"], batch["targets"])
        loss = sum(losses.values())
        size = len(batch["images"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        for name, value in losses.items():
            self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def on_fit_start(self) -> None:
        fit_ema = getattr(self.model, "fit_ema_to_schedule", None)  # YOLO's weight average
        if fit_ema is not None:
            fit_ema(int(self.trainer.estimated_stepping_batches))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # YOLO keeps an EMA of its weights; other detectors have nothing to do here.
        hook = getattr(self.model, "after_optimizer_step", None)
        if hook is not None and self._is_optimizer_step(batch_idx):
            hook()

    def _is_optimizer_step(self, batch_idx: int) -> bool:
        accumulate = max(1, int(self.trainer.accumulate_grad_batches))
        last = batch_idx + 1 == self.trainer.num_training_batches
        return (batch_idx + 1) % accumulate == 0 or last

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset()
        self.plot_samples.clear()
        threshold = self.model.inference_settings().get("box_score_thresh")
        if threshold is None:
            return
        self.evaluator.score_threshold = float(threshold)  # precision/recall as the model serves
        if threshold > VALIDATION_SCORE_THRESHOLD:
            self._serving_threshold = threshold
            self.model.set_inference_settings(box_score_thresh=VALIDATION_SCORE_THRESHOLD)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        preds = self.model(batch["images"])
        preds = [{k: v.detach().cpu() for k, v in p.items()} for p in preds]
        targets = [_to_cpu(t) for t in batch["targets"]]
        self.evaluator.update(preds, targets)
        for image, pred, target in zip(batch["images"], preds, targets, strict=True):
            if len(self.plot_samples) < PLOT_SAMPLES:
                self.plot_samples.append(_plot_sample(image, pred, target))

    def on_validation_epoch_end(self) -> None:
        if self._serving_threshold is not None:
            self.model.set_inference_settings(box_score_thresh=self._serving_threshold)
            self._serving_threshold = None
        if self.trainer.world_size > 1:  # every rank evaluated its shard: merge on all ranks
            self.evaluator.merge_from(self.all_gather_objects(self.evaluator.state()))
        result = self.evaluator.compute()
        self.last_result = result
        if self.primary_metric not in result.scalars:  # validation_metric_type=none
            result.scalars[self.primary_metric] = -1.0
        for name, value in result.scalars.items():
            self.log(name, float(value), prog_bar=name == self.primary_metric, sync_dist=False)

    def all_gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable) as a list, in rank order."""
        gathered: list[Any] = [None] * self.trainer.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def configure_optimizers(self) -> Any:
        # YOLO keeps batch-norm weights and biases out of weight decay.
        groups = getattr(self.model, "optimizer_parameter_groups", None)
        params = groups(self.optim.weight_decay) if groups else self.parameters()
        return lightning_optimizers(self, params, self.optim)


def _to_cpu(target: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def _plot_sample(image: torch.Tensor, pred: dict, target: dict) -> tuple[torch.Tensor, dict, dict]:
    """Downscale an image and its boxes (masks dropped beyond the size) for the plots."""
    image = image.detach().cpu()
    scale = min(1.0, PLOT_MAX_SIDE / max(image.shape[-2:]))
    if scale < 1.0:
        size = [max(1, round(s * scale)) for s in image.shape[-2:]]
        image = torch.nn.functional.interpolate(image[None], size=size, mode="bilinear",
                                                antialias=True)[0]

    def scaled(d: dict) -> dict:
        out = {k: v for k, v in d.items() if k in ("boxes", "scores", "labels", "masks")}
        out["boxes"] = d["boxes"].float() * scale
        if "masks" in out and scale < 1.0:
            masks = out["masks"].float()
            masks = masks if masks.ndim == 4 else masks[:, None]
            size = list(image.shape[-2:])
            out["masks"] = torch.nn.functional.interpolate(masks, size=size)[:, 0] > 0.5
        return out

    return image, scaled(pred), scaled(target)
