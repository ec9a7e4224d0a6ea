"""The sweep's Optuna study: storage, create-or-load, recovery after a kill, trial bookkeeping.

Storage: by default an Optuna journal file ``<sweep_dir>/optuna_journal.log`` (append-only, safe
for several processes on one machine and on NFS); ``sweeper.storage`` takes any database URL
(``postgresql://user@host/db`` for workers on many machines, ``sqlite:///study.db``).

Bookkeeping lives in each trial's user attributes, so the study alone is enough to resume a
sweep and to write its leaderboard: ``overrides`` (the trial's config overrides), ``trial_dir``,
``model_name``, ``seconds``, ``fail_reason``, ``worker`` (``host:pid`` of the sweeper that ran it),
``portfolio`` (AutoMode portfolio index), ``retry_of`` and ``stale``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from visionauto.errors import VisionAutoError

log = logging.getLogger("visionauto.sweep")


class SweepError(VisionAutoError):
    """A sweep cannot start or go on, or it ended without any usable trial."""


JOURNAL_FILENAME = "optuna_journal.log"
DIRECTION = "maximize"  # every Azure primary metric is maximized
# States that use up the trial budget. A FAIL marked ``stale`` (its sweeper was killed) does not.
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def storage_spec(sweep_dir: Path, storage: str | None) -> str:
    """The storage a study lives in: ``storage`` (a database URL) or the sweep's journal file.

    The returned string is what trials receive in ``VISIONAUTO_STUDY_STORAGE``.
    """
    if storage:
        return storage
    return str((Path(sweep_dir) / JOURNAL_FILENAME).resolve())


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """Open a storage named by :func:`storage_spec`: a URL (``scheme://``) or a journal path."""
    if "://" in spec:
        return optuna.storages.RDBStorage(database_url(spec), engine_kwargs={"pool_pre_ping": True})
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def database_url(url: str) -> str:
    """Pick an installed PostgreSQL driver for a bare ``postgresql://`` URL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; our ``postgres`` extra installs
    psycopg2, so without psycopg 3 the URL is sent to ``postgresql+psycopg2://``.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def default_study_name(sweep_dir: Path) -> str:
    """A stable name per sweep folder (so rerunning the same command resumes the same study)."""
    path = str(Path(sweep_dir).resolve())
    return f"visionauto-{Path(path).name}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def create_or_load_study(
    spec: str,
    study_name: str,
    *,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None,
) -> optuna.Study:
    """Create the study, or load it when it exists (a resumed sweep); direction is maximize."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=open_storage(spec),
        study_name=study_name,
        direction=DIRECTION,
        sampler=sampler,
        pruner=pruner or optuna.pruners.NopPruner(),
        load_if_exists=True,
    )


def worker_id() -> str:
    """``host:pid`` of this sweeper process (recorded on each trial it launches)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_alive(worker: str | None) -> bool | None:
    """True/False for a sweeper on this host; None when it ran on another machine."""
    if not worker or ":" not in worker:
        return False
    host, _, pid_text = worker.rpartition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():  # a reused pid: this sweeper has launched nothing yet
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return b"visionauto" in cmdline  # guards against a reused pid


def recover_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials of a killed sweep as FAIL and queue their parameters once more.

    A RUNNING trial is stale when the sweeper that launched it (``worker`` user attribute) no
    longer runs on this machine. Trials of sweepers on other machines (shared database) are left
    alone. A retry of a retry is not queued again.

    Returns:
        The numbers of the trials marked failed.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _worker_alive(trial.user_attrs.get("worker")) is not False:
            continue
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "stale", True)
        storage.set_trial_user_attr(
            trial._trial_id, "fail_reason", "the sweep was stopped while this trial ran"
        )
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        failed.append(trial.number)
        if "retry_of" in trial.user_attrs:
            log.warning("trial %d was a retry already; not retried again", trial.number)
            continue
        attrs = {k: v for k, v in trial.user_attrs.items() if k in ("overrides", "portfolio")}
        study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": trial.number})
    if failed:
        log.warning(
            "marked %d trial(s) of an interrupted sweep as failed and queued them once more: %s",
            len(failed),
            ", ".join(map(str, failed)),
        )
    return failed


def budget_used(study: optuna.Study) -> int:
    """Trials that count against ``max_trials``: finished or running, not failed as ``stale``.

    Counting from storage (like ``optuna.study.MaxTrialsCallback``) keeps a resumed sweep, or
    several sweepers sharing one study, from overshooting.
    """
    trials = study.get_trials(deepcopy=False, states=BUDGET_STATES)
    return sum(1 for t in trials if not t.user_attrs.get("stale"))


def has_waiting(study: optuna.Study) -> bool:
    """Whether enqueued trials (portfolio, retries) wait to be asked."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def set_attrs(study: optuna.Study, trial_id: int, attrs: dict[str, Any]) -> None:
    """Set user attributes of an unfinished trial."""
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial_id, key, value)


def trial_overrides(trial: FrozenTrial) -> dict[str, str]:
    """The config overrides a trial ran with (from its ``overrides`` user attribute)."""
    raw = trial.user_attrs.get("overrides")
    if isinstance(raw, str):
        return json.loads(raw)
    return dict(raw or {})
