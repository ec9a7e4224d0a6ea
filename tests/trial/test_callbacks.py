from __future__ import annotations

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset
from torchvision import tv_tensors

from visionauto.data.yolo_transforms import MosaicDataset
from visionauto.trial.callbacks import (
    BestCheckpoint,
    DelayedEarlyStopping,
    MetricHistory,
    MosaicSchedule,
)
from visionauto.trial.families import class_weights


class _Scripted(LightningModule):
    """Logs a scripted 'accuracy' per validation; trains nothing of interest."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.log("accuracy", self.scores[self.current_epoch], batch_size=1)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(scores: list[float], callbacks: list) -> Trainer:
    data = DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)
    trainer = Trainer(max_epochs=len(scores), callbacks=callbacks, logger=False,
                      enable_progress_bar=False, enable_checkpointing=False,
                      enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(_Scripted(scores), train_dataloaders=data, val_dataloaders=data)
    return trainer


def test_early_stopping_waits_delay_evaluations_then_counts_patience() -> None:
    # Improves only during the delay; after it, tracking starts at evaluation 3 (0.3) and
    # 2 evaluations without improvement stop the run after evaluation 5.
    scores = [0.1, 0.2, 0.3, 0.25, 0.2, 0.9, 0.9, 0.9]
    history = MetricHistory()
    trainer = _fit(scores, [DelayedEarlyStopping(monitor="accuracy", patience=2, delay=2), history])
    assert len(history.rows) == 5
    assert trainer.current_epoch == 5


def test_early_stopping_counts_from_the_first_positive_score() -> None:
    # A detector from scratch scores 0 for its first evaluations: those are neither delay nor
    # patience. Counting starts at 0.1 (delay 1), tracking at 0.2, and 2 flat evaluations stop.
    scores = [0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 0.9, 0.9]
    history = MetricHistory()
    trainer = _fit(scores, [DelayedEarlyStopping(monitor="accuracy", patience=2, delay=1), history])
    assert len(history.rows) == 8
    assert trainer.current_epoch == 8


def test_best_checkpoint_takes_the_later_of_tied_evaluations(tmp_path) -> None:
    best = BestCheckpoint(dirpath=tmp_path, filename="best", monitor="accuracy", mode="max",
                          save_top_k=1, auto_insert_metric_name=False,
                          enable_version_counter=False)
    data = DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=2)
    trainer = Trainer(max_epochs=5, callbacks=[best], logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(_Scripted([0.5, 1.0, 1.0, 0.9, 1.0]), train_dataloaders=data,
                val_dataloaders=data)
    assert float(best.best_model_score) == 1.0
    assert torch.load(best.best_model_path, weights_only=False)["epoch"] == 4  # the 5th, 0-based
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]


def test_no_stop_while_improving() -> None:
    history = MetricHistory()
    _fit([0.1, 0.2, 0.3, 0.4, 0.5], [DelayedEarlyStopping(monitor="accuracy", patience=1, delay=0),
                                     history])
    assert [r["accuracy"] for r in history.rows] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_history_reports_each_evaluation_to_the_hook() -> None:
    seen: list[tuple[int, float]] = []
    _fit([0.5, 0.6, 0.7], [MetricHistory(report=lambda i, m: seen.append((i, m["accuracy"])))])
    assert [i for i, _ in seen] == [0, 1, 2]
    assert [v for _, v in seen] == pytest.approx([0.5, 0.6, 0.7])


def test_class_weights_follow_weighted_loss_modes() -> None:
    counts = torch.tensor([10.0, 30.0])
    assert class_weights(counts, 40, multilabel=False, mode=0) is None
    assert class_weights(counts, 40, multilabel=False, mode=2) == [2.0, 0.666667]
    w1 = class_weights(counts, 40, multilabel=False, mode=1)
    assert w1 == [round(2.0 ** 0.5, 6), round((2 / 3) ** 0.5, 6)]
    assert class_weights(counts, 40, multilabel=True, mode=2) == [3.0, 0.333333]


class _Photos:
    """``load(i)``: 40x60 images (pixels = i) with one box; a mosaic of them is 32x32."""

    transform = None

    def __len__(self) -> int:
        return 4

    def load(self, index: int):  # type: ignore[no-untyped-def]
        boxes = tv_tensors.BoundingBoxes([[5.0, 5.0, 30.0, 20.0]], format="XYXY",
                                         canvas_size=(40, 60))
        return tv_tensors.Image(torch.full((3, 40, 60), index, dtype=torch.uint8)), {
            "boxes": boxes, "labels": torch.tensor([0]), "iscrowd": torch.tensor([0])}


def _first(batch):  # type: ignore[no-untyped-def]
    return batch[0]


class _MosaicData(LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.train_dataset = MosaicDataset(_Photos(), 32, seed=1)

    def train_dataloader(self) -> DataLoader:
        # A persistent worker keeps its copy of the dataset: the switch must still reach it.
        return DataLoader(self.train_dataset, batch_size=1, num_workers=1,
                          persistent_workers=True, collate_fn=_first)


class _SizeRecorder(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.sizes: list[tuple[int, int]] = []

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        if batch_idx == 0:
            self.sizes.append(tuple(batch[0].shape[-2:]))
        return self.layer(torch.ones(1, 1)).sum()

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit_mosaic(epochs: int, off_epochs: int) -> tuple[_SizeRecorder, _MosaicData]:
    module, data = _SizeRecorder(), _MosaicData()
    trainer = Trainer(max_epochs=epochs, callbacks=[MosaicSchedule(off_epochs)], logger=False,
                      enable_progress_bar=False, enable_checkpointing=False,
                      enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=data)
    return module, data


def test_mosaic_schedule_turns_mosaic_off_for_the_last_epochs_in_loader_workers() -> None:
    module, data = _fit_mosaic(5, 2)
    assert module.sizes == [(32, 32)] * 3 + [(40, 60)] * 2
    assert data.train_dataset.p == 0.0


def test_mosaic_schedule_with_zero_epochs_keeps_mosaic() -> None:
    module, data = _fit_mosaic(3, 0)
    assert module.sizes == [(32, 32)] * 3
    assert data.train_dataset.p == 1.0
