"""Register the schemas with Hydra's ConfigStore (the only Hydra-aware module of ``config/``)."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from visionauto.config.schema import RootConfig


def register_configs() -> None:
    """Make ``visionauto_schema`` available to ``conf/config.yaml``'s defaults list.

    The primary config extends the typed ``RootConfig``; every group file merges into a typed node,
    so an unknown key (``training.learnin_rate=...``) fails at compose time.
    """
    ConfigStore.instance().store(name="visionauto_schema", node=RootConfig)
