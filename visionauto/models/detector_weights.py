"""Initial weights of the torchvision detectors: COCO and ImageNet files of torchvision, timm
ImageNet backbones, and local files.

``weights_path`` may hold either

- a whole detector: a state dict of the same torchvision model (e.g. torchvision's
  ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``, or a visionauto/Lightning checkpoint, whose
  ``model.``-style prefixes are stripped). Class-specific head tensors of another shape (another
  number of classes) keep their new init; every other tensor must fit.
- a backbone: a state dict of the classifier the backbone comes from (torchvision's
  ``resnet50-0676ba61.pth``, a timm checkpoint, a visionauto classification model). Its classifier
  head is ignored; the FPN and detection heads keep their new init.

Which of the two is decided by which set of keys the file's keys match best.

Downloads go through the torch hub cache (``$TORCH_HOME/hub/checkpoints``): a file there is used
without the network. Otherwise the host is probed with a 3 s connect first, so that an offline
machine gets a clear error at once instead of a hanging download.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from visionauto.errors import ModelError
from visionauto.models.weights import (
    _cached_timm_weights,
    _strip_prefix,
    create_pretrained_timm,
    hub_reachable,
    load_efficientnet_lite0_imagenet,
    read_state_dict,
)

_PROBE_TIMEOUT_S = 3.0
FIX_HINT = (
    "Fix: set model.pretrained=false to train from scratch, or model.weights_path=<local .pth> "
    "(a state dict of this detector or of its backbone)"
)


def _reachable(url: str) -> bool:
    """True when a connection to the download host (or the HTTPS proxy) opens within 3 s."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy if proxy and "://" in proxy else f"http://{proxy}") if proxy else None
    if target is None:
        target = urlparse(url)
    port = target.port or (3128 if proxy else 443)
    try:
        with socket.create_connection((target.hostname or "", port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def fetch_torchvision_state(url: str, *, what: str, model_label: str) -> dict[str, torch.Tensor]:
    """A torchvision weights file: from the torch hub cache, else downloaded.

    Args:
        url: the file's URL (``WeightsEnum.url``).
        what: what the file holds, for messages (``"COCO"``, ``"ImageNet backbone"``).
        model_label: the model, for messages.

    Raises:
        ModelError: the file is not cached and cannot be downloaded (within a few seconds offline).
    """
    filename = Path(urlparse(url).path).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return read_state_dict(cached)
    where = f"Pretrained {what} weights for {model_label} ({url})"
    if not _reachable(url):
        raise ModelError(
            f"{where} cannot be downloaded: no internet connection. {FIX_HINT}, or copy "
            f"{filename} into {cached.parent}, or use a backbone whose weights ship with the "
            "install, e.g. model.name=fasterrcnn_efficientnet_lite0_fpn."
        )
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash a RuntimeError
        raise ModelError(f"{where} cannot be downloaded: {err}. {FIX_HINT}.") from err


def _unflattened(key: str) -> str | None:
    """timm's flattened feature extractors name ``stages.0.x`` as ``stages_0.x``: the original."""
    first, _, rest = key.partition(".")
    if "_" not in first or not rest:
        return None
    parent, child = first.rsplit("_", 1)
    return f"{parent}.{child}.{rest}"


def _backbone_aliases(body: nn.Module) -> dict[str, str]:
    """File key → ``body`` key, for the names a classifier checkpoint gives the body's tensors."""
    keys = list(body.state_dict())
    aliases = {k: k for k in keys}
    for key in keys:
        original = _unflattened(key)
        if original is not None and original not in aliases:
            aliases[original] = key
    return aliases


def _problems(items: list[tuple[str, list[str]]]) -> str:
    return "; ".join(
        f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})" for what, keys in items if keys
    )


def load_backbone_state(
    body: nn.Module, state: dict[str, torch.Tensor], *, source: str, model_label: str
) -> None:
    """Load a classifier's state dict into the backbone ``body``; its head and extras are ignored.

    Raises:
        ModelError: a backbone tensor is missing from the file or has another shape.
    """
    aliases = _backbone_aliases(body)
    state = _strip_prefix(state, set(aliases))
    target = body.state_dict()
    mapped = {aliases[k]: v for k, v in state.items() if k in aliases}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in mapped.items()
        if v.shape != target[k].shape
    ]
    missing = [k for k in target if k not in mapped and not k.endswith("num_batches_tracked")]
    if wrong or missing:
        problems = _problems([("tensors of another shape", wrong), ("tensors missing", missing)])
        raise ModelError(
            f"Weights {source} do not fit the backbone of model {model_label}: {problems}. Fix: "
            "use weights of the same backbone architecture, or another model.name."
        )
    body.load_state_dict(mapped, strict=False)


