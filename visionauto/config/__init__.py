"""Config schemas, loading and cross-field validation.

Library code receives the dataclasses of :mod:`visionauto.config.schema`, never a ``DictConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from visionauto.config.schema import RootConfig
from visionauto.errors import ConfigError


def to_objects(cfg: DictConfig | dict[str, Any]) -> RootConfig:
    """Turn a composed config into :class:`RootConfig`, running every schema's range checks.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a value out of range.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RootConfig), cfg)
        if "hydra" in merged:  # a config written by Hydra's job, read back for a trial
            merged.pop("hydra")
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"Invalid configuration: {_short(err)}") from None
    assert isinstance(obj, RootConfig)
    return obj


def load_config(path: str | Path) -> RootConfig:
    """Read a resolved ``config.yaml`` (as written into every run folder) without Hydra."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"No config file at {path}: pass a run folder holding config.yaml.")
    return to_objects(OmegaConf.load(path))


def save_config(cfg: RootConfig, path: Path) -> None:
    """Write ``cfg`` as plain YAML (no interpolations), readable by :func:`load_config`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def _short(err: Exception) -> str:
    # OmegaConf messages carry a multi-line "full_key/object_type" trailer; keep the first lines.
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return " ".join(lines[:2])
