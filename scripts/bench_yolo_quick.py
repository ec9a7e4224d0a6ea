"""Quick YOLO benchmark on the fridge photos: a plain training loop (no Lightning).

Trains ``visionauto.models.yolo`` for a time budget on the first 100 fridge images (sorted by
name), validates on the other 28, and prints train images/s, mAP@0.5 and mAP@0.5:0.95
(torchmetrics) and inference ms/image. Data: ``../shared/data/odFridgeObjects_FairMOTformat``
(VOC XMLs in ``annotations_voc_reconstructed``).

    .venv/bin/python scripts/bench_yolo_quick.py --minutes 10 --model-size small

Default recipe = the CLI's defaults for yolov5 (SGD lr 0.01, momentum 0.9, weight decay 1e-4,
warmup_cosine with 2 warmup epochs), the LR schedule spread over ``--steps`` or, without it, over
the *time* budget (a run always ends at a low LR, whatever the machine's speed). EMA weights are
evaluated. Reference runs (shared, busy 2-core CPU, one thread):

    .venv/bin/python scripts/bench_yolo_quick.py --model-size nano --threads 1 --steps 600
    .venv/bin/python scripts/bench_yolo_quick.py --model-size small --minutes 10
"""

from __future__ import annotations

import argparse
import math
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchmetrics.detection import MeanAveragePrecision

from visionauto.data.detection import DetectionDataset, collate_detection
from visionauto.data.records import ImageRecord
from visionauto.data.yolo_transforms import MosaicDataset, build_yolo_train_transform
from visionauto.models.yolo import (
    anchor_fit_quality,
    box_sizes_at,
    build_yolov5,
    default_anchors,
    fit_anchors,
)
from visionauto.tasks.optim import OptimSettings, build_optimizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "odFridgeObjects_FairMOTformat"
CLASSES = ["can", "carton", "milk_bottle", "water_bottle"]


def load_records(root: Path) -> list[ImageRecord]:
    """One record per VOC XML, labels in Azure's normalized form, sorted by file name."""
    records = []
    for xml in sorted((root / "annotations_voc_reconstructed").glob("*.xml")):
        tree = ET.parse(xml).getroot()
        width = float(tree.findtext("size/width"))
        height = float(tree.findtext("size/height"))
        objects = []
        for obj in tree.iter("object"):
            box = obj.find("bndbox")
            objects.append(
                {
                    "label": obj.findtext("name"),
                    "topX": float(box.findtext("xmin")) / width,
                    "topY": float(box.findtext("ymin")) / height,
                    "bottomX": float(box.findtext("xmax")) / width,
                    "bottomY": float(box.findtext("ymax")) / height,
                    "isCrowd": 0,
                }
            )
        image = root / "images" / tree.findtext("filename")
        records.append(ImageRecord(str(image), objects, f"{xml}:1", int(width), int(height)))
    return records


def choose_anchors(records: list[ImageRecord], img_size: int) -> tuple:
    boxes, sizes = [], []
    for record in records:
        for obj in record.label:
            boxes.append([obj["topX"], obj["topY"], obj["bottomX"], obj["bottomY"]])
            sizes.append([record.width, record.height])
    wh = box_sizes_at(boxes, sizes, img_size)
    anchors = default_anchors(img_size)
    quality = anchor_fit_quality(wh, anchors)
    if quality < 0.98:
        anchors = fit_anchors(wh)
    return anchors, quality, anchor_fit_quality(wh, anchors)


def set_lr(optimizer: torch.optim.Optimizer, step: int, progress: float, args) -> float:
    warm = min(1.0, (step + 1) / args.warmup_steps)
    if args.recipe == "cli":
        # visionauto's warmup_cosine (Azure semantics): linear warmup, then 0.45 cosine cycles.
        cosine = 0.5 * (1 + math.cos(2 * math.pi * 0.45 * min(progress, 1.0)))
        lr = args.lr * (warm if warm < 1 else cosine)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    lr = args.lr * warm * (args.final_lr_ratio + (1 - args.final_lr_ratio) * cosine)
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "momentum" in group:
            group["momentum"] = 0.8 + (args.momentum - 0.8) * warm
    return lr


@torch.no_grad()
def evaluate(model, dataset: DetectionDataset, score_thresh: float) -> dict[str, float]:
    model.eval()
    model.set_inference_settings(box_score_thresh=score_thresh)
    metric = MeanAveragePrecision(iou_type="bbox")
    loader = DataLoader(dataset, batch_size=16, collate_fn=collate_detection)
    for batch in loader:
        preds = model(batch["images"])
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch["targets"]]
        metric.update(preds, targets)
    result = metric.compute()
    model.set_inference_settings(box_score_thresh=0.1)
    return {"map_50": float(result["map_50"]), "map": float(result["map"])}


