"""``convert to-coco``: JSONL -> COCO (boxes, polygons, crowds, category order, file names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from faster_coco_eval import COCO
from PIL import Image

from visionauto.data.convert import main, write_jsonl
from visionauto.data.converters import convert_coco, jsonl_to_coco


def _jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _obj(name: str, box: tuple, crowd: int = 0, **extra: object) -> dict:
    keys = ("topX", "topY", "bottomX", "bottomY")
    return {"label": name, **dict(zip(keys, box, strict=True)), "isCrowd": crowd, **extra}


def _shoelace(segment: list[float]) -> float:
    x, y = np.array(segment[0::2]), np.array(segment[1::2])
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2


def test_to_coco_boxes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.new("RGB", (100, 50)).save(tmp_path / "a.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "b.png")
    lines = [
        {"image_url": "a.png", "label": [_obj("zebra", (0.1, 0.2, 0.5, 0.6)), _obj("ant", (0, 0, 1, 1), 1)]},
        # image_details are wrong: the real size (10x10) is used.
        {"image_url": "b.png", "image_details": {"width": 99, "height": 99}, "label": []},
        {"image_url": "https://example.com/c.jpg", "image_details": {"width": 20, "height": 40},
         "label": [_obj("zebra", ("0.5", "0.5", "1", "1"), "true")]},
    ]  # fmt: skip
    src = _jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "export" / "coco.json"
    assert main(["to-coco", "--input", str(src), "--output", str(out)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "to-coco: 3 images, 3 annotations (2 crowd, 0 with segmentation), 2 categories",
        "    1 ant    1",
        "    2 zebra  2",
        f"written to {out}",
    ]
    coco = json.loads(out.read_text())
    assert coco["images"] == [
        {"id": 1, "file_name": "../a.png", "width": 100, "height": 50},
        {"id": 2, "file_name": "../b.png", "width": 10, "height": 10},
        {"id": 3, "file_name": "https://example.com/c.jpg", "width": 20, "height": 40},
    ]
    assert coco["categories"] == [
        {"id": 1, "name": "ant", "supercategory": ""},
        {"id": 2, "name": "zebra", "supercategory": ""},
    ]
    assert coco["annotations"] == [
        {"id": 1, "bbox": [10.0, 10.0, 40.0, 20.0], "area": 800.0, "iscrowd": 0, "image_id": 1, "category_id": 2},
        {"id": 2, "bbox": [0, 0, 100, 50], "area": 5000, "iscrowd": 1, "image_id": 1, "category_id": 1},
        {"id": 3, "bbox": [10.0, 20.0, 10.0, 20.0], "area": 200.0, "iscrowd": 1, "image_id": 3, "category_id": 2},
    ]  # fmt: skip
    first_seen = jsonl_to_coco(src, out, category_order="first-seen")
    assert [c["name"] for c in first_seen["categories"]] == ["zebra", "ant"]
    assert COCO(str(out)).getAnnIds() == [1, 2, 3]  # loads in a COCO tool


def test_to_coco_polygons_round_trip(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "labelme_voc2011_examples" / "instance_segmentation" / "data_dataset_coco"
    source = json.loads((root / "annotations.json").read_text())
    jsonl = tmp_path / "seg.jsonl"
    write_jsonl(convert_coco(root / "annotations.json", root, jsonl).lines, jsonl)
    coco = jsonl_to_coco(jsonl, tmp_path / "back.json", images_root=root)
    assert [i["file_name"] for i in coco["images"]] == [i["file_name"] for i in source["images"]]
    old_names = {c["id"]: c["name"] for c in source["categories"]}
    new_names = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(new_names.values()) == ["bottle", "bus", "car", "chair", "person", "sofa"]
    assert len(coco["annotations"]) == 12
    for old, new in zip(source["annotations"], coco["annotations"], strict=True):
        width = source["images"][old["image_id"]]["width"]
        height = source["images"][old["image_id"]]["height"]
        scale = np.array([width, height, width, height], dtype=float)
        assert np.abs((np.array(old["bbox"]) - np.array(new["bbox"])) / scale).max() < 1e-4
        assert new_names[new["category_id"]] == old_names[old["category_id"]]
        assert [len(s) for s in new["segmentation"]] == [len(s) for s in old["segmentation"]]
        # Points past the border (labelme has y = 375.38 in a 375 px image) are clipped.
        limits = np.array([width, height])
        clipped = [np.clip(np.reshape(a, (-1, 2)), 0, limits).ravel() for a in old["segmentation"]]
        for a, b in zip(clipped, new["segmentation"], strict=True):
            assert np.abs(a - np.array(b)).max() < 1e-3
        # area is the polygons' own (labelme wrote the mask's pixel count, 873 vs 817.5 px).
        polygon_area = sum(_shoelace(segment.tolist()) for segment in clipped)
        assert new["area"] == pytest.approx(polygon_area, rel=1e-4)


def test_to_coco_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _jsonl(
        tmp_path / "in.jsonl", [{"image_url": "gone.png", "label": [_obj("a", (0, 0, 1, 1))]}]
    )
    assert main(["to-coco", "--input", str(src), "--output", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "1 record(s) without a usable image size" in err and f"{src}:1: image" in err
    assert "has no image_details width/height" in err
    src.write_text('{"image_url": "a.png", "label": [{"label": "a", "topX": 0}]}\n')
    assert main(["to-coco", "--input", str(src), "--output", str(tmp_path / "o.json")]) == 2
    assert "1 unusable record(s):" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
