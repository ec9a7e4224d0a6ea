"""Dataclass schemas of every config group.

Hydra composes ``conf/`` against these schemas (registered in :mod:`visionauto.config.store`), so a
misspelled key fails at compose time. Value ranges are checked in ``__post_init__``, which runs
when a composed config is turned into objects with :func:`visionauto.config.to_objects`. Names
follow Azure's job API (``reference/azure-automl-images.md`` §1). ``None`` means "Azure's default
for this task and model", filled in by :func:`visionauto.config.resolve.resolve_defaults`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from visionauto.errors import ConfigError

TASKS = ("classification", "multilabel", "detection", "instance_segmentation")
# Azure's default model per task (spec §1.5), picked for ``model=auto`` (the default).
DEFAULT_MODELS = {
    "classification": "seresnext",
    "multilabel": "seresnext",
    "detection": "fasterrcnn_resnet50_fpn",
    "instance_segmentation": "maskrcnn_resnet50_fpn",
}
PRIMARY_METRICS = {
    "classification": "accuracy",
    "multilabel": "iou",
    "detection": "mean_average_precision",
    "instance_segmentation": "mean_average_precision",
}


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}.")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, "one of " + ", ".join(choices))


def _check_range(key: str, value: float | None, lo: float, hi: float, *, lo_open: bool = False,
                 hi_open: bool = False) -> None:
    if value is None:
        return
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    _check(ok and not math.isnan(value), key, value, f"a number in {lb}{lo}, {hi}{rb}")


def _check_positive(key: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    _check(value >= 0 if allow_zero else value > 0, key, value,
           "a number >= 0" if allow_zero else "a number > 0")


@dataclass
class TaskConfig:
    """``task`` group: which of the four tasks this job solves."""

    name: str = "classification"

    def __post_init__(self) -> None:
        _check_choice("task", self.name, TASKS)

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRICS[self.name]

    @property
    def multilabel(self) -> bool:
        return self.name == "multilabel"


@dataclass
class ModelConfig:
    """``model`` group: an entry of :mod:`visionauto.models.registry` (Azure names) or a timm name.

    ``pretrained`` downloads weights when online; ``weights_path`` (a local ``.pth``/``.safetensors``
    file) always works offline.
    """

    # "auto" = Azure's default model of the task (see ``DEFAULT_MODELS``).
    name: str = "auto"
    pretrained: bool = True
    weights_path: str | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name == "???":
            raise ConfigError("model.name is not set: with model=timm pass the timm model name, "
                              "e.g. model=timm model.name=convnext_tiny.")


@dataclass
class DataConfig:
    """``data`` group: where the labeled images are and what to do with bad records."""

    train: str | None = None
    validation: str | None = None
    target_column_name: str = "label"
    # Local folder that stands for the Azure datastore in ``azureml://.../paths/<p>`` URLs.
    datastore_root: str | None = None
    on_invalid: str = "error"  # error | drop
    # Keep decoded images in memory: auto = when they fit in a quarter of the free memory.
    cache_images: str = "auto"  # auto | true | false
    # Set by the job for its trials: train/validation are already validated and split.
    prepared: bool = False

    def __post_init__(self) -> None:
        _check_choice("data.on_invalid", self.on_invalid, ("error", "drop"))
        _check_choice("data.cache_images", str(self.cache_images).lower(), ("auto", "true", "false"))


@dataclass
class TrainingConfig:
    """``training`` group: Azure's training parameters under their job-API names (spec §1.1–§1.4)."""

    number_of_epochs: int | None = None
    training_batch_size: int | None = None
    validation_batch_size: int | None = None
    gradient_accumulation_step: int = 1
    learning_rate: float | None = None
    learning_rate_scheduler: str = "warmup_cosine"  # warmup_cosine | step | none
    warmup_cosine_lr_cycles: float = 0.45
    warmup_cosine_lr_warmup_epochs: int = 2
    step_lr_gamma: float = 0.5
    step_lr_step_size: int = 5
    optimizer: str | None = None  # sgd | adam | adamw; None: sgd (Azure), adamw for yolov5
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True
    beta1: float = 0.9
    beta2: float = 0.999
    ams_gradient: bool = False
    evaluation_frequency: int = 1
    checkpoint_frequency: int | None = None
    early_stopping: bool = True
    early_stopping_patience: int = 5
    early_stopping_delay: int = 5
    # None: nothing frozen, except yolov5_efficientnet_lite0 from pretrained weights (4 groups).
    layers_to_freeze: int | None = None
    number_of_workers: int | None = None
    random_seed: int = 47
    validation_data_size: float = 0.2
    # Classification (spec §1.2).
    weighted_loss: int = 0
    training_crop_size: int = 224
    validation_crop_size: int = 224
    validation_resize_size: int = 256
    # Object detection / instance segmentation (spec §1.3); R-CNN resize bounds and inference.
    validation_metric_type: str = "voc"  # none | voc | coco | coco_voc
    validation_iou_threshold: float = 0.5
    min_size: int = 600
    max_size: int = 1333
    box_score_threshold: float | None = None  # None: 0.3 (R-CNN family), 0.1 (yolov5)
    nms_iou_threshold: float = 0.5
    box_detections_per_image: int = 100
    # Tiling for small objects (spec §6): "3x2" tiles along width x height; None = off.
    tile_grid_size: str | None = None
    tile_overlap_ratio: float = 0.25
    tile_predictions_nms_threshold: float = 0.25
    # yolov5 (spec §1.4).
    image_size: int = 640
    model_size: str = "medium"  # small | medium | large | extra_large (xlarge); nano beyond Azure
    multi_scale: bool = False
    # yolov5 beyond Azure: the last N epochs train without mosaic (YOLOX's recipe); None: 15%
    # of number_of_epochs from scratch, 0 from pretrained weights (resolve_defaults); 0: mosaic
    # throughout (Azure's behaviour).
    mosaic_off_epochs: int | None = None
    # Instance segmentation inference (spec §1.3).
    mask_pixel_score_threshold: float = 0.5
    max_number_of_polygon_points: int = 100
    export_as_image: bool = False
    image_type: str = "JPG"  # JPG | PNG | BMP
    # Incremental training: a previous run folder, its model/ folder, or a .ckpt file.
    checkpoint: str | None = None
    # With ``checkpoint``: allow a different class set by starting a new classification head.
    checkpoint_new_head: bool = False

    def __post_init__(self) -> None:
        for key in ("number_of_epochs", "training_batch_size", "validation_batch_size",
                    "gradient_accumulation_step", "warmup_cosine_lr_warmup_epochs",
                    "step_lr_step_size", "evaluation_frequency", "checkpoint_frequency",
                    "early_stopping_patience", "training_crop_size", "validation_crop_size",
                    "validation_resize_size", "min_size", "max_size", "box_detections_per_image",
                    "image_size", "max_number_of_polygon_points"):
            _check_positive(f"training.{key}", getattr(self, key))
        for key in ("early_stopping_delay", "layers_to_freeze", "number_of_workers",
                    "mosaic_off_epochs"):
            _check_positive(f"training.{key}", getattr(self, key), allow_zero=True)
        for key in ("learning_rate", "warmup_cosine_lr_cycles", "step_lr_gamma", "momentum",
                    "weight_decay", "beta1", "beta2"):
            _check_range(f"training.{key}", getattr(self, key), 0.0, 1.0)
        _check_range("training.validation_data_size", self.validation_data_size, 0.0, 1.0,
                     lo_open=True, hi_open=True)
        for key in ("box_score_threshold", "nms_iou_threshold", "tile_predictions_nms_threshold",
                    "mask_pixel_score_threshold"):
            _check_range(f"training.{key}", getattr(self, key), 0.0, 1.0)
        _check_range("training.validation_iou_threshold", self.validation_iou_threshold, 0.1, 1.0)
        _check_range("training.tile_overlap_ratio", self.tile_overlap_ratio, 0.0, 1.0,
                     hi_open=True)
        _check_choice("training.validation_metric_type", self.validation_metric_type,
                      ("none", "voc", "coco", "coco_voc"))
        if self.model_size == "xlarge":  # Azure's runtime alias
            self.model_size = "extra_large"
        _check_choice("training.model_size", self.model_size,
                      ("nano", "small", "medium", "large", "extra_large"))
        self.image_type = str(self.image_type).upper()
        _check_choice("training.image_type", self.image_type, ("JPG", "PNG", "BMP"))
        if self.min_size > self.max_size:
            raise ConfigError(f"training.min_size={self.min_size} is larger than "
                              f"training.max_size={self.max_size}: the shorter image side is "
                              "resized to min_size unless the longer side would exceed max_size. "
                              "Lower min_size or raise max_size.")
        _check_choice("training.learning_rate_scheduler", self.learning_rate_scheduler,
                      ("warmup_cosine", "step", "none"))
        if self.optimizer is not None:
            _check_choice("training.optimizer", self.optimizer, ("sgd", "adam", "adamw"))
        _check(self.weighted_loss in (0, 1, 2), "training.weighted_loss", self.weighted_loss,
               "0 (none), 1 (sqrt of class weights) or 2 (class weights)")
        if self.validation_crop_size > self.validation_resize_size:
            raise ConfigError(
                f"training.validation_crop_size={self.validation_crop_size} is larger than "
                f"training.validation_resize_size={self.validation_resize_size}: the center crop "
                "must fit inside the resized image. Raise validation_resize_size or lower the crop."
            )