@torch.no_grad()
def inference_ms(model, dataset: DetectionDataset, count: int = 28) -> float:
    model.eval()
    images = [collate_detection([dataset[i]])["images"][0] for i in range(min(count, len(dataset)))]
    model(images[:1])  # build the fused copy, warm the allocator
    start = time.perf_counter()
    for image in images:
        model([image])
    return (time.perf_counter() - start) / len(images) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument(
        "--steps", type=int, default=0, help="stop after N steps, LR schedule over steps (0: time)"
    )
    parser.add_argument("--model-size", default="small")
    parser.add_argument("--backbone", default="csp")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--img-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.937)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--final-lr-ratio", type=float, default=0.01)
    parser.add_argument(
        "--recipe",
        choices=("cli", "yolo"),
        default="cli",
        help="cli: the CLI's defaults (SGD m=0.9 nesterov, wd 1e-4 on all parameters, 2 warmup "
        "epochs, warmup_cosine 0.45 cycles); yolo: SGD m=0.937, wd 5e-4 without BN/biases, "
        "--warmup-steps, cosine to --final-lr-ratio",
    )
    parser.add_argument("--no-mosaic", action="store_true")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--multi-scale", action="store_true")
    parser.add_argument(
        "--gain-scale",
        type=float,
        nargs=3,
        default=(1.0, 1.0, 1.0),
        metavar=("BOX", "OBJ", "CLS"),
        help="multiply the loss gains (tuning)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--eval-every", type=float, default=0.0, help="minutes; 0 = at the end")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    records = load_records(DATA)
    train_records, val_records = records[:100], records[100:]
    anchors, before, after = choose_anchors(train_records, args.img_size)
    print(f"anchors: default BPR {before:.3f}, used BPR {after:.3f}")

    base = DetectionDataset(train_records, CLASSES, cache_images=True)
    transform = build_yolo_train_transform(args.img_size, augment=not args.no_augment)
    train_set = MosaicDataset(
        base, args.img_size, p=0.0 if args.no_mosaic else 1.0, seed=args.seed, transform=transform
    )
    # No transform: the detector letterboxes internally and answers in the images' own pixels,
    # the frame of the validation targets.
    val_set = DetectionDataset(val_records, CLASSES, cache_images=True)
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_detection,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    model = build_yolov5(
        len(CLASSES),
        model_size=args.model_size,
        img_size=args.img_size,
        multi_scale=args.multi_scale,
        backbone=args.backbone,
        pretrained=args.pretrained,
        anchors=anchors,
    )
    model.loss_fn.box_gain *= args.gain_scale[0]
    model.loss_fn.obj_gain *= args.gain_scale[1]
    model.loss_fn.cls_gain *= args.gain_scale[2]
    groups = model.optimizer_parameter_groups(args.weight_decay)
    if args.recipe == "cli":
        # What the CLI's task builds by default: SGD (momentum 0.9, nesterov, weight decay 1e-4
        # on every parameter), warmup of 2 epochs.
        optimizer = build_optimizer(model.parameters(), OptimSettings(learning_rate=args.lr))
        args.warmup_steps = 2 * len(loader)
    elif args.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=True)
    else:
        optimizer = torch.optim.AdamW(groups, lr=args.lr)
    budget = args.minutes * 60
    cpu_start = time.process_time()
    train_time, seen, step = 0.0, 0, 0
    next_eval = args.eval_every * 60 if args.eval_every > 0 else math.inf
    done = False
    while not done:
        model.train()
        tick = time.perf_counter()
        for batch in loader:
            progress = step / args.steps if args.steps else train_time / budget
            lr = set_lr(optimizer, step, progress, args)
            losses = model(batch["images"], batch["targets"])
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.after_optimizer_step()
            step += 1
            seen += len(batch["images"])
            now = time.perf_counter()
            train_time += now - tick
            tick = now
            if step % 20 == 0:
                parts = " ".join(f"{k}={v.item():.4f}" for k, v in losses.items())
                print(
                    f"step {step} t={train_time:.0f}s lr={lr:.4f} {parts} "
                    f"{seen / train_time:.1f} img/s",
                    flush=True,
                )
            if (args.steps and step >= args.steps) or (not args.steps and train_time >= budget):
                done = True
                break
            if train_time >= next_eval:
                scores = evaluate(model, val_set, 0.1)
                print(f"eval at {train_time:.0f}s: {scores}", flush=True)
                next_eval += args.eval_every * 60
                model.train()
                tick = time.perf_counter()
    cpu = time.process_time() - cpu_start
    print(
        f"train: {seen} images in {train_time:.0f}s = {seen / train_time:.1f} img/s, "
        f"{step} steps, {seen / len(base):.1f} epochs; {seen / cpu:.1f} img per CPU-second "
        "(process time, includes evaluations)"
    )
    for thresh in (0.1, 0.001):
        print(f"val (box_score_thresh={thresh}): {evaluate(model, val_set, thresh)}")
    print(f"inference: {inference_ms(model, val_set):.1f} ms/image (batch 1, {args.img_size} px)")


if __name__ == "__main__":
    main()
