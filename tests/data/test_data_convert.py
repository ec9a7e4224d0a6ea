"""The JSONL converters on synthetic folders, the real fridge data, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from visionauto.data.convert import main
from visionauto.data.jsonl import load_records
from visionauto.data.validation import validate_records

FRIDGE_COUNTS = {"can": 32, "carton": 32, "milk_bottle": 37, "water_bottle": 33}


def _png(path: Path, size=(30, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_per_class(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name in ("b_cls", "a_cls"):
        for i in range(2):
            _png(tmp_path / "imgs" / name / f"{i}.png", size=(30 + i, 20))
    (tmp_path / "imgs" / "a_cls" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "empty_cls").mkdir()
    out = tmp_path / "out" / "train.jsonl"
    assert main(["folder", "--images", str(tmp_path / "imgs"), "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"4 images, 2 classes, written to {out}"
    assert "empty_cls holds no images; skipped" in captured.err
    assert _read(out)[:2] == [
        {
            "image_url": "../imgs/a_cls/0.png",
            "label": "a_cls",
            "image_details": {"format": "png", "width": 30, "height": 20},
        },
        {
            "image_url": "../imgs/a_cls/1.png",
            "label": "a_cls",
            "image_details": {"format": "png", "width": 31, "height": 20},
        },
    ]
    records, issues = load_records(out, task="classification")
    assert issues == [] and all(Path(r.image).is_file() for r in records)
    assert validate_records(records, task="classification")[1] == []


def test_base_url(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "can" / "1.png")
    _png(tmp_path / "imgs" / "carton" / "2.png")
    out = tmp_path / "train.jsonl"
    url = "azureml://datastores/blob/paths/fridge"
    assert (
        main(
            [
                "folder",
                "--images",
                str(tmp_path / "imgs"),
                "--output",
                str(out),
                "--base-url",
                url + "/",
            ]
        )
        == 0
    )
    assert [line["image_url"] for line in _read(out)] == [f"{url}/can/1.png", f"{url}/carton/2.png"]


def test_real_fridge_thumbnails_from_file_names(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = shared_data / "fridgeObjects_thumbnails" / "small-150"
    out = tmp_path / "fridge.jsonl"
    assert (
        main(["folder", "--images", str(images), "--label-from-filename", "--output", str(out)])
        == 0
    )
    assert capsys.readouterr().out.strip() == f"134 images, 4 classes, written to {out}"
    lines = _read(out)
    assert Counter(line["label"] for line in lines) == FRIDGE_COUNTS
    assert {
        (d["image_details"]["width"], d["image_details"]["height"])
        for d in (line for line in lines)
    } == {(113, 150)}
    records, issues = load_records(out, task="classification")
    assert issues == [] and len(records) == 134
    assert records[0].image == str(images / "can_1.jpg")


def test_real_multilabel_csv(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = shared_data / "odFridgeObjects_FairMOTformat"
    out = tmp_path / "ml.jsonl"
    assert (
        main(
            [
                "csv",
                "--labels",
                str(root / "derived_multilabel_labels.csv"),
                "--images",
                str(root / "images"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == f"128 images, 4 classes, written to {out}"
    lines = _read(out)
    assert len(lines) == 128 and lines[0]["label"] == ["carton"]
    assert all(isinstance(line["label"], list) and line["label"] for line in lines)
    assert {label for line in lines for label in line["label"]} == set(FRIDGE_COUNTS)
    assert lines[0]["image_details"] == {"format": "jpg", "width": 499, "height": 666}
    records, issues = load_records(out, task="multilabel")
    assert issues == [] and records[0].image == str(root / "images" / "00001.jpg")


def test_csv_with_multiple_labels_and_bad_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _png(tmp_path / "images" / "a.png")
    _png(tmp_path / "images" / "b.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("filename,labels\na.png,can  carton can\n\nb.png,\n")
    out = tmp_path / "ml.jsonl"
    assert (
        main(
            [
                "csv",
                "--labels",
                str(labels),
                "--images",
                str(tmp_path / "images"),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert [line["label"] for line in _read(out)] == [["can", "carton"], []]
    labels.write_text("filename,labels\na.png,can\ngone.png,can\na.png,x\nc,d,e\n")
    assert (
        main(
            [
                "csv",
                "--labels",
                str(labels),
                "--images",
                str(tmp_path / "images"),
                "--output",
                str(tmp_path / "bad.jsonl"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "3 bad CSV row(s)" in err
    assert f"{labels}:3: image {tmp_path / 'images' / 'gone.png'} does not exist" in err
    assert f"{labels}:4: a.png is listed twice" in err
    assert f"{labels}:5: expected 'filename,labels'" in err
    assert not (tmp_path / "bad.jsonl").exists()


@pytest.mark.parametrize(
    "case",
    [
        "missing_folder",
        "empty_folder",
        "flat_without_flag",
        "bad_file_name",
        "no_header",
        "corrupt_image",
    ],
)
def test_bad_input_exits_2_with_a_message(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    args = ["folder", "--images", str(images)]
    expected = ""
    if case == "missing_folder":
        args = ["folder", "--images", str(tmp_path / "nope")]
        expected = f"--images {tmp_path / 'nope'} is not a folder"
    elif case == "empty_folder":
        expected = f"no images found in class subfolders of {images}"
    elif case == "flat_without_flag":
        _png(images / "can_1.png")
        expected = "use --label-from-filename"
    elif case == "bad_file_name":
        _png(images / "can_1.png")
        _png(images / "can.png")
        args.append("--label-from-filename")
        expected = f"{images / 'can.png'}: name does not end in _<number>"
    elif case == "no_header":
        (tmp_path / "l.csv").write_text("a.png,can\n")
        args = ["csv", "--labels", str(tmp_path / "l.csv"), "--images", str(images)]
        expected = "l.csv:1: expected the header 'filename,labels', got 'a.png,can'"
    else:
        (images / "can").mkdir()
        (images / "can" / "1.jpg").write_text("not a jpeg")
        expected = "1 unreadable image(s):"
    assert main([*args, "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_subprocess_exit_code_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionauto.data.convert",
            "csv",
            "--labels",
            str(tmp_path / "missing.csv"),
            "--images",
            str(tmp_path),
            "--output",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "cannot read --labels" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "visionauto.data.convert", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "folder" in result.stdout and "csv" in result.stdout
