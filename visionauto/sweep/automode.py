"""AutoMode: what a sweep does when the user gives a trial budget and nothing else (spec §5.1).

Azure starts AutoMode when ``limits.max_trials > 1`` and no search space, sampling algorithm or
early-termination policy is set. It says only that it picks the architecture and values such as
learning rate, epochs and layers to freeze, "based on the number of trials"; the portfolio is not
published. Ours, in three phases:

1. **Portfolio.** An ordered list of known-good configurations per task, tried first, one trial
   each, best bets first: a small budget (``max_trials <= len(portfolio)``) runs only the head of
   the list. Models with usable pretrained weights come first, because fine-tuning ImageNet
   weights beats every other choice on small data sets. Offline (no model hub) that is only
   ``efficientnet_lite0``, whose weights ship with the install, so the offline portfolio varies
   the training recipe of that one model. Online the portfolio spans Azure's catalog in the order
   of expected accuracy per cost: ``seresnext`` (Azure's documented default), ``vitb16r224``
   (Azure's how-to default, strongest transfer), ``resnet50``, ``efficientnet_lite0`` (fast),
   then recipe variants: a frozen stem for small data sets, AdamW, a longer schedule. Learning
   rates and epochs are Azure's per-model defaults (spec §1.4: CNNs 0.01 multiclass / 0.035
   multilabel, ViT 0.0125 / 0.025, 15 epochs).
2. **TPE** (multivariate, constant liar) over a per-task default space: model, learning rate
   (log scale), epochs, optimizer, layers to freeze. Every portfolio entry is a point of this
   space, so the sweeper queues the portfolio with
   ``study.enqueue_trial(plan.space.params_for(entry))`` and TPE learns from those trials.
   TPE samples at random until it has 10 results (Optuna's startup), portfolio included.
3. **Bandit pruning** (slack factor 0.2, every evaluation, from the 3rd on) stops trials that fall
   clearly behind the best learning curve, so more of the budget and time limit goes to good
   regions. A slack of 20 % is loose enough not to cut a slow starter that will catch up.

The sweep still stops at ``limits.max_trials`` or ``limits.timeout_minutes``, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from visionauto.config.schema import EarlyTerminationConfig
from visionauto.errors import ConfigError
from visionauto.sweep.expressions import format_value
from visionauto.sweep.space import OverrideDict, SearchSpace, build_search_space

AUTOMODE_TASKS = ("classification", "multilabel", "detection", "instance_segmentation")
# Catalog models whose ImageNet weights ship with the install (no download; see models/weights.py).
OFFLINE_MODELS = ("efficientnet_lite0",)
# Online candidates of the TPE phase, in portfolio order; vitl16r224 and resnet152 are left out:
# several times the cost of vitb16r224/resnet50 for little gain on the small data sets of AutoML.
ONLINE_MODELS = (
    "seresnext",
    "vitb16r224",
    "resnet50",
    "efficientnet_lite0",
    "resnest50",
    "mobilenetv2",
    "vits16r224",
    "resnet18",
)

# (model, learning rate multiclass, learning rate multilabel, epochs, optimizer, layers_to_freeze,
#  why). Azure's per-model defaults unless the entry varies the recipe on purpose.
_ONLINE = (
    ("seresnext", 0.01, 0.035, 15, "sgd", 0, "Azure's default classifier and recipe"),
    ("vitb16r224", 0.0125, 0.025, 15, "sgd", 0, "Azure's how-to default; best transfer"),
    ("resnet50", 0.01, 0.035, 15, "sgd", 0, "a different CNN family, robust on any data"),
    ("efficientnet_lite0", 0.01, 0.035, 15, "sgd", 0, "fast; pretrained even offline"),
    ("seresnext", 0.005, 0.02, 15, "sgd", 2, "frozen stem + stage 1: small data sets"),
    ("vitb16r224", 0.0005, 0.001, 15, "adamw", 0, "ViTs are often tuned with AdamW"),
    ("resnest50", 0.01, 0.035, 20, "sgd", 0, "split-attention CNN, longer schedule"),
    ("mobilenetv2", 0.01, 0.035, 15, "sgd", 0, "cheap: for a tight time limit"),
)
_OFFLINE = (
    ("efficientnet_lite0", 0.01, 0.035, 15, "sgd", 0, "Azure's CNN recipe"),
    ("efficientnet_lite0", 0.01, 0.035, 15, "sgd", 2, "frozen stem + block 0: small data sets"),
    ("efficientnet_lite0", 0.001, 0.002, 15, "adamw", 0, "adaptive optimizer"),
    ("efficientnet_lite0", 0.02, 0.05, 25, "sgd", 0, "longer schedule, higher rate"),
    ("efficientnet_lite0", 0.003, 0.01, 20, "sgd", 0, "gentle fine-tuning"),
)
# Detection and instance segmentation: (model, learning rate, epochs, optimizer, why). Offline only
# the efficientnet_lite0 backbone has ImageNet weights, and yolov5 trains from scratch (its
# CSP backbone has no permissive pretrained weights: stack-facts §6). In 30 epochs on the fridge
# photos yolov5_efficientnet_lite0 reaches COCO mAP 0.73 where yolov5 (small) is at 0.33.
_OBJECT_TABLES: dict[str, dict[bool, tuple]] = {
    "detection": {
        False: (
            ("fasterrcnn_resnet50_fpn", 0.005, 15, "sgd", "Azure's default; COCO weights"),
            ("yolov5", 0.002, 30, "adamw", "one-stage, fast inference; AdamW from scratch"),
            ("retinanet_resnet50_fpn", 0.005, 15, "sgd", "one-stage, COCO weights"),
            ("fasterrcnn_efficientnet_lite0_fpn", 0.01, 15, "sgd", "light backbone for CPUs"),
            ("fasterrcnn_resnet50_fpn", 0.01, 25, "sgd", "longer schedule, higher rate"),
        ),
        True: (
            ("fasterrcnn_efficientnet_lite0_fpn", 0.01, 15, "sgd", "ImageNet backbone offline"),
            ("yolov5_efficientnet_lite0", 0.002, 30, "adamw", "one-stage, ImageNet backbone"),
            ("fasterrcnn_efficientnet_lite0_fpn", 0.02, 25, "sgd", "longer, higher rate"),
            ("yolov5", 0.002, 30, "adamw", "one-stage, AdamW from scratch"),
            ("retinanet_efficientnet_lite0_fpn", 0.01, 15, "sgd", "one-stage, ImageNet backbone"),
        ),
    },
    "instance_segmentation": {
        False: (
            ("maskrcnn_resnet50_fpn", 0.005, 15, "sgd", "Azure's default; COCO weights"),
            ("maskrcnn_resnet50_fpn", 0.01, 25, "sgd", "longer schedule, higher rate"),
            ("maskrcnn_efficientnet_lite0_fpn", 0.01, 15, "sgd", "light backbone for CPUs"),
        ),
        True: (
            ("maskrcnn_efficientnet_lite0_fpn", 0.01, 15, "sgd", "ImageNet backbone offline"),
            ("maskrcnn_efficientnet_lite0_fpn", 0.02, 25, "sgd", "longer, higher rate"),
            ("maskrcnn_efficientnet_lite0_fpn", 0.005, 20, "adamw", "adaptive optimizer"),
        ),
    },
}
_OBJECT_SPACE = {
    "training.learning_rate": "tag(log, interval(0.0005, 0.03))",
    "training.number_of_epochs": "range(10, 40, 5)",
    "training.optimizer": "choice(sgd, adamw)",
}
# Default space of the TPE phase (Hydra sweep syntax); the model entry is added per mode.
_SPACE = {
    "training.learning_rate": "tag(log, interval(0.0001, 0.05))",
    "training.number_of_epochs": "range(10, 35, 5)",
    "training.optimizer": "choice(sgd, adam, adamw)",
    "training.layers_to_freeze": "choice(0, 1, 2)",
}


@dataclass
class AutoModePlan:
    """What AutoMode runs.

    Attributes:
        portfolio: override dicts tried first, in order (at most ``max_trials``).
        space: the space TPE explores next; every portfolio entry is a point of it.
        early_termination: the policy of the whole sweep (bandit).
        sampling_algorithm: the sampler of the second phase (always ``bayesian``).
    """

    portfolio: list[OverrideDict]
    space: SearchSpace
    early_termination: EarlyTerminationConfig = field(
        default_factory=lambda: EarlyTerminationConfig(
            type="bandit", slack_factor=0.2, evaluation_interval=1, delay_evaluation=3
        )
    )
    sampling_algorithm: str = "bayesian"


def automode_plan(task: str, *, max_trials: int, offline: bool) -> AutoModePlan:
    """AutoMode's portfolio, search space and early-termination policy for a task.

    Args:
        task: one of :data:`AUTOMODE_TASKS`.
        max_trials: the trial budget; the portfolio is cut to it.
        offline: no model hub reachable: only models whose weights ship with the install.

    Raises:
        ConfigError: the task has no AutoMode plan, or ``max_trials < 1``.
    """
    if task not in AUTOMODE_TASKS:
        raise ConfigError(
            f"AutoMode has no plan for task={task} yet (it has for "
            f"{', '.join(AUTOMODE_TASKS)}). Fix: give sweeper.search_space and "
            "sweeper.sampling_algorithm, or run single trials (limits.max_trials=1)."
        )
    if max_trials < 1:
        raise ConfigError(
            f"limits.max_trials={max_trials} is invalid: expected an integer in [1, 1000]."
        )
    if task in _OBJECT_TABLES:
        rows = _OBJECT_TABLES[task][offline]
        portfolio = [_object_entry(row) for row in rows][:max_trials]
        models = tuple(dict.fromkeys(row[0] for row in rows))
        space_base = _OBJECT_SPACE
    else:
        table = _OFFLINE if offline else _ONLINE
        models = OFFLINE_MODELS if offline else ONLINE_MODELS
        portfolio = [_entry(row, task) for row in table][:max_trials]
        space_base = _SPACE
    model_sweep = f"choice({', '.join(models)})" if len(models) > 1 else models[0]
    space = build_search_space(None, {"model": model_sweep, **space_base})
    return AutoModePlan(portfolio=portfolio, space=space)


def _object_entry(row: tuple) -> OverrideDict:
    model, lr, epochs, optimizer, _why = row
    return {
        "model": model,
        "training.learning_rate": format_value(lr),
        "training.number_of_epochs": format_value(epochs),
        "training.optimizer": optimizer,
    }


def _entry(row: tuple, task: str) -> OverrideDict:
    model, lr_multiclass, lr_multilabel, epochs, optimizer, freeze, _why = row
    lr = lr_multilabel if task == "multilabel" else lr_multiclass
    return {
        "model": model,
        "training.learning_rate": format_value(lr),
        "training.number_of_epochs": format_value(epochs),
        "training.optimizer": optimizer,
        "training.layers_to_freeze": format_value(freeze),
    }
