"""Azure's classification presets (spec §1.8) with ``torchvision.transforms.v2``.

Geometry works on uint8 tensors (torch has fast uint8 antialiased resizing for the channels-last
layout that PIL images and the decoded-image cache provide). Color jitter and normalization
run once on the small cropped image, in float.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Azure: "color jitter (brightness, contrast, saturation, hue)"; moderate values so labels
# that depend on color (e.g. a red can vs a white carton) survive augmentation.
COLOR_JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05}

ImageTransform = Callable[[Image.Image | torch.Tensor], torch.Tensor]

_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


class FloatColorJitter:
    """Random brightness, contrast, saturation and hue of a float image in [0, 1].

    Same factor ranges and random order as ``torchvision``'s ``ColorJitter``, but the hue shift
    is a rotation of the chroma plane in YIQ space (one 3x3 matrix product) instead of an
    RGB->HSV->RGB round trip, which is ~50x slower on a CPU. Uses torch's RNG, so
    ``torch.manual_seed`` and DataLoader worker seeding make it reproducible.
    """

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )

    @staticmethod
    def _factor(spread: float) -> float:
        return float(torch.empty(1).uniform_(max(0.0, 1.0 - spread), 1.0 + spread))

    def _hue(self, img: torch.Tensor) -> torch.Tensor:
        angle = float(torch.empty(1).uniform_(-self.hue, self.hue)) * 2.0 * math.pi
        cos, sin = math.cos(angle), math.sin(angle)
        rotate = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
        matrix = _YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ
        return (matrix.to(img.dtype) @ img.reshape(3, -1)).view_as(img)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """``f32[3, H, W]`` in [0, 1] -> jittered ``f32[3, H, W]`` in [0, 1]."""
        img = img.as_subclass(torch.Tensor)
        for step in torch.randperm(4).tolist():
            if step == 0 and self.brightness:
                img = img * self._factor(self.brightness)
            elif step == 1 and self.contrast:
                mean = (img * _GRAY).sum(dim=0).mean()
                img = torch.lerp(mean.expand_as(img), img, self._factor(self.contrast))
            elif step == 2 and self.saturation:
                gray = (img * _GRAY).sum(dim=0, keepdim=True).expand_as(img)
                img = torch.lerp(gray, img, self._factor(self.saturation))
            elif step == 3 and self.hue:
                img = self._hue(img)
            img = img.clamp(0.0, 1.0)
        return img


class ToNormalizedFloat:
    """uint8 ``[3, H, W]`` (or float in [0, 1]) -> ImageNet-normalized ``f32[3, H, W]``."""

    def __init__(
        self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
    ) -> None:
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        img = img.as_subclass(torch.Tensor)
        if img.dtype == torch.uint8:
            img = img.to(torch.float32).div_(255.0)
        return (img - self.mean) / self.std


def _to_uint8() -> list[Callable]:
    # PIL images and uint8 tensors (the decoded-image cache) both become tv_tensors.Image.
    return [v2.ToImage(), v2.ToDtype(torch.uint8, scale=True)]


def build_classification_transforms(
    *,
    train: bool,
    augment: bool,
    training_crop_size: int,
    validation_resize_size: int,
    validation_crop_size: int,
) -> ImageTransform:
    """Build the image pipeline of classification training or validation.

    Args:
        train: training pipeline (True) or validation / inference pipeline (False).
        augment: with ``train``: Azure's augmentations (random resized crop, horizontal flip,
            color jitter). Without: resize + center crop to ``training_crop_size``.
        training_crop_size: side of the training crop.
        validation_resize_size: shorter side after resizing, before the center crop.
        validation_crop_size: side of the validation center crop.

    Returns:
        A callable mapping an RGB PIL image (or a uint8 tensor ``[3, H, W]``) to a normalized
        float32 tensor ``[3, S, S]`` (``S`` = training or validation crop size).
    """
    if train and augment:
        steps: list[Callable] = [
            v2.RandomResizedCrop(training_crop_size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            FloatColorJitter(**COLOR_JITTER),
        ]
    else:
        crop = training_crop_size if train else validation_crop_size
        steps = [v2.Resize(validation_resize_size, antialias=True), v2.CenterCrop(crop)]
    return v2.Compose([*_to_uint8(), *steps, ToNormalizedFloat()])


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalization: ``f32[..., 3, H, W]`` -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0.0, 1.0)
