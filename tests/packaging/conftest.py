"""Tiny packaged models (timm ``test_resnet``, 3 classes, 48 px crops) and PNG/JPEG test images."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from visionauto.models.registry import create_model
from visionauto.packaging.pyfunc import save_model
from visionauto.packaging.settings import build_settings

CLASS_NAMES = ["can", "carton", "milk_bottle"]
MODEL_NAME = "test_resnet"
INFERENCE = {"validation_resize_size": 64, "validation_crop_size": 48}


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def image_bytes() -> list[bytes]:
    """Four distinct encoded images (3 PNGs of different sizes/colors, 1 JPEG)."""
    gradient = Image.linear_gradient("L").resize((80, 60)).convert("RGB")
    return [
        encode(Image.new("RGB", (40, 56), (200, 30, 30))),
        encode(gradient),
        encode(Image.new("RGB", (96, 64), (20, 160, 240))),
        encode(Image.new("RGB", (50, 50), (10, 220, 10)), "JPEG"),
    ]


def _save(root: Path, task: str) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model(task, MODEL_NAME, num_classes=len(CLASS_NAMES)).eval()
    # Non-trivial BN statistics so that eval mode differs from a fresh module.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    settings = build_settings(
        task=task, model_name=MODEL_NAME, class_names=CLASS_NAMES, inference=INFERENCE
    )
    model_dir = save_model(root / "run" / "model", state_dict=model.state_dict(), settings=settings)
    return model_dir, model


@pytest.fixture(scope="session")
def classification_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """(model folder, the network it was saved from) of a multiclass model."""
    return _save(tmp_path_factory.mktemp("cls"), "classification")


@pytest.fixture(scope="session")
def multilabel_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """(model folder, the network it was saved from) of a multilabel model."""
    return _save(tmp_path_factory.mktemp("ml"), "multilabel")
