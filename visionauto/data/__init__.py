"""Data layer: JSONL/MLTable reading, image_url resolution, validation, splits, datasets.

The light part (records, reading, validation, preparation) is imported eagerly; the parts that
need torch / Lightning (transforms, datasets, datamodule) load on first use, so tools such as
``python -m visionauto.data.convert`` start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from visionauto.data.jsonl import load_records, write_records
from visionauto.data.prepare import PreparedData, load_prepared, prepare_data
from visionauto.data.records import ImageRecord
from visionauto.data.split import split_records
from visionauto.data.validation import Issue, ValidationReport, validate_records

_LAZY = {
    "build_classification_transforms": "visionauto.data.transforms",
    "IMAGENET_MEAN": "visionauto.data.transforms",
    "IMAGENET_STD": "visionauto.data.transforms",
    "ClassificationDataset": "visionauto.data.datasets",
    "class_counts": "visionauto.data.datasets",
    "should_cache": "visionauto.data.datasets",
    "ClassificationDataModule": "visionauto.data.datamodule",
    "make_synthetic_dataset": "visionauto.data.synthetic",
    "make_messy_dataset": "visionauto.data.synthetic",
}

__all__ = [
    "ImageRecord",
    "Issue",
    "PreparedData",
    "ValidationReport",
    "load_prepared",
    "load_records",
    "prepare_data",
    "split_records",
    "validate_records",
    "write_records",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'visionauto.data' has no attribute {name!r}")
