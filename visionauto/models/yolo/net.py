"""The YOLOv5-style network: CSP backbone + SPPF, PAN neck, anchor head on strides 8/16/32.

Layout (channel widths before the width multiple; depths before the depth multiple)::

    backbone.0  ConvBNAct 6x6 s2          3 -> 64      stride 2
    backbone.1  ConvBNAct 3x3 s2         64 -> 128     stride 4
    backbone.2  CSPBlock x3             128 -> 128
    backbone.3  ConvBNAct 3x3 s2        128 -> 256     stride 8
    backbone.4  CSPBlock x6             256 -> 256     -> C3
    backbone.5  ConvBNAct 3x3 s2        256 -> 512     stride 16
    backbone.6  CSPBlock x9             512 -> 512     -> C4
    backbone.7  ConvBNAct 3x3 s2        512 -> 1024    stride 32
    backbone.8  CSPBlock x3            1024 -> 1024
    backbone.9  SPPF                   1024 -> 1024    -> C5

The neck is a PAN (Liu et al., "Path Aggregation Network", 2018; as in YOLOv4): a top-down path
(1x1 lateral, 2x nearest upsample, concat, CSP) from C5 to stride 8, then a bottom-up path
(3x3 s2 conv, concat with the top-down lateral, CSP) back to stride 32. The head is one 1x1
conv per level predicting ``anchors x (4 box + 1 objectness + classes)``.

The ``efficientnet_lite0`` backbone swaps the CSP backbone for timm's ``tf_efficientnet_lite0``
(features at strides 8/16/32, 40/112/320 channels; ImageNet weights ship with the install) plus
an SPPF, and keeps the same neck and head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from visionauto.models.yolo.blocks import SPPF, ConvBNAct, CSPBlock

STRIDES = (8, 16, 32)
NUM_ANCHORS = 3
# Priors for the head biases: about this many objects in a 640 px image, spread over its cells,
# so the first objectness outputs are near the true (small) positive rate instead of 0.5.
_OBJECTS_PER_640_IMAGE = 8.0


@dataclass(frozen=True)
class SizeSpec:
    """Depth and width multiples of one model size (compound scaling as in Scaled-YOLOv4)."""

    depth: float
    width: float


# Azure's sizes (spec §1.4) plus "nano", a smaller size for CPUs (not an Azure size).
MODEL_SIZES: dict[str, SizeSpec] = {
    "nano": SizeSpec(0.33, 0.25),
    "small": SizeSpec(0.33, 0.50),
    "medium": SizeSpec(0.67, 0.75),
    "large": SizeSpec(1.0, 1.0),
    "extra_large": SizeSpec(1.33, 1.25),
}
SIZE_ALIASES = {"xlarge": "extra_large"}

_BASE_WIDTHS = (64, 128, 256, 512, 1024)
_BASE_DEPTHS = (3, 6, 9, 3)


def _width(channels: int, multiple: float) -> int:
    """Scaled channel count rounded up to a multiple of 8 (SIMD- and group-friendly)."""
    return max(8, int(math.ceil(channels * multiple / 8) * 8))


def _depth(blocks: int, multiple: float) -> int:
    return max(1, round(blocks * multiple))


class CSPBackbone(nn.Sequential):
    """CSP-Darknet style backbone. ``forward(x f32[B,3,H,W]) -> (C3, C4, C5)`` at strides 8/16/32.

    Its layers are ``0`` … ``9`` (see the module docstring), the groups of ``layers_to_freeze``.
    """

    def __init__(self, size: SizeSpec) -> None:
        c1, c2, c3, c4, c5 = (_width(c, size.width) for c in _BASE_WIDTHS)
        d1, d2, d3, d4 = (_depth(d, size.depth) for d in _BASE_DEPTHS)
        super().__init__(
            ConvBNAct(3, c1, 6, 2, 2),
            ConvBNAct(c1, c2, 3, 2),
            CSPBlock(c2, c2, d1),
            ConvBNAct(c2, c3, 3, 2),
            CSPBlock(c3, c3, d2),
            ConvBNAct(c3, c4, 3, 2),
            CSPBlock(c4, c4, d3),
            ConvBNAct(c4, c5, 3, 2),
            CSPBlock(c5, c5, d4),
            SPPF(c5, c5),
        )
        self.out_channels = (c3, c4, c5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        outputs = []
        for index, layer in enumerate(self):
            x = layer(x)
            if index in (4, 6, 9):
                outputs.append(x)
        return tuple(outputs)


class EfficientNetLiteBackbone(nn.Module):
    """timm ``tf_efficientnet_lite0`` features (strides 8/16/32) + SPPF on the last one.

    Inputs are ImageNet-normalized here (the rest of the detector feeds [0, 1] images).
    """

    def __init__(self) -> None:
        import timm

        super().__init__()
        self.body = timm.create_model(
            "tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(2, 3, 4)
        )
        c3, c4, c5 = self.body.feature_info.channels()
        self.sppf = SPPF(c5, c5)
        self.out_channels = (c3, c4, c5)
        mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
        std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c3, c4, c5 = self.body((x - self.mean) / self.std)
        return c3, c4, self.sppf(c5)


class PANNeck(nn.Module):
    """Top-down then bottom-up path aggregation. ``(C3, C4, C5) -> (P3, P4, P5)``."""

    def __init__(self, in_channels: tuple[int, int, int], size: SizeSpec) -> None:
        super().__init__()
        c3_in, c4_in, c5_in = in_channels
        n3, n4, n5 = (_width(c, size.width) for c in _BASE_WIDTHS[2:])
        depth = _depth(3, size.depth)
        self.lateral5 = ConvBNAct(c5_in, n4, 1)
        self.top_down4 = CSPBlock(n4 + c4_in, n4, depth, shortcut=False)
        self.lateral4 = ConvBNAct(n4, n3, 1)
        self.top_down3 = CSPBlock(n3 + c3_in, n3, depth, shortcut=False)
        self.down3 = ConvBNAct(n3, n3, 3, 2)
        self.bottom_up4 = CSPBlock(2 * n3, n4, depth, shortcut=False)
        self.down4 = ConvBNAct(n4, n4, 3, 2)
        self.bottom_up5 = CSPBlock(2 * n4, n5, depth, shortcut=False)
        self.out_channels = (n3, n4, n5)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        c3, c4, c5 = feats
        h5 = self.lateral5(c5)
        up = F.interpolate(h5, size=c4.shape[-2:], mode="nearest")
        h4 = self.lateral4(self.top_down4(torch.cat((up, c4), dim=1)))
        up = F.interpolate(h4, size=c3.shape[-2:], mode="nearest")
        p3 = self.top_down3(torch.cat((up, c3), dim=1))
        p4 = self.bottom_up4(torch.cat((self.down3(p3), h4), dim=1))
        p5 = self.bottom_up5(torch.cat((self.down4(p4), h5), dim=1))
        return p3, p4, p5


class DetectHead(nn.Module):
    """One 1x1 conv per level: ``P_l f32[B,C_l,H,W] -> f32[B, A, H, W, 5 + num_classes]``.

    The last axis holds raw logits ``(tx, ty, tw, th, objectness, class_0 … class_{C-1})``.
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.outputs = 5 + num_classes
        self.convs = nn.ModuleList(nn.Conv2d(c, NUM_ANCHORS * self.outputs, 1) for c in in_channels)
        self.reset_biases()

    def reset_biases(self) -> None:
        """Start objectness at the expected positive rate and classes at ~1/C (focal-loss
        paper's prior trick), which keeps the first steps from being dominated by negatives."""
        for conv, stride in zip(self.convs, STRIDES, strict=True):
            bias = conv.bias.detach().view(NUM_ANCHORS, self.outputs)
            cells = (640 / stride) ** 2
            with torch.no_grad():
                bias[:, :4] = 0.0
                bias[:, 4] = math.log(_OBJECTS_PER_640_IMAGE / cells)
                prior = 0.6 / max(self.num_classes - 0.99, 1.0)
                bias[:, 5:] = math.log(prior / (1.0 - prior))
                conv.weight.normal_(0.0, 0.01)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        outs = []
        for conv, x in zip(self.convs, feats, strict=True):
            b, _, h, w = x.shape
            y = conv(x).view(b, NUM_ANCHORS, self.outputs, h, w)
            outs.append(y.permute(0, 1, 3, 4, 2).contiguous())
        return outs


class YoloNet(nn.Module):
    """Backbone + PAN neck + head. ``forward(x f32[B,3,S,S]) -> list of 3 f32[B,A,S/s,S/s,5+C]``.

    ``S`` must be a multiple of 32. Boxes are decoded by the loss / post-processing, not here,
    so the raw outputs stay cheap to export.
    """

    def __init__(self, num_classes: int, size: SizeSpec, *, backbone: str = "csp") -> None:
        super().__init__()
        if backbone == "csp":
            self.backbone: nn.Module = CSPBackbone(size)
        else:
            self.backbone = EfficientNetLiteBackbone()
        self.neck = PANNeck(self.backbone.out_channels, size)
        self.head = DetectHead(self.neck.out_channels, num_classes)

    def train(self, mode: bool = True) -> YoloNet:
        """Like ``nn.Module.train``, but batch norms whose parameters are frozen
        (``layers_to_freeze``) stay in eval mode: frozen layers keep their running statistics
        instead of normalising with (mosaic) batch statistics they cannot adapt to."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters()
                ):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.head(self.neck(self.backbone(x)))
