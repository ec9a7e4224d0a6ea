"""Backbones with a feature pyramid for the torchvision detectors: torchvision ResNets and any timm
model (``features_only=True``).

Every backbone here has the layout of torchvision's ``BackboneWithFPN``: ``body`` (the feature
extractor) + ``fpn`` (a ``FeaturePyramidNetwork``: 256 channels on ResNets, as torchvision; a
choice on timm backbones) and ``out_channels``, and returns ``OrderedDict[str, f32[B,C,h,w]]`` with keys ``"0"``, ``"1"``, ... and the extra levels
(``"pool"`` for R-CNN, ``"p6"``/``"p7"`` for RetinaNet). So COCO state dicts of torchvision's
R50-FPN models load one to one, and every family works on every backbone.

Norm layers stay ``nn.BatchNorm2d`` whether or not weights are pretrained, so that a model built
with ``pretrained=False`` (how a packaged model is rebuilt) has the same state-dict keys as a
pretrained one; :class:`visionauto.models.detectors.TorchvisionDetector` keeps them in eval mode
(frozen, as torchvision's ``FrozenBatchNorm2d``) when the weights are pretrained.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from visionauto.errors import ModelError

FPN_CHANNELS = 256
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# torchvision's trainable_backbone_layers counts these 5 groups of a ResNet from the top.
_RESNET_BOUNDARIES = ("bn1", "layer1", "layer2", "layer3", "layer4")
_RESNET_STRIDES = (4, 8, 16, 32)  # outputs of layer1..layer4


@dataclass(frozen=True)
class PyramidBackbone:
    """A backbone with FPN and what the detector heads need to know about it.

    Attributes:
        module: ``BackboneWithFPN``-like module (``body``, ``fpn``, ``out_channels``).
        strides: stride of every output level in order, extra levels included.
        roi_names: names of the levels the R-CNN RoI pooler reads (the extra levels excluded).
        boundaries: module names in ``body`` that end each layer group (stem, stage 1, ...), used
            by ``trainable_backbone_layers``.
        image_mean / image_std: the normalization the backbone was pretrained with.
    """

    module: nn.Module
    strides: tuple[int, ...]
    roi_names: tuple[str, ...]
    boundaries: tuple[str, ...]
    image_mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    image_std: tuple[float, ...] = (0.229, 0.224, 0.225)


def _extra_block(family: str, channels: int = FPN_CHANNELS) -> tuple[ExtraFPNBlock, int]:
    """The extra FPN levels of a family and how many levels they add.

    R-CNN: a max-pool of the last level (P6 for proposals only). RetinaNet: P6/P7 convs computed
    from P5 (torchvision's v1 layout, which fits any backbone depth).
    """
    if family == "retinanet":
        return LastLevelP6P7(channels, channels), 2
    return LastLevelMaxPool(), 1


def build_resnet_fpn(resnet_name: str, family: str) -> PyramidBackbone:
    """A torchvision ResNet with FPN, laid out as torchvision's R50-FPN detectors.

    R-CNN families read layer1..layer4 (strides 4..32) plus a pooled level; RetinaNet reads
    layer2..layer4 plus P6/P7 (strides 8..128).
    """
    net = getattr(resnet, resnet_name)(weights=None)
    returned = (2, 3, 4) if family == "retinanet" else (1, 2, 3, 4)
    # BasicBlock nets (18/34) end with 512 channels, Bottleneck nets with 2048: inplanes // 8 is
    # the width of layer1's output in both cases.
    base = net.inplanes // 8
    in_channels = [base * 2 ** (i - 1) for i in returned]
    return_layers = {f"layer{i}": str(k) for k, i in enumerate(returned)}
    extra, n_extra = _extra_block(family)
    module = BackboneWithFPN(net, return_layers, in_channels, FPN_CHANNELS, extra_blocks=extra)
    strides = tuple(_RESNET_STRIDES[i - 1] for i in returned)
    return PyramidBackbone(
        module,
        strides + tuple(strides[-1] * 2 ** (k + 1) for k in range(n_extra)),
        tuple(str(k) for k in range(len(returned))),
        _RESNET_BOUNDARIES,
    )


class TimmBackboneWithFPN(nn.Module):
    """Any timm ``features_only`` model + FPN, with torchvision's ``BackboneWithFPN`` interface.

    ``forward(x f32[B,3,H,W]) -> OrderedDict[str, f32[B,C,h,w]]`` with ``C = out_channels``.
    """

    def __init__(
        self,
        body: nn.Module,
        in_channels: list[int],
        extra: ExtraFPNBlock,
        channels: int = FPN_CHANNELS,
    ) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=extra)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def select_out_indices(reductions: list[int], family: str) -> list[int]:
    """Which timm feature levels feed the FPN: the last 4 with stride >= 4 for R-CNN (as
    layer1..4 of a ResNet), the last 3 with stride >= 8 for RetinaNet (as layer2..4)."""
    min_stride, count = (8, 3) if family == "retinanet" else (4, 4)
    usable = [i for i, r in enumerate(reductions) if r >= min_stride]
    return usable[-count:]


def build_timm_fpn(
    timm_name: str, family: str, *, label: str, channels: int = FPN_CHANNELS
) -> PyramidBackbone:
    """A timm model (``features_only=True``, random init) with an FPN of ``channels`` channels for
    a detector family.

    Raises:
        ModelError: timm cannot build a feature extractor for this model, or it has fewer than two
            usable feature levels.
    """
    import timm

    try:
        with torch.device("meta"):  # only its feature_info is read: no memory, no init time
            probe = timm.create_model(timm_name, pretrained=False, features_only=True)
        reductions = probe.feature_info.reduction()
        info = probe.feature_info.info
        out_indices = select_out_indices(reductions, family)
        body = timm.create_model(
            timm_name, pretrained=False, features_only=True, out_indices=tuple(out_indices)
        )
    except (RuntimeError, ValueError, TypeError, AttributeError, AssertionError) as err:
        raise ModelError(
            f"Model {label}: timm cannot use {timm_name!r} as a detection backbone "
            f"(features_only=True failed: {err}). Fix: choose another backbone, e.g. "
            "fasterrcnn_resnet50_fpn or fasterrcnn_convnext_tiny_fpn."
        ) from err
    if len(out_indices) < 2:
        raise ModelError(
            f"Model {label}: {timm_name!r} has feature maps of strides {reductions}; the FPN needs "
            "at least two levels of stride >= 8. Fix: choose another backbone."
        )
    extra, n_extra = _extra_block(family, channels)
    in_channels = [info[i]["num_chs"] for i in out_indices]
    strides = tuple(int(reductions[i]) for i in out_indices)
    cfg = getattr(body, "pretrained_cfg", None) or {}
    return PyramidBackbone(
        TimmBackboneWithFPN(body, in_channels, extra, channels),
        strides + tuple(strides[-1] * 2 ** (k + 1) for k in range(n_extra)),
        tuple(str(k) for k in range(len(out_indices))),
        tuple(i["module"] for i in info[: out_indices[-1] + 1]),
        tuple(cfg.get("mean") or PyramidBackbone.image_mean),
        tuple(cfg.get("std") or PyramidBackbone.image_std),
    )


def rcnn_anchor_generator(strides: tuple[int, ...]) -> AnchorGenerator:
    """One anchor size per level, 8x its stride (32..512 px on strides 4..64, torchvision's
    default), aspect ratios 0.5, 1, 2."""
    sizes = tuple((8 * s,) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def retinanet_anchor_generator(strides: tuple[int, ...]) -> AnchorGenerator:
    """Three scales per level from 4x its stride (32..512 px on strides 8..128, torchvision's
    default), aspect ratios 0.5, 1, 2."""
    sizes = tuple((4 * s, int(4 * s * 2 ** (1 / 3)), int(4 * s * 2 ** (2 / 3))) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def roi_pooler(names: tuple[str, ...], output_size: int) -> MultiScaleRoIAlign:
    """RoI align over the FPN levels (7 for boxes, 14 for masks, as torchvision)."""
    return MultiScaleRoIAlign(featmap_names=list(names), output_size=output_size, sampling_ratio=2)


def layer_group_of(param_names: list[str], boundaries: tuple[str, ...]) -> list[int]:
    """Layer group index (0 = stem, 1.. = stages) of each backbone parameter, in order.

    A parameter inside boundary module ``b`` belongs to b's group; a parameter between two
    boundaries belongs to the next one (the modules that lead up to that feature level).
    timm's flattened feature extractors write ``stages.0`` as ``stages_0``; both forms match.
    """
    prefixes = [(m + ".", m.replace(".", "_", 1) + ".") for m in boundaries]
    groups, passed = [], -1
    for name in param_names:
        owner = next((j for j, p in enumerate(prefixes) if name.startswith(p)), None)
        if owner is None:
            groups.append(min(passed + 1, len(boundaries) - 1))
        else:
            passed = owner
            groups.append(owner)
    return groups


def freeze_backbone_layers(backbone: PyramidBackbone, trainable_layers: int) -> None:
    """Keep only the last ``trainable_layers`` layer groups of ``body`` trainable (torchvision's
    ``trainable_backbone_layers``: 3 = stem and first stage frozen, as Azure by default)."""
    n_groups = len(backbone.boundaries)
    body = backbone.module.body
    names = [n for n, _ in body.named_parameters()]
    frozen_below = n_groups - min(trainable_layers, n_groups)
    for (_, param), group in zip(
        body.named_parameters(), layer_group_of(names, backbone.boundaries), strict=True
    ):
        if group < frozen_below:
            param.requires_grad_(False)
