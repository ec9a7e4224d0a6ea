"""What a sweep leaves behind: leaderboard, ``best/``, plots, MLflow parent run, printed summary.

- ``<sweep_dir>/leaderboard.csv``: one row per trial, best first: ``rank`` (complete trials by
  primary metric, then pruned ones by their last reported value), ``trial``, ``state``,
  ``model_name``, one column per swept parameter (``training.`` prefix dropped), the primary
  metric, ``epochs`` and ``seconds``. Failed trials follow, unranked, with their reason.
- ``<sweep_dir>/best/``: the best complete trial's ``model/``, ``metrics.json``, ``config.yaml``
  and ``trial.json`` (number, overrides, folder).
- ``<sweep_dir>/plots/optimization_history.png`` and ``param_importances.png`` (the latter only
  with at least two complete trials whose parameters vary).
- The MLflow parent run gets the leaderboard, plots, best metric and the tag
  ``automl_best_child_run_id`` (Azure's name) pointing at the best trial's run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from visionauto.sweep.study import trial_overrides

log = logging.getLogger("visionauto.sweep")

STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
_HIDDEN_KEYS = ("model", "model.name")  # shown as model_name


def leaderboard_frame(study: optuna.Study, primary_metric: str) -> pd.DataFrame:
    """The leaderboard as a table (see the module doc); empty when the study has no trial."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    params: list[str] = []
    for t in trials:
        for key in trial_overrides(t):
            if key not in _HIDDEN_KEYS and key not in params:
                params.append(key)
    rows = []
    for t in trials:
        overrides = trial_overrides(t)
        row: dict[str, Any] = {
            "rank": None,
            "trial": t.number,
            "state": STATE_NAMES[t.state],
            "model_name": t.user_attrs.get("model_name", ""),
        }
        row.update({_column(k): overrides.get(k, "") for k in params})
        value = t.value if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else None
        row[primary_metric] = value
        row["epochs"] = t.user_attrs.get("epochs_run")
        row["seconds"] = t.user_attrs.get("seconds")
        if t.state == TrialState.FAIL:
            row["note"] = _one_line(t.user_attrs.get("fail_reason", ""))
        rows.append(row)
    if not rows:
        return pd.DataFrame(
            columns=["rank", "trial", "state", "model_name", primary_metric, "epochs", "seconds"]
        )
    frame = pd.DataFrame(rows)
    order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3}
    frame["_order"] = frame["state"].map(order)
    frame["_value"] = frame[primary_metric].map(
        lambda v: -v if isinstance(v, float) and not math.isnan(v) else math.inf
    )
    frame = frame.sort_values(["_order", "_value", "trial"]).drop(columns=["_order", "_value"])
    ranked = frame["state"].isin(["complete", "pruned"]) & frame[primary_metric].notna()
    frame.loc[ranked, "rank"] = range(1, int(ranked.sum()) + 1)
    frame["rank"] = frame["rank"].astype("Int64")
    frame["epochs"] = pd.to_numeric(frame["epochs"], errors="coerce").astype("Int64")
    return frame.reset_index(drop=True)


def format_table(frame: pd.DataFrame, primary_metric: str) -> str:
    """The leaderboard as printed at the end of a sweep (numbers shortened, no notes)."""
    shown = frame.drop(columns=[c for c in ("note",) if c in frame.columns])
    formatters: dict[str, Callable[[Any], str]] = {
        primary_metric: lambda v: "" if pd.isna(v) else f"{v:.4f}",
        "seconds": lambda v: "" if pd.isna(v) else f"{v:.0f}",
    }
    fixed = {"rank", "trial", "state", "model_name", "epochs", *formatters}
    for column in shown.columns:
        if column not in fixed:
            formatters[column] = _short_number
    return shown.to_string(index=False, na_rep="", formatters=formatters)


