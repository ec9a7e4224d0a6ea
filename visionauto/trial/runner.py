"""Run ONE trial from a resolved config: data → task → Lightning Trainer → outputs.

No Hydra here: a trial reads ``<run_dir>/config.yaml`` (written by the job or the sweeper), so
Lightning's DDP launcher can re-execute ``python -m visionauto.trial <run_dir>`` safely.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from visionauto.config import save_config
from visionauto.config.resolve import resolve_defaults
from visionauto.config.schema import RootConfig
from visionauto.data.prepare import load_prepared, prepare_data
from visionauto.system import available_cpus
from visionauto.tracking import RunTracker
from visionauto.trial.callbacks import BestCheckpoint, DelayedEarlyStopping, MetricHistory
from visionauto.trial.families import TaskFamily, build_family
from visionauto.trial.pruning import StudyReporter

log = logging.getLogger("visionauto.trial")

ReportFn = Callable[[int, dict[str, float]], None]


def run_trial(cfg: RootConfig, run_dir: str | Path, *, report: ReportFn | None = None,
              parent_run_id: str | None = None) -> dict[str, Any]:
    """Train, evaluate and package one model; returns the ``metrics.json`` content.

    Writes into ``run_dir``: ``config.yaml`` (if absent), ``checkpoints/``, ``metrics.json``,
    ``history.csv``, ``plots/``, ``model/`` (MLflow pyfunc). Partial results stay on failure.
    Started by a sweep (``VISIONAUTO_STUDY_*`` set), it also reports every evaluation to the
    study, stops when pruned, and writes ``status.json`` (:mod:`visionauto.trial.pruning`).
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolve_defaults(cfg)
    output_root = Path(cfg.output_root) if cfg.output_root else run_dir.parent
    threads = cfg.trainer.num_threads or available_cpus()
    torch.set_num_threads(threads)
    seed_everything(cfg.training.random_seed, workers=True, verbose=False)

    if not cfg.data.prepared:  # a trial started by hand on raw data: validate + split here
        prepared = prepare_data(cfg.data, task=cfg.task.name,
                                validation_data_size=cfg.training.validation_data_size,
                                seed=cfg.training.random_seed, out_dir=run_dir)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, train=str(prepared.train_path), validation=str(prepared.validation_path),
            prepared=True))
    if not (run_dir / "config.yaml").exists():
        save_config(cfg, run_dir / "config.yaml")
    train_records, val_records, class_names = load_prepared(cfg.data, task=cfg.task.name)

    family = build_family(cfg, train_records, val_records, class_names)
    tracker = RunTracker(uri=cfg.tracking.uri, output_root=output_root,
                         experiment_name=cfg.tracking.experiment_name, run_name=run_dir.name,
                         enabled=cfg.tracking.enabled, parent_run_id=parent_run_id,
                         tags={"visionauto.run_dir": str(run_dir), "task": cfg.task.name})
    reporter = StudyReporter.from_env(cfg, run_dir)
    with tracker:
        tracker.log_params(dataclasses.asdict(cfg))
        result = _fit_and_save(cfg, family, run_dir, tracker, report, threads, reporter)
    if reporter is not None:
        reporter.finish(result, tracker.run_id)
    return result


