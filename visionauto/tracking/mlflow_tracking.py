"""The one place that talks to MLflow tracking.

Default store: a SQLite file ``<output_root>/mlflow.db`` with artifacts under
``<output_root>/mlartifacts`` (absolute paths: Hydra may run jobs in other folders). MLflow's file
store (``./mlruns``) is refused: MLflow 3 deprecates it and raises unless told otherwise.
Everything goes through an explicit ``MlflowClient``, never the fluent ``mlflow.start_run`` API,
so a sweeper can hold a parent run and child runs in one process without global state.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from visionauto.errors import ConfigError

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

DB_FILENAME = "mlflow.db"
ARTIFACTS_DIRNAME = "mlartifacts"
PARENT_RUN_TAG = "mlflow.parentRunId"
_MAX_PARAM_LENGTH = 6000  # MLflow's MAX_PARAM_VAL_LENGTH
_PARAMS_PER_BATCH = 100  # MLflow's MAX_PARAMS_TAGS_PER_BATCH
_METRICS_PER_BATCH = 1000  # MLflow's MAX_METRICS_PER_BATCH
# Loggers that print schema migrations and table creation at INFO on every new database.
_NOISY_LOGGERS = (
    "alembic",
    "alembic.runtime.migration",
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_store",
)


def default_tracking_uri(output_root: Path) -> str:
    """``sqlite:///<abs output_root>/mlflow.db`` (the folder is created if needed)."""
    root = Path(output_root).expanduser().resolve()
    return f"sqlite:///{(root / DB_FILENAME).as_posix()}"


def resolve_tracking_uri(uri: str | None, output_root: Path) -> str:
    """Turns ``tracking.uri`` into the URI to use.

    Args:
        uri: ``None``/empty (the default SQLite file), ``sqlite:///path`` (a relative path is
            made absolute against the current folder), or a server URL (``http(s)://``,
            ``postgresql://``, ``databricks``, ...), passed through.
        output_root: the root of all runs; holds the default ``mlflow.db``.

    Raises:
        ConfigError: ``uri`` names MLflow's file store (a plain path or ``file:``).
    """
    if not uri:
        return default_tracking_uri(output_root)
    scheme = urlparse(uri).scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:2] == ":"):  # "C:\..." is a path
        raise ConfigError(
            f"tracking.uri={uri!r} is MLflow's file store, which MLflow 3 refuses. Use a SQLite "
            f"file (tracking.uri=sqlite:///{Path(uri.removeprefix('file:')).as_posix()}.db), "
            "an MLflow server (http://host:5000), or leave tracking.uri unset for "
            f"<output_root>/{DB_FILENAME}."
        )
    if scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:" and not Path(path).is_absolute():
            return f"sqlite:///{Path(path).resolve().as_posix()}"
    return uri


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; values longer than MLflow allows are truncated."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
            continue
        text = str(value)
        if len(text) > _MAX_PARAM_LENGTH:
            text = text[: _MAX_PARAM_LENGTH - 3] + "..."
        flat[name] = text
    return flat


def _quiet_mlflow_logging() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RunTracker:
    """One MLflow run; every method is a no-op when tracking is disabled.

    Example:
        >>> with RunTracker(uri=None, output_root=Path("outputs"), experiment_name="visionauto",
        ...                 run_name="trial_0") as tracker:
        ...     tracker.log_params({"training": {"learning_rate": 0.01}})
        ...     tracker.log_metrics({"accuracy": 0.9}, step=1)

    Attributes:
        run_id: the MLflow run id, or ``None`` when disabled.
        experiment_id: the MLflow experiment id, or ``None`` when disabled.
        tracking_uri: the resolved URI, or ``None`` when disabled.
    """

    def __init__(
        self,
        *,
        uri: str | None,
        output_root: Path,
        experiment_name: str,
        run_name: str,
        enabled: bool = True,
        parent_run_id: str | None = None,
        tags: dict | None = None,
    ) -> None:
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.tracking_uri: str | None = None
        self._client: MlflowClient | None = None
        self._ended = False
        if not enabled:
            return
        from mlflow import MlflowClient

        _quiet_mlflow_logging()
        root = Path(output_root).expanduser().resolve()
        self.tracking_uri = resolve_tracking_uri(uri, root)
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        self._client = MlflowClient(tracking_uri=self.tracking_uri)
        self.experiment_id = self._get_or_create_experiment(experiment_name, root)
        run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            run_tags[PARENT_RUN_TAG] = parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=run_name, tags=run_tags)
        self.run_id = run.info.run_id

    @property
    def enabled(self) -> bool:
        """Whether this tracker writes to MLflow."""
        return self._client is not None

    def _get_or_create_experiment(self, name: str, root: Path) -> str:
        from mlflow.exceptions import MlflowException

        assert self._client is not None
        # Artifacts next to the SQLite file; a server keeps its own artifact store.
        location = (
            (root / ARTIFACTS_DIRNAME).as_uri() if self.tracking_uri.startswith("sqlite:") else None
        )
        for attempt in range(3):
            experiment = self._client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    raise ConfigError(
                        f"MLflow experiment {name!r} in {self.tracking_uri} is deleted: restore it "
                        f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                        "or set tracking.experiment_name to another name."
                    )
                return experiment.experiment_id
            try:
                return self._client.create_experiment(name, artifact_location=location)
            except MlflowException:
                # Another process created it (or held the SQLite lock) first: look again.
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def log_params(self, params: dict) -> None:
        """Logs parameters; nested dicts become dotted keys (``training.learning_rate``)."""
        if not self.enabled or not params:
            return
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in flatten_params(params).items()]
        for chunk in _chunks(items, _PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=chunk, synchronous=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Logs numeric metrics at ``step``; NaN, infinite and non-numeric values are skipped."""
        if not self.enabled or not metrics:
            return
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                log.debug("metric %s=%r is not a number; not logged", key, value)
                continue
            if math.isfinite(number):
                items.append(Metric(key, number, timestamp, step or 0))
        for chunk in _chunks(items, _METRICS_PER_BATCH):
            self._client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def set_tags(self, tags: dict) -> None:
        """Sets run tags (e.g. ``best_child_run_id`` on a sweep's parent run)."""
        if not self.enabled or not tags:
            return
        from mlflow.entities import RunTag

        items = [RunTag(str(key), str(value)) for key, value in tags.items()]
        for chunk in _chunks(items, _PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, tags=chunk, synchronous=True)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        """Copies every file under ``local_dir`` into the run's artifacts (under ``artifact_path``)."""
        if self.enabled:
            self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copies one file into the run's artifacts (under ``artifact_path``)."""
        if self.enabled:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """Marks the run ended (``FINISHED``, ``FAILED`` or ``KILLED``); later calls do nothing."""
        if not self.enabled or self._ended:
            return
        self._client.set_terminated(self.run_id, status=status)
        self._ended = True

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")
