"""Instance segmentation benchmark: mask mAP, seconds per epoch and peak memory, through the CLI.

Synthetic set: overlapping rings, holed squares and discs of three colours on a noisy background;
later shapes occlude earlier ones, and the visible masks (holes included) become Azure polygon
JSONL through our own ``mask_to_polygons``, so the whole data path is exercised. A smoke run on
the labelme examples in ../shared/data (converted from their COCO file) checks real polygons.

    python scripts/bench_segmentation.py                 # synthetic, 10 minute budget
    python scripts/bench_segmentation.py --labelme --minutes 3
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
COLORS = {"ring": (220, 60, 40), "holed_square": (40, 170, 70), "disc": (50, 90, 220)}


def _shape_mask(kind: str, size: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "disc":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if kind == "ring":
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        return (d2 <= r * r) & (d2 >= (r // 2) ** 2)
    outer = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
    return outer & ~((abs(xx - cx) <= r // 2) & (abs(yy - cy) <= r // 2))


def write_synthetic(out: Path, n_images: int, size: int, seed: int) -> Path:
    """PNG images + Azure polygon JSONL of overlapping shapes with holes; returns the JSONL."""
    from visionauto.data.polygons import mask_to_polygons, polygon_bbox

    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(n_images):
        image = rng.integers(90, 140, size=(size, size, 3), dtype=np.uint8)
        masks: list[tuple[str, np.ndarray]] = []
        for _ in range(int(rng.integers(2, 5))):
            kind = str(rng.choice(list(COLORS)))
            r = int(rng.integers(size // 10, size // 5))
            cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
            mask = _shape_mask(kind, size, cx, cy, r)
            masks = [(k, m & ~mask) for k, m in masks]  # the new shape occludes older ones
            masks.append((kind, mask))
            image[mask] = COLORS[kind]
        objects = []
        for kind, mask in masks:
            if mask.sum() < 20:
                continue
            polygon = mask_to_polygons(mask, max_points=100)
            if not polygon:
                continue
            x0, y0, x1, y1 = polygon_bbox(polygon)
            objects.append({"label": kind, "topX": x0, "topY": y0, "bottomX": x1, "bottomY": y1,
                            "isCrowd": 0, "polygon": polygon})
        name = f"images/{index:04d}.png"
        Image.fromarray(image).save(out / name)
        lines.append({"image_url": name, "label": objects,
                      "image_details": {"format": "png", "width": size, "height": size}})
    path = out / "annotations.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def labelme_jsonl(out: Path, repeats: int = 4) -> tuple[Path, Path]:
    """(train, validation) JSONL of the 3 labelme photos. A smoke run: the 3 photos are fewer
    than the 10 training images a job needs, so training repeats each ``repeats`` times and
    validation scores the originals (it checks real polygons go through, not generalization)."""
    root = DATA / "labelme_voc2011_examples" / "instance_segmentation" / "data_dataset_coco"
    coco, images = root / "annotations.json", root / "JPEGImages"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "labelme.jsonl"
    subprocess.run([sys.executable, "-m", "visionauto.data.convert", "coco", "--annotations",
                    str(coco), "--images", str(images), "--output", str(path)], check=True)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    train = out / "labelme_train.jsonl"
    train.write_text("".join(line + "\n" for line in lines * repeats))
    return train, path


def _tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (loader workers), from /proc."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines()
                              if line.startswith("VmRSS:")))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue  # the process ended meanwhile
    return total / 1024


def run_sampling_memory(cmd: list[str], every: float = 5.0) -> list[tuple[float, float]]:
    """Run ``cmd``; every ``every`` seconds record (seconds since start, MiB of its process tree).
    Raises CalledProcessError as subprocess.run(check=True) would."""
    start, samples = time.perf_counter(), []
    proc = subprocess.Popen(cmd)
    while proc.poll() is None:
        samples.append((time.perf_counter() - start, _tree_rss_mib(proc.pid)))
        time.sleep(every)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="maskrcnn_efficientnet_lite0_fpn")
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--labelme", action="store_true", help="smoke run on the labelme examples")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_segmentation")
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. trainer.precision=bf16-mixed")
    args = parser.parse_args()

    work = args.out / ("labelme" if args.labelme else f"synthetic_{args.size}")
    if args.labelme:
        data, validation = labelme_jsonl(work)
        sources = [f"data.train={data}", f"data.validation={validation}"]
    else:
        sources = [f"data.train={write_synthetic(work, args.images, args.size, 0)}"]
    run_dir = work / "run"
    cmd = [sys.executable, "-m", "visionauto", "task=instance_segmentation",
           f"model={args.model}", *sources, f"training.number_of_epochs={args.epochs}",
           f"training.min_size={args.size}", f"training.max_size={args.size}",
           "training.training_batch_size=4", "training.validation_batch_size=4",
           "training.validation_metric_type=coco_voc", f"trainer.max_time=00:00:{args.minutes:02d}:00",
           "trainer.enable_progress_bar=false", "tracking.enabled=false", f"hydra.run.dir={run_dir}",
           # A fixed budget: train it out (noisy validation on few images can stop a run early).
           "training.early_stopping=false", *args.extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    samples = run_sampling_memory(cmd)
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    metrics = json.loads((run_dir / "metrics.json").read_text())
    m = metrics["metrics"]
    print(f"\n{'data':10} {'model':34} {'epochs':>6} {'mask mAP@0.5':>12} {'segm mAP':>9} "
          f"{'s/epoch':>8} {'peak MiB':>9} {'wall s':>7}")
    print(f"{work.name:10} {args.model:34} {metrics['epochs_run']:>6} "
          f"{m.get('mean_average_precision', -1):>12.4f} {m.get('coco_map', -1):>9.4f} "
          f"{m.get('train_epoch_duration_seconds_avg', 0):>8.1f} {peak_mib:>9.0f} {wall:>7.0f}")
    # Memory that grows with the epochs would show here (masks kept per image, for instance).
    samples = [(t, mib) for t, mib in samples if mib > 10]  # the first sample: a bare fork
    step = max(1, len(samples) // 10)
    print("memory of the training processes, MiB: " + ", ".join(
        f"{t:.0f}s {mib:.0f}" for t, mib in samples[::step]))


if __name__ == "__main__":
    main()
