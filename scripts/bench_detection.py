"""Detection benchmark on real photos: accuracy, training speed and inference latency.

Fridge objects (128 photos, 4 classes; Pascal VOC rebuilt from the FairMOT labels) with a fixed
split: the first 100 images by name train, the last 28 validate. BCCD blood cells (Pascal VOC)
with its own train/val split files; per-class AP is printed. Every model is trained through the
CLI (``python -m visionauto task=detection ...``) within a wall-clock budget, so the numbers are
what a user gets. Prints one table row per run.

    python scripts/bench_detection.py                      # fridge, fasterrcnn_efficientnet_lite0_fpn
    python scripts/bench_detection.py --model yolov5 --epochs 85 training.model_size=small \
        trainer.precision=bf16-mixed                       # bf16: CPUs with AVX512-BF16 / AMX
    python scripts/bench_detection.py --model yolov5_efficientnet_lite0 --epochs 55 \
        training.model_size=small trainer.precision=bf16-mixed   # ImageNet backbone, offline
    python scripts/bench_detection.py --dataset bccd --minutes 10
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def convert_voc(annotations: Path, images: Path, output: Path) -> list[dict]:
    """Pascal VOC -> Azure JSONL through our converter CLI; returns the JSON lines."""
    subprocess.run([sys.executable, "-m", "visionauto.data.convert", "voc", "--annotations",
                    str(annotations), "--images", str(images), "--output", str(output)],
                   check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in output.read_text().splitlines() if line.strip()]


def write_jsonl(lines: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def stem(line: dict) -> str:
    return Path(line["image_url"]).stem


def fridge_split(work: Path) -> tuple[Path, Path]:
    root = DATA / "odFridgeObjects_FairMOTformat"
    lines = convert_voc(root / "annotations_voc_reconstructed", root / "images", work / "all.jsonl")
    lines.sort(key=stem)
    return write_jsonl(lines[:100], work / "train.jsonl"), write_jsonl(lines[100:], work / "val.jsonl")


def bccd_split(work: Path) -> tuple[Path, Path]:
    root = DATA / "BCCD"
    lines = convert_voc(root / "Annotations", root / "JPEGImages", work / "all.jsonl")
    sets = {name: set((root / "ImageSets" / "Main" / f"{name}.txt").read_text().split())
            for name in ("train", "val")}
    train = [line for line in lines if stem(line) in sets["train"]]
    val = [line for line in lines if stem(line) in sets["val"]]
    return write_jsonl(train, work / "train.jsonl"), write_jsonl(val, work / "val.jsonl")


def train(args: argparse.Namespace, train_path: Path, val_path: Path, run_dir: Path) -> dict:
    budget = f"00:00:{args.minutes:02d}:00"
    size = [f"training.min_size={args.size}", f"training.max_size={args.size}",
            f"training.image_size={args.size}"]
    cmd = [sys.executable, "-m", "visionauto", "task=detection", f"model={args.model}",
           f"data.train={train_path}", f"data.validation={val_path}",
           f"training.number_of_epochs={args.epochs}", "training.validation_metric_type=coco_voc",
           f"trainer.max_time={budget}", "trainer.enable_progress_bar=false",
           "tracking.enabled=false", f"hydra.run.dir={run_dir}", *size,
           # A fixed budget: train it out (a from-scratch yolov5 swings on 28 validation images,
           # and Azure's patience of 5 evaluations stops it half-way).
           "training.early_stopping=false", *args.extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["wall_seconds"] = time.perf_counter() - start
    # Largest resident set of the training process or one of its loader workers (KiB on Linux).
    metrics["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return metrics


def inference_ms(run_dir: Path, val_path: Path, repeats: int = 2) -> float:
    """Milliseconds per image of the packaged model, batch 1, after one warm-up image."""
    from visionauto.packaging.predictor import load_predictor

    predictor = load_predictor(run_dir)
    images = [(val_path.parent / json.loads(line)["image_url"]).read_bytes()
              for line in val_path.read_text().splitlines() if line.strip()]
    predictor.predict(images[:1], batch_size=1)
    start = time.perf_counter()
    for _ in range(repeats):
        predictor.predict(images, batch_size=1)
    return 1000 * (time.perf_counter() - start) / (repeats * len(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("fridge", "bccd"), default="fridge")
    parser.add_argument("--model", default="fasterrcnn_efficientnet_lite0_fpn")
    parser.add_argument("--size", type=int, default=320, help="min_size = max_size = image_size")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--minutes", type=int, default=10, help="training time budget")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_detection")
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. training.learning_rate=0.01")
    args = parser.parse_args()

    # One folder per configuration: the override values name it (small and nano runs both stay).
    tags = "".join(f"_{value.split('=')[-1]}" for value in args.extra)
    work = args.out / f"{args.dataset}_{args.model}_{args.size}{tags}"
    work.mkdir(parents=True, exist_ok=True)
    split = fridge_split if args.dataset == "fridge" else bccd_split
    train_path, val_path = split(work)
    metrics = train(args, train_path, val_path, work / "run")
    m = metrics["metrics"]
    ms = inference_ms(work / "run", val_path)
    print(f"\n{'dataset':8} {'model':36} {'size':>4} {'epochs':>6} {'mAP@0.5':>8} "
          f"{'mAP@.5:.95':>10} {'train img/s':>11} {'train s':>8} {'infer ms/img':>12} "
          f"{'peak MiB':>8}")
    print(f"{args.dataset:8} {args.model:36} {args.size:>4} {metrics['epochs_run']:>6} "
          f"{m.get('mean_average_precision', -1):>8.4f} {m.get('coco_map', -1):>10.4f} "
          f"{m.get('train_images_per_second', 0):>11.2f} {metrics['train_seconds']:>8.1f} "
          f"{ms:>12.1f} {metrics['peak_rss_mib']:>8.0f}")
    per_label = work / "run" / "per_label_metrics.json"
    if per_label.is_file():
        print("\nper class AP@0.5:")
        for name, values in json.loads(per_label.read_text()).items():
            print(f"  {name:16} {values.get('average_precision', -1):.4f}")


if __name__ == "__main__":
    main()
