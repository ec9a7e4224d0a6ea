"""Fill Azure's per-task/per-model defaults and check rules that span several groups.

Runs before any data is read, so a job with an impossible combination fails at once.
"""

from __future__ import annotations

import dataclasses

from visionauto.config.schema import DEFAULT_MODELS, RootConfig
from visionauto.errors import ConfigError
from visionauto.models.registry import (
    default_layers_to_freeze,
    default_optimizer,
    get_model_spec,
    model_defaults,
)
from visionauto.system import available_cpus

CLASSIFICATION_TASKS = ("classification", "multilabel")
# yolov5 from scratch: the share of the epochs at the end that train without mosaic (YOLOX's
# recipe).
MOSAIC_OFF_FRACTION = 0.15


def resolve_defaults(cfg: RootConfig) -> RootConfig:
    """Return a copy of ``cfg`` with every ``None`` training default filled for its task and model.

    Raises:
        ModelError: the model does not exist or does not solve the task.
        ConfigError: a cross-group rule is broken.
    """
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training))
    if cfg.model.name == "auto":
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, name=DEFAULT_MODELS[cfg.task.name]))
    task, training = cfg.task.name, cfg.training
    spec = get_model_spec(cfg.model.name, task)
    training.optimizer, learning_rate = default_optimizer(task, cfg.model.name, training.optimizer)
    if training.learning_rate is None:
        training.learning_rate = learning_rate
    for key, value in model_defaults(task, cfg.model.name).items():
        if getattr(training, key) is None:
            setattr(training, key, value)
    yolo = spec.source == "yolo"
    if training.box_score_threshold is None:  # yolov5 scores are objectness x class prob
        training.box_score_threshold = 0.1 if yolo else 0.3
    if training.layers_to_freeze is None:
        training.layers_to_freeze = default_layers_to_freeze(
            task, cfg.model.name, cfg.model.pretrained)
    if training.mosaic_off_epochs is None and yolo:
        # From scratch only: a pretrained backbone overfits the whole images instead (fridge
        # photos, yolov5_efficientnet_lite0, 30 epochs: COCO mAP 0.69 -> 0.53 after the switch).
        fraction = 0.0 if cfg.model.pretrained else MOSAIC_OFF_FRACTION
        training.mosaic_off_epochs = round(fraction * training.number_of_epochs)
    if training.number_of_workers is None:
        training.number_of_workers = min(available_cpus(), 8)
    _check_cross_rules(cfg, spec.layer_groups, yolo=yolo)
    return cfg


def _check_cross_rules(cfg: RootConfig, layer_groups: str | None, *, yolo: bool) -> None:
    t = cfg.training
    if cfg.task.name in CLASSIFICATION_TASKS and layer_groups == "vit":
        if t.validation_crop_size != t.training_crop_size:
            raise ConfigError(
                f"model={cfg.model.name} is a ViT: training.validation_crop_size "
                f"({t.validation_crop_size}) must equal training.training_crop_size "
                f"({t.training_crop_size}). Set both to the same value."
            )
    if t.tile_grid_size:
        if cfg.task.name != "detection" or yolo:
            raise ConfigError(
                f"training.tile_grid_size={t.tile_grid_size} works for task=detection with the "
                f"R-CNN / RetinaNet models only (as in Azure), not task={cfg.task.name} "
                f"model={cfg.model.name}. Drop tile_grid_size or pick e.g. "
                "model=fasterrcnn_resnet50_fpn."
            )
        from visionauto.data.tiling import parse_tile_grid_size

        parse_tile_grid_size(t.tile_grid_size)
    if t.checkpoint_new_head and not t.checkpoint:
        raise ConfigError("training.checkpoint_new_head=true needs training.checkpoint=<run folder "
                          "or .ckpt> to start from.")
    if cfg.model.weights_path and not cfg.model.pretrained:
        raise ConfigError("model.weights_path is set but model.pretrained=false: set "
                          "model.pretrained=true to load those weights, or drop weights_path.")
