"""The four attribution methods on one preprocessed image (captum + PAIR's ``saliency`` for XRAI).

Every method maps ``x f32[1, 3, H, W]`` (normalized as the model expects) and a class index to an
attribution ``f32[3, H, W]`` on the CPU, Azure's shape. XRAI ranks regions, so its map is 2-D:
it is repeated over the three channels to keep one shape for every method.

Guided methods override the gradient of every ``nn.ReLU`` module (captum's rule), so they run on
a copy of the network (:func:`make_guided_copy`) whose ReLUs are not in-place (captum #973:
in-place ReLUs break its backward hooks) and whose ``nn.ReLU6`` modules count as ReLUs.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import warnings
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visionauto.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionauto.errors import ConfigError

# Captum's IG evaluates n_steps points in chunks of this many images: bounds memory (Azure: 5).
IG_INTERNAL_BATCH_SIZE = 10
_ACTIVATION = re.compile(r"(ReLU\d*|GELU|SiLU|Swish|Mish|Hardswish|Sigmoid|Tanh|ELU|PReLU)$")
_ATTENTION = re.compile(r"Attention$")
_POOL = re.compile(r"Pool")


class _ReLU6AsReLU(nn.ReLU):
    """``min(max(x, 0), 6)`` typed as ``nn.ReLU``, so guided backprop overrides its gradient too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


def make_guided_copy(model: nn.Module) -> nn.Module:
    """A deep copy for guided methods: no in-place ops, ``nn.ReLU6`` replaced by a ReLU subclass.

    The served model is left as it is (its in-place ReLUs save memory when scoring).
    """
    guided = copy.deepcopy(model).eval()
    for module in guided.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, name, _ReLU6AsReLU())
    return guided


def guided_support_problem(model: nn.Module) -> str | None:
    """Why guided methods are meaningless for ``model``, or None when they apply (a ReLU CNN)."""
    kinds = {type(m).__name__ for m in model.modules()}
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return "has no convolution layers"
    if any(_ATTENTION.search(kind) for kind in kinds):
        return "is a transformer (it has attention layers)"
    if not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules()):
        activations = sorted(kind for kind in kinds if _ACTIVATION.search(kind))
        used = f" (it uses {', '.join(activations)})" if activations else ""
        return f"has no nn.ReLU layers{used}"
    return None


def check_algorithm_supported(model: nn.Module, algorithm: str, model_name: str) -> None:
    """Refuses guided methods on models where they mean nothing (ViTs, GELU/SiLU networks),
    and XRAI when its optional package is missing.

    Raises:
        ConfigError: naming the model, the reason and the algorithms that do work.
    """
    if algorithm == "xrai" and importlib.util.find_spec("saliency") is None:
        raise ConfigError(
            "xai_algorithm='xrai' needs the optional package 'saliency', which is not installed: "
            "pip install 'visionauto[xai]', or use xai_algorithm='integrated_gradients', "
            "'guided_gradcam' or 'guided_backprop'."
        )
    if not algorithm.startswith("guided_"):
        return
    problem = guided_support_problem(model)
    if problem is not None:
        raise ConfigError(
            f"xai_algorithm={algorithm!r} does not work for model {model_name!r}: guided methods "
            f"override the gradients of nn.ReLU layers of a CNN, and this model {problem}. Use "
            "xai_algorithm='xrai' or 'integrated_gradients', which work for every model."
        )


def find_gradcam_layer(model: nn.Module, image_size: int, device: torch.device) -> str:
    """Name of the module whose output GradCAM weighs: the last spatial feature map.

    One probe forward pass records every module's output in completion order; the last 4-D
    output that is not a global pooling (e.g. timm ResNet's ``layer4``, EfficientNet's ``bn2``,
    the last ReLU of a plain ``nn.Sequential`` CNN) is the final convolutional feature map.

    Raises:
        ConfigError: the model produces no 4-D feature map (then guided GradCAM cannot apply).
    """
    seen: list[tuple[str, tuple[int, ...], bool]] = []

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                is_pool = bool(_POOL.search(type(module).__name__))
                seen.append((name, tuple(output.shape), is_pool))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    maps = [(name, shape) for name, shape, is_pool in seen if len(shape) == 4]
    spatial = [name for name, shape in maps if shape[2] * shape[3] > 1]
    if spatial:
        return spatial[-1]
    unpooled = [name for name, shape, is_pool in seen if len(shape) == 4 and not is_pool]
    if unpooled:  # the input is so small that the last map is 1x1: still the right layer
        return unpooled[-1]
    raise ConfigError(
        "xai_algorithm='guided_gradcam' needs a convolutional feature map (a 4-D layer output) "
        "and this model produces none: use xai_algorithm='xrai' or 'integrated_gradients'."
    )


