"""Steps shared by a single run and a sweep: validate the data once, write a trial's config.

A job validates and splits its data once into its folder (``<run or sweep dir>/data/``); every
trial then reads that clean split (``data.prepared=true``) and never validates again.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from visionauto.config import save_config
from visionauto.config.schema import RootConfig

log = logging.getLogger("visionauto")

CLASSES_FILE = Path("data") / "classes.json"


def job_output_root(job: RootConfig, cwd: Path) -> Path:
    """The root of all runs (holds ``mlflow.db``): ``output_root``, else ``<cwd>/outputs``."""
    return (Path(job.output_root) if job.output_root else Path(cwd) / "outputs").resolve()


def prepare_job_data(job: RootConfig, out_dir: Path, *, reuse: bool = False) -> RootConfig:
    """Validate and split the job's data into ``out_dir``; return the job pointing at the split.

    Args:
        job: the composed job config (raw ``data.train`` / ``data.validation``).
        out_dir: the run or sweep folder; receives ``validation_report.*`` and ``data/``.
        reuse: keep a split already written there (a resumed sweep must keep the exact split
            its earlier trials used).

    Returns:
        A copy of ``job`` with ``data.train``/``data.validation`` set to the clean split and
        ``data.prepared=true``.

    Raises:
        DataError: the data cannot be read or does not pass validation.
    """
    from visionauto.data.prepare import prepare_data

    out_dir = Path(out_dir).resolve()
    if job.data.prepared:
        return job
    if reuse and (out_dir / CLASSES_FILE).is_file():
        log.info("data: reusing the split validated earlier in %s", out_dir / "data")
        train, val = out_dir / "data" / "train.jsonl", out_dir / "data" / "validation.jsonl"
    else:
        prepared = prepare_data(
            job.data,
            task=job.task.name,
            validation_data_size=job.training.validation_data_size,
            seed=job.training.random_seed,
            out_dir=out_dir,
        )
        train, val = prepared.train_path, prepared.validation_path
    return dataclasses.replace(
        job,
        data=dataclasses.replace(job.data, train=str(train), validation=str(val), prepared=True),
    )


def write_trial_config(job: RootConfig, trial_dir: Path, *, output_root: Path) -> Path:
    """Write ``<trial_dir>/config.yaml`` for ``python -m visionauto.trial <trial_dir>``.

    Args:
        job: the trial's full config (data already prepared).
        trial_dir: the trial folder (created).
        output_root: the root of all runs (MLflow's SQLite file lives there).

    Returns:
        The path of the written config.
    """
    trial_dir = Path(trial_dir).resolve()
    trial_dir.mkdir(parents=True, exist_ok=True)
    job = dataclasses.replace(job, output_dir=str(trial_dir), output_root=str(output_root))
    path = trial_dir / "config.yaml"
    save_config(job, path)
    return path
