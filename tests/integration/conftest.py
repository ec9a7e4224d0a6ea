from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Small and fast: a tiny timm model from scratch at 64 px on synthetic shapes.
TINY = [
    "model=timm", "model.name=test_resnet", "model.pretrained=false",
    "training.number_of_epochs=2", "training.training_batch_size=8",
    "training.validation_batch_size=16", "training.training_crop_size=64",
    "training.validation_resize_size=72", "training.validation_crop_size=64",
    "training.number_of_workers=0", "trainer.enable_progress_bar=false",
]


def run_cli(*args: str, module: str = "visionauto", cwd: Path | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def synthetic_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from visionauto.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return {task: make_synthetic_dataset(root / task, task, n_images=30, image_size=64, seed=1)
            for task in ("classification", "multilabel")}
