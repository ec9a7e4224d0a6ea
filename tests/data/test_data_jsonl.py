"""Reading JSONL files and MLTable folders; writing records back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionauto.data.jsonl import load_records, write_records
from visionauto.data.records import ImageRecord
from visionauto.data.urls import MissingDatastoreRootError
from visionauto.errors import DataError

MLTABLE = """\
paths:
  - file: ./{name}
transformations:
  - read_json_lines:
        encoding: utf8
        invalid_lines: error
        include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
"""


def _write_jsonl(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_reads_records_with_sources_and_details(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "train.jsonl",
        [
            {
                "image_url": "images/a.jpg",
                "label": "can",
                "image_details": {"format": "JPG", "width": "400px", "height": 300},
            },
            "",
            {"image_url": "images/b.jpg", "label": 7},
        ],
    )
    records, issues = load_records(path, task="classification")
    assert issues == []
    assert records == [
        ImageRecord(str(tmp_path / "images" / "a.jpg"), "can", f"{path}:1", 400, 300, "jpg"),
        ImageRecord(str(tmp_path / "images" / "b.jpg"), "7", f"{path}:3"),
    ]


def test_bad_lines_become_issues_not_exceptions(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "train.jsonl",
        [
            '{"image_url": "a.jpg", "label": "can"',
            {"label": "can"},
            {"image_url": "b.jpg"},
            "[1, 2]",
            {"image_url": "c.jpg", "label": "can", "image_details": {"width": "wide"}},
            {"image_url": "d.jpg", "label": "can"},
        ],
    )
    records, issues = load_records(path, task="classification")
    assert [r.source for r in records] == [f"{path}:5", f"{path}:6"]
    assert [(i.code, i.location, i.fatal_for_record) for i in issues] == [
        ("malformed_json", f"{path}:1", True),
        ("missing_field", f"{path}:2", True),
        ("missing_field", f"{path}:3", True),
        ("malformed_json", f"{path}:4", True),
        ("invalid_image_details", f"{path}:5", False),
    ]
    assert "'image_url'" in issues[1].message and "'label'" in issues[2].message


def test_target_column_name(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "t.jsonl", [{"image_url": "a.png", "cls": ["x", "y"]}])
    records, issues = load_records(path, task="multilabel", target_column_name="cls")
    assert issues == [] and records[0].label == ["x", "y"]
    _, issues = load_records(path, task="multilabel")
    assert issues[0].code == "missing_field" and "data.target_column_name" in issues[0].fix


def test_detection_numbers_written_as_strings_are_parsed(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "od.jsonl",
        [
            {
                "image_url": "a.jpg",
                "label": [
                    {
                        "label": "can",
                        "topX": "0.1",
                        "topY": "0.2",
                        "bottomX": "0.5",
                        "bottomY": 0.6,
                        "isCrowd": "true",
                    },
                    {"label": "carton", "topX": 0, "topY": 0, "bottomX": 1, "bottomY": 1},
                ],
            },
            {"image_url": "b.jpg", "label": []},
            {"image_url": "c.jpg", "label": "can"},
            {
                "image_url": "d.jpg",
                "label": [{"label": "can", "topX": "left", "topY": 0, "bottomX": 1, "bottomY": 1}],
            },
            {"image_url": "e.jpg", "label": [{"label": "can", "topX": 0.1}]},
        ],
    )
    records, issues = load_records(path, task="detection")
    assert records[0].label == [
        {"label": "can", "topX": 0.1, "topY": 0.2, "bottomX": 0.5, "bottomY": 0.6, "isCrowd": 1},
        {"label": "carton", "topX": 0.0, "topY": 0.0, "bottomX": 1.0, "bottomY": 1.0, "isCrowd": 0},
    ]
    assert records[1].label == []
    assert [(i.code, i.location) for i in issues] == [
        ("label_not_list", f"{path}:3"),
        ("invalid_object", f"{path}:4"),
        ("invalid_object", f"{path}:5"),
    ]
    assert "topX='left' is not a number" in issues[1].message
    assert "lacks topY, bottomX, bottomY" in issues[2].message


def test_instance_segmentation_polygons_parsed(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "is.jsonl",
        [
            {
                "image_url": "a.jpg",
                "label": [
                    {"label": "can", "isCrowd": 0, "polygon": [["0.1", "0.2", 0.5, 0.2, 0.3, 0.6]]}
                ],
            }
        ],
    )
    records, issues = load_records(path, task="instance_segmentation")
    assert issues == []
    assert records[0].label == [
        {"label": "can", "isCrowd": 0, "polygon": [[0.1, 0.2, 0.5, 0.2, 0.3, 0.6]]}
    ]


def test_mltable_folder_and_file(tmp_path: Path) -> None:
    folder = tmp_path / "training-mltable-folder"
    _write_jsonl(
        folder / "train_annotations.jsonl",
        [
            {"image_url": "images/a.jpg", "label": "can"},
            {"image_url": "images/b.jpg", "label": "carton"},
        ],
    )
    (folder / "MLTable").write_text(MLTABLE.format(name="train_annotations.jsonl"))
    for path in (folder, folder / "MLTable", str(folder)):
        records, issues = load_records(path, task="classification")
        assert issues == []
        assert [r.image for r in records] == [
            str(folder / "images" / "a.jpg"),
            str(folder / "images" / "b.jpg"),
        ]
        assert records[0].source == f"{folder / 'train_annotations.jsonl'}:1"


def test_mltable_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist: data\.train / data\.validation must"):
        load_records(tmp_path / "nope.jsonl", task="classification")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=f"folder {empty} has no file named 'MLTable'"):
        load_records(empty, task="classification")
    (empty / "MLTable").write_text("transformations:\n  - read_json_lines: {}\n")
    with pytest.raises(DataError, match=r"has no 'paths'"):
        load_records(empty, task="classification")
    (empty / "MLTable").write_text("paths:\n  - file: ./gone.jsonl\n")
    with pytest.raises(DataError, match=r"names .*gone\.jsonl, which does not exist"):
        load_records(empty, task="classification")
    (empty / "MLTable").write_text(
        "paths:\n  - file: ./a.csv\ntransformations:\n  - read_delimited: {delimiter: ','}\n"
    )
    with pytest.raises(DataError, match="uses 'read_delimited'"):
        load_records(empty, task="classification")


def test_azureml_urls_need_datastore_root(tmp_path: Path) -> None:
    url = "azureml://subscriptions/s/resourcegroups/r/workspaces/w/datastores/ds/paths/im/1.jpg"
    path = _write_jsonl(tmp_path / "t.jsonl", [{"image_url": url, "label": "can"}])
    with pytest.raises(MissingDatastoreRootError, match="data.datastore_root"):
        load_records(path, task="classification")
    records, _ = load_records(path, task="classification", datastore_root=str(tmp_path / "ds"))
    assert records[0].image == str(tmp_path / "ds" / "im" / "1.jpg")


@pytest.mark.parametrize(
    ("task", "label"),
    [
        ("classification", "milk_bottle"),
        ("classification", "milch\u2028flasche ü"),
        ("multilabel", ["can", "milk_bottle"]),
        ("multilabel", []),
        (
            "detection",
            [
                {
                    "label": "can",
                    "topX": 0.125,
                    "topY": 0.2,
                    "bottomX": 0.5,
                    "bottomY": 0.6000000000000001,
                    "isCrowd": 1,
                }
            ],
        ),
        (
            "instance_segmentation",
            [{"label": "can", "isCrowd": 0, "polygon": [[0.1, 0.2, 0.5, 0.2, 0.3, 0.6]]}],
        ),
    ],
)
def test_write_records_round_trip(tmp_path: Path, task: str, label: object) -> None:
    records = [
        ImageRecord(str(tmp_path / "ü b.jpg"), label, "orig:1", 640, 480, "jpg"),
        ImageRecord("http://127.0.0.1:9/a.png", label, "orig:2"),
    ]
    path = tmp_path / "out" / "train.jsonl"
    write_records(records, path)
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == 2 and ": " not in lines[0]
    assert json.loads(lines[0])["image_details"] == {"format": "jpg", "width": 640, "height": 480}
    assert "image_details" not in json.loads(lines[1])
    again, issues = load_records(path, task=task)
    assert issues == []
    assert [(r.image, r.label, r.width, r.height, r.image_format) for r in again] == [
        (r.image, r.label, r.width, r.height, r.image_format) for r in records
    ]
    assert [r.source for r in again] == [f"{path}:1", f"{path}:2"]


def test_mltable_folder_and_pattern_entries(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl"):
        _write_jsonl(tmp_path / "parts" / name, [{"image_url": f"{name}.png", "label": "x"}])
    (tmp_path / "MLTable").write_text("paths:\n  - folder: ./parts\n")
    records, _ = load_records(tmp_path, task="classification")
    assert [Path(r.image).name for r in records] == ["a.jsonl.png", "b.jsonl.png"]
    (tmp_path / "MLTable").write_text("paths:\n  - pattern: ./parts/b*.jsonl\n")
    records, _ = load_records(tmp_path / "MLTable", task="classification")
    assert [Path(r.image).name for r in records] == ["b.jsonl.png"]
