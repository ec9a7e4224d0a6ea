"""The trial side of a sweep: report each evaluation to the shared Optuna study, stop when pruned.

The sweeper starts each trial with four environment variables
(:func:`visionauto.trial.status.study_env`). Rank 0
of the trial loads the study from the shared storage (journal file or database), reports the
primary metric after every validation (``trial.report(value, step)``) and asks the study's
pruner (our Azure early-termination policy, rebuilt from ``sweeper.early_termination`` in the
trial's config) whether to stop. A pruned trial sets ``trainer.should_stop`` (Lightning stops
after the current epoch), still writes its outputs, and says so in ``<trial>/status.json``.

The sweeper also asks running trials to finish at the sweep's deadline by creating
``<trial>/stop_requested``; the trial checks for it between batches and stops like a pruned one.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from visionauto.config.schema import RootConfig
from visionauto.trial.status import (
    ENV_STORAGE,
    ENV_STUDY_NAME,
    ENV_TRIAL_ID,
    STOP_FILE,
    write_status,
)

log = logging.getLogger("visionauto.trial")

_STOP_CHECK_SECONDS = 1.0


class StudyReporter(Callback):
    """Reports evaluations to the study, applies its pruner, and honours the sweeper's stop file.

    Use it twice: as a Lightning callback (it needs the trainer) and as the ``report`` hook of
    :class:`visionauto.trial.callbacks.MetricHistory`.

    Args:
        storage: the study storage (journal file path or database URL).
        study_name: the study's name.
        trial_id: Optuna's trial id (not the number) of this trial.
        primary_metric: the metric reported (Azure name, maximized).
        run_dir: the trial folder (``status.json``, ``stop_requested``).
        cfg: the trial config; ``sweeper.early_termination`` rebuilds the study's pruner.
    """

    def __init__(
        self,
        *,
        storage: str,
        study_name: str,
        trial_id: int,
        primary_metric: str,
        run_dir: str | Path,
        cfg: RootConfig,
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.primary_metric = primary_metric
        self.run_dir = Path(run_dir)
        self.cfg = cfg
        self.pruned = False
        self.stopped_by_sweeper = False
        self.last_value: float | None = None
        self.last_step: int | None = None
        self._trainer: Trainer | None = None
        self._trial: Any = None
        self._next_stop_check = 0.0

    @classmethod
    def from_env(cls, cfg: RootConfig, run_dir: str | Path) -> StudyReporter | None:
        """A reporter when the trial was started by the sweeper (env vars set), else None."""
        storage, name = os.environ.get(ENV_STORAGE), os.environ.get(ENV_STUDY_NAME)
        trial_id = os.environ.get(ENV_TRIAL_ID)
        if not (storage and name and trial_id):
            return None
        return cls(
            storage=storage,
            study_name=name,
            trial_id=int(trial_id),
            primary_metric=cfg.task.primary_metric,
            run_dir=run_dir,
            cfg=cfg,
        )

    def _optuna_trial(self) -> Any:
        if self._trial is None:
            import optuna

            from visionauto.sweep.pruners import build_pruner
            from visionauto.sweep.study import open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(
                study_name=self.study_name,
                storage=open_storage(self.storage),
                sampler=optuna.samplers.RandomSampler(),
                # No policy: never prune (load_study's default would be a MedianPruner).
                pruner=build_pruner(self.cfg.sweeper.early_termination)
                or optuna.pruners.NopPruner(),
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def __call__(self, eval_index: int, metrics: dict[str, float]) -> None:
        """MetricHistory hook: report evaluation ``eval_index`` (0-based) and maybe prune."""
        trainer = self._trainer
        decision = False
        if trainer is None or trainer.is_global_zero:
            value = metrics.get(self.primary_metric)
            if value is not None and math.isfinite(value):
                trial = self._optuna_trial()
                trial.report(float(value), eval_index)
                self.last_value, self.last_step = float(value), eval_index
                decision = bool(trial.should_prune())
        if trainer is not None and trainer.world_size > 1:
            decision = bool(trainer.strategy.broadcast(decision, src=0))
        if decision:
            self.pruned = True
            log.info(
                "pruned by the sweep's early termination policy after evaluation %d "
                "(%s=%.4f); finishing this epoch",
                eval_index + 1,
                self.primary_metric,
                self.last_value if self.last_value is not None else float("nan"),
            )
            if trainer is not None:
                trainer.should_stop = True

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.monotonic()
        if now < self._next_stop_check:
            return
        self._next_stop_check = now + _STOP_CHECK_SECONDS
        stop = (self.run_dir / STOP_FILE).exists()
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.broadcast(stop, src=0))
        if stop and not trainer.should_stop:
            log.info("the sweep asked this trial to finish (deadline reached); stopping now")
            self.stopped_by_sweeper = True
            trainer.should_stop = True

    def finish(self, result: dict[str, Any], mlflow_run_id: str | None) -> None:
        """Write ``status.json`` for the sweeper (rank 0 only)."""
        if self._trainer is not None and not self._trainer.is_global_zero:
            return
        common = {
            "value": result["primary_metric_value"],
            "epochs_run": result["epochs_run"],
            "mlflow_run_id": mlflow_run_id,
            "stopped_by_sweeper": self.stopped_by_sweeper,
        }
        if self.pruned:
            write_status(
                self.run_dir, "pruned", last_value=self.last_value, step=self.last_step, **common
            )
        else:
            write_status(self.run_dir, "complete", **common)
