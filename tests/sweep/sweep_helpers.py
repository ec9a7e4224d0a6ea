"""Helpers of the sweep integration tests: tiny data and the sweep command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.integration.conftest import TINY, run_cli


def make_data(root: Path, n_images: int = 24) -> Path:
    """A small synthetic classification set (64 px PNGs + JSONL); returns the JSONL path."""
    from visionauto.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        root / "data", "classification", n_images=n_images, image_size=64, seed=1
    )


def sweep(data: Path, sweep_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m visionauto ... -m`` with the tiny model, into ``sweep_dir``."""
    return run_cli(
        "task=classification",
        f"data.train={data}",
        *TINY,
        f"output_root={sweep_dir.parent}",
        f"hydra.sweep.dir={sweep_dir}",
        *args,
        "-m",
    )
