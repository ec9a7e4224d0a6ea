"""validate_records, the report, and the messy data set through prepare_data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionauto.config.schema import DataConfig
from visionauto.data.images import load_image
from visionauto.data.jsonl import load_records
from visionauto.data.prepare import prepare_data
from visionauto.data.records import ImageRecord
from visionauto.data.validation import Issue, ValidationReport, validate_records
from visionauto.errors import DataValidationError

BAD_CASES = {  # a substring of the bad line -> the issue code it must produce
    '"label": "circle"\n': "malformed_json",
    "missing.png": "missing_image",
    "truncated.jpg": "corrupt_image",
    "not_an_image.jpg": "corrupt_image",
    '"label": ""': "empty_label",
    "wrong_details.png": "image_details_mismatch",
}
UNUSUAL = {
    "grayscale.png": (48, 48),
    "rgba.png": (48, 48),
    "cmyk.jpg": (48, 48),
    "palette.png": (48, 48),
    "exif_rotated.jpg": (40, 56),
}


def _line_of(path: Path, needle: str) -> int:
    lines = [line + "\n" for line in path.read_text().splitlines()]
    matches = [n for n, line in enumerate(lines, start=1) if needle in line]
    assert len(matches) == 1, (needle, matches)
    return matches[0]


def test_messy_data_with_on_invalid_error_lists_every_problem(
    messy_jsonl: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cfg = DataConfig(train=str(messy_jsonl))
    with pytest.raises(DataValidationError) as caught:
        prepare_data(cfg, task="classification", validation_data_size=0.2, seed=0, out_dir=out)
    message = str(caught.value)
    for needle, code in BAD_CASES.items():
        location = f"train.jsonl:{_line_of(messy_jsonl, needle)}"
        assert f"{location}: " in message, (code, location)
        assert code in message
    assert "rerun with data.on_invalid=drop" in message
    for name in UNUSUAL:
        assert name not in message
    report = caught.value.report
    assert isinstance(report, ValidationReport) and not report.ok()
    saved = json.loads((out / "validation_report.json").read_text())
    assert saved["counts"] == {
        "corrupt_image": 2,
        "malformed_json": 1,
        "missing_image": 1,
        "empty_label": 1,
        "image_details_mismatch": 1,
    }
    assert (saved["n_records"], saved["n_valid"]) == (23, 18)
    assert "missing_image (error, 1):" in (out / "validation_report.txt").read_text()
    assert not (out / "data").exists()


def test_messy_data_with_on_invalid_drop_keeps_exactly_the_good_images(
    messy_jsonl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = DataConfig(train=str(messy_jsonl), on_invalid="drop")
    prepared = prepare_data(
        cfg, task="classification", validation_data_size=0.2, seed=0, out_dir=tmp_path / "run"
    )
    assert "dropped 5 of 23 records" in caplog.text
    assert (prepared.report.n_dropped, prepared.report.n_valid) == (5, 18)
    records = (
        load_records(prepared.train_path, task="classification")[0]
        + load_records(prepared.validation_path, task="classification")[0]
    )
    kept = sorted(Path(r.image).name for r in records)
    expected = sorted(
        [f"good_{i:02d}.png" for i in range(12)] + list(UNUSUAL) + ["wrong_details.png"]
    )
    assert kept == expected
    by_name = {Path(r.image).name: r for r in records}
    for name, size in UNUSUAL.items():
        image = load_image(by_name[name].image)
        assert (image.mode, image.size) == ("RGB", size), name
        assert (by_name[name].width, by_name[name].height) == size
    assert (by_name["wrong_details.png"].width, by_name["wrong_details.png"].height) == (48, 48)
    assert prepared.class_names == ["circle", "square", "triangle"]


def _rec(tmp_path: Path, label: object, n: int = 1, image: str = "none.png") -> ImageRecord:
    return ImageRecord(str(tmp_path / image), label, f"t.jsonl:{n}")


def test_label_checks_per_task(tmp_path: Path) -> None:
    cases = {
        "classification": [
            ("can", None),
            ("", "empty_label"),
            (None, "empty_label"),
            (["can"], "invalid_label"),
        ],
        "multilabel": [
            ([], None),
            (["can", "carton"], None),
            ("can", "label_not_list"),
            (["can", ""], "empty_label"),
        ],
        "detection": [
            ([], None),
            ("can", "label_not_list"),
            ([{"label": "can", "topX": 0, "topY": 0, "bottomX": 1, "bottomY": 1}], None),
            ([{"topX": 0}], "invalid_object"),
        ],
    }
    for task, labels in cases.items():
        records = [_rec(tmp_path, label, n) for n, (label, _) in enumerate(labels, start=1)]
        valid, issues = validate_records(records, task=task, check_images=False)
        expected = [(f"t.jsonl:{n}", code) for n, (_, code) in enumerate(labels, start=1) if code]
        assert [(i.location, i.code) for i in issues] == expected, task
        assert len(valid) == len(labels) - len(expected)


def test_unknown_labels_against_known_classes(tmp_path: Path) -> None:
    records = [_rec(tmp_path, "can", 1), _rec(tmp_path, "Can", 2), _rec(tmp_path, ["can", "x"], 3)]
    _, issues = validate_records(
        records[:2], task="classification", known_classes=["can"], check_images=False
    )
    assert [(i.code, i.location) for i in issues] == [("unknown_label", "t.jsonl:2")]
    assert "class 'Can' does not occur in the training data" in issues[0].message
    _, issues = validate_records(
        records[2:], task="multilabel", known_classes=["can"], check_images=False
    )
    assert "class 'x'" in issues[0].message


def test_images_checked_in_one_pass_with_real_sizes(messy_jsonl: Path) -> None:
    records, _ = load_records(messy_jsonl, task="classification")
    valid, issues = validate_records(records, task="classification")
    assert len(records) == 22 and len(valid) == 18
    assert sorted({i.code for i in issues}) == [
        "corrupt_image",
        "empty_label",
        "image_details_mismatch",
        "missing_image",
    ]
    mismatch = next(i for i in issues if i.code == "image_details_mismatch")
    assert not mismatch.fatal_for_record and "the image is 48x48" in mismatch.message


def test_report_text_truncates_and_orders_errors_first(tmp_path: Path) -> None:
    issues = [Issue("corrupt_image", "bad", f"t.jsonl:{n}", "replace it") for n in range(1, 8)]
    issues.insert(0, Issue("image_details_mismatch", "w", "t.jsonl:9", "fix", False))
    report = ValidationReport(issues, n_records=9, n_valid=2)
    text = report.to_text(max_per_code=3)
    assert text.splitlines()[0] == ("Data validation: 9 records, 2 valid, 0 dropped, 8 problem(s).")
    assert text.index("corrupt_image (error, 7)") < text.index("image_details_mismatch (warning")
    assert "t.jsonl:3: bad" in text and "t.jsonl:4" not in text
    assert "... and 4 more" in text and "fix: replace it" in text
    assert not report.ok()
    assert ValidationReport(issues[:1], n_records=1, n_valid=1).ok()
    report.save(tmp_path / "r")
    assert len(json.loads((tmp_path / "r" / "validation_report.json").read_text())["issues"]) == 8
