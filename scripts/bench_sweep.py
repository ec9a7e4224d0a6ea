"""Sweep benchmarks (issue 6): what early termination saves, and what async scheduling saves.

1. **Bandit pruning vs none.** The same random-search sweep twice (same seed, so the same
   learning rates in the same order, same trial budget) on the fridge photos (``../shared/data``,
   134 real images, 4 classes; ``--data synthetic`` for generated shapes, which every sensible
   trial solves perfectly), once without early termination and once with Azure's bandit policy.
   Model: ``efficientnet_lite0`` with its offline ImageNet weights at 64 px (``--model
   test_resnet``: a tiny net from scratch). Reports trial-epochs spent, best accuracy and wall
   time. Target: >= 40 % fewer epochs for a best metric within 1 point.
2. **Async vs batch scheduling.** The trial pool runs fake trials of uneven, seeded random
   length (sleeping processes: the scheduling is measured, not training), once asynchronously
   (a slot is refilled the moment it frees) and once in blocking batches (the next batch starts
   when the slowest trial of the batch ends, what Hydra's Optuna sweeper does). Reports the
   slots' idle time as a share of slots x wall time, counted while trials were still waiting to
   start (the part scheduling can save); the tail after the last start is shown separately.
   Target: < 5 % for async.

    python scripts/bench_sweep.py                 # both, about 8-10 minutes on 2 CPU cores
    python scripts/bench_sweep.py --only schedule # the scheduling part only (~1 minute)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FRIDGE = REPO.parent / "shared" / "data" / "fridgeObjects_thumbnails" / "small-150"
MODELS = {
    "efficientnet_lite0": ["model=efficientnet_lite0"],
    "test_resnet": ["model=timm", "model.name=test_resnet", "model.pretrained=false"],
}
SMALL = [
    "training.training_batch_size=16",
    "training.validation_batch_size=32",
    "training.training_crop_size=64",
    "training.validation_resize_size=72",
    "training.validation_crop_size=64",
    "training.number_of_workers=0",
    "training.early_stopping=false",
    "trainer.enable_progress_bar=false",
    "tracking.enabled=false",
]
BANDIT = [
    "sweeper.early_termination.type=bandit",
    "sweeper.early_termination.slack_factor=0.1",
    "sweeper.early_termination.evaluation_interval=1",
    "sweeper.early_termination.delay_evaluation=2",
]


def run_sweep(
    data: Path, sweep_dir: Path, model: str, trials: int, epochs: int, extra: list[str]
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "visionauto",
        "task=classification",
        f"data.train={data}",
        *MODELS[model],
        *SMALL,
        f"training.number_of_epochs={epochs}",
        "training.learning_rate=tag(log, interval(0.0001, 0.5))",
        "sweeper.seed=0",
        f"limits.max_trials={trials}",
        "limits.max_concurrent_trials=2",
        f"output_root={sweep_dir.parent}",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
        "-m",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    complete = board[board["state"] == "complete"]
    return {
        "trials": len(board),
        "pruned": int((board["state"] == "pruned").sum()),
        "epochs": int(board["epochs"].sum()),
        "best": float(complete["accuracy"].max()),
        "wall_s": round(wall, 1),
        "board": board,
    }


def make_data(work: Path, source: str) -> tuple[Path, str]:
    if source == "synthetic":
        from visionauto.data.synthetic import make_synthetic_dataset

        data = make_synthetic_dataset(
            work / "data", "classification", n_images=80, image_size=64, seed=3
        )
        return data, "synthetic shapes, 80 images"
    jsonl = work / "fridge.jsonl"
    convert = [
        sys.executable,
        "-m",
        "visionauto.data.convert",
        "folder",
        "--images",
        str(FRIDGE),
        "--label-from-filename",
        "--output",
        str(jsonl),
    ]
    subprocess.run(convert, check=True, capture_output=True)
    return jsonl, "fridge photos, 134 images"


def bench_pruning(work: Path, source: str, model: str, trials: int, epochs: int) -> dict:
    data, what = make_data(work, source)
    none = run_sweep(data, work / "none", model, trials, epochs, [])
    bandit = run_sweep(data, work / "bandit", model, trials, epochs, BANDIT)
    for name, res in (("no early termination", none), ("bandit", bandit)):
        print(f"\n--- {name} ---")
        cols = ["trial", "state", "learning_rate", "accuracy", "epochs"]
        print(res["board"][cols].sort_values("trial").to_string(index=False))
    saved = 1 - bandit["epochs"] / none["epochs"]
    gap = (none["best"] - bandit["best"]) * 100
    print(
        f"\n(1) {trials} trials x {epochs} epochs, {model} at 64 px, {what}, 2 at a time, "
        "random sampling (seed 0) of the learning rate in [1e-4, 0.5] (log scale)"
    )
    print(
        f"    no early termination: {none['epochs']:3d} trial-epochs, best accuracy "
        f"{none['best']:.4f}, {none['wall_s']:.0f} s"
    )
    print(
        f"    bandit (slack 0.1, interval 1, delay 2): {bandit['epochs']:3d} trial-epochs "
        f"({bandit['pruned']} pruned), best accuracy {bandit['best']:.4f}, "
        f"{bandit['wall_s']:.0f} s"
    )
    print(
        f"    -> {saved:.0%} fewer trial-epochs; best metric {gap:.1f} points lower "
        f"(target: >= 40 % fewer, within 1 point)"
    )
    return {
        "epochs_none": none["epochs"],
        "epochs_bandit": bandit["epochs"],
        "best_none": none["best"],
        "best_bandit": bandit["best"],
        "wall_none_s": none["wall_s"],
        "wall_bandit_s": bandit["wall_s"],
        "epochs_saved": round(saved, 3),
        "best_gap_points": round(gap, 2),
    }


SLEEPER = (
    "import json, pathlib, sys, time; time.sleep(float(sys.argv[2])); "
    "pathlib.Path(sys.argv[1], 'metrics.json').write_text("
    "json.dumps({'primary_metric_value': 0.5}))"
)


def _schedule_once(work: Path, durations: list[float], slots: int, batch: bool) -> dict:
    import optuna

    from visionauto.sweep.runner import SweepLimits, TrialLaunch, TrialPool

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def prepare(number: int, overrides: dict, slot: int, left: float) -> TrialLaunch:
        d = work / ("batch" if batch else "async") / f"trial_{number:03d}"
        d.mkdir(parents=True, exist_ok=True)
        return TrialLaunch(d, [sys.executable, "-c", SLEEPER, str(d), str(durations[number])], {})

    study = optuna.create_study(direction="maximize")
    pool = TrialPool(
        study,
        propose=lambda t: {},
        prepare=prepare,
        limits=SweepLimits(len(durations), slots, 3600.0),
        primary_metric="x",
        batch=batch,
        echo=lambda line: None,
    )
    stats = pool.run()
    wall = stats.ended - stats.started
    last_start = max(start for _, _, start, _ in stats.timeline)
    busy_before = sum(
        min(end, last_start) - start for _, _, start, end in stats.timeline if start < last_start
    )
    span = last_start - stats.started
    idle_before = slots * span - busy_before
    busy = sum(end - start for _, _, start, end in stats.timeline)
    return {
        "wall_s": round(wall, 2),
        "idle_while_waiting": idle_before / (slots * wall),
        "idle_total": (slots * wall - busy) / (slots * wall),
    }


def bench_schedule(work: Path, n_trials: int, slots: int, seed: int) -> dict:
    rnd = random.Random(seed)
    durations = [round(rnd.uniform(0.5, 4.0), 2) for _ in range(n_trials)]
    res = {
        mode: _schedule_once(work, durations, slots, mode == "batch") for mode in ("async", "batch")
    }
    ideal = sum(durations) / slots
    print(
        f"\n(2) {n_trials} fake trials of 0.5-4 s (seed {seed}, {sum(durations):.0f} s of work), "
        f"{slots} slots; ideal wall >= {ideal:.1f} s"
    )
    for mode, r in res.items():
        print(
            f"    {mode:5s}: wall {r['wall_s']:5.1f} s, idle slot time while trials waited "
            f"{r['idle_while_waiting']:6.1%} of slots x wall (incl. the tail: "
            f"{r['idle_total']:.1%})"
        )
    print("    target: async < 5 %")
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("pruning", "schedule"))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--data", choices=("fridge", "synthetic"), default="fridge")
    parser.add_argument("--model", choices=tuple(MODELS), default="efficientnet_lite0")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        work = Path(tmp)
        if args.only in (None, "schedule"):
            results["schedule"] = bench_schedule(work, n_trials=24, slots=4, seed=0)
        if args.only in (None, "pruning"):
            results["pruning"] = bench_pruning(
                work, args.data, args.model, args.trials, args.epochs
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
