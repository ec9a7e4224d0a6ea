"""``make demo``: generate a small labeled image set and run a real AutoML job on it.

Writes synthetic PNGs + Azure JSONL for all four tasks under ``demo_data/``, trains an
``efficientnet_lite0`` classifier (ImageNet weights ship with the install, so no internet is
needed) through the same CLI a user runs, then prints where the model, metrics and plots are.
"""

from __future__ import annotations

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
    run_dir = Path("outputs") / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")
    cmd = [
        sys.executable, "-m", "visionauto", "task=classification",
        f"data.train={jsonl['classification']}", "model=efficientnet_lite0",
        "training.number_of_epochs=6", "training.training_batch_size=16",
        "training.validation_batch_size=32", "training.training_crop_size=128",
        "training.validation_resize_size=144", "training.validation_crop_size=128",
        "training.learning_rate=0.02", "training.early_stopping=false",
        f"hydra.run.dir={run_dir}",
    ]
    print("[demo] running:", " ".join(cmd[1:]), flush=True)
    code = subprocess.call(cmd)
    if code == 0:
        print(f"\n[demo] done. Score new images with the model in {run_dir.resolve() / 'model'}; "
              "browse runs with: mlflow ui --backend-store-uri "
              f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