def load_detector_state(
    net: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    head_prefixes: tuple[str, ...],
    source: str,
    model_label: str,
    new_heads: bool = False,
) -> None:
    """Load a whole-detector state dict (torchvision layout) into ``net``.

    Old torchvision key layouts (e.g. COCO files saved before the v2 heads) are upgraded by the
    modules' own load hooks. Head tensors (``head_prefixes``) of another shape are skipped and keep
    their new init; with ``new_heads`` they are always skipped (COCO heads of other classes).

    Raises:
        ModelError: a non-head tensor has another shape, is missing, or is unexpected.
    """
    target = net.state_dict()
    state = _strip_prefix(state, set(target))
    skipped = [
        k
        for k, v in state.items()
        if k.startswith(head_prefixes)
        and (new_heads or (k in target and v.shape != target[k].shape))
    ]
    state = {k: v for k, v in state.items() if k not in skipped}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    missing: list[str] = []
    unexpected: list[str] = []
    if not wrong:
        try:
            result = net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # a tensor renamed by a legacy-layout hook has another shape
            raise ModelError(
                f"Weights {source} do not fit model {model_label}: {err}. Fix: use weights saved "
                "from the same detector (or of its backbone only), or another model.name."
            ) from err
        missing = [
            k
            for k in result.missing_keys
            if not k.endswith("num_batches_tracked") and not k.startswith(head_prefixes)
        ]
        unexpected = list(result.unexpected_keys)
    if wrong or missing or unexpected:
        problems = _problems(
            [
                ("tensors of another shape", wrong),
                ("tensors missing", missing),
                ("unexpected tensors", unexpected),
            ]
        )
        raise ModelError(
            f"Weights {source} do not fit model {model_label}: {problems}. Fix: use weights saved "
            "from the same detector (or of its backbone only), or another model.name."
        )


def load_weights_file(
    net: nn.Module,
    path: str,
    *,
    head_prefixes: tuple[str, ...],
    model_label: str,
) -> str:
    """Load ``weights_path`` into a torchvision detector ``net`` as a whole detector or a backbone.

    Returns:
        ``"detector"`` or ``"backbone"``: what the file was used as.

    Raises:
        ModelError: unreadable file, or tensors that fit neither the detector nor its backbone.
    """
    state = read_state_dict(path)
    full_keys = set(net.state_dict())
    body = net.backbone.body
    n_full = sum(k in full_keys for k in _strip_prefix(state, full_keys))
    aliases = _backbone_aliases(body)
    n_body = sum(k in aliases for k in _strip_prefix(state, set(aliases)))
    if n_full == 0 and n_body == 0:
        raise ModelError(
            f"Weights {path} do not fit model {model_label}: none of its {len(state)} tensor "
            f"names (e.g. {', '.join(list(state)[:3])}) belongs to this detector or its backbone. "
            "Fix: use a state dict of the same detector or of its backbone classifier."
        )
    if n_full >= n_body:
        load_detector_state(
            net, state, head_prefixes=head_prefixes, source=path, model_label=model_label
        )
        return "detector"
    load_backbone_state(body, state, source=path, model_label=model_label)
    return "backbone"


def timm_imagenet_state(timm_name: str, *, model_label: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of a timm classifier, to initialise a detector backbone.

    ``tf_efficientnet_lite0`` comes from the installed package (offline); other models from timm's
    cache or download.

    Raises:
        ModelError: timm has no weights for the model, or they are not cached and the machine is
            offline (within a few seconds).
    """
    import timm

    if timm_name == "tf_efficientnet_lite0":
        model = timm.create_model(timm_name, pretrained=False)
        load_efficientnet_lite0_imagenet(model)
        return model.state_dict()
    where = f"Pretrained ImageNet weights for the backbone of {model_label} (timm {timm_name})"
    if _cached_timm_weights(timm_name) is None:
        cfg = timm.get_pretrained_cfg(timm_name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
            raise ModelError(f"{where} do not exist in timm. {FIX_HINT}.")
        if not hub_reachable(timm_name):
            raise ModelError(
                f"{where} cannot be downloaded: no internet connection. {FIX_HINT}, or use a "
                "backbone whose weights ship with the install, e.g. "
                "model.name=fasterrcnn_efficientnet_lite0_fpn."
            )
    return create_pretrained_timm(timm_name, model_label=model_label, num_classes=0).state_dict()