def _short_number(value: Any) -> str:
    """``0.055332536888805156`` -> ``0.05533``; other text unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() else f"{number:.4g}"


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best COMPLETE trial (pruned trials stopped early; their models are partial)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def copy_best(trial: FrozenTrial, sweep_dir: Path) -> Path:
    """Copy the best trial's model, metrics and config into ``<sweep_dir>/best/``."""
    src = Path(trial.user_attrs["trial_dir"])
    dst = sweep_dir / "best"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if (src / "model").is_dir():
        shutil.copytree(src / "model", dst / "model")
    for name in ("metrics.json", "config.yaml"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    info = {
        "trial": trial.number,
        "value": trial.value,
        "overrides": trial_overrides(trial),
        "trial_dir": str(src),
        "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
    }
    (dst / "trial.json").write_text(json.dumps(info, indent=2) + "\n")
    return dst


def write_plots(study: optuna.Study, plots_dir: Path) -> list[Path]:
    """Optimization history and parameter importances as PNG; skipped cleanly without data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with warnings.catch_warnings():
        # Experimental-API notices, and PED-ANOVA's "importances will be equal" on tiny studies.
        warnings.simplefilter("ignore")
        ax = ovm.plot_optimization_history(study)
        path = plots_dir / "optimization_history.png"
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append(path)
        params = _varying_params(complete)
        if params:
            try:
                ax = ovm.plot_param_importances(study, params=params)
            except (ValueError, RuntimeError) as err:
                log.info("no parameter-importance plot: %s", err)
            else:
                path = plots_dir / "param_importances.png"
                ax.figure.savefig(path, dpi=100, bbox_inches="tight")
                plt.close(ax.figure)
                written.append(path)
    return written


def _varying_params(complete: list[FrozenTrial]) -> list[str]:
    """Params present in every complete trial that has params, taking >1 value, over >= 2 trials."""
    with_params = [t for t in complete if t.params]
    if len(with_params) < 2:
        return []
    common = set.intersection(*(set(t.params) for t in with_params))
    return sorted(p for p in common if len({repr(t.params[p]) for t in with_params}) > 1)


def finish_sweep(
    study: optuna.Study,
    sweep_dir: Path,
    primary_metric: str,
    tracker: Any,
    *,
    echo: Callable[[str], None],
) -> FrozenTrial | None:
    """Write every output of the sweep, log them to the parent run, print the summary."""
    frame = leaderboard_frame(study, primary_metric)
    frame.to_csv(sweep_dir / "leaderboard.csv", index=False)
    plots = write_plots(study, sweep_dir / "plots")
    best = best_trial(study)
    echo("")
    echo(format_table(frame, primary_metric) if len(frame) else "[sweep] no trials ran")
    if best is not None:
        echo(f"\n[sweep] best: trial {best.number}, {primary_metric} = {best.value:.4f}")
        if Path(best.user_attrs.get("trial_dir", "/nonexistent")).is_dir():
            best_dir = copy_best(best, sweep_dir)
            echo(f"[sweep] model       : {best_dir / 'model'}  (MLflow pyfunc + settings.json)")
        else:  # run by another worker sharing the study (database storage)
            echo(
                f"[sweep] its folder is not on this machine "
                f"({best.user_attrs.get('trial_dir', 'unknown')}); best/ not written"
            )
    echo(f"[sweep] leaderboard : {sweep_dir / 'leaderboard.csv'}")
    if plots:
        echo(f"[sweep] plots       : {sweep_dir / 'plots'}")
    _log_to_parent(tracker, sweep_dir, frame, best, primary_metric, plots)
    return best


def _log_to_parent(
    tracker: Any,
    sweep_dir: Path,
    frame: pd.DataFrame,
    best: FrozenTrial | None,
    primary_metric: str,
    plots: list[Path],
) -> None:
    if tracker is None or not tracker.enabled:
        return
    counts = frame["state"].value_counts().to_dict() if len(frame) else {}
    tracker.log_metrics({f"trials_{state}": float(n) for state, n in counts.items()})
    tracker.log_artifact(sweep_dir / "leaderboard.csv")
    if (sweep_dir / "sweep.json").exists():
        tracker.log_artifact(sweep_dir / "sweep.json")
    for path in plots:
        tracker.log_artifact(path, "plots")
    if best is not None:
        tracker.log_metrics({primary_metric: float(best.value)})
        tags = {"best_trial": best.number}
        if best.user_attrs.get("mlflow_run_id"):
            tags["automl_best_child_run_id"] = best.user_attrs["mlflow_run_id"]
        tracker.set_tags(tags)


def _column(key: str) -> str:
    return key.removeprefix("training.")


def _one_line(text: str, width: int = 100) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= width else last[: width - 3] + "..."
