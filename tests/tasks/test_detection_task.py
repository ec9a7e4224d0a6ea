"""DetectionTask's validation: AP over the low-score tail, precision/recall at the model's own
threshold, and the threshold given back afterwards."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from visionauto.models.detectors import Detector
from visionauto.tasks.detection import VALIDATION_SCORE_THRESHOLD, DetectionTask


class _Fixed(Detector):
    """Predicts the true box at score 0.2 and a wrong one at 0.9; honours box_score_thresh."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.threshold = 0.3
        self.seen: list[float] = []

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> Any:
        self.seen.append(self.threshold)
        boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [40.0, 40.0, 60.0, 60.0]])
        scores = torch.tensor([0.2, 0.9])
        keep = scores >= self.threshold
        return [{"boxes": boxes[keep], "scores": scores[keep],
                 "labels": torch.zeros(int(keep.sum()), dtype=torch.long)} for _ in images]

    def set_inference_settings(self, **settings: Any) -> None:
        self.threshold = settings.get("box_score_thresh", self.threshold)

    def inference_settings(self) -> dict[str, Any]:
        return {"box_score_thresh": self.threshold}


def _batch(items: list) -> dict:
    return {"images": [i[0] for i in items], "targets": [i[1] for i in items]}


def test_validation_scores_ap_over_low_scores_and_gives_the_threshold_back() -> None:
    task = DetectionTask(model_name="yolov5", class_names=["thing"],
                         model_kwargs={"model_size": "nano", "img_size": 64})
    task.model = _Fixed()
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([0])}
    data = DataLoader([(torch.zeros(3, 64, 64), target)] * 2, batch_size=2, collate_fn=_batch)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False)
    metrics = trainer.validate(task, dataloaders=data, verbose=False)[0]
    assert task.model.seen == [VALIDATION_SCORE_THRESHOLD]
    assert task.model.threshold == 0.3  # the serving threshold is back
    # The true box ranks second: AP = 1/2 at its recall step, all-point interpolated.
    assert metrics["mean_average_precision"] == pytest.approx(0.5)
    # At the serving threshold only the wrong box counts.
    assert metrics["precision"] == 0.0 and metrics["recall"] == 0.0
