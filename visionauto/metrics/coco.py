"""COCO detection metrics (spec §2.3) through torchmetrics' ``MeanAveragePrecision``.

The faster-coco-eval backend gives the same numbers as pycocotools, several times faster
(stack-facts §9). COCO's own rules apply here, not the VOC ones of :mod:`visionauto.metrics.voc`:
101-point interpolated AP averaged over IoU 0.50:0.05:0.95, up to 100 detections per image, and a
prediction matched to a crowd object is ignored (neither true nor false positive). Undefined
values (e.g. no ground truth of a size range) are ``-1.0``.

Two torchmetrics 1.9 quirks are worked around so that the numbers equal pycocotools':

- its default IoU and recall grids are float32 (``0.55`` becomes ``0.550000011920929``), which
  flips matches whose IoU is exactly a threshold (common with pixel masks); pycocotools'
  float64 grids are passed instead.
- with ``iou_type="segm"`` alone it drops every image without masks from the COCO datasets, so
  false positives on images without ground truth vanish; ``("bbox", "segm")`` keeps them (boxes
  are always present) and only the ``segm_*`` results are read.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

# torchmetrics result key -> logged name (the 12 COCO stats, in pycocotools' summarize() order).
COCO_KEYS = {
    "map": "coco_map",
    "map_50": "coco_map_50",
    "map_75": "coco_map_75",
    "map_small": "coco_map_small",
    "map_medium": "coco_map_medium",
    "map_large": "coco_map_large",
    "mar_1": "coco_mar_1",
    "mar_10": "coco_mar_10",
    "mar_100": "coco_mar_100",
    "mar_small": "coco_mar_small",
    "mar_medium": "coco_mar_medium",
    "mar_large": "coco_mar_large",
}

# pycocotools' grids, in float64: IoU 0.50:0.05:0.95 and recall 0:0.01:1.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
REC_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()


class CocoAccumulator:
    """Feeds images to ``MeanAveragePrecision`` and renames its results.

    Masks (``segm``) are kept RLE-encoded by torchmetrics, so memory grows with the validation set
    (much less than raw masks). Under DDP, ``state``/``merge`` join the processes' images.
    """

    def __init__(self, iou_type: str) -> None:
        self.iou_type = iou_type
        self.metric = MeanAveragePrecision(
            box_format="xyxy",
            iou_type="bbox" if iou_type == "bbox" else ("bbox", "segm"),
            iou_thresholds=IOU_THRESHOLDS,
            rec_thresholds=REC_THRESHOLDS,
            class_metrics=False,
            backend="faster_coco_eval",
            sync_on_compute=False,  # DDP: DetectionEvaluator.merge_from joins the ranks' states
        )
        self.metric.warn_on_many_detections = False  # the detector caps detections itself

    def add_images(
        self,
        preds: list[tuple[Tensor, Tensor, Tensor]],
        targets: list[tuple[Tensor, Tensor, Tensor]],
    ) -> None:
        """Add a batch of images.

        Args:
            preds: per image ``{"boxes": f[K,4] XYXY, "scores": f[K], "labels": i64[K]}``, plus
                ``"masks": bool[K,H,W]`` for ``segm``.
            targets: per image ``{"boxes": f[N,4], "labels": i64[N], "iscrowd": i64[N]}``, plus
                ``"masks": bool[N,H,W]`` for ``segm``.
        """
        # Stored on the CPU: GPU memory must not grow with the validation set.
        self.metric.update(
            [{k: _cpu(v) for k, v in p.items()} for p in preds],
            [{k: _cpu(v) for k, v in t.items()} for t in targets],
        )

    def compute(self) -> dict[str, float]:
        """The 12 COCO stats as plain floats, named ``coco_map``, ``coco_map_50``, ..."""
        result = self.metric.compute()
        prefix = "" if self.iou_type == "bbox" else "segm_"
        return {name: float(result[prefix + key]) for key, name in COCO_KEYS.items()}

    def reset(self) -> None:
        self.metric.reset()

    def state(self) -> dict[str, list]:
        """The accumulated images (CPU tensors, RLE masks): picklable, for ``all_gather_object``."""
        return {name: list(value) for name, value in self.metric.metric_state.items()}

    def merge(self, states: list[dict[str, list]]) -> None:
        """Replace what was added so far by the union of ``states`` (from :meth:`state`)."""
        merged = {name: [x for s in states for x in s[name]] for name in self.metric.metric_state}
        self.metric.reset()
        for name, value in merged.items():
            setattr(self.metric, name, value)
        # An empty update marks the metric as updated and clears its cached result.
        self.metric.update([], [])


def _cpu(tensor: Tensor) -> Tensor:
    tensor = tensor.detach().cpu()
    return tensor.float() if tensor.is_floating_point() else tensor
