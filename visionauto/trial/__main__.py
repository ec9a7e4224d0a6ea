"""``python -m visionauto.trial <run_dir>``: run one trial from ``<run_dir>/config.yaml``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from visionauto.errors import VisionAutoError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m visionauto.trial",
                                     description="Run one visionauto trial from a run folder.")
    parser.add_argument("run_dir", help="folder holding config.yaml (results are written there)")
    args = parser.parse_args(argv)
    _configure_logging()
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning 2.6 on torch 2.14
    from visionauto.config import load_config
    from visionauto.trial.runner import run_trial

    try:
        cfg = load_config(args.run_dir)
        result = run_trial(cfg, args.run_dir,
                           parent_run_id=os.environ.get("VISIONAUTO_PARENT_RUN_ID"))
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"[visionauto] {result['primary_metric']} = {result['primary_metric_value']:.4f} "
          f"after {result['epochs_run']} epochs ({result['train_seconds']:.1f} s)")
    return 0


def _configure_logging() -> None:
    """Our progress lines once, Lightning's own, and no tips or per-file MLflow progress bars."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[visionauto] %(message)s"))
    ours = logging.getLogger("visionauto")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage())
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


if __name__ == "__main__":
    sys.exit(main())
