"""MLflow model registry: register a model folder under a name (+ alias), load ``models:/`` refs.

A registered version is an MLflow *logged model* holding a copy of our model folder, so
``mlflow models serve -m models:/NAME@alias --env-manager local`` and
``visionauto.packaging.load_predictor("models:/NAME@alias")`` both work on it.

The tracking/registry URI is, in order: the ``tracking_uri`` argument, ``$MLFLOW_TRACKING_URI``,
or ``sqlite:///<abs>/outputs/mlflow.db`` under the current folder (the training default).
Aliases (``champion``, ``staging``) replace MLflow's deprecated stages.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from visionauto.errors import ModelError
from visionauto.packaging.predictor import Predictor, resolve_model_dir
from visionauto.packaging.settings import load_settings
from visionauto.tracking.mlflow_tracking import (
    ARTIFACTS_DIRNAME,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"
DEFAULT_OUTPUT_ROOT = Path("outputs")
DEFAULT_EXPERIMENT = "visionauto"
RUN_DIR_TAG = "visionauto.run_dir"  # set on each trial's MLflow run by the trial runner
# models:/NAME@alias, models:/NAME/3, models:/NAME/latest (NAME may hold '/', '@' is the alias cut)
_REF = re.compile(r"^models:/(?P<name>[^@]+?)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+|latest))$")

_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")

T = TypeVar("T")


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version.

    Attributes:
        name: registered model name.
        version: the version number MLflow gave it.
        alias: the alias set on it (or None).
        tracking_uri: the registry it lives in.
        source: the artifact URI MLflow loads the version from.
        model_dir: the local model folder it was registered from (None when resolved from a ref).
        run_id: the MLflow run of the trial that trained it, when found.
    """

    name: str
    version: int
    alias: str | None
    tracking_uri: str
    source: str
    model_dir: Path | None = None
    run_id: str | None = None

    @property
    def ref(self) -> str:
        """``models:/NAME@alias`` when an alias is set, else ``models:/NAME/<version>``."""
        tail = f"@{self.alias}" if self.alias else f"/{self.version}"
        return f"{REGISTRY_SCHEME}{self.name}{tail}"


def is_registry_ref(ref: str | Path) -> bool:
    """Whether ``ref`` names a registered model (``models:/...``) rather than a folder."""
    return isinstance(ref, str) and ref.startswith(REGISTRY_SCHEME)


