"""Trial folders of a sweep: each trial's config, environment and share of the machine.

:class:`TrialPreparer` is the pool's ``prepare`` step: it composes the trial's config (base
overrides + the trial's), points it at the data validated once for the sweep, sets its
early-termination policy (so the trial process can rebuild the study's pruner), its threads,
loader workers and GPU (:func:`slot_resources`) and ``trainer.max_time`` (the time left before
the sweep's deadline), writes ``<sweep_dir>/trial_<number>/config.yaml``, and returns the
command ``python -m visionauto.trial <trial_dir>`` with the study's environment variables.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionauto.config.resolve import resolve_defaults
from visionauto.config.schema import RootConfig
from visionauto.job.prepare import write_trial_config
from visionauto.sweep.runner import TrialLaunch
from visionauto.sweep.space import OverrideDict
from visionauto.system import available_cpus
from visionauto.trial.status import study_env

if TYPE_CHECKING:
    from visionauto.sweep.orchestrate import SweepPlan, SweepRequest


class TrialPreparer:
    """Writes a trial folder and says how to launch it (see :data:`runner.PrepareFn`).

    ``parent_run_id`` (the sweep's MLflow run) is set once that run exists.
    """

    def __init__(
        self,
        req: SweepRequest,
        plan: SweepPlan,
        prepared: RootConfig,
        study: Any,
        spec: str,
        name: str,
        output_root: Path,
        n_slots: int,
    ) -> None:
        self.req, self.plan, self.prepared, self.study = req, plan, prepared, study
        self.spec, self.name, self.output_root, self.n_slots = spec, name, output_root, n_slots
        self.parent_run_id: str | None = None
        self.gpus = visible_gpus()

    def __call__(
        self, number: int, overrides: OverrideDict, slot: int, seconds_left: float
    ) -> TrialLaunch:
        """Write trial ``number``'s folder; raises a VisionAutoError for an invalid config."""
        trial_dir = self.req.sweep_dir.resolve() / f"trial_{number:03d}"
        cfg = self.req.compose(overrides)
        res = slot_resources(slot, self.n_slots, cpus=available_cpus(), gpus=self.gpus)
        trainer = dataclasses.replace(
            cfg.trainer,
            num_threads=cfg.trainer.num_threads or res["threads"],
            max_time=trial_max_time(cfg.trainer.max_time, seconds_left),
        )
        training = cfg.training
        if training.number_of_workers is None:
            training = dataclasses.replace(training, number_of_workers=res["workers"])
        cfg = dataclasses.replace(
            cfg,
            data=self.prepared.data,
            trainer=trainer,
            training=training,
            sweeper=dataclasses.replace(cfg.sweeper, early_termination=self.plan.early_termination),
        )
        cfg = resolve_defaults(cfg)
        write_trial_config(cfg, trial_dir, output_root=self.output_root)
        trial_id = self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number
        )
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(res["threads"]),
            **study_env(self.spec, self.name, trial_id, number),
        }
        if self.parent_run_id:
            env["VISIONAUTO_PARENT_RUN_ID"] = self.parent_run_id
        if res["cuda_visible_devices"] is not None:
            env["CUDA_VISIBLE_DEVICES"] = res["cuda_visible_devices"]
        return TrialLaunch(
            trial_dir,
            [sys.executable, "-m", "visionauto.trial", str(trial_dir)],
            env,
            cfg.model.name,
        )


def visible_gpus() -> list[str]:
    """CUDA device ids this process may hand out (honours an inherited CUDA_VISIBLE_DEVICES)."""
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return []  # no NVIDIA device node: skip importing torch (seconds) just to learn that
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA runtime means no GPUs to share
        return []
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in inherited.split(",") if d.strip()] if inherited else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def slot_resources(slot: int, n_slots: int, *, cpus: int, gpus: list[str]) -> dict:
    """The share of the machine of one concurrent trial slot.

    CPU cores are split evenly so the slots together never use more than ``cpus``: each slot
    gets ``cpus // n_slots`` (at least 1) for torch threads plus data-loader workers. GPUs: each
    slot gets its own device(s) (``len(gpus) // n_slots``); with more slots than GPUs, slots
    share them round-robin.

    Returns:
        ``{"threads": int, "workers": int, "cuda_visible_devices": str | None}``.
    """
    budget = max(1, cpus // max(1, n_slots))
    if gpus:
        workers = max(0, min(8, budget - 1))  # the GPU computes: cores feed it
        per_slot = max(1, len(gpus) // n_slots)
        if len(gpus) >= n_slots:
            devices = gpus[slot * per_slot : (slot + 1) * per_slot]
        else:
            devices = [gpus[slot % len(gpus)]]
        return {
            "threads": max(1, budget - workers),
            "workers": workers,
            "cuda_visible_devices": ",".join(devices),
        }
    workers = budget // 4 if budget >= 4 else 0  # on a CPU the cores compute; few feed
    return {"threads": budget - workers, "workers": workers, "cuda_visible_devices": None}


def trial_max_time(user: str | None, seconds_left: float) -> str:
    """``trainer.max_time`` of a trial: the time left before the sweep's deadline, or less."""
    seconds = int(max(1.0, seconds_left))
    if user:
        parts = [int(p) for p in user.split(":")]
        units = (1, 60, 3600, 86400)[: len(parts)]
        user_seconds = sum(v * m for v, m in zip(reversed(parts), units, strict=True))
        seconds = min(seconds, user_seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"
