"""Explanation benchmark: seconds per explanation per algorithm (prints numbers).

Model: ``efficientnet_lite0`` with its offline ImageNet weights (5-class head), Azure's default
inference settings (resize 256, center crop 224) and explanation parameters (``n_steps`` 50,
``xrai_fast`` true, ``riemann_middle``), on scikit-image's ``chelsea`` photo. Each number is the
median over ``--rounds`` rounds; the algorithms are interleaved within a round, so a burst of load
from other processes hits every algorithm alike. One warm-up round (imports, first-pass set-up)
is not counted. The whole ``explain()`` call is timed: preprocessing, the prediction, the
attribution and the PNG of the 2x2 figure.

Azure's guidance (spec §4.3): quality XRAI > guided GradCAM > IG > guided backprop, and speed in
the reverse order; the script checks that the timings follow that order.

Usage: python scripts/bench_explain.py [--rounds 3] [--size 224] [--n-steps 50] [--full-xrai]
       [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# Fastest first: the reverse of Azure's quality order.
SPEED_ORDER = ("guided_backprop", "guided_gradcam", "integrated_gradients", "xrai")


def build_predictor(size: int):  # noqa: ANN201 - a Predictor
    from visionauto.models.registry import create_model
    from visionauto.packaging.predictor import Predictor
    from visionauto.packaging.settings import build_settings

    model = create_model("classification", "efficientnet_lite0", num_classes=5, pretrained=True)
    settings = build_settings(
        task="classification",
        model_name="efficientnet_lite0",
        class_names=["a", "b", "c", "d", "e"],
        inference={"valid_resize_size": round(size * 256 / 224), "valid_crop_size": size},
    )
    return Predictor(model, settings, device="cpu")


def time_once(predictor, image, algorithm: str, n_steps: int, fast: bool) -> float:  # noqa: ANN001
    from visionauto.explain import explain

    start = time.perf_counter()
    result = explain(predictor, [image], algorithm=algorithm, n_steps=n_steps, xrai_fast=fast)
    elapsed = time.perf_counter() - start
    assert isinstance(result[0]["visualizations"], str)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="valid_crop_size")
    parser.add_argument("--n-steps", type=int, default=50)
    parser.add_argument("--full-xrai", action="store_true", help="also time xrai_fast=false")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a machine shared with other jobs, OpenMP threads "
        "that wait for each other made every pass 10-30x slower and the numbers random)",
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.chelsea())
    predictor = build_predictor(args.size)
    runs = [(name, True) for name in SPEED_ORDER]
    if args.full_xrai:
        runs.append(("xrai", False))
    load_before = os.getloadavg()
    for name, fast in runs:  # warm-up
        time_once(predictor, image, name, args.n_steps, fast)
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, fast in runs:
            key = name if fast else "xrai (full)"
            times.setdefault(key, []).append(time_once(predictor, image, name, args.n_steps, fast))
    load_after = os.getloadavg()

    medians = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"efficientnet_lite0, {args.size} px crop, n_steps={args.n_steps}, CPU, "
        f"torch threads={torch.get_num_threads()}, {os.cpu_count()} cores, "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} (shared machine)"
    )
    for key, values in times.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {key:22s} median {medians[key]:7.2f} s per explanation  (rounds: {spread})")
    ordered = all(
        medians[a] <= medians[b] for a, b in zip(SPEED_ORDER, SPEED_ORDER[1:], strict=False)
    )
    print(f"speed order {' < '.join(SPEED_ORDER)}: {'holds' if ordered else 'does NOT hold'}")
    print(json.dumps({"seconds_per_explanation": medians, "speed_order_holds": ordered}))


if __name__ == "__main__":
    main()
