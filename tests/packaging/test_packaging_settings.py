"""settings.json: build, round-trip, defaults and per-request overrides (spec §1.6, §4.4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionauto import __version__
from visionauto.errors import ConfigError, ModelError
from visionauto.packaging.settings import (
    INFERENCE_DEFAULTS,
    apply_overrides,
    build_settings,
    load_settings,
)

NAMES = ["can", "carton", "milk_bottle", "water_bottle"]


def _cls_settings(**inference: object) -> dict:
    return build_settings(
        task="classification", model_name="seresnext", class_names=NAMES, inference=dict(inference)
    )


def test_build_settings_fills_task_defaults() -> None:
    assert _cls_settings() == {
        "task": "classification",
        "model_name": "seresnext",
        "class_names": NAMES,
        "visionauto_version": __version__,
        "model_kwargs": {},
        "valid_resize_size": 256,
        "valid_crop_size": 224,
    }
    assert INFERENCE_DEFAULTS["multilabel"] == {"valid_resize_size": 256, "valid_crop_size": 224}


def test_build_settings_maps_azure_long_names() -> None:
    settings = _cls_settings(validation_resize_size=320, validation_crop_size=288)
    assert (settings["valid_resize_size"], settings["valid_crop_size"]) == (320, 288)
    assert "validation_crop_size" not in settings


def test_build_settings_keeps_model_kwargs() -> None:
    settings = build_settings(
        task="multilabel",
        model_name="resnet18",
        class_names=["a", "b"],
        inference={},
        model_kwargs={"drop_rate": 0.2},
    )
    assert settings["model_kwargs"] == {"drop_rate": 0.2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"task": "segmentation"},
            r"task='segmentation' is invalid: expected one of classification",
        ),
        ({"class_names": []}, r"class_names is empty"),
        ({"class_names": ["a", "b", "a"]}, r"class_names has duplicates \['a'\]"),
        (
            {"inference": {"training_crop_size": 224}},
            r"unknown inference setting for task 'classification' 'training_crop_size': valid keys are "
            r"valid_crop_size, valid_resize_size \(or the Azure names validation_crop_size, "
            r"validation_resize_size\)",
        ),
        (
            {"inference": {"valid_crop_size": 300}},
            r"valid_crop_size=300 is larger than valid_resize_size=256",
        ),
        (
            {"inference": {"valid_crop_size": 0}},
            r"valid_crop_size=0 is invalid: expected an integer > 0",
        ),
        (
            {"inference": {"valid_crop_size": 224, "validation_crop_size": 200}},
            r"'valid_crop_size' is given twice with different values \(224 and 200",
        ),
    ],
)
def test_build_settings_rejects_bad_input(kwargs: dict, message: str) -> None:
    args = {
        "task": "classification",
        "model_name": "resnet18",
        "class_names": NAMES,
        "inference": {},
    } | kwargs
    with pytest.raises(ConfigError, match=message):
        build_settings(**args)


def test_detection_settings_use_short_names() -> None:
    settings = build_settings(
        task="detection",
        model_name="fasterrcnn_resnet50_fpn",
        class_names=NAMES,
        inference={
            "min_size": 600,
            "box_score_threshold": 0.3,
            "nms_iou_threshold": 0.5,
            "box_detections_per_image": 100,
            "tile_predictions_nms_threshold": 0.25,
        },
    )
    assert {
        k: settings[k]
        for k in (
            "min_size",
            "box_score_thresh",
            "nms_iou_thresh",
            "box_detections_per_img",
            "tile_predictions_nms_thresh",
        )
    } == {
        "min_size": 600,
        "box_score_thresh": 0.3,
        "nms_iou_thresh": 0.5,
        "box_detections_per_img": 100,
        "tile_predictions_nms_thresh": 0.25,
    }
    changed = apply_overrides(settings, {"box_score_threshold": "0.6"})
    assert changed["box_score_thresh"] == 0.6
    with pytest.raises(
        ConfigError,
        match=r"box_score_thresh=1.5 is invalid: expected a number "
        r"in \[0, 1\]",
    ):
        apply_overrides(settings, {"box_score_thresh": 1.5})


def test_settings_round_trip(tmp_path: Path) -> None:
    settings = _cls_settings(valid_resize_size=288, valid_crop_size=256)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    assert load_settings(path) == settings
    assert load_settings(tmp_path) == settings  # the folder works too


def test_load_settings_fills_defaults_of_older_files(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps({"task": "multilabel", "model_name": "resnet18", "class_names": ["a", "b"]})
    )
    settings = load_settings(path)
    assert (settings["valid_resize_size"], settings["valid_crop_size"]) == (256, 224)
    assert settings["model_kwargs"] == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"settings.json not found: a model folder needs settings.json"),
        ("{not json", r"settings.json cannot be read as JSON"),
        ("[1, 2]", r"settings.json must hold a JSON object, got list"),
        ('{"task": "classification"}', r"settings.json lacks model_name, class_names"),
        (
            '{"task": "classification", "model_name": "m", "class_names": ["a"], "valid_crop_size": 512}',
            r"settings.json: valid_crop_size=512 is larger than valid_resize_size=256",
        ),
    ],
)
def test_load_settings_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "settings.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelError, match=message):
        load_settings(path)


def test_apply_overrides_short_and_long_names() -> None:
    settings = _cls_settings()
    changed = apply_overrides(settings, {"valid_crop_size": 192, "validation_resize_size": "224"})
    assert (changed["valid_resize_size"], changed["valid_crop_size"]) == (224, 192)
    assert (settings["valid_resize_size"], settings["valid_crop_size"]) == (256, 224)  # unchanged
    assert apply_overrides(settings, None) == settings
    assert apply_overrides(settings, {}) is not settings


def test_apply_overrides_unknown_key_lists_valid_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown inference setting 'box_score_thresh', "
        r"'crop': valid keys are valid_crop_size, "
        r"valid_resize_size \(or the Azure names "
        r"validation_crop_size, validation_resize_size\)\.",
    ):
        apply_overrides(_cls_settings(), {"crop": 1, "box_score_threshold": 0.5})


def test_apply_overrides_bad_values() -> None:
    with pytest.raises(
        ConfigError, match=r"valid_crop_size='big' is invalid: expected an integer like 224"
    ):
        apply_overrides(_cls_settings(), {"valid_crop_size": "big"})
    with pytest.raises(ConfigError, match=r"valid_crop_size=300 is larger than valid_resize_size"):
        apply_overrides(_cls_settings(), {"validation_crop_size": 300})