@dataclass
class LimitsConfig:
    """``limits`` group: job limits with Azure's ranges (spec §5.1)."""

    max_trials: int = 1
    max_concurrent_trials: int = 1
    timeout_minutes: int = 10080  # 7 days

    def __post_init__(self) -> None:
        _check(1 <= self.max_trials <= 1000, "limits.max_trials", self.max_trials,
               "an integer in [1, 1000]")
        _check(1 <= self.max_concurrent_trials <= 100, "limits.max_concurrent_trials",
               self.max_concurrent_trials, "an integer in [1, 100]")
        _check(1 <= self.timeout_minutes <= 60 * 24 * 60, "limits.timeout_minutes",
               self.timeout_minutes, "minutes in [1, 86400] (60 days)")
        # Azure caps concurrency at max_trials.
        self.max_concurrent_trials = min(self.max_concurrent_trials, self.max_trials)


@dataclass
class AugmentationConfig:
    """``augmentation`` group: Azure's fixed presets (spec §1.8) and their two switches."""

    name: str = "azure"  # azure | none
    apply_automl_train_augmentations: bool = True
    apply_mosaic_for_yolo: bool = True

    def __post_init__(self) -> None:
        _check_choice("augmentation", self.name, ("azure", "none"))


@dataclass
class TrainerConfig:
    """``trainer`` group: Lightning Trainer settings (devices, nodes, precision, threads)."""

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool = False
    # torch intra-op threads; None = all cores available to this process.
    num_threads: int | None = None
    # NHWC memory format for convolution nets (faster on CPUs and on GPUs with mixed precision).
    channels_last: bool = True
    enable_progress_bar: bool = True
    log_every_n_steps: int = 10
    # Fractions or counts of batches, for smoke runs and tests.
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None
    # Stop training after this long ("DD:HH:MM:SS"), set per trial by the sweeper's timeout.
    max_time: str | None = None

    def __post_init__(self) -> None:
        _check_positive("trainer.num_nodes", self.num_nodes)
        _check_positive("trainer.num_threads", self.num_threads)


