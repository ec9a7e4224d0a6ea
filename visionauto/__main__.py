"""``python -m visionauto task=... data.train=... [model=...] [training.<param>=...] [-m]``.

The Hydra app: compose ``conf/`` against the schemas, validate the data once, then run the trial
in a subprocess (``python -m visionauto.trial <run_dir>``) so Lightning's DDP launcher can
re-execute it safely. With ``-m`` Hydra hands the command line to our sweeper
(``hydra/sweeper=visionauto``, :mod:`hydra_plugins.visionauto_sweeper`), which runs a study of
such trials. User errors print one clear message and exit with code 2.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from visionauto.config import to_objects
from visionauto.config.store import register_configs
from visionauto.errors import VisionAutoError
from visionauto.job import mark_started, started

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("visionauto")

# Set once the task function runs: a Hydra exit before that is a composition (user) error.
_composed = False


def run_job(cfg: DictConfig) -> float | None:
    """Validate config and data into the run folder, then train one trial there."""
    global _composed
    _composed = True
    mark_started()
    try:
        return _run_job(cfg)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)


def _run_job(cfg: DictConfig) -> float | None:
    from visionauto.config.resolve import resolve_defaults
    from visionauto.job.prepare import job_output_root, prepare_job_data, write_trial_config

    job = resolve_defaults(to_objects(cfg))
    if job.limits.max_trials > 1:
        log.warning("limits.max_trials=%d is set but this is a single run: add -m to run a "
                    "sweep (python -m visionauto ... -m).", job.limits.max_trials)
    run_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
    output_root = job_output_root(job, Path(HydraConfig.get().runtime.cwd))
    job = prepare_job_data(job, run_dir)
    write_trial_config(job, run_dir, output_root=output_root)
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
        if exc.code == 1 and not (_composed or started()):
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
