"""The synthetic data sets: real files, valid labels, exact boxes, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionauto.data.jsonl import load_records
from visionauto.data.synthetic import CLASSES, make_synthetic_dataset
from visionauto.data.validation import validate_records

TASKS = ("classification", "multilabel", "detection", "instance_segmentation")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_writes_valid_files(tmp_path: Path, task: str) -> None:
    path = make_synthetic_dataset(tmp_path / "d", task, n_images=12, image_size=48)
    records, issues = load_records(path, task=task)
    assert issues == [] and len(records) == 12
    valid, issues = validate_records(records, task=task, known_classes=CLASSES)
    assert issues == [] and len(valid) == 12
    assert all((r.width, r.height) == (48, 48) for r in valid)
    for record in records:
        if task == "classification":
            assert record.label in CLASSES
        elif task == "multilabel":
            assert 1 <= len(record.label) <= 3 and len(set(record.label)) == len(record.label)
            assert record.label == sorted(record.label)
        else:
            assert 1 <= len(record.label) <= 3
            for obj in record.label:
                box = [obj[k] for k in ("topX", "topY", "bottomX", "bottomY")]
                assert all(0.0 <= v <= 1.0 for v in box)
                assert box[0] < box[2] and box[1] < box[3]
                if task == "instance_segmentation":
                    (polygon,) = obj["polygon"]
                    assert len(polygon) >= 6 and len(polygon) % 2 == 0
                    assert all(0.0 <= v <= 1.0 for v in polygon)
                    xs, ys = polygon[0::2], polygon[1::2]
                    assert min(xs) >= box[0] - 1e-9 and max(xs) <= box[2] + 1e-9
                    assert min(ys) >= box[1] - 1e-9 and max(ys) <= box[3] + 1e-9
    if task == "classification":
        assert sorted(r.label for r in records) == sorted(CLASSES * 4)


def test_square_boxes_match_the_drawn_pixels(tmp_path: Path) -> None:
    path = make_synthetic_dataset(tmp_path / "d", "detection", n_images=10, image_size=64)
    checked = 0
    for record in load_records(path, task="detection")[0]:
        pixels = np.asarray(Image.open(record.image)).astype(int)
        for obj in record.label:
            if obj["label"] != "square":
                continue
            x0, y0 = round(obj["topX"] * 64), round(obj["topY"] * 64)
            x1, y1 = round(obj["bottomX"] * 64), round(obj["bottomY"] * 64)
            green = pixels[..., 1] - pixels[..., 0] > 80
            assert green[y0:y1, x0:x1].all()
            # Every pixel of the box is green; the lines just outside it are (mostly) not.
            outside = [
                green[y0 - 1, x0:x1] if y0 > 0 else None,
                green[y1, x0:x1] if y1 < 64 else None,
                green[y0:y1, x0 - 1] if x0 > 0 else None,
                green[y0:y1, x1] if x1 < 64 else None,
            ]
            assert all(line.mean() < 0.5 for line in outside if line is not None)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_deterministic_for_a_seed(tmp_path: Path, fmt: str) -> None:
    def files(name: str, seed: int) -> tuple[str, list[bytes]]:
        path = make_synthetic_dataset(
            tmp_path / name, "instance_segmentation", n_images=5, seed=seed, image_format=fmt
        )
        images = sorted((tmp_path / name / "images").iterdir())
        return path.read_text(), [p.read_bytes() for p in images]

    first, again, other = files("a", 1), files("b", 1), files("c", 2)
    assert first == again and first != other
    line = json.loads(first[0].splitlines()[0])
    assert line["image_url"] == f"images/0000.{fmt}"
    assert Image.open(tmp_path / "a" / line["image_url"]).format == (
        "JPEG" if fmt == "jpg" else "PNG"
    )


def test_classes_differ_in_color(tmp_path: Path) -> None:
    path = make_synthetic_dataset(tmp_path / "d", "classification", n_images=9, image_size=48)
    means = {}
    for record in load_records(path, task="classification")[0]:
        pixels = np.asarray(Image.open(record.image)).reshape(-1, 3).astype(float)
        means.setdefault(record.label, []).append(int(np.argmax(pixels.mean(0) - 128)))
    assert means == {"circle": [0] * 3, "square": [1] * 3, "triangle": [2] * 3}
