"""``make demo``: generate a small labeled image set and run a real AutoML sweep on it.

Writes synthetic PNGs + Azure JSONL for all four tasks under ``demo_data/``, then runs a small
AutoMode sweep (4 trials, 2 at a time) through the same CLI a user runs:
``python -m visionauto ... -m limits.max_trials=4 limits.max_concurrent_trials=2``. The sweep
is offline (``HF_HUB_OFFLINE=1``), so AutoMode's portfolio uses ``efficientnet_lite0``, whose
ImageNet weights ship with the install, and tunes its recipe (learning rate, optimizer, frozen
layers). Small 128 px crops and 4 epochs keep it to a few minutes on 2 CPU cores. At the end it
prints the leaderboard and where the best model, metrics and plots are.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from visionauto.data.synthetic import make_synthetic_dataset

TASKS = ("classification", "multilabel", "detection", "instance_segmentation")


def main() -> int:
    root = Path("demo_data").resolve()
    jsonl = {}
    for task in TASKS:
        jsonl[task] = make_synthetic_dataset(root / task, task, n_images=60, image_size=96, seed=0)
        print(f"[demo] {task:<22} data: {jsonl[task]}")
    sweep_dir = Path("outputs") / "demo" / time.strftime("sweep_%Y-%m-%d_%H-%M-%S")
    cmd = [
        sys.executable,
        "-m",
        "visionauto",
        "task=classification",
        f"data.train={jsonl['classification']}",
        "limits.max_trials=4",
        "limits.max_concurrent_trials=2",
        "limits.timeout_minutes=30",
        "training.number_of_epochs=4",
        "training.training_batch_size=16",
        "training.validation_batch_size=32",
        "training.training_crop_size=128",
        "training.validation_resize_size=144",
        "training.validation_crop_size=128",
        "training.early_stopping=false",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={sweep_dir}",
        "-m",
    ]
    print("[demo] running an AutoMode sweep:", " ".join(cmd[1:]), flush=True)
    code = subprocess.call(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if code == 0:
        print(
            f"\n[demo] done. Score new images with the model in "
            f"{sweep_dir.resolve() / 'best' / 'model'}; browse runs with: mlflow ui "
            f"--backend-store-uri sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
