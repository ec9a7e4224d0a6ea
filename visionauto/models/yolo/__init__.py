"""YOLOv5-style detector, a clean-room implementation (no Ultralytics code or weights).

Written from the papers: CSPNet / YOLOv4 / Scaled-YOLOv4 (CSP backbone, SPP, PAN neck, compound
depth/width scaling, mosaic), YOLOv3 (anchors), CIoU (Zheng et al.). Azure's ``yolov5`` options
map onto it (spec §1.4): ``model_size``, ``img_size``, ``multi_scale``, ``box_score_thresh``,
``nms_iou_thresh``. It has no COCO-pretrained weights, so on small datasets expect lower accuracy
than Azure's COCO-pretrained YOLOv5; the ``efficientnet_lite0`` backbone (catalog name
``yolov5_efficientnet_lite0``) starts from ImageNet weights that ship with the install.
"""

from __future__ import annotations

from visionauto.models.yolo.anchors import (
    DEFAULT_ANCHORS,
    anchor_fit_quality,
    box_sizes_at,
    default_anchors,
    fit_anchors,
)
from visionauto.models.yolo.builder import build_yolov5, load_detector_weights
from visionauto.models.yolo.detector import YoloDetector
from visionauto.models.yolo.net import MODEL_SIZES

__all__ = [
    "DEFAULT_ANCHORS",
    "MODEL_SIZES",
    "YoloDetector",
    "anchor_fit_quality",
    "box_sizes_at",
    "build_yolov5",
    "default_anchors",
    "fit_anchors",
    "load_detector_weights",
]
