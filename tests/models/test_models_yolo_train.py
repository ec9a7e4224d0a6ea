"""The YOLO detector learns: the loss falls and it overfits a few synthetic images."""

from __future__ import annotations

import torch
from torchmetrics.detection import MeanAveragePrecision

from visionauto.models.yolo import build_yolov5

COLORS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.2, 0.9]])


def _images(count: int, size: int = 96) -> tuple[list[torch.Tensor], list[dict]]:
    """Gray images with one or two coloured squares (class = colour), of varied sizes."""
    gen = torch.Generator().manual_seed(1)
    images, targets = [], []
    for index in range(count):
        height, width = size, size - 16 * (index % 2)  # one non-square image per pair
        image = torch.full((3, height, width), 0.5)
        boxes, labels = [], []
        for k in range(1 + index % 2):
            side = int(torch.randint(20, 36, (1,), generator=gen))
            x0 = 4 + k * (width // 2)
            y0 = int(torch.randint(0, height - side, (1,), generator=gen))
            label = (index + k) % 2
            image[:, y0 : y0 + side, x0 : x0 + side] = COLORS[label].view(3, 1, 1)
            boxes.append([x0, y0, x0 + side, y0 + side])
            labels.append(label)
        images.append(image)
        targets.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
        )
    return images, targets


def test_loss_decreases_and_overfits_to_high_map() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        images, targets = _images(4)
        model = build_yolov5(2, model_size="nano", img_size=96)
        optimizer = torch.optim.AdamW(model.optimizer_parameter_groups(5e-4), lr=3e-3)
        history = []
        for step in range(200):
            model.train()
            for group in optimizer.param_groups:
                group["lr"] = 3e-3 * min(1.0, (step + 1) / 10)
            losses = model(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.after_optimizer_step()
            history.append(float(loss.detach()))
        assert sum(history[-10:]) < 0.3 * sum(history[:10])
        model.eval()
        with torch.no_grad():
            preds = model(images)
        metric = MeanAveragePrecision(iou_type="bbox")
        metric.update(preds, targets)
        assert float(metric.compute()["map_50"]) >= 0.9
    finally:
        torch.set_num_threads(threads)
