"""prepare_data's job-level checks, the split files it writes, and load_prepared."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from visionauto.config.schema import DataConfig
from visionauto.data.jsonl import load_records, write_records
from visionauto.data.prepare import load_prepared, prepare_data
from visionauto.data.records import ImageRecord
from visionauto.data.split import split_records
from visionauto.data.synthetic import make_synthetic_dataset
from visionauto.errors import DataError, DataValidationError


def _prepare(tmp_path: Path, task: str = "classification", **cfg: object):
    return prepare_data(
        DataConfig(**cfg), task=task, validation_data_size=0.25, seed=3, out_dir=tmp_path / "run"
    )


def _subset(jsonl: Path, keep, out: Path) -> Path:
    records, _ = load_records(jsonl, task="classification")
    write_records([r for i, r in enumerate(records) if keep(i, r)], out)
    return out


def test_train_not_set_or_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train is not set: give the training data"):
        _prepare(tmp_path)
    with pytest.raises(DataError, match=r"nope\.jsonl does not exist"):
        _prepare(tmp_path, train=str(tmp_path / "nope.jsonl"))


def test_too_few_images_stops_the_job_even_with_drop(cls_jsonl: Path, tmp_path: Path) -> None:
    nine = _subset(cls_jsonl, lambda i, r: i < 9, tmp_path / "nine.jsonl")
    for policy in ("error", "drop"):
        with pytest.raises(
            DataValidationError,
            match=r"too_few_images \(error, 1\):\n.*nine\."
            r"jsonl: only 9 usable training image\(s\)",
        ):
            _prepare(tmp_path, train=str(nine), on_invalid=policy)
    assert (tmp_path / "run" / "validation_report.json").is_file()
    # Ten records, one broken: fixable with on_invalid=error, too few after dropping.
    ten = tmp_path / "ten.jsonl"
    ten.write_text(nine.read_text() + '{"image_url": "gone.png", "label": "circle"}\n')
    with pytest.raises(DataValidationError) as caught:
        _prepare(tmp_path, train=str(ten), on_invalid="error")
    assert "missing_image" in str(caught.value) and "too_few_images (" not in str(caught.value)
    with pytest.raises(DataValidationError, match=r"only 9 usable .*\(1 invalid records dropped"):
        _prepare(tmp_path, train=str(ten), on_invalid="drop")


def test_one_class_only(cls_jsonl: Path, tmp_path: Path) -> None:
    circles = _subset(cls_jsonl, lambda i, r: r.label == "circle", tmp_path / "c.jsonl")
    extra = _subset(
        make_synthetic_dataset(tmp_path / "more", "classification", n_images=9),
        lambda i, r: r.label == "circle",
        tmp_path / "c2.jsonl",
    )
    circles.write_text(circles.read_text() + extra.read_text())
    with pytest.raises(DataValidationError, match=r"one class only \('circle'\)"):
        _prepare(tmp_path, train=str(circles))


def test_writes_split_and_classes_and_keeps_other_files(cls_jsonl: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    prepared = _prepare(tmp_path, train=str(cls_jsonl))
    assert (run / "notes.txt").read_text() == "keep me"
    assert prepared.train_path == run / "data" / "train.jsonl"
    assert prepared.validation_path == run / "data" / "validation.jsonl"
    assert json.loads((run / "data" / "classes.json").read_text()) == [
        "circle",
        "square",
        "triangle",
    ]
    train, val, classes = load_prepared(
        DataConfig(
            train=str(prepared.train_path), validation=str(prepared.validation_path), prepared=True
        ),
        task="classification",
    )
    assert (len(train), len(val), classes) == (18, 6, prepared.class_names)
    assert sorted(r.label for r in val) == ["circle"] * 2 + ["square"] * 2 + ["triangle"] * 2
    assert all(Path(r.image).is_absolute() and r.width == 48 for r in train + val)


def test_load_prepared_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.prepared=true needs data.train and data.validation"):
        load_prepared(DataConfig(train="a.jsonl", prepared=True), task="classification")
    (tmp_path / "t.jsonl").write_text('{"image_url": "a.png", "label": "x"}\n')
    with pytest.raises(DataError, match=r"cannot read the class list .*classes\.json"):
        load_prepared(
            DataConfig(train=str(tmp_path / "t.jsonl"), validation=str(tmp_path / "t.jsonl")),
            task="classification",
        )


def test_validation_set_unknown_label_and_missing_class(cls_jsonl: Path, tmp_path: Path) -> None:
    val = tmp_path / "val.jsonl"
    records, _ = load_records(cls_jsonl, task="classification")
    lines = [
        json.dumps({"image_url": r.image, "label": r.label})
        for r in records
        if r.label != "triangle"
    ][:4]
    lines.append(json.dumps({"image_url": records[0].image, "label": "hexagon"}))
    val.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=r"val\.jsonl:5: class 'hexagon' does not occur"):
        _prepare(tmp_path, train=str(cls_jsonl), validation=str(val))
    prepared = _prepare(tmp_path, train=str(cls_jsonl), validation=str(val), on_invalid="drop")
    warnings = [i for i in prepared.report.issues if i.code == "class_without_validation"]
    assert [(i.location, i.fatal_for_record) for i in warnings] == [(str(val), False)]
    assert "class 'triangle' has no validation image" in warnings[0].message
    report = json.loads((tmp_path / "run" / "validation_report.json").read_text())
    assert report["counts"] == {"unknown_label": 1, "class_without_validation": 1}


def test_class_with_one_image_has_no_validation_example(cls_jsonl: Path, tmp_path: Path) -> None:
    first_triangle = [False]

    def keep(i: int, r: ImageRecord) -> bool:
        if r.label != "triangle":
            return True
        was, first_triangle[0] = first_triangle[0], True
        return not was

    single = _subset(cls_jsonl, keep, tmp_path / "single.jsonl")
    prepared = _prepare(tmp_path, train=str(single))
    codes = [(i.code, i.message) for i in prepared.report.issues]
    assert codes == [
        (
            "class_without_validation",
            "class 'triangle' has no validation image, so its metrics are undefined",
        )
    ]
    assert prepared.class_names == ["circle", "square", "triangle"]


def _records(counts: dict[str, int]) -> list[ImageRecord]:
    records = [
        ImageRecord(f"/img/{name}_{i}.png", name, f"t:{name}{i}")
        for name, n in counts.items()
        for i in range(n)
    ]
    random.Random(0).shuffle(records)
    return records


def test_stratified_split_counts_and_determinism() -> None:
    records = _records({"a": 10, "b": 5, "c": 2, "d": 1})
    train, val = split_records(records, task="classification", validation_data_size=0.2, seed=7)
    count = {name: sum(r.label == name for r in val) for name in "abcd"}
    assert count == {"a": 2, "b": 1, "c": 1, "d": 0}
    assert len(train) + len(val) == 18
    assert {r.image for r in train} | {r.image for r in val} == {r.image for r in records}
    order = {r.image: i for i, r in enumerate(records)}
    assert [order[r.image] for r in train] == sorted(order[r.image] for r in train)
    again = split_records(records, task="classification", validation_data_size=0.2, seed=7)
    assert again == (train, val)
    other = split_records(records, task="classification", validation_data_size=0.2, seed=8)
    assert other != (train, val)


def test_random_split_covers_rare_classes() -> None:
    records = [
        ImageRecord(f"/i{i}.png", ["common"] + (["rare"] if i < 2 else []), f"t:{i}")
        for i in range(20)
    ]
    for seed in range(10):
        train, val = split_records(records, task="multilabel", validation_data_size=0.2, seed=seed)
        assert len(val) in (4, 5) and len(train) + len(val) == 20
        assert any("rare" in r.label for r in val) and any("rare" in r.label for r in train)
    assert split_records(records[:1], task="multilabel", validation_data_size=0.2, seed=0) == (
        records[:1],
        [],
    )


def test_empty_validation_file_stops_the_job(cls_jsonl: Path, tmp_path: Path) -> None:
    empty = tmp_path / "val.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataValidationError, match=r"empty_validation \(error, 1\)"):
        _prepare(tmp_path, train=str(cls_jsonl), validation=str(empty))


def test_mltable_training_data(cls_jsonl: Path, tmp_path: Path) -> None:
    (cls_jsonl.parent / "MLTable").write_text(
        f"paths:\n  - file: ./{cls_jsonl.name}\ntransformations:\n  - read_json_lines:\n"
        "      encoding: utf8\n  - convert_column_types:\n      - columns: image_url\n"
        "        column_type: stream_info\n"
    )
    prepared = _prepare(tmp_path, train=str(cls_jsonl.parent))
    assert len(load_records(prepared.train_path, task="classification")[0]) == 18
