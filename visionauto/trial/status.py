"""How a sweep and its trial processes talk, without heavy imports (the sweeper reads these).

- Environment of a trial started by a sweep: the study's storage and name, the trial's id and
  number (:func:`study_env`).
- ``<trial>/status.json``, written by the trial at its end: ``{"state": "complete" | "pruned",
  "value": ..., "last_value": ..., "step": ..., "epochs_run": ..., "mlflow_run_id": ...}``.
- ``<trial>/stop_requested``, created by the sweeper at its deadline: the trial finishes early.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ENV_STORAGE = "VISIONAUTO_STUDY_STORAGE"
ENV_STUDY_NAME = "VISIONAUTO_STUDY_NAME"
ENV_TRIAL_ID = "VISIONAUTO_TRIAL_ID"
ENV_TRIAL_NUMBER = "VISIONAUTO_TRIAL_NUMBER"
STATUS_FILE = "status.json"
STOP_FILE = "stop_requested"


def study_env(storage: str, study_name: str, trial_id: int, trial_number: int) -> dict[str, str]:
    """The environment variables that connect a trial process to its study."""
    return {
        ENV_STORAGE: storage,
        ENV_STUDY_NAME: study_name,
        ENV_TRIAL_ID: str(trial_id),
        ENV_TRIAL_NUMBER: str(trial_number),
    }


def write_status(run_dir: str | Path, state: str, **fields: Any) -> None:
    """Write ``<run_dir>/status.json`` atomically (the sweeper may read it at any moment)."""
    path = Path(run_dir) / STATUS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"state": state, **fields}, indent=2) + "\n")
    tmp.replace(path)


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """``status.json`` of a trial, or None when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