def registry_uri(tracking_uri: str | None = None) -> str:
    """The registry to use: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the default file.

    Raises:
        ConfigError: the URI names MLflow's file store (refused by MLflow 3).
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    return resolve_tracking_uri(uri, DEFAULT_OUTPUT_ROOT)


@contextmanager
def _client(uri: str) -> Iterator[MlflowClient]:
    """An MlflowClient on ``uri``; the global URI is set too and restored after.

    MLflow's SQL registry store looks logged models up through a *default* client, so the
    global tracking URI must point at the same database while registering or downloading.
    """
    import mlflow
    from mlflow import MlflowClient

    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # set_tracking_uri mirrors the global into $MLFLOW_TRACKING_URI, so the env var is the state.
    previous = os.environ.get("MLFLOW_TRACKING_URI") or None
    mlflow.set_tracking_uri(uri)
    try:
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)
    finally:
        mlflow.set_tracking_uri(previous)


def _mlflow_call(what: str, uri: str, fn: Callable[[], T]) -> T:
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as err:
        raise ModelError(f"MLflow at {uri} refused to {what}: {err.message}") from err


def register_model(
    source: str | Path,
    *,
    name: str,
    alias: str | None = None,
    tracking_uri: str | None = None,
    experiment_name: str = DEFAULT_EXPERIMENT,
    description: str | None = None,
) -> RegisteredVersion:
    """Registers the model of a model, run or sweep folder as a new version of ``name``.

    Args:
        source: a model folder, a run folder (``model/``) or a sweep folder (``best/model/``).
        name: the registered model name (created on first use).
        alias: an alias to point at the new version (e.g. ``champion``); moved if it exists.
        tracking_uri: the registry (see :func:`registry_uri`).
        experiment_name: the MLflow experiment that holds the logged model.
        description: a note stored on the version.

    Returns:
        The new version; ``.ref`` is the ``models:/`` reference to load it with.

    Raises:
        ModelError: no model at ``source``, or MLflow refuses the name, alias or URI.
    """
    model_dir = resolve_model_dir(source).resolve()
    settings = load_settings(_settings_path(model_dir))
    if alias is not None:
        check_alias(alias)
    uri = registry_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    tags = {
        "task": settings["task"],
        "model_name": settings["model_name"],
        "class_names": ",".join(settings["class_names"]),
        "visionauto_version": str(settings.get("visionauto_version", "")),
        "source_dir": str(model_dir),
    }
    with _client(uri) as client:
        run_id = _trial_run_id(client, model_dir)
        logged = _log_model(client, uri, experiment_name, name, model_dir, run_id, tags)
        if not _exists(client, name):
            _mlflow_call(
                f"create registered model {name!r}",
                uri,
                lambda: client.create_registered_model(name, tags={"task": settings["task"]}),
            )
        version = _mlflow_call(
            f"register a version of {name!r}",
            uri,
            lambda: client.create_model_version(
                name,
                source=logged.artifact_location,
                run_id=run_id,
                tags=tags,
                description=description,
                model_id=logged.model_id,
            ),
        )
        if alias:
            _mlflow_call(
                f"set alias {alias!r} on {name!r} version {version.version}",
                uri,
                lambda: client.set_registered_model_alias(name, alias, str(version.version)),
            )
    log.info("registered %s version %s from %s in %s", name, version.version, model_dir, uri)
    return RegisteredVersion(
        name=name,
        version=int(version.version),
        alias=alias,
        tracking_uri=uri,
        source=logged.artifact_location,
        model_dir=model_dir,
        run_id=run_id,
    )


def _log_model(
    client: MlflowClient,
    uri: str,
    experiment_name: str,
    name: str,
    model_dir: Path,
    run_id: str | None,
    tags: dict[str, str],
) -> Any:
    """Copies ``model_dir`` into a new MLflow logged model (what the version points at)."""
    experiment_id = _experiment_id(client, uri, experiment_name)
    logged = _mlflow_call(
        f"create a logged model for {name!r}",
        uri,
        lambda: client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, tags=tags
        ),
    )
    client.log_model_artifacts(logged.model_id, str(model_dir))
    client.finalize_logged_model(logged.model_id, "READY")
    return logged


def check_alias(alias: str) -> str:
    """Checks an alias before anything is registered (MLflow would refuse it only afterwards).

    Raises:
        ModelError: not letters/digits/``_``/``-``, or reserved (``latest``, ``v<number>``).
    """
    if not _ALIAS.fullmatch(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise ModelError(
            f"alias {alias!r} is invalid: use letters, digits, '_' or '-' (e.g. champion); "
            "'latest' and v<number> are reserved by MLflow."
        )
    return alias


def _settings_path(model_dir: Path) -> Path:
    from visionauto.packaging.predictor import find_model_files

    return find_model_files(model_dir)[0]


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ModelError(
                f"MLflow experiment {name!r} in {uri} is deleted: restore it (mlflow experiments "
                f"restore --experiment-id {experiment.experiment_id}) or pass another experiment."
            )
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        # Artifacts beside the SQLite file, as the trials' tracker does.
        location = (Path(uri[len("sqlite:///") :]).parent / ARTIFACTS_DIRNAME).as_uri()
    return _mlflow_call(
        f"create experiment {name!r}",
        uri,
        lambda: client.create_experiment(name, artifact_location=location),
    )


def _trial_run_id(client: MlflowClient, model_dir: Path) -> str | None:
    """The MLflow run that trained ``model_dir`` (tagged with its run folder), if this store has it."""
    run_dir = str(model_dir.parent)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(
            experiments, filter_string=f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1
        )
    except Exception as err:  # lineage is a nicety: never fail a registration over it
        log.debug("could not search for the trial run of %s: %s", model_dir, err)
        return None
    return runs[0].info.run_id if runs else None


def _exists(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def resolve_version(ref: str, *, tracking_uri: str | None = None) -> RegisteredVersion:
    """Finds the version behind ``models:/NAME@alias``, ``models:/NAME/3`` or ``.../latest``.

    Raises:
        ModelError: malformed ref, or no such model, alias or version (the message lists what
            exists).
    """
    match = _REF.match(ref)
    if not match:
        raise ModelError(
            f"model reference {ref!r} is malformed: write models:/NAME@ALIAS, models:/NAME/VERSION "
            "or models:/NAME/latest."
        )
    name, alias, version = match["name"], match["alias"], match["version"]
    uri = registry_uri(tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ModelError(
            f"no model registry at {uri} (the file does not exist) for {ref}: register a model "
            "first (python -m visionauto.model register <run folder> --name NAME), or pass "
            "--tracking-uri / set MLFLOW_TRACKING_URI to the registry that holds it."
        )
    with _client(uri) as client:
        return _find_version(client, uri, name, alias, version)


def _find_version(
    client: MlflowClient, uri: str, name: str, alias: str | None, version: str | None
) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=100))
        raise ModelError(
            f"no registered model {name!r} in {uri} (registered: {', '.join(known) or 'none'}). "
            "Register one with: python -m visionauto.model register <run folder> --name NAME, "
            "or pass --tracking-uri / set MLFLOW_TRACKING_URI to the right registry."
        ) from None
    if alias is not None:
        if alias not in model.aliases:
            aliases = ", ".join(f"{a} -> v{v}" for a, v in sorted(model.aliases.items()))
            raise ModelError(
                f"registered model {name!r} in {uri} has no alias {alias!r} (aliases: "
                f"{aliases or 'none'}). Set one with python -m visionauto.model register ... "
                f"--alias {alias}."
            )
        version = str(model.aliases[alias])
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{_quote(name)}'")}
    number = max(versions, default=0) if version == "latest" else int(version)
    if number not in versions:
        raise ModelError(
            f"registered model {name!r} in {uri} has no version {version} "
            f"(versions: {', '.join(map(str, sorted(versions))) or 'none'})."
        )
    found = versions[number]
    return RegisteredVersion(
        name=name,
        version=number,
        alias=alias,
        tracking_uri=uri,
        source=found.source,
        run_id=found.run_id,
    )


def _quote(name: str) -> str:
    return name.replace("'", "\\'")


def download_model(ref: str, dst: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Copies the model folder of a registered version into ``dst`` (created if needed).

    Returns:
        The local model folder (``MLmodel`` + ``settings.json`` + ``artifacts/``).

    Raises:
        ModelError: see :func:`resolve_version`; or the artifacts cannot be fetched.
    """
    import mlflow.artifacts

    found = resolve_version(ref, tracking_uri=tracking_uri)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with _client(found.tracking_uri):
        local = _mlflow_call(
            f"download {found.ref}",
            found.tracking_uri,
            lambda: mlflow.artifacts.download_artifacts(
                artifact_uri=f"{REGISTRY_SCHEME}{found.name}/{found.version}",
                dst_path=str(dst),
                tracking_uri=found.tracking_uri,
            ),
        )
    return resolve_model_dir(local)


def load_registered_predictor(ref: str, *, tracking_uri: str | None = None, **kw: Any) -> Predictor:
    """Loads a :class:`Predictor` from ``models:/NAME@alias`` (or ``/VERSION``).

    The version is copied to a temporary folder, loaded into memory and the copy removed.

    Args:
        ref: the ``models:/`` reference.
        tracking_uri: the registry (see :func:`registry_uri`).
        **kw: passed to :meth:`Predictor.from_folder` (``settings_overrides``, ``device``).
    """
    with tempfile.TemporaryDirectory(prefix="visionauto-registry-") as tmp:
        return Predictor.from_folder(download_model(ref, tmp, tracking_uri=tracking_uri), **kw)