def _leaf(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` that requires grad (captum warns when it has to switch that on itself)."""
    return x.detach().clone().requires_grad_(True)


def pixel_baselines(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Black and white images of ``x``'s shape in the model's normalized space (XRAI's baselines)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    black = ((0.0 - mean) / std).expand_as(x).contiguous()
    white = ((1.0 - mean) / std).expand_as(x).contiguous()
    return black, white


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    n_steps: int,
    method: str,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrated gradients from ``baseline`` (default: zeros, i.e. the mean image) to ``x``.

    Args:
        model: ``f32[B, 3, H, W] -> logits f32[B, C]``.
        x: f32[1, 3, H, W], normalized.
        target: the class index explained.
        n_steps: points on the path, >= 2.
        method: captum's approximation (``riemann_middle``, ``gausslegendre``, ...).
        baseline: f32[1, 3, H, W] or None.

    Returns:
        f32[3, H, W] on the CPU.
    """
    from captum.attr import IntegratedGradients

    with torch.enable_grad():
        attribution = IntegratedGradients(model).attribute(
            _leaf(x),
            baselines=baseline,
            target=target,
            n_steps=n_steps,
            method=method,
            internal_batch_size=IG_INTERNAL_BATCH_SIZE,
        )
    return attribution[0].detach().float().cpu()


def guided_backprop(guided_model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Guided backprop on a :func:`make_guided_copy` model: x f32[1,3,H,W] -> f32[3, H, W]."""
    from captum.attr import GuidedBackprop

    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attribution = GuidedBackprop(guided_model).attribute(_leaf(x), target=target)
    return attribution[0].detach().float().cpu()


def guided_gradcam(
    guided_model: nn.Module, layer_name: str, x: torch.Tensor, target: int
) -> torch.Tensor:
    """Guided backprop times the non-negative GradCAM map of ``layer_name`` (bilinear upsampling).

    Args:
        guided_model: a :func:`make_guided_copy` model.
        layer_name: from :func:`find_gradcam_layer`.
        x: f32[1, 3, H, W], normalized.
        target: the class index explained.

    Returns:
        f32[3, H, W] on the CPU.
    """
    from captum.attr import GuidedGradCam

    layer = guided_model.get_submodule(layer_name)
    with torch.enable_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attribution = GuidedGradCam(guided_model, layer).attribute(
            _leaf(x), target=target, interpolate_mode="bilinear"
        )
    return attribution[0].detach().float().cpu()


def xrai(
    model: nn.Module,
    x: torch.Tensor,
    pixels: np.ndarray,
    target: int,
    *,
    n_steps: int,
    method: str,
    fast: bool,
) -> torch.Tensor:
    """XRAI: captum IG from black and white baselines, then ``saliency``'s region ranking.

    The segmentation runs on ``pixels`` (the cropped image the model saw, in [0, 1]); the IG
    of the two baselines is averaged as in the XRAI paper and ``saliency``'s own IG.

    Args:
        model: ``f32[B, 3, H, W] -> logits f32[B, C]``.
        x: f32[1, 3, H, W], normalized.
        pixels: f32[H, W, 3] in [0, 1].
        target: the class index explained.
        n_steps: IG steps per baseline.
        method: captum's IG approximation.
        fast: ``saliency``'s ``algorithm="fast"`` instead of ``"full"``.

    Returns:
        f32[3, H, W] on the CPU: the 2-D region map repeated over the channels.
    """
    from saliency.core import XRAI, XRAIParameters

    runs = [
        integrated_gradients(model, x, target, n_steps=n_steps, method=method, baseline=b)
        for b in pixel_baselines(x)
    ]
    base = torch.stack(runs).mean(0).permute(1, 2, 0).numpy()  # [H, W, 3] like ``pixels``

    def no_model_calls(*args: object, **kwargs: object) -> dict:
        raise AssertionError("XRAI got a base attribution and must not call the model")

    parameters = XRAIParameters(algorithm="fast" if fast else "full")
    # A flat image (all one colour) divides by zero in the segmentation's value scaling.
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mask = XRAI().GetMask(
            pixels.astype(np.float64),
            no_model_calls,
            base_attribution=base.astype(np.float64),
            extra_parameters=parameters,
        )
    region_map = torch.from_numpy(np.nan_to_num(np.asarray(mask, dtype=np.float32)))
    return region_map.unsqueeze(0).expand(3, -1, -1).contiguous()
