"""Lightning callbacks of a trial: Azure's early stopping, metric history, MLflow logging."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

log = logging.getLogger("visionauto.trial")


class DelayedEarlyStopping(EarlyStopping):
    """Azure's early stopping: ignore the first ``delay`` evaluations, then stop after
    ``patience`` evaluations without improvement of the primary metric (spec §1.1).

    Counts are in validation evaluations, so they interact with ``evaluation_frequency``. They
    start at the first evaluation with a positive score: a model that has not scored yet (a
    detector trained from scratch, still in its warmup, finds nothing) is not stalled.
    """

    def __init__(self, *, monitor: str, patience: int, delay: int, mode: str = "max") -> None:
        super().__init__(monitor=monitor, patience=patience, mode=mode, check_finite=False,
                         check_on_train_epoch_end=False, strict=False, verbose=False)
        self.delay = delay
        self._evaluations = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if self._evaluations == 0 and (score is None or not float(score) > 0.0):
            return
        self._evaluations += 1
        if self._evaluations <= self.delay:
            return
        super().on_validation_end(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "evaluations": self._evaluations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._evaluations = state_dict.pop("evaluations", 0)
        super().load_state_dict(state_dict)


class BestCheckpoint(ModelCheckpoint):
    """Keeps the best evaluation by the primary metric; on a tie, the later one.

    A metric that saturates (mAP@0.5 reaches 1.0 on an easy set many epochs before the boxes stop
    improving) would otherwise freeze the model at the first evaluation that reached the top.
    """

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        if current is None or self.save_top_k != 1 or not self.best_k_models:
            return super().check_monitor_top_k(trainer, current)
        best = self.best_k_models[self.kth_best_model_path]
        at_least = torch.ge if self.mode == "max" else torch.le
        return trainer.strategy.reduce_boolean_decision(bool(at_least(current, best)))


class MetricHistory(Callback):
    """Keeps one row per evaluated epoch (for plots and metrics.json) and sends it to MLflow.

    Args:
        tracker: a :class:`visionauto.tracking.RunTracker` (or None).
        report: optional ``fn(epoch_index, metrics)`` called after each evaluation (the sweeper's
            pruning hook plugs in here).
    """

    def __init__(self, tracker: Any = None, report: Any = None) -> None:
        self.tracker = tracker
        self.report = report
        self.rows: list[dict[str, float]] = []
        self._train_loss: dict[int, float] = {}
        self._epoch_start = 0.0
        self._last_batch_end = 0.0
        self.epoch_seconds: list[float] = []
        self.train_images = 0
        self.train_seconds = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._last_batch_end = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if isinstance(batch, dict):  # classification: "image" tensor; detection: "images" list
            images = batch["image"] if "image" in batch else batch["images"]
        else:
            images = batch[0]
        self.train_images += len(images)
        self._last_batch_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Training time only: validation runs between the last batch and this hook.
        seconds = self._last_batch_end - self._epoch_start
        self.epoch_seconds.append(seconds)
        self.train_seconds += seconds
        loss = trainer.callback_metrics.get("train_loss_epoch")
        if loss is not None:
            self._train_loss[trainer.current_epoch] = float(loss)
        if self.tracker is not None:
            self.tracker.log_metrics({"train_loss": self._train_loss.get(trainer.current_epoch,
                                                                         math.nan),
                                      "epoch_seconds": seconds}, step=trainer.current_epoch)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not the final re-evaluation
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if not k.startswith("train_loss") and getattr(v, "numel", lambda: 1)() == 1}
        row = {"epoch": trainer.current_epoch + 1, **metrics}
        if trainer.current_epoch in self._train_loss:
            row["train_loss"] = self._train_loss[trainer.current_epoch]
        self.rows.append(row)
        primary = getattr(pl_module, "primary_metric", None)
        if primary in metrics:  # one line per evaluation: progress that survives a log file
            seconds = self._last_batch_end - self._epoch_start  # this epoch's training so far
            log.info("epoch %d/%s: %s=%.4f (%.0f s training/epoch)", trainer.current_epoch + 1,
                     trainer.max_epochs, primary, metrics[primary], seconds)
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=trainer.current_epoch)
        if self.report is not None:
            self.report(len(self.rows) - 1, metrics)

    def finalize_train_loss(self) -> None:
        """Attach train losses that arrived after their validation (Lightning order)."""
        for row in self.rows:
            epoch = int(row["epoch"]) - 1
            if "train_loss" not in row and epoch in self._train_loss:
                row["train_loss"] = self._train_loss[epoch]


class MosaicSchedule(Callback):
    """Turns mosaic off for the last ``off_epochs`` training epochs (YOLOX, Ge et al., 2021:
    the strong augmentation ends before training does, so the last epochs see whole images,
    as validation and inference do, and the boxes settle on that distribution).

    The training set is the datamodule's ``train_dataset`` (a
    :class:`visionauto.data.yolo_transforms.MosaicDataset`, whose ``p`` reaches persistent
    loader workers); its probability at the first epoch is the one restored before the last
    ``off_epochs``. The switch depends only on the epoch index, so a resumed run matches.

    Args:
        off_epochs: epochs at the end without mosaic; 0 keeps it on throughout.
    """

    def __init__(self, off_epochs: int) -> None:
        self.off_epochs = off_epochs
        self._p: float | None = None

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dataset = getattr(trainer.datamodule, "train_dataset", None)
        if not hasattr(dataset, "p"):
            return
        if self._p is None:
            self._p = float(dataset.p)
        last_on = (trainer.max_epochs or 0) - self.off_epochs
        p = 0.0 if trainer.current_epoch >= last_on else self._p
        if p != dataset.p:
            dataset.p = p
            log.info("epoch %d: mosaic %s", trainer.current_epoch + 1, "on" if p else "off")