def _fit_and_save(cfg: RootConfig, family: TaskFamily, run_dir: Path, tracker: RunTracker,
                  report: ReportFn | None, threads: int,
                  reporter: StudyReporter | None = None) -> dict[str, Any]:
    t = cfg.training
    primary = cfg.task.primary_metric
    history = MetricHistory(tracker, _chain(report, reporter))
    best_ckpt = BestCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=primary,
                               mode="max", save_top_k=1, save_last=True,
                               auto_insert_metric_name=False, enable_version_counter=False)
    callbacks: list[Any] = [history, best_ckpt, *family.callbacks()]
    if reporter is not None:
        callbacks.append(reporter)
    if t.checkpoint_frequency:
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="epoch{epoch:03d}",
                                         every_n_epochs=t.checkpoint_frequency, save_top_k=-1,
                                         auto_insert_metric_name=False))
    if t.early_stopping:
        callbacks.append(DelayedEarlyStopping(monitor=primary, patience=t.early_stopping_patience,
                                              delay=t.early_stopping_delay))
    trainer = _build_trainer(cfg, run_dir, callbacks)
    log.info("training %s on %d images (%d validation), %d threads, %d loader workers",
             cfg.model.name, family.n_train, family.n_val, threads, t.number_of_workers)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Modules in eval mode on purpose: yolov5's EMA copy and frozen batch norms.
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
        trainer.fit(family.module, datamodule=family.datamodule)
    train_seconds = time.perf_counter() - start
    if trainer.interrupted:
        log.warning("training interrupted; evaluating the best checkpoint saved so far")

    best_path = best_ckpt.best_model_path or best_ckpt.last_model_path
    if best_path:
        state = torch.load(best_path, map_location="cpu", weights_only=False)["state_dict"]
        family.module.load_state_dict(state)
    trainer.validate(family.module, datamodule=family.datamodule, verbose=False)
    history.finalize_train_loss()

    system = _system_metrics(history, train_seconds, trainer.current_epoch)
    metrics = {**family.final_metrics(), **system}
    result = {
        "task": cfg.task.name,
        "primary_metric": primary,
        "primary_metric_value": float(metrics.get(primary, -1.0)),
        "metrics": metrics,
        "model_name": cfg.model.name,
        "epochs_run": int(trainer.current_epoch),
        "train_seconds": round(train_seconds, 3),
    }
    if trainer.is_global_zero:
        _write_outputs(cfg, family, run_dir, result, history)
        tracker.log_metrics(metrics)
        tracker.log_artifacts(run_dir / "plots", "plots")
        tracker.log_artifact(run_dir / "metrics.json")
        tracker.log_artifacts(run_dir / "model", "model")
    return result


def _chain(*hooks: ReportFn | None) -> ReportFn | None:
    """One report hook calling each given hook in order (None when there is none)."""
    live = [h for h in hooks if h is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def report(eval_index: int, metrics: dict[str, float]) -> None:
        for hook in live:
            hook(eval_index, metrics)

    return report


def _build_trainer(cfg: RootConfig, run_dir: Path, callbacks: list[Any]) -> Trainer:
    tr, t = cfg.trainer, cfg.training
    kwargs: dict[str, Any] = {}
    if tr.limit_train_batches is not None:
        kwargs["limit_train_batches"] = _int_if_whole(tr.limit_train_batches)
    if tr.limit_val_batches is not None:
        kwargs["limit_val_batches"] = _int_if_whole(tr.limit_val_batches)
    return Trainer(
        default_root_dir=run_dir, max_epochs=t.number_of_epochs, accelerator=tr.accelerator,
        devices=tr.devices, num_nodes=tr.num_nodes, strategy=tr.strategy, precision=tr.precision,
        deterministic=tr.deterministic, check_val_every_n_epoch=t.evaluation_frequency,
        accumulate_grad_batches=t.gradient_accumulation_step, callbacks=callbacks, logger=False,
        enable_progress_bar=tr.enable_progress_bar, log_every_n_steps=tr.log_every_n_steps,
        max_time=tr.max_time, num_sanity_val_steps=0, enable_model_summary=False,
        gradient_clip_val=5.0, gradient_clip_algorithm="value", **kwargs,
    )


def _int_if_whole(value: float) -> int | float:
    return int(value) if float(value).is_integer() and value > 1 else float(value)


def _system_metrics(history: MetricHistory, train_seconds: float, epochs: int) -> dict[str, float]:
    secs = history.epoch_seconds or [0.0]
    ips = history.train_images / history.train_seconds if history.train_seconds else 0.0
    return {
        "train_duration_seconds": round(train_seconds, 3),
        "train_epoch_count": float(epochs),
        "train_epoch_duration_seconds_avg": round(sum(secs) / len(secs), 3),
        "train_epoch_duration_seconds_max": round(max(secs), 3),
        "train_images_per_second": round(ips, 2),
    }


def _write_outputs(cfg: RootConfig, family: TaskFamily, run_dir: Path, result: dict[str, Any],
                   history: MetricHistory) -> None:
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if history.rows:
        keys = sorted({k for row in history.rows for k in row} - {"epoch"})
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(row["epoch"]), *(f"{row.get(k, '')}" for k in keys)])
                  for row in history.rows]
        (run_dir / "history.csv").write_text("\n".join(lines) + "\n")
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    family.write_reports(run_dir, plots, history.rows)
    family.save_model(run_dir / "model")
