"""``python -m visionauto.job run job.yml``: Azure AutoML image job files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.integration.conftest import run_cli
from tests.sweep.sweep_helpers import make_data
from visionauto.errors import ConfigError
from visionauto.job.azure import hydra_literal, translate_job

# The shape of azureml-examples' cli-automl-image-classification job (spec §5).
AZURE_JOB = """
$schema: https://azuremlsdk2.blob.core.windows.net/preview/0.0.1/autoMLJob.schema.json
type: automl
experiment_name: dpv2-cli-automl-image-classification-experiment
description: A multi-class Image classification job using fridge items dataset
compute: azureml:gpu-cluster
task: image_classification
log_verbosity: debug
primary_metric: accuracy
target_column_name: label
training_data: {path: data/training-mltable-folder, type: mltable}
validation_data: {path: data/validation-mltable-folder, type: mltable}
limits: {timeout_minutes: 60, max_trials: 10, max_concurrent_trials: 2}
training_parameters:
  early_stopping: True
  evaluation_frequency: 1
  advanced_settings: '{"apply_automl_train_augmentations": false, "stream_image_files": true}'
sweep:
  sampling_algorithm: random
  early_termination: {type: bandit, evaluation_interval: 2, slack_factor: 0.2, delay_evaluation: 6}
search_space:
  - model_name: {type: choice, values: [vitb16r224, vits16r224]}
    learning_rate: {type: uniform, min_value: 0.001, max_value: 0.01}
    number_of_epochs: {type: choice, values: [15, 30]}
"""


def test_azure_job_translates_to_overrides(tmp_path: Path) -> None:
    t = translate_job(yaml.safe_load(AZURE_JOB), base_dir=tmp_path)
    assert t.multirun
    assert t.overrides == [
        "task=classification",
        f"data.train={tmp_path / 'data' / 'training-mltable-folder'}",
        f"data.validation={tmp_path / 'data' / 'validation-mltable-folder'}",
        "data.target_column_name=label",
        "tracking.experiment_name=dpv2-cli-automl-image-classification-experiment",
        "limits.timeout_minutes=60",
        "limits.max_trials=10",
        "limits.max_concurrent_trials=2",
        "training.early_stopping=true",
        "training.evaluation_frequency=1",
        "augmentation.apply_automl_train_augmentations=false",
        "sweeper.search_space=[{model_name:{type:choice,values:[vitb16r224,vits16r224]},"
        "learning_rate:{type:uniform,min_value:0.001,max_value:0.01},"
        "number_of_epochs:{type:choice,values:[15,30]}}]",
        "sweeper.sampling_algorithm=random",
        "sweeper.early_termination.type=bandit",
        "sweeper.early_termination.evaluation_interval=2",
        "sweeper.early_termination.slack_factor=0.2",
        "sweeper.early_termination.delay_evaluation=6",
    ]
    assert t.ignored == [
        "advanced_settings.stream_image_files",
        "description",
        "compute (azureml:gpu-cluster)",
        "log_verbosity (debug)",
    ]


def test_translated_job_composes_into_our_config(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from visionauto.__main__ import CONF_DIR
    from visionauto.config import to_objects
    from visionauto.config.store import register_configs
    from visionauto.sweep.space import build_search_space

    t = translate_job(yaml.safe_load(AZURE_JOB), base_dir=tmp_path)
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=t.overrides)
    cfg.output_dir = None
    job = to_objects(cfg)
    assert job.sweeper.early_termination.slack_factor == 0.2
    assert job.augmentation.apply_automl_train_augmentations is False
    space = build_search_space(job.sweeper.search_space)
    assert space.describe() == (
        "s0: model_name=choice(vitb16r224, vits16r224), "
        "learning_rate=uniform(0.001, 0.01), "
        "number_of_epochs=choice(15, 30)"
    )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"task": "image_object_detection"},
            "primary_metric='accuracy' is not available for this task: Azure (and visionauto) "
            "optimize mean_average_precision for detection",
        ),
        ({"task": "tabular"}, "task='tabular' is not an AutoML image task"),
        ({"primary_metric": "iou"}, "primary_metric='iou' is not available for this task"),
        (
            {"training_data": {"path": "azureml:fridge-train:1", "type": "mltable"}},
            "is an Azure data asset or remote URL",
        ),
        (
            {"training_parameters": {"learnin_rate": 0.1}},
            "training_parameters: learnin_rate: unknown search-space parameter 'learnin_rate'. Did "
            "you mean learning_rate or learning_rate_scheduler?",
        ),
    ],
)
def test_jobs_we_cannot_run_are_refused(patch: dict, message: str, tmp_path: Path) -> None:
    doc = {**yaml.safe_load(AZURE_JOB), **patch}
    with pytest.raises(ConfigError, match=re.escape(message)):
        translate_job(doc, base_dir=tmp_path)


def test_hydra_literal_quotes_what_needs_quoting() -> None:
    assert hydra_literal({"a": [1, 2.5, True], "b": "x y"}) == "{a:[1,2.5,true],b:'x y'}"


def test_cli_dry_run_prints_the_command_and_reports_ignored_fields(tmp_path: Path) -> None:
    job = tmp_path / "job.yml"
    job.write_text(AZURE_JOB)
    proc = run_cli("run", str(job), "--dry-run", "limits.max_trials=3", module="visionauto.job")
    assert proc.returncode == 0, proc.stderr
    command = shlex.split(proc.stdout.strip())
    assert command[:3] == ["python", "-m", "visionauto"] and command[-1] == "-m"
    assert "limits.max_trials=3" in command and "limits.max_trials=10" not in command
    assert proc.stderr.strip() == (
        "warning: job.yml: not used by visionauto (Azure cloud settings or features not "
        "implemented here): advanced_settings.stream_image_files, description, "
        "compute (azureml:gpu-cluster), log_verbosity (debug)"
    )


def test_cli_detection_job_translates(tmp_path: Path) -> None:
    job = tmp_path / "od.yml"
    text = AZURE_JOB.replace("task: image_classification", "task: image_object_detection")
    job.write_text(text.replace("primary_metric: accuracy", "primary_metric: mean_average_precision"))
    proc = run_cli("run", str(job), "--dry-run", module="visionauto.job")
    assert proc.returncode == 0, proc.stderr
    assert "task=detection" in shlex.split(proc.stdout.strip())


@pytest.mark.integration
@pytest.mark.slow
def test_automode_job_runs_end_to_end(tmp_path: Path) -> None:
    data = make_data(tmp_path)
    job = tmp_path / "automode.yml"
    job.write_text(f"""
