"""The AutoML job around trials: data preparation shared by runs and sweeps, Azure job files.

``python -m visionauto.job run job.yml`` runs an Azure AutoML image job file (see
:mod:`visionauto.job.azure`).
"""

from __future__ import annotations

_started = False


def mark_started() -> None:
    """Record that composition succeeded and the job (run or sweep) began.

    ``python -m visionauto`` maps Hydra's exit code 1 to the user-error code 2 only for failures
    before this point (a bad override), so later exits keep their own code.
    """
    global _started
    _started = True


def started() -> bool:
    """Whether :func:`mark_started` was called in this process."""
    return _started
