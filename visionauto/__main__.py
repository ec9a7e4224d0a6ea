"""``python -m visionauto task=... data.train=... [model=...] [training.<param>=...] [-m]``.

The Hydra app: compose ``conf/`` against the schemas, validate the data once, then run the trial
in a subprocess (``python -m visionauto.trial <run_dir>``) so Lightning's DDP launcher can
re-execute it safely. User errors print one clear message and exit with code 2.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from visionauto.config import save_config, to_objects
from visionauto.config.store import register_configs
from visionauto.errors import VisionAutoError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("visionauto")

# Set once the task function runs: a Hydra exit before that is a composition (user) error.
_composed = False


def run_job(cfg: DictConfig) -> float | None:
    """Validate config and data into the run folder, then train one trial there."""
    global _composed
    _composed = True
    try:
        return _run_job(cfg)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def _run_job(cfg: DictConfig) -> float | None:
    from visionauto.config.resolve import resolve_defaults
    from visionauto.data.prepare import prepare_data

    job = resolve_defaults(to_objects(cfg))
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    cwd = Path(HydraConfig.get().runtime.cwd)
    output_root = Path(job.output_root) if job.output_root else cwd / "outputs"
    prepared = prepare_data(job.data, task=job.task.name,
                            validation_data_size=job.training.validation_data_size,
                            seed=job.training.random_seed, out_dir=run_dir)
    job = dataclasses.replace(
        job, output_dir=str(run_dir), output_root=str(output_root.resolve()),
        data=dataclasses.replace(job.data, train=str(prepared.train_path),
                                 validation=str(prepared.validation_path), prepared=True))
    save_config(job, run_dir / "config.yaml")
    code = subprocess.call([sys.executable, "-m", "visionauto.trial", str(run_dir)],
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if code != 0:
        print(f"error: the trial in {run_dir} failed (exit code {code}); partial results "
              "stay in that folder.", file=sys.stderr)
        sys.exit(code)
    _print_summary(run_dir)
    metrics = _read_metrics(run_dir)
    return metrics.get("primary_metric_value") if metrics else None


def _read_metrics(run_dir: Path) -> dict | None:
    import json

    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def _print_summary(run_dir: Path) -> None:
    metrics = _read_metrics(run_dir) or {}
    print(f"\n{metrics.get('primary_metric', 'primary metric')} = "
          f"{metrics.get('primary_metric_value', float('nan')):.4f}")
    print(f"run folder : {run_dir}")
    print(f"metrics    : {run_dir / 'metrics.json'}")
    print(f"model      : {run_dir / 'model'}  (MLflow pyfunc + settings.json)")
    print(f"plots      : {run_dir / 'plots'}")
    print(f"validation : {run_dir / 'validation_report.txt'}")


def main() -> None:
    """Console entry point (``visionauto ...``, same as ``python -m visionauto ...``)."""
    register_configs()
    app = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(run_job)
    try:
        app()
    except SystemExit as exc:
        # Hydra exits 1 on a composition error (unknown key, bad override) before the job runs:
        # that is the user's input, so it gets the user-error code.
        if exc.code == 1 and not _composed:
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
