"""Building blocks of the YOLOv5-style network (clean-room, written from the papers).

- ``ConvBNAct``: convolution + batch norm + SiLU, the unit every other block is made of.
- ``Bottleneck``: 1x1 reduce, 3x3 expand, optional residual (ResNet / Darknet style).
- ``CSPBlock``: Cross Stage Partial block (Wang et al., "CSPNet", 2019; used in YOLOv4 and
  Scaled-YOLOv4): the input is split into two 1x1 projections; only one goes through the
  bottleneck stack, the other bypasses it, and a 1x1 conv fuses the concatenation. Half the
  channels skip the expensive path, which cuts compute while keeping gradient diversity.
- ``SPPF``: spatial pyramid pooling (He et al., "SPP-Net"; YOLOv4 uses 5/9/13 max pools) computed
  as three chained 5x5 max pools, which see the same 5/9/13 windows at a third of the cost.
"""

from __future__ import annotations

import torch
from torch import nn

# Batch-norm settings for detection with small batches: a larger eps keeps the variance estimate
# stable, a slower momentum smooths the running statistics over noisy mosaic batches.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class ConvBNAct(nn.Module):
    """``Conv2d(k, stride, 'same' padding, no bias) -> BatchNorm2d -> SiLU``.

    Shapes: ``x f32[B, c_in, H, W] -> f32[B, c_out, H/stride, W/stride]``.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, padding: int | None = None
    ) -> None:
        """Args: c_in / c_out: channels; kernel: square kernel size; stride: conv stride;
        padding: explicit padding (default ``kernel // 2``)."""
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """``x + conv3x3(conv1x1(x))`` (residual only when ``shortcut`` and shapes allow).

    Shapes: ``f32[B, c, H, W] -> f32[B, c, H, W]``.
    """

    def __init__(self, channels: int, *, shortcut: bool = True) -> None:
        super().__init__()
        self.reduce = ConvBNAct(channels, channels, 1)
        self.expand = ConvBNAct(channels, channels, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(self.reduce(x))
        return x + y if self.shortcut else y


class CSPBlock(nn.Module):
    """Cross Stage Partial block with ``depth`` bottlenecks on half of the channels.

    Shapes: ``f32[B, c_in, H, W] -> f32[B, c_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int, depth: int, *, shortcut: bool = True) -> None:
        """Args: c_in / c_out: channels; depth: bottlenecks in the main path (>= 1);
        shortcut: residual connections inside the bottlenecks (backbone yes, neck no)."""
        super().__init__()
        hidden = c_out // 2
        self.main_in = ConvBNAct(c_in, hidden, 1)
        self.bypass = ConvBNAct(c_in, hidden, 1)
        self.blocks = nn.Sequential(*(Bottleneck(hidden, shortcut=shortcut) for _ in range(depth)))
        self.fuse = ConvBNAct(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat((self.blocks(self.main_in(x)), self.bypass(x)), dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling with chained 5x5 max pools (receptive fields 5, 9, 13).

    Shapes: ``f32[B, c_in, H, W] -> f32[B, c_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int, pool: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.reduce = ConvBNAct(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(pool, stride=1, padding=pool // 2)
        self.fuse = ConvBNAct(4 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.fuse(torch.cat((x, p1, p2, self.pool(p2)), dim=1))


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every ``ConvBNAct``'s batch norm into its convolution, in place (inference only).

    After folding, ``bn`` is an ``nn.Identity`` and the conv has a bias; outputs are unchanged
    up to float rounding. Use on a copy: the folded model can no longer be trained as before.

    Returns:
        The same module, folded.
    """
    for block in module.modules():
        if isinstance(block, ConvBNAct) and isinstance(block.bn, nn.BatchNorm2d):
            conv, bn = block.conv, block.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                bias=True,
            ).to(conv.weight.device)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
                fused.bias.copy_(bn.bias - bn.running_mean * scale)
            fused.requires_grad_(False)
            block.conv = fused
            block.bn = nn.Identity()
    return module
