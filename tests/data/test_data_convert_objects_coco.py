"""``convert coco`` on the real labelme COCO file and on synthetic edge cases; round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from faster_coco_eval.core import mask as mask_utils
from PIL import Image

from visionauto.data.convert import main, write_jsonl
from visionauto.data.converters import convert_coco, jsonl_to_coco
from visionauto.data.jsonl import load_records
from visionauto.data.polygons import polygons_to_mask
from visionauto.data.validation import validate_records


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def _counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def test_labelme_coco_file(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = shared_data / "labelme_voc2011_examples" / "instance_segmentation" / "data_dataset_coco"
    out = tmp_path / "seg.jsonl"
    args = ["coco", "--annotations", str(root / "annotations.json"), "--images", str(root)]
    assert main([*args, "--output", str(out)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith("coco: 3 images (0 without objects), 12 objects, 6 classes\n")
    assert (
        "note: task instance_segmentation (chosen from the data; set --task to choose)" in summary
    )
    # Category 0 _background_ has no annotation: it is not a class of the JSONL.
    assert (
        "note: 15 categories without annotations are not written: _background_, aeroplane"
        in summary
    )
    lines = _read(out)
    # file_name "JPEGImages/2011_000003.jpg" holds a folder; the COCO image order is kept.
    assert [line["image_url"].rsplit("/", 2)[1:] for line in lines] == [
        ["JPEGImages", "2011_000003.jpg"],
        ["JPEGImages", "2011_000025.jpg"],
        ["JPEGImages", "2011_000006.jpg"],
    ]
    objects = [o for line in lines for o in line["label"]]
    assert "_background_" not in {o["label"] for o in objects}
    multi = [
        (o["label"], [len(s) // 2 for s in o["polygon"]]) for o in objects if len(o["polygon"]) > 1
    ]
    assert multi == [("person", [41, 4]), ("sofa", [9, 3, 9, 4])]
    # Annotation 0: bbox [191, 107, 123, 221] in a 500x338 image.
    assert objects[0] | {"polygon": None} == {
        "label": "person",
        "topX": 0.382,
        "topY": round(107 / 338, 6),
        "bottomX": 0.628,
        "bottomY": round(328 / 338, 6),
        "isCrowd": 0,
        "polygon": None,
    }
    first_x = json.loads((root / "annotations.json").read_text())["annotations"][0]["segmentation"][
        0
    ][0]
    assert objects[0]["polygon"][0][0] == round(first_x / 500, 6)
    records, issues = load_records(out, task="instance_segmentation")
    assert issues == []
    valid, problems = validate_records(records, task="instance_segmentation")
    assert len(valid) == 3 and all(not p.fatal_for_record for p in problems)

    boxes = tmp_path / "det.jsonl"
    assert main([*args, "--task", "detection", "--output", str(boxes)]) == 0
    assert all("polygon" not in o for line in _read(boxes) for o in line["label"])
    records, issues = load_records(boxes, task="detection")
    assert issues == [] and validate_records(records, task="detection")[1] == []


def _synthetic(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    images = tmp_path / "images"
    _image(images / "train" / "a.png", (40, 30))
    _image(images / "train" / "b.png", (20, 10))
    _image(images / "empty.png", (8, 8))
    crowd = np.zeros((30, 40), dtype=bool)
    crowd[5:25, 5:35] = True
    crowd[12:18, 15:25] = False  # a hole
    small = np.zeros((10, 20), dtype=bool)
    small[2:6, 4:12] = True
    compressed = mask_utils.encode(np.asfortranarray(small.astype(np.uint8)))["counts"].decode()
    coco = {
        "images": [
            {"id": 10, "file_name": "train/a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "train/b.png", "width": 20, "height": 10},
            {"id": 12, "file_name": "empty.png", "width": 8, "height": 8},
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "x"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [4, 3, 16, 12], "iscrowd": 0,
             "segmentation": [[4, 3, 20, 3, 20, 15, 4, 15]]},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [5, 5, 30, 20], "iscrowd": 1,
             "segmentation": {"size": [30, 40], "counts": _counts(crowd)}},
            {"id": 3, "image_id": 11, "category_id": 7, "bbox": [4, 2, 8, 4], "iscrowd": 0,
             "segmentation": {"size": [10, 20], "counts": compressed}},
            {"id": 4, "image_id": 11, "category_id": 99, "bbox": [1, 1, 2, 2]},
            {"id": 5, "image_id": 11, "category_id": 5, "bbox": [3, 3, 0, 4], "segmentation": []},
        ],
    }  # fmt: skip
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path, images, crowd


def test_synthetic_ids_folders_rle(tmp_path: Path) -> None:
    path, images, crowd = _synthetic(tmp_path)
    conv = convert_coco(path, images, tmp_path / "out" / "x.jsonl", max_points=30)
    a, b, empty = conv.lines
    assert a["image_url"] == "../images/train/a.png" and empty["label"] == []
    assert [(o["label"], o["isCrowd"]) for o in a["label"]] == [("cat", 0), ("dog", 1)]
    assert a["label"][0] == {
        "label": "cat",
        "topX": 0.1,
        "topY": 0.1,
        "bottomX": 0.5,
        "bottomY": 0.5,
        "isCrowd": 0,
        "polygon": [[0.1, 0.1, 0.5, 0.1, 0.5, 0.5, 0.1, 0.5]],
    }
    dog = a["label"][1]
    assert (dog["topX"], dog["topY"], dog["bottomX"], dog["bottomY"]) == (
        0.125,
        0.166667,
        0.875,
        0.833333,
    )
    assert all(len(s) // 2 <= 30 for s in dog["polygon"])
    drawn = polygons_to_mask(dog["polygon"], 40, 30)
    assert not drawn[15, 20] and (drawn == crowd).mean() > 0.97  # the crowd's hole survives
    small = b["label"][0]  # compressed RLE string
    assert (polygons_to_mask(small["polygon"], 20, 10)[2:6, 4:12]).all()
    assert [(s.reason, s.location.rsplit(": ", 1)[1]) for s in conv.skipped] == [
        ("unknown category_id 99", "annotations[3]"),
        ("no segmentation", "annotations[4] (id 5)"),
    ]
    assert conv.notes[1] == "1 categories without annotations are not written: x"

    boxes = convert_coco(path, images, tmp_path / "b.jsonl", task="detection")
    assert [s.reason for s in boxes.skipped] == ["unknown category_id 99", "zero-area box"]
    assert all("polygon" not in o for line in boxes.lines for o in line["label"])


def test_round_trip_coco_jsonl_coco(tmp_path: Path) -> None:
    path, images, _ = _synthetic(tmp_path)
    source = json.loads(path.read_text())
    jsonl = tmp_path / "rt.jsonl"
    write_jsonl(convert_coco(path, images, jsonl, task="detection").lines, jsonl)
    coco = jsonl_to_coco(jsonl, tmp_path / "rt.json", images_root=images)
    assert [i["file_name"] for i in coco["images"]] == ["train/a.png", "train/b.png", "empty.png"]
    assert [c["name"] for c in coco["categories"]] == ["cat", "dog"]
    sizes = {i["id"]: (i["width"], i["height"]) for i in source["images"]}
    kept = [a for a in source["annotations"] if a["id"] in (1, 2, 3)]
    assert len(coco["annotations"]) == len(kept)
    for old, new in zip(kept, coco["annotations"], strict=True):
        width, height = sizes[old["image_id"]]
        scale = np.array([width, height, width, height], dtype=float)
        assert np.abs(np.array(old["bbox"]) / scale - np.array(new["bbox"]) / scale).max() < 1e-4
        assert new["iscrowd"] == old.get("iscrowd", 0)


def test_bad_coco_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [}')
    (tmp_path / "imgs").mkdir()
    args = ["coco", "--annotations", str(bad), "--images", str(tmp_path / "imgs")]
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert f"error: {bad} is not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "nope.jpg"}], "categories": []}))
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "1 image(s) not found or unreadable" in err and "no image for 'nope.jpg'" in err
    bad.write_text(json.dumps({"categories": []}))
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "has no 'images' list: it is not a COCO instances file" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_used_background_category_is_kept_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _image(tmp_path / "imgs" / "sub" / "a.png", (10, 10))
    coco = {
        "images": [{"id": 0, "file_name": "sub/a.png", "width": 10, "height": 10}],
        "categories": [{"id": 0, "name": "_background_"}, {"id": 1, "name": "cat"}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 0, "bbox": [0, 0, 10, 10]}],
    }
    path = tmp_path / "c.json"
    path.write_text(json.dumps(coco))
    out = tmp_path / "o.jsonl"
    args = ["coco", "--annotations", str(path), "--images", str(tmp_path / "imgs")]
    assert main([*args, "--output", str(out), "--base-url", "azureml://datastores/d/paths/x/"]) == 0
    captured = capsys.readouterr()
    assert "category 0 '_background_' is used by annotations: kept as a class" in captured.err
    assert "note: 1 categories without annotations are not written: cat" in captured.out
    line = _read(out)[0]
    assert line["image_url"] == "azureml://datastores/d/paths/x/sub/a.png"
    assert [o["label"] for o in line["label"]] == ["_background_"]
