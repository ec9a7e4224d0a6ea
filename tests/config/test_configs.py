"""Compose every config group option, and check that bad keys/values fail at compose time."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from visionauto.__main__ import CONF_DIR
from visionauto.config import load_config, save_config, to_objects
from visionauto.config.resolve import resolve_defaults
from visionauto.config.schema import RootConfig
from visionauto.config.store import register_configs
from visionauto.errors import ConfigError

GROUPS = ("task", "model", "data", "training", "limits", "augmentation", "trainer", "sweeper")


def _compose(overrides: list[str]) -> RootConfig:
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    cfg.output_dir = None  # ${hydra:...} resolves only inside a running job
    return to_objects(cfg)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group: str) -> None:
    for option in _options(group):
        extra = ["model.name=convnext_atto"] if (group, option) == ("model", "timm") else []
        cfg = _compose([f"{group}={option}", *extra])
        assert isinstance(cfg, RootConfig)


def test_defaults_follow_azure() -> None:
    cfg = _compose([])
    assert cfg.task.name == "classification" and cfg.model.name == "auto"
    t = resolve_defaults(cfg).training
    assert (t.learning_rate_scheduler, t.optimizer, t.momentum, t.weight_decay) == (
        "warmup_cosine", "sgd", 0.9, 1e-4)
    assert (t.warmup_cosine_lr_cycles, t.warmup_cosine_lr_warmup_epochs) == (0.45, 2)
    assert (t.early_stopping_patience, t.early_stopping_delay, t.validation_data_size) == (5, 5, 0.2)
    assert (t.training_crop_size, t.validation_crop_size, t.validation_resize_size) == (224, 224, 256)
    assert (cfg.limits.max_trials, cfg.limits.max_concurrent_trials) == (1, 1)


@pytest.mark.parametrize(("task", "model"), [
    ("classification", "seresnext"), ("multilabel", "seresnext"),
    ("detection", "fasterrcnn_resnet50_fpn"), ("instance_segmentation", "maskrcnn_resnet50_fpn"),
])
def test_model_auto_is_azure_default_of_the_task(task: str, model: str) -> None:
    assert resolve_defaults(_compose([f"task={task}"])).model.name == model


@pytest.mark.parametrize(("task", "model", "expected"), [
    ("classification", "resnet18", (15, 78, 78, 0.01)),
    ("multilabel", "resnet18", (15, 78, 78, 0.035)),
    ("classification", "vitb16r224", (15, 48, 48, 0.0125)),
    ("multilabel", "vitl16r224", (15, 10, 10, 0.002)),
])
def test_per_model_defaults_fill_unset_values(task: str, model: str, expected: tuple) -> None:
    t = resolve_defaults(_compose([f"task={task}", f"model={model}"])).training
    assert (t.number_of_epochs, t.training_batch_size, t.validation_batch_size,
            t.learning_rate) == expected


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], ("adamw", 0.002)),  # from scratch: AdamW, with its own learning rate
    (["training.optimizer=sgd"], ("sgd", 0.01)),  # Azure's yolov5 default
    (["training.optimizer=adam"], ("adam", 0.002)),
    (["training.learning_rate=0.001"], ("adamw", 0.001)),
])
def test_yolov5_defaults_to_adamw_unless_told(overrides: list[str], expected: tuple) -> None:
    t = resolve_defaults(_compose(["task=detection", "model=yolov5", *overrides])).training
    assert (t.optimizer, t.learning_rate) == expected


@pytest.mark.parametrize(("overrides", "expected"), [
    (["training.number_of_epochs=100"], 15),  # 15% of the run
    (["training.number_of_epochs=2"], 0),
    (["training.number_of_epochs=100", "training.mosaic_off_epochs=0"], 0),
    (["training.number_of_epochs=30", "training.mosaic_off_epochs=10"], 10),
])
def test_yolov5_mosaic_off_epochs_default(overrides: list[str], expected: int) -> None:
    t = resolve_defaults(_compose(["task=detection", "model=yolov5", *overrides])).training
    assert t.mosaic_off_epochs == expected


@pytest.mark.parametrize(("overrides", "frozen", "mosaic_off"), [
    ([], 4, 0),  # pretrained: stem and stages 0-2 frozen, mosaic to the end
    (["model.pretrained=false"], None, 4),  # from scratch: nothing frozen, 15% of 30 epochs
    (["training.layers_to_freeze=0"], 0, 0),
    (["training.layers_to_freeze=6", "training.mosaic_off_epochs=3"], 6, 3),
])
def test_yolov5_efficientnet_lite0_freezes_its_early_stages_when_pretrained(
        overrides: list[str], frozen: int | None, mosaic_off: int) -> None:
    cfg = resolve_defaults(_compose(["task=detection", "model=yolov5_efficientnet_lite0",
                                     *overrides]))
    t = cfg.training
    assert (t.layers_to_freeze, t.mosaic_off_epochs) == (frozen, mosaic_off)
    # The rest of the yolov5 recipe applies to it as well.
    assert (t.optimizer, t.learning_rate, t.box_score_threshold) == ("adamw", 0.002, 0.1)


def test_other_models_freeze_nothing_by_default() -> None:
    for task, model in (("detection", "yolov5"), ("detection", "fasterrcnn_resnet18_fpn"),
                        ("classification", "efficientnet_lite0")):
        assert resolve_defaults(_compose([f"task={task}", f"model={model}"])
                                ).training.layers_to_freeze is None


def test_user_values_win_over_model_defaults() -> None:
    t = resolve_defaults(_compose(["model=resnet18", "training.learning_rate=0.2",
                                   "training.number_of_epochs=3"])).training
    assert (t.learning_rate, t.number_of_epochs, t.training_batch_size) == (0.2, 3, 78)


@pytest.mark.parametrize(("override", "message"), [
    ("training.optimizer=rmsprop", "training.optimizer='rmsprop' is invalid: expected one of sgd"),
    ("training.learning_rate=1.5", r"training.learning_rate=1.5 is invalid: expected a number in \[0"),
    ("training.weighted_loss=3", "training.weighted_loss=3 is invalid"),
    ("training.validation_data_size=1.0", "training.validation_data_size=1.0 is invalid"),
    ("limits.max_trials=0", r"limits.max_trials=0 is invalid: expected an integer in \[1, 1000\]"),
    ("limits.max_concurrent_trials=101", "limits.max_concurrent_trials=101 is invalid"),
    ("data.on_invalid=ignore", "data.on_invalid='ignore' is invalid: expected one of error, drop"),
    ("training.validation_crop_size=300", "validation_crop_size=300 is larger than"),
    ("sweeper.early_termination.type=bandit", "needs exactly one of slack_factor or slack_amount"),
])
def test_bad_values_fail_with_a_readable_message(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _compose([override])


def test_vit_needs_equal_crop_sizes() -> None:
    cfg = _compose(["model=vits16r224", "training.validation_crop_size=192"])
    with pytest.raises(ConfigError, match="must equal training.training_crop_size"):
        resolve_defaults(cfg)


def test_unknown_key_fails_at_compose_time() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="training.learnin_rate"):
        _compose(["training.learnin_rate=0.1"])


def test_max_concurrent_trials_is_capped_at_max_trials() -> None:
    cfg = _compose(["limits.max_trials=3", "limits.max_concurrent_trials=8"])
    assert cfg.limits.max_concurrent_trials == 3


def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = _compose(["task=multilabel", "model=resnet18", "training.learning_rate=0.05"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path) == cfg


def test_load_config_reports_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No config file at"):
        load_config(tmp_path)