@dataclass
class EarlyTerminationConfig:
    """Azure's ``sweep.early_termination`` (spec §5.3)."""

    type: str = "none"  # none | bandit | median_stopping | truncation_selection
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    slack_factor: float | None = None
    slack_amount: float | None = None
    truncation_percentage: int | None = None
    exclude_finished_jobs: bool = False

    def __post_init__(self) -> None:
        _check_choice("sweeper.early_termination.type", self.type,
                      ("none", "bandit", "median_stopping", "truncation_selection"))
        _check_positive("sweeper.early_termination.evaluation_interval", self.evaluation_interval)
        _check_positive("sweeper.early_termination.delay_evaluation", self.delay_evaluation,
                        allow_zero=True)
        if self.type == "bandit" and (self.slack_factor is None) == (self.slack_amount is None):
            raise ConfigError("sweeper.early_termination.type=bandit needs exactly one of "
                              "slack_factor or slack_amount.")
        if self.type == "truncation_selection":
            pct = self.truncation_percentage
            _check(pct is not None and 1 <= pct <= 99,
                   "sweeper.early_termination.truncation_percentage", pct, "an integer in [1, 99]")


@dataclass
class SweeperConfig:
    """``sweeper`` group: sampling, search space and early termination of a sweep (``-m``)."""

    sampling_algorithm: str = "random"  # random | grid | bayesian
    # Azure's list of sub-spaces, e.g. [{model_name: {type: choice, values: [...]}, ...}].
    search_space: list[Any] = field(default_factory=list)
    early_termination: EarlyTerminationConfig = field(default_factory=EarlyTerminationConfig)
    seed: int | None = None
    # Optuna storage URL; None = a journal file in the sweep folder.
    storage: str | None = None
    study_name: str | None = None

    def __post_init__(self) -> None:
        _check_choice("sweeper.sampling_algorithm", self.sampling_algorithm,
                      ("random", "grid", "bayesian"))


@dataclass
class TrackingConfig:
    """MLflow tracking: None = a SQLite file ``mlflow.db`` under the output root."""

    uri: str | None = None
    experiment_name: str = "visionauto"
    enabled: bool = True


@dataclass
class RootConfig:
    """The whole job config. ``output_dir`` is the run folder (Hydra's ``hydra.run.dir``)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweeper: SweeperConfig = field(default_factory=SweeperConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output_dir: str | None = None
    # Root of all runs (holds mlflow.db); None = parent of the Hydra output folder.
    output_root: str | None = None
