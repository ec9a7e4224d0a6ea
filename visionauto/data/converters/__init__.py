"""Converters of object annotations (VOC, COCO, YOLO, labelme, instance masks) to Azure JSONL,
and of JSONL back to COCO (spec §3.1, §3.3). The CLI is ``python -m visionauto.data.convert``.

Each ``convert_*`` returns a :class:`Conversion`: the JSONL lines (``image_url`` relative to the
output file, ``image_details`` with the real image size, ``label`` objects with normalized
corners rounded to 6 decimals, ``isCrowd`` and, for segmentation, ``polygon``) plus every
skipped object with its reason, warnings and notes for the summary.
"""

from __future__ import annotations

from visionauto.data.converters.coco import convert_coco
from visionauto.data.converters.common import Conversion, Skipped
from visionauto.data.converters.export import jsonl_to_coco
from visionauto.data.converters.labelme import convert_labelme
from visionauto.data.converters.masks import convert_voc_masks
from visionauto.data.converters.voc import convert_voc
from visionauto.data.converters.yolo import convert_yolo

__all__ = [
    "Conversion",
    "Skipped",
    "convert_coco",
    "convert_labelme",
    "convert_voc",
    "convert_voc_masks",
    "convert_yolo",
    "jsonl_to_coco",
]
