"""Incremental training: warm-start a model from an earlier run (``training.checkpoint``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from visionauto.errors import CheckpointError


@dataclass
class WarmStart:
    """Weights of an earlier model and what it was trained for."""

    state_dict: dict[str, torch.Tensor]
    model_name: str
    class_names: list[str]
    source: str


def load_warm_start(ref: str | Path) -> WarmStart:
    """Read a run folder, a sweep folder, a ``model/`` folder or a Lightning ``.ckpt`` file.

    Raises:
        CheckpointError: nothing usable at ``ref``.
    """
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        return _from_lightning_ckpt(path)
    for model_dir in (path, path / "model", path / "best" / "model"):
        if (model_dir / "settings.json").is_file():
            return _from_model_folder(model_dir)
    if (path / "checkpoints" / "best.ckpt").is_file():
        return _from_lightning_ckpt(path / "checkpoints" / "best.ckpt")
    raise CheckpointError(
        f"training.checkpoint={ref}: no model found. Pass a run folder (holding model/), a sweep "
        "folder (holding best/model/), a model folder (holding settings.json) or a .ckpt file."
    )


def apply_warm_start(model: torch.nn.Module, warm: WarmStart, *, model_name: str,
                     class_names: list[str], new_head: bool) -> list[str]:
    """Load ``warm`` into ``model``; returns the keys left at their fresh initialisation.

    Raises:
        CheckpointError: another architecture, or another class set without ``new_head``.
    """
    if warm.model_name != model_name:
        raise CheckpointError(
            f"training.checkpoint={warm.source} holds a '{warm.model_name}' model but this job "
            f"trains model={model_name}. Use model={warm.model_name}, or another checkpoint."
        )
    if warm.class_names != list(class_names) and not new_head:
        missing = sorted(set(class_names) - set(warm.class_names))
        extra = sorted(set(warm.class_names) - set(class_names))
        raise CheckpointError(
            f"training.checkpoint={warm.source} was trained on classes {warm.class_names}, this "
            f"data has {list(class_names)} (new: {missing or 'none'}, gone: {extra or 'none'}; "
            "order matters too). Set training.checkpoint_new_head=true to keep the backbone and "
            "train a new classification head."
        )
    own = model.state_dict()
    usable = {k: v for k, v in warm.state_dict.items() if k in own and own[k].shape == v.shape}
    if warm.class_names != list(class_names):
        # A new head: drop the old head even where shapes happen to agree (same class count).
        head_keys = _head_keys(model)
        usable = {k: v for k, v in usable.items() if k not in head_keys}
    model.load_state_dict(usable, strict=False)
    fresh = sorted(set(own) - set(usable))
    if not new_head and fresh:
        raise CheckpointError(f"training.checkpoint={warm.source} does not fit model "
                              f"{model_name}: {len(fresh)} tensors missing, e.g. {fresh[:3]}.")
    return fresh


def _head_keys(model: torch.nn.Module) -> set[str]:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if head is None:
        return set()
    ids = {id(p) for p in head.parameters()}
    return {k for k, p in model.named_parameters() if id(p) in ids}


def _from_model_folder(model_dir: Path) -> WarmStart:
    settings = json.loads((model_dir / "settings.json").read_text())
    candidates = sorted(model_dir.rglob("weights.pt"))
    if not candidates:
        raise CheckpointError(f"{model_dir} has settings.json but no weights.pt.")
    state = torch.load(candidates[0], map_location="cpu", weights_only=True)
    return WarmStart(state, settings["model_name"], list(settings["class_names"]), str(model_dir))


def _from_lightning_ckpt(path: Path) -> WarmStart:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a corrupt or foreign file: tell the user, not a traceback
        raise CheckpointError(f"training.checkpoint={path} cannot be read: {err}") from None
    hparams = ckpt.get("hyper_parameters", {})
    if "model_name" not in hparams or "class_names" not in hparams:
        raise CheckpointError(f"training.checkpoint={path} is not a visionauto checkpoint "
                              "(no model_name/class_names in its hyper_parameters).")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.")}
    return WarmStart(state, hparams["model_name"], list(hparams["class_names"]), str(path))