type: automl
task: image_classification
compute: azureml:gpu-cluster
training_data: {{path: {data.relative_to(tmp_path)}, type: mltable}}
target_column_name: label
limits: {{max_trials: 2, max_concurrent_trials: 2}}
training_parameters:
  model_name: test_resnet
  number_of_epochs: 2
  training_batch_size: 8
  validation_batch_size: 16
  training_crop_size: 64
  validation_resize_size: 72
  validation_crop_size: 64
  number_of_workers: 0
  layers_to_freeze: 0
""")
    sweep_dir = tmp_path / "sw"
    proc = run_cli(
        "run",
        str(job),
        "model.pretrained=false",
        "tracking.enabled=false",
        f"hydra.sweep.dir={sweep_dir}",
        f"output_root={tmp_path}",
        "trainer.enable_progress_bar=false",
        module="visionauto.job",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "AutoMode: portfolio of" in proc.stdout
    assert "compute (azureml:gpu-cluster)" in proc.stderr
    board = pd.read_csv(sweep_dir / "leaderboard.csv")
    assert board["state"].tolist() == ["complete", "complete"]
    assert (board["model_name"] == "test_resnet").all()
    # The offline portfolio's first recipes, minus what the job fixed (model, epochs, freezing).
    assert sorted(zip(board["learning_rate"], board["optimizer"], strict=True)) == [
        (0.001, "adamw"),
        (0.01, "sgd"),
    ]
    trial_cfg = yaml.safe_load((sweep_dir / "trial_000" / "config.yaml").read_text())
    assert trial_cfg["sweeper"]["early_termination"]["type"] == "bandit"
