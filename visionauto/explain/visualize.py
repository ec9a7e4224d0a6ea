"""Azure's 2x2 explanation figure (spec §4.3) as a PNG, with numpy and Pillow only.

Layout, each quadrant ``crop x crop`` pixels, the whole image ``2*crop x 2*crop``::

    (0, 0) the cropped input          (0, 1) attribution heat map, blue -> green -> yellow -> white
    (1, 0) heat map blended on input  (1, 1) input masked to its top 30% attributed pixels (black elsewhere)

The heat map shows the positive part of the channel-summed attribution scaled by its 99th
percentile (captum's ``sign="positive"``, ``outlier_perc=1``). The colour scale follows
colorcet's ``bgyw`` (dark blue = least evidence for the class, white = most).
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# Anchors of a bgyw-like linear colour scale (RGB in [0, 1]), at evenly spaced positions.
BGYW_ANCHORS = np.array(
    [
        [0.10, 0.05, 0.55],  # blue
        [0.05, 0.55, 0.45],  # green
        [0.90, 0.85, 0.10],  # yellow
        [1.00, 1.00, 1.00],  # white
    ],
    dtype=np.float32,
)
TOP_FRACTION = 0.3
OUTLIER_PERCENT = 1.0
BLEND_ALPHA = 0.5


def attribution_score(attribution: np.ndarray) -> np.ndarray:
    """Per-pixel score: attribution f32[3, H, W] summed over channels -> f32[H, W]."""
    return np.asarray(attribution, dtype=np.float32).sum(axis=0)


def normalized_heat(attribution: np.ndarray) -> np.ndarray:
    """f32[3, H, W] -> f32[H, W] in [0, 1]: positive part over its 99th percentile, clipped."""
    positive = np.clip(attribution_score(attribution), 0.0, None)
    scale = float(np.percentile(positive, 100.0 - OUTLIER_PERCENT))
    if scale <= 0.0:
        scale = float(positive.max())
    if scale <= 0.0:  # no positive evidence at all: an all-blue map
        return np.zeros_like(positive)
    return np.clip(positive / scale, 0.0, 1.0)


def bgyw(values: np.ndarray) -> np.ndarray:
    """Colours of ``values`` in [0, 1] (any shape S) -> u8[*S, 3]."""
    positions = np.linspace(0.0, 1.0, len(BGYW_ANCHORS))
    flat = np.clip(np.asarray(values, dtype=np.float32).ravel(), 0.0, 1.0)
    rgb = np.stack([np.interp(flat, positions, BGYW_ANCHORS[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb * 255.0).astype(np.uint8).reshape(*np.shape(values), 3)


def top_fraction_mask(attribution: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """bool[H, W]: the top ``fraction`` of pixels by channel-summed score that show evidence.

    A pixel is kept when its score reaches the ``1 - fraction`` quantile and is positive. Pixels
    without positive evidence are never "top" (guided methods often give zero to most pixels:
    padding the mask with them would show an arbitrary band), so the mask may be smaller than
    ``fraction``; regions tied at the cut (XRAI's flat regions) are kept whole.
    """
    score = attribution_score(attribution)
    cut = float(np.quantile(score, 1.0 - fraction))
    return (score >= cut) & (score > 0.0)


def render_grid(image: np.ndarray, attribution: np.ndarray) -> Image.Image:
    """The 2x2 figure of one explanation.

    Args:
        image: u8[H, W, 3], the cropped input the model saw.
        attribution: f32[3, H, W].

    Returns:
        An RGB PIL image of size ``(2W, 2H)``.
    """
    height, width = image.shape[:2]
    assert attribution.shape[1:] == (height, width), "attribution and image sizes differ"
    heat = bgyw(normalized_heat(attribution))
    blended = np.round(
        (1.0 - BLEND_ALPHA) * image.astype(np.float32) + BLEND_ALPHA * heat.astype(np.float32)
    ).astype(np.uint8)
    masked = np.where(top_fraction_mask(attribution)[..., None], image, 0).astype(np.uint8)
    grid = np.zeros((2 * height, 2 * width, 3), dtype=np.uint8)
    grid[:height, :width] = image
    grid[:height, width:] = heat
    grid[height:, :width] = blended
    grid[height:, width:] = masked
    return Image.fromarray(grid)


def png_bytes(figure: Image.Image) -> bytes:
    """Encodes a PIL image as PNG."""
    buffer = io.BytesIO()
    figure.save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(figure: Image.Image) -> str:
    """The PNG as a base64 string (what the endpoint returns in ``visualizations``)."""
    return base64.b64encode(png_bytes(figure)).decode("ascii")
