"""Translate an Azure ML AutoML image job YAML into ``python -m visionauto`` overrides.

Honoured fields: ``task``, ``training_data`` / ``validation_data`` (``path`` of an MLTable folder
or JSONL file, relative to the job file), ``target_column_name``, ``primary_metric`` (checked:
Azure accepts one per task), ``limits``, ``training_parameters`` (incl. ``model_name`` and
``advanced_settings``), ``search_space``, ``sweep`` (``sampling_algorithm``,
``early_termination``), ``experiment_name`` (the MLflow experiment) and ``name`` (the run or
sweep folder, so rerunning the same file resumes its sweep). Fields about Azure's cloud
(``compute``, ``resources``, ``identity``, ...) cannot apply here: they are reported in one
warning, never silently dropped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visionauto.config.schema import PRIMARY_METRICS
from visionauto.errors import ConfigError
from visionauto.sweep.expressions import format_value
from visionauto.sweep.space import azure_key_to_override

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
AZURE_TASKS = {
    "image_classification": "classification",
    "image_classification_multilabel": "multilabel",
    "image_object_detection": "detection",
    "image_instance_segmentation": "instance_segmentation",
}
LIMIT_KEYS = ("max_trials", "max_concurrent_trials", "timeout_minutes")
EARLY_TERMINATION_KEYS = (
    "type",
    "evaluation_interval",
    "delay_evaluation",
    "slack_factor",
    "slack_amount",
    "truncation_percentage",
    "exclude_finished_jobs",
)
ADVANCED_SETTINGS = {
    "apply_automl_train_augmentations": "augmentation.apply_automl_train_augmentations",
    "apply_mosaic_for_yolo": "augmentation.apply_mosaic_for_yolo",
}
# Azure training parameters (spec §1) that this version does not implement: reported.
UNSUPPORTED_PARAMETERS = (
    "distributed",
    "enable_onnx_normalization",
    "checkpoint_run_id",
    "checkpoint_dataset_id",
    "checkpoint_filename",
    "validation_metric_type",
    "validation_iou_threshold",
    "min_size",
    "max_size",
    "box_score_threshold",
    "nms_iou_threshold",
    "box_detections_per_image",
    "tile_grid_size",
    "tile_overlap_ratio",
    "tile_predictions_nms_threshold",
    "image_size",
    "model_size",
    "multi_scale",
    "log_training_metrics",
    "log_validation_loss",
)
SILENT_KEYS = ("$schema", "type")
# Known top-level fields that describe Azure's cloud rather than the job: reported.
CLOUD_KEYS = (
    "compute",
    "resources",
    "identity",
    "outputs",
    "display_name",
    "description",
    "tags",
    "properties",
    "log_verbosity",
    "queue_settings",
    "services",
    "environment_variables",
    "test_data",
    "test_data_size",
)


@dataclass
class JobTranslation:
    """The overrides of a job file, whether it is a sweep, and what could not be honoured."""

    overrides: list[str]
    multirun: bool
    ignored: list[str] = field(default_factory=list)


def load_job_file(path: str | Path) -> dict[str, Any]:
    """Read a job YAML file.

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read the job file {path}: {err.strerror}.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{path} must hold a YAML mapping (an Azure AutoML job), got {type(doc).__name__}."
        )
    return doc


def translate_job(doc: dict[str, Any], *, base_dir: Path, where: str = "job.yml") -> JobTranslation:
    """Turn an Azure AutoML image job into our overrides (see the module doc).

    Raises:
        ConfigError: a field with a value we cannot run (unknown task or parameter, a task not
            implemented yet, a cloud data asset, a wrong primary metric).
    """
    if doc.get("type", "automl") != "automl":
        raise ConfigError(f"{where}: type={doc['type']!r} is not an AutoML job (type: automl).")
    task = _task(doc, where)
    out: list[str] = [f"task={task}"]
    ignored: list[str] = []
    _check_primary_metric(doc.get("primary_metric"), task, where)
    for key, target in (("training_data", "data.train"), ("validation_data", "data.validation")):
        if key in doc:
            out.append(f"{target}={_path_value(_data_path(doc[key], key, base_dir, where))}")
    if "training_data" not in doc:
        raise ConfigError(
            f"{where}: training_data is missing; give training_data: {{path: "
            "<MLTable folder or .jsonl>, type: mltable}."
        )
    if "target_column_name" in doc:
        out.append(f"data.target_column_name={format_value(doc['target_column_name'])}")
    if "experiment_name" in doc:
        out.append(f"tracking.experiment_name={format_value(doc['experiment_name'])}")
    limits = _mapping(doc.get("limits"), "limits", where)
    for key, value in limits.items():
        if key in LIMIT_KEYS:
            out.append(f"limits.{key}={format_value(value)}")
        else:
            ignored.append(f"limits.{key}")
    params = _mapping(doc.get("training_parameters"), "training_parameters", where)
    out += _training_overrides(params, ignored, where)
    search_space = doc.get("search_space")
    if search_space:
        out.append(f"sweeper.search_space={hydra_literal(search_space)}")
    out += _sweep_overrides(_mapping(doc.get("sweep"), "sweep", where), ignored, where)
    multirun = int(limits.get("max_trials", 1)) > 1 or bool(search_space)
    if "name" in doc:
        folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(doc["name"]))
        out.append(
            f"hydra.{'sweep' if multirun else 'run'}.dir="
            f"{('multirun/' if multirun else 'outputs/') + folder}"
        )
    for key, value in doc.items():
        known = {
            "task",
            "training_data",
            "validation_data",
            "target_column_name",
            "experiment_name",
            "limits",
            "training_parameters",
            "search_space",
            "sweep",
            "primary_metric",
            "name",
            *SILENT_KEYS,
        }
        if key not in known:
            short = isinstance(value, str) and len(value) <= 40
            ignored.append(f"{key} ({value})" if short else key)
    return JobTranslation(out, multirun, ignored)


