"""``convert yolo`` and ``convert labelme`` on synthetic edge cases and the real labelme files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from visionauto.data.convert import main
from visionauto.data.converters import convert_labelme, convert_voc, convert_yolo
from visionauto.data.jsonl import load_records
from visionauto.data.validation import validate_records


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _image(path: Path, size: tuple[int, int] = (40, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (1, 2, 3)).save(path)


def _yolo_set(tmp_path: Path) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    _image(images / "train" / "a.jpg")
    _image(images / "train" / "b.png")
    _image(images / "val" / "c.png")
    (labels / "train").mkdir(parents=True)
    (labels / "train" / "a.txt").write_text(
        "1 0.5 0.5 0.5 0.5\n"
        "\n"
        "0 0.1 0.1 0.4 0.4 0.93\n"  # a prediction's confidence: ignored; clipped at 0
        "7 0.5 0.5 0.1 0.1\n"  # unknown class
        "1 0.5 0.5\n"  # too short
        "0 50 60 10 10\n"  # pixels, not normalized
        "0 0.5 0.5 0 0.2\n"  # zero width
        "1 0.1 0.1 0.3 0.1 0.3 0.5\n"  # segmentation form: a triangle
    )
    (labels / "c.txt").write_text("0 0.25 0.5 0.5 1.0\n")  # not mirrored: found by its stem
    (labels / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (labels / "classes.txt").write_text("ignored: data.yaml comes first\n")
    (labels / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    return images, labels


def test_yolo_with_data_yaml_names_dict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images, labels = _yolo_set(tmp_path)
    out = tmp_path / "yolo.jsonl"
    args = ["yolo", "--annotations", str(labels), "--images", str(images)]
    assert main([*args, "--output", str(out)]) == 0
    a, b, c = _read(out)
    assert [line["image_url"] for line in (a, b, c)] == [
        "images/train/a.jpg",
        "images/train/b.png",
        "images/val/c.png",
    ]
    assert a["label"] == [
        {
            "label": "dog",
            "topX": 0.25,
            "topY": 0.25,
            "bottomX": 0.75,
            "bottomY": 0.75,
            "isCrowd": 0,
        },
        {"label": "cat", "topX": 0.0, "topY": 0.0, "bottomX": 0.3, "bottomY": 0.3, "isCrowd": 0},
        {
            "label": "dog",
            "topX": 0.1,
            "topY": 0.1,
            "bottomX": 0.3,
            "bottomY": 0.5,
            "isCrowd": 0,
            "polygon": [[0.1, 0.1, 0.3, 0.1, 0.3, 0.5]],
        },
    ]
    assert b["label"] == [] and b["image_details"] == {"format": "png", "width": 40, "height": 20}
    assert c["label"] == [
        {"label": "cat", "topX": 0.0, "topY": 0.0, "bottomX": 0.5, "bottomY": 1.0, "isCrowd": 0}
    ]
    captured = capsys.readouterr()
    a_txt = labels / "train" / "a.txt"
    assert f"warning: {a_txt}:4: class 7 is not in the class names (0..1); skipped" in captured.err
    assert f"warning: {a_txt}:5: not 'class cx cy w h' nor 'class x1 y1 x2 y2 ...'" in captured.err
    assert f"warning: {a_txt}:6: coordinates are not normalized to [0, 1]" in captured.err
    assert f"warning: {a_txt}:7: zero-area box '0 0.5 0.5 0 0.2'; skipped" in captured.err
    assert f"1 label file(s) match no image: {labels / 'orphan.txt'}" in captured.err
    assert "skipped 4 objects:" in captured.out
    assert f"note: class names from {labels / 'data.yaml'}" in captured.out
    records, issues = load_records(out, task="detection")
    assert issues == [] and validate_records(records, task="detection")[1] == []


def test_yolo_names_list_file_and_missing_names(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images, labels = _yolo_set(tmp_path)
    (labels / "data.yaml").unlink()
    (labels / "classes.txt").unlink()
    names = tmp_path / "names.txt"
    names.write_text("cow\nhorse\n\n")
    conv = convert_yolo(labels, images, tmp_path / "x.jsonl", classes=names)
    assert conv.class_counts() == {"horse": 2, "cow": 2}
    (tmp_path / "list.yaml").write_text("names: [ant, bee]\n")
    conv = convert_yolo(labels, images, tmp_path / "x.jsonl", classes=tmp_path / "list.yaml")
    assert conv.class_counts() == {"bee": 2, "ant": 2}
    out = tmp_path / "x.jsonl"
    assert (
        main(["yolo", "--annotations", str(labels), "--images", str(images), "--output", str(out)])
        == 2
    )
    assert "no class names: pass --classes (data.yaml or names.txt)" in capsys.readouterr().err


def _labelme(path: Path, shapes: list[dict], image: str, size: tuple[int, int]) -> None:
    data = {"version": "5.0.1", "shapes": shapes, "imagePath": image, "imageData": None,
            "imageWidth": size[0], "imageHeight": size[1]}  # fmt: skip
    path.write_text(json.dumps(data))


def _shape(
    label: str, points: list, kind: str | None = "polygon", group: int | None = None
) -> dict:
    return {"label": label, "points": points, "shape_type": kind, "group_id": group, "flags": {}}


def test_labelme_synthetic_groups_and_shapes(tmp_path: Path) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    _image(tmp_path / "pics" / "a.png", (100, 50))
    shapes = [
        _shape("cat", [[10, 10], [30, 10], [30, 20]], group=1),
        _shape("dog", [[0, 0], [10, 10]], "rectangle"),
        _shape("cat", [[50, 10], [60, 10], [60, 40]], group=1),  # joins the first cat
        _shape("cat", [[70, 10], [80, 10], [80, 20]], None),  # null shape_type = polygon
        _shape("sun", [[50, 25], [60, 25]], "circle"),
        _shape("pin", [[5, 5]], "point"),
        _shape("__ignore__", [[1, 1], [2, 1], [2, 2]]),
    ]
    # imagePath points at a folder that does not exist: found under --images by name.
    _labelme(ann / "a.json", shapes, "../elsewhere/a.png", (100, 50))
    conv = convert_labelme(ann, tmp_path / "o.jsonl", images=tmp_path / "pics")
    labels = conv.lines[0]["label"]
    assert [o["label"] for o in labels] == ["cat", "dog", "cat", "sun"]
    cat = labels[0]
    assert cat["polygon"] == [[0.1, 0.2, 0.3, 0.2, 0.3, 0.4], [0.5, 0.2, 0.6, 0.2, 0.6, 0.8]]
    assert (cat["topX"], cat["topY"], cat["bottomX"], cat["bottomY"]) == (0.1, 0.2, 0.6, 0.8)
    assert labels[1]["polygon"] == [[0.0, 0.0, 0.1, 0.0, 0.1, 0.2, 0.0, 0.2]]
    sun = labels[3]  # radius 10 around (50, 25): 24 points
    assert len(sun["polygon"][0]) == 48
    assert (sun["topX"], sun["topY"], sun["bottomX"], sun["bottomY"]) == (0.4, 0.3, 0.6, 0.7)
    assert [s.reason for s in conv.skipped] == [
        "shape_type 'point' with 1 points is not an object outline",
        "labelme marker label __ignore__",
    ]
    boxes = convert_labelme(ann, tmp_path / "o.jsonl", images=tmp_path / "pics", task="detection")
    assert all("polygon" not in o for o in boxes.lines[0]["label"])


def test_real_labelme_polygons(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = shared_data / "labelme_voc2011_examples" / "instance_segmentation" / "data_annotated"
    out = tmp_path / "lm.jsonl"
    assert main(["labelme", "--annotations", str(folder), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("labelme: 3 images (0 without objects), 12 objects, 6 classes\n")
    assert "  labelme marker label __ignore__: 2" in captured.out
    objects = [o for line in _read(out) for o in line["label"]]
    multi = [
        (o["label"], [len(s) // 2 for s in o["polygon"]]) for o in objects if len(o["polygon"]) > 1
    ]
    # group_id 0 joins shapes: one person of 2011_000003 (2 polygons), the sofa of 2011_000006 (4).
    assert multi == [("person", [41, 4]), ("sofa", [9, 3, 9, 4])]
    records, issues = load_records(out, task="instance_segmentation")
    assert issues == [] and len(records) == 3


def test_real_labelme_rectangles_match_their_voc_export(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "labelme_voc2011_examples" / "bbox_detection"
    lm = convert_labelme(root / "data_annotated", tmp_path / "a.jsonl")
    voc_dir = root / "data_dataset_voc"
    voc = convert_voc(voc_dir / "Annotations", voc_dir / "JPEGImages", tmp_path / "b.jsonl")
    assert "note: task detection" in lm.summary(tmp_path / "a.jsonl")
    assert [line["label"] for line in lm.lines] == [line["label"] for line in voc.lines]
    assert lm.class_counts() == {"person": 6, "bus": 2, "car": 1}


def test_bad_labelme_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"imagePath": "a.png"}))
    _labelme(tmp_path / "b.json", [], "missing.png", (4, 4))
    assert (
        main(["labelme", "--annotations", str(tmp_path), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: 2 unusable labelme file(s):")
    assert f"{tmp_path / 'a.json'}: no 'shapes' list: it is not a labelme file" in err
    assert (
        f"{tmp_path / 'b.json'}: no image for 'missing.png', 'b' under --images {tmp_path}" in err
    )
