"""Object-level checks of detection / instance segmentation labels (boxes and polygons)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from visionauto.config.schema import DataConfig
from visionauto.data.jsonl import load_records
from visionauto.data.prepare import prepare_data
from visionauto.data.records import ImageRecord
from visionauto.data.synthetic import make_synthetic_dataset
from visionauto.data.validation import Issue, validate_records
from visionauto.errors import DataValidationError

OK_BOX = {"label": "can", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6}
TRIANGLE = [0.1, 0.1, 0.5, 0.1, 0.3, 0.5]


def _box(**values: Any) -> dict[str, Any]:
    return {**OK_BOX, **values}


def _check(
    label: list[Any], task: str = "detection", known: list[str] | None = None
) -> tuple[list[ImageRecord], list[Issue]]:
    record = ImageRecord("/nowhere/img.png", label, "t.jsonl:7")
    return validate_records([record], task=task, known_classes=known, check_images=False)


def _only(issues: list[Issue], code: str, *, fatal: bool) -> Issue:
    assert [i.code for i in issues] == [code], issues
    assert issues[0].fatal_for_record is fatal and issues[0].location == "t.jsonl:7"
    return issues[0]


DROP = "with data.on_invalid=drop only this object is dropped"


def test_valid_boxes_pass_and_an_empty_label_is_a_negative() -> None:
    valid, issues = _check([OK_BOX, _box(label="carton", isCrowd=1)])
    assert issues == [] and len(valid) == 1
    assert valid[0].label[1]["isCrowd"] == 1
    valid, issues = _check([])
    assert issues == [] and valid[0].label == []


def test_numeric_strings_are_numbers_and_float_noise_is_clipped_silently() -> None:
    label = [_box(topX="0.1", topY=-0.0005, bottomX="1.0009", bottomY="0.6", isCrowd="true")]
    valid, issues = _check(label)
    assert issues == []
    obj = valid[0].label[0]
    assert (obj["topX"], obj["topY"], obj["bottomX"], obj["bottomY"]) == (0.1, 0.0, 1.0, 0.6)
    assert obj["isCrowd"] == 1


def test_a_non_numeric_string_names_the_object_and_key(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = {"image_url": "a.png", "label": [OK_BOX, _box(bottomY="abc")]}
    path.write_text(json.dumps(line) + "\n")
    records, issues = load_records(path, task="detection")
    assert records == []
    assert [(i.code, i.message) for i in issues] == [
        ("invalid_object", "object 1: bottomY='abc' is not a number")
    ]


def test_box_out_of_range_names_every_bad_value() -> None:
    valid, issues = _check([OK_BOX, _box(topX=-0.1, bottomX=1.5)])
    issue = _only(issues, "box_out_of_range", fatal=True)
    assert issue.message == f"object 1 ('can'): topX=-0.1, bottomX=1.5 are outside [0, 1]; {DROP}"
    assert "normalized by the image size" in issue.fix
    # The object is dropped, the image kept with its other object.
    assert [o["label"] for o in valid[0].label] == ["can"] and len(valid[0].label) == 1
    _, issues = _check([_box(topY=1.002)])
    assert issues[0].message.startswith("object 0 ('can'): topY=1.002 is outside [0, 1]")


def test_box_inverted() -> None:
    _, issues = _check([_box(topX=0.5, bottomX=0.2), OK_BOX])
    issue = _only(issues, "box_inverted", fatal=True)
    assert issue.message == f"object 0 ('can'): bottomX=0.2 < topX=0.5 (corners swapped); {DROP}"
    assert "x, y, width, height" in issue.fix


def test_zero_area_box_is_a_warning_that_drops_only_the_object() -> None:
    valid, issues = _check([_box(label="carton", bottomY=0.2), OK_BOX])
    issue = _only(issues, "zero_area_box", fatal=False)
    assert issue.message == (
        "object 0 ('carton'): the box topX=0.1, topY=0.2, bottomX=0.5, bottomY=0.2 has zero "
        "area, so the object is dropped (a warning: the job goes on)"
    )
    assert [o["label"] for o in valid[0].label] == ["can"]
    # Clipping can make a box degenerate too.
    _, issues = _check([_box(topX=1.0005, bottomX=1.0), OK_BOX])
    assert [i.code for i in issues] == ["zero_area_box"]


def test_an_image_without_any_usable_object_is_dropped() -> None:
    valid, issues = _check([_box(topX=0.5, bottomX=0.2), _box(bottomY=0.2)])
    assert valid == []
    assert [i.code for i in issues] == ["box_inverted", "zero_area_box", "no_valid_object"]
    assert issues[-1].fatal_for_record
    assert issues[-1].message.startswith("none of the image's 2 object(s) is usable")


def test_unknown_object_classes_are_reported() -> None:
    valid, issues = _check([OK_BOX, _box(label="Can")], known=["can"])
    assert [(i.code, i.message) for i in issues] == [
        ("unknown_label", "class 'Can' does not occur in the training data")
    ]
    assert valid == []


def _polygon_issue(polygon: Any, code: str, *, fatal: bool = True) -> tuple[Issue, list]:
    valid, issues = _check(
        [{"label": "can", "polygon": polygon}, {"label": "can", "polygon": [TRIANGLE]}],
        task="instance_segmentation",
    )
    return _only(issues, code, fatal=fatal), valid


@pytest.mark.parametrize(
    ("polygon", "code", "message"),
    [
        (
            [[0.1, 0.1, 0.5, 0.5]],
            "polygon_too_few_points",
            "polygon segment 0 has 2 point(s), fewer than 3",
        ),
        (
            [TRIANGLE, [0.1, 0.1, 0.5, 0.5, 0.3]],
            "polygon_odd_coordinates",
            "polygon segment 1 has 5 coordinates, an odd number (x without y)",
        ),
        (
            [[0.1, 0.1, 1.5, 0.1, 0.3, -0.2]],
            "polygon_out_of_range",
            "polygon segment 0 has point 1 (1.5, 0.1), point 2 (0.3, -0.2) outside [0, 1]",
        ),
    ],
)
def test_polygon_errors_drop_the_object(polygon: Any, code: str, message: str) -> None:
    issue, valid = _polygon_issue(polygon, code)
    assert issue.message == f"object 0 ('can'): {message}; {DROP}"
    assert valid[0].label == [{"label": "can", "polygon": [TRIANGLE], "isCrowd": 0}]


def test_zero_area_polygon_segment_is_left_out_or_drops_the_object() -> None:
    line = [0.1, 0.1, 0.2, 0.2, 0.3, 0.3]
    issue, valid = _polygon_issue([line, TRIANGLE], "zero_area_polygon", fatal=False)
    assert issue.message == (
        "object 0 ('can'): polygon segment 0 has zero area (its points lie on one line), so "
        "the segment is left out (a warning: the job goes on)"
    )
    assert valid[0].label[0]["polygon"] == [TRIANGLE]
    issue, valid = _polygon_issue([line], "zero_area_polygon", fatal=False)
    assert "so the object is dropped" in issue.message and len(valid[0].label) == 1


def test_self_intersecting_polygon_is_kept_with_a_warning() -> None:
    bow_tie = [0.1, 0.1, 0.5, 0.5, 0.5, 0.1, 0.1, 0.5]
    issue, valid = _polygon_issue([bow_tie], "polygon_self_intersection", fatal=False)
    assert issue.message == (
        "object 0 ('can'): polygon segment 0 crosses itself; it is kept and rasterized as drawn "
        "(even-odd fill: an area its outline encloses twice counts as outside)"
    )
    assert valid[0].label[0]["polygon"] == [bow_tie]


def test_segmentation_box_keys_are_checked_and_polygons_clipped() -> None:
    valid, issues = _check(
        [{**_box(bottomX=0.05), "polygon": [TRIANGLE]}], task="instance_segmentation"
    )
    assert [i.code for i in issues] == ["box_inverted", "no_valid_object"]
    valid, issues = _check(
        [{"label": "can", "polygon": [[-0.0004, 0.1, 0.5, 0.1, 0.3, 1.0008]]}],
        task="instance_segmentation",
    )
    assert issues == [] and valid[0].label[0]["polygon"] == [[0.0, 0.1, 0.5, 0.1, 0.3, 1.0]]


def _messy_detection_set(tmp_path: Path) -> Path:
    path = make_synthetic_dataset(tmp_path / "od", "detection", n_images=12, image_size=48)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[3]["label"].append(_box(label=lines[3]["label"][0]["label"], topX=0.7, bottomX=0.6))
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_on_invalid_error_stops_with_the_object_location(tmp_path: Path) -> None:
    path = _messy_detection_set(tmp_path)
    cfg = DataConfig(train=str(path), validation=str(path))
    with pytest.raises(DataValidationError, match=re.escape("box_inverted (error, 2)")) as caught:
        prepare_data(cfg, task="detection", validation_data_size=0.2, seed=0, out_dir=tmp_path)
    n = len(json.loads(path.read_text().splitlines()[3])["label"]) - 1
    assert f"annotations.jsonl:4: object {n} (" in str(caught.value)


def test_on_invalid_drop_keeps_the_image_and_removes_the_object(tmp_path: Path) -> None:
    path = _messy_detection_set(tmp_path)
    original = [json.loads(line) for line in path.read_text().splitlines()]
    cfg = DataConfig(train=str(path), validation=str(path), on_invalid="drop")
    prepared = prepare_data(
        cfg, task="detection", validation_data_size=0.2, seed=0, out_dir=tmp_path / "run"
    )
    assert prepared.report.n_dropped == 0
    written = [json.loads(line) for line in prepared.train_path.read_text().splitlines()]
    assert len(written) == 12
    expected = [line["label"] for line in original]
    expected[3] = expected[3][:-1]  # only the inverted box is gone
    assert [line["label"] for line in written] == expected


def test_clipping_margin_is_one_pixel_when_the_image_size_is_known() -> None:
    polygon = [[0.2, 0.5, 0.4, 0.5, 0.33, 1.00103]]  # 0.39 px below a 375 px tall image
    label = [{"label": "chair", "polygon": polygon}]
    record = ImageRecord("/nowhere/img.png", label, "t.jsonl:7", width=500, height=375)
    valid, issues = validate_records([record], task="instance_segmentation", check_images=False)
    assert issues == [] and valid[0].label[0]["polygon"][0][-1] == 1.0
    _, issues = _check(label, task="instance_segmentation")  # size unknown: margin 0.001
    assert [i.code for i in issues] == ["polygon_out_of_range", "no_valid_object"]


def test_real_coco_polygons_validate(shared_data: Path) -> None:
    folder = shared_data / "labelme_voc2011_examples/instance_segmentation/data_dataset_coco"
    coco = json.loads((folder / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    records = []
    for image in coco["images"]:
        width, height = image["width"], image["height"]
        label = [
            {
                "label": names[a["category_id"]],
                "polygon": [[v / (width, height)[k % 2] for k, v in enumerate(s)] for s in seg],
            }
            for a in coco["annotations"]
            if a["image_id"] == image["id"] and (seg := a["segmentation"])
        ]
        records.append(ImageRecord(str(folder / image["file_name"]), label, image["file_name"]))
    valid, issues = validate_records(records, task="instance_segmentation")
    assert len(valid) == 3 and sum(len(r.label) for r in valid) == 12
    # labelme's hand-drawn people cross their own outline; nothing else is wrong.
    assert {i.code for i in issues} == {"polygon_self_intersection"}
    assert all(not i.fatal_for_record for i in issues)