def _task(doc: dict[str, Any], where: str) -> str:
    azure_task = doc.get("task")
    if azure_task not in AZURE_TASKS:
        raise ConfigError(
            f"{where}: task={azure_task!r} is not an AutoML image task; expected "
            f"one of {', '.join(AZURE_TASKS)}."
        )
    task = AZURE_TASKS[azure_task]
    if not (CONF_DIR / "task" / f"{task}.yaml").is_file():
        available = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
        names = [a for a, t in AZURE_TASKS.items() if t in available]
        raise ConfigError(
            f"{where}: task {azure_task} ({task}) is not available in this version "
            f"of visionauto yet; available: {', '.join(names)}."
        )
    return task


def _check_primary_metric(metric: Any, task: str, where: str) -> None:
    if metric is None:
        return
    expected = PRIMARY_METRICS[task]
    if str(metric).lower() != expected:
        raise ConfigError(
            f"{where}: primary_metric={metric!r} is not available for this task: "
            f"Azure (and visionauto) optimize {expected} for {task}. Set "
            f"primary_metric: {expected} or remove it."
        )


def _data_path(spec: Any, key: str, base_dir: Path, where: str) -> str:
    path = spec.get("path") if isinstance(spec, dict) else spec
    kind = spec.get("type", "mltable") if isinstance(spec, dict) else "mltable"
    if not path:
        raise ConfigError(f"{where}: {key}.path is missing; give the MLTable folder or .jsonl.")
    if kind not in ("mltable", "uri_file", "uri_folder"):
        raise ConfigError(f"{where}: {key}.type={kind!r} is not supported; use mltable.")
    text = str(path)
    if text.startswith("azureml:") or "://" in text and not text.startswith("file://"):
        raise ConfigError(
            f"{where}: {key}.path={text!r} is an Azure data asset or remote URL, "
            "which visionauto cannot read; download it and give a local MLTable "
            "folder or .jsonl path."
        )
    local = Path(text.removeprefix("file://"))
    return str(local if local.is_absolute() else (base_dir / local).resolve())


def _path_value(path: str) -> str:
    """A path as an override value: bare when Hydra's grammar allows, else quoted."""
    return path if re.fullmatch(r"[A-Za-z0-9_./:+@~-]+", path) else format_value(path)


def _training_overrides(params: dict[str, Any], ignored: list[str], where: str) -> list[str]:
    out: dict[str, str] = {}
    for name, value in params.items():
        if name == "advanced_settings":
            out.update(_advanced_settings(value, ignored, where))
        elif name in UNSUPPORTED_PARAMETERS:
            ignored.append(f"training_parameters.{name}")
        else:
            try:
                out.update(azure_key_to_override(name, value))
            except ConfigError as err:
                raise ConfigError(f"{where}: training_parameters: {err}") from None
    return [f"{k}={v}" for k, v in out.items()]


def _advanced_settings(value: Any, ignored: list[str], where: str) -> dict[str, str]:
    try:
        settings = json.loads(value) if isinstance(value, str) else dict(value or {})
    except (ValueError, TypeError):
        raise ConfigError(
            f"{where}: training_parameters.advanced_settings must be a JSON object, "
            f"e.g. '{{\"apply_mosaic_for_yolo\": false}}'; got {value!r}."
        ) from None
    out = {}
    for key, flag in settings.items():
        if key in ADVANCED_SETTINGS:
            out[ADVANCED_SETTINGS[key]] = format_value(bool(flag))
        else:
            ignored.append(f"advanced_settings.{key}")
    return out


def _sweep_overrides(sweep: dict[str, Any], ignored: list[str], where: str) -> list[str]:
    out = []
    for key, value in sweep.items():
        if key == "sampling_algorithm":
            out.append(f"sweeper.sampling_algorithm={str(value).lower()}")
        elif key == "early_termination":
            for knob, v in _mapping(value, "sweep.early_termination", where).items():
                if knob not in EARLY_TERMINATION_KEYS:
                    raise ConfigError(
                        f"{where}: sweep.early_termination.{knob} is unknown; "
                        f"expected {', '.join(EARLY_TERMINATION_KEYS)}."
                    )
                text = str(v).lower() if knob == "type" else format_value(v)
                out.append(f"sweeper.early_termination.{knob}={text}")
        else:
            ignored.append(f"sweep.{key}")
    return out


def _mapping(value: Any, key: str, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}.")
    return value


def hydra_literal(value: Any) -> str:
    """A YAML value as Hydra override grammar: ``[{model_name:{type:choice,values:[a,b]}}]``."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_literal(v) for v in value) + "]"
    return format_value(value)
