"""Several deployments behind one endpoint, with Azure's blue/green traffic split.

A deployment is a named model (folder or ``models:/`` ref) with optional load-time settings.
Traffic is a percentage per deployment summing to 100; a request without the
``azureml-model-deployment`` header goes to a deployment drawn by weight, one with the header
goes to the named deployment (also when its weight is 0, as Azure does for testing).

Deployments come from ``--deployment blue=<ref>:90`` arguments or a YAML file::

    deployments:
      - name: blue
        model: outputs/run1/model        # relative to this file's folder
      - name: green
        model: models:/fridge@challenger
        settings: {valid_crop_size: 256}
    traffic: {blue: 90, green: 10}

The split changes without a restart through ``PUT /deployments/traffic`` or by editing the
file's ``traffic`` (polled); changing the models themselves needs a restart.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visionauto.errors import ConfigError, VisionAutoError
from visionauto.serve.batching import MicroBatcher, PredictorLike

log = logging.getLogger(__name__)

PIN_HEADER = "azureml-model-deployment"
DEFAULT_NAME = "default"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")


@dataclass(frozen=True)
class DeploymentSpec:
    """What to deploy: ``name``, the ``model`` reference, its traffic and load-time settings."""

    name: str
    model: str
    traffic: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _check_name(name: str, where: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: deployment name {name!r} is invalid: use 1-32 letters, digits or '-', "
            "starting with a letter (e.g. blue)."
        )
    return name


def parse_deployment_arg(text: str) -> DeploymentSpec:
    """``blue=<ref>:90`` (or ``blue=<ref>`` for a single deployment) -> a spec.

    The weight is the part after the last ``:`` when it is a whole number, so refs such as
    ``models:/fridge@champion`` keep their own colons.

    Raises:
        ConfigError: no ``=``, a bad name, or an empty model reference.
    """
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise ConfigError(
            f"--deployment {text!r} is invalid: write NAME=MODEL:WEIGHT, e.g. "
            "--deployment blue=outputs/run/model:90."
        )
    _check_name(name.strip(), f"--deployment {text!r}")
    model, colon, weight = rest.rpartition(":")
    if colon and weight.strip().isdigit() and model:
        return DeploymentSpec(name.strip(), model, int(weight))
    return DeploymentSpec(name.strip(), rest)


def load_deployments_file(path: str | Path) -> tuple[list[DeploymentSpec], dict[str, int]]:
    """Reads a deployments YAML file (format in the module docstring).

    Returns:
        ``(specs, traffic)`` with model paths made absolute against the file's folder.

    Raises:
        ConfigError: the file is missing, not YAML, or lacks ``deployments``.
    """
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"cannot read deployments file {path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"deployments file {path} is not valid YAML: {err}") from None
    entries = spec.get("deployments") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(
            f"{path} has no 'deployments' list: write deployments: [{{name: blue, model: "
            "<folder or models:/NAME@alias>}}, ...] and traffic: {blue: 100}."
        )
    specs = []
    for index, entry in enumerate(entries):
        where = f"{path}: deployments[{index}]"
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("model"):
            raise ConfigError(f"{where} needs 'name' and 'model' (got {entry!r}).")
        settings = entry.get("settings") or {}
        if not isinstance(settings, dict):
            raise ConfigError(f"{where}.settings must be a mapping, got {settings!r}.")
        model = str(entry["model"])
        if not model.startswith("models:/") and not Path(model).expanduser().is_absolute():
            model = str((path.parent / model).resolve())
        specs.append(
            DeploymentSpec(_check_name(str(entry["name"]), where), model, settings=dict(settings))
        )
    traffic = spec.get("traffic")
    if traffic is None and len(specs) == 1:
        traffic = {specs[0].name: 100}
    return specs, check_traffic([s.name for s in specs], traffic, where=str(path))


def check_traffic(names: list[str], traffic: Any, *, where: str) -> dict[str, int]:
    """Validates a traffic split: known names, whole percentages, total 100; unlisted get 0.

    Raises:
        ConfigError: the message says which rule failed and how the split should look.
    """
    example = ", ".join(f"{n}: {100 if i == 0 else 0}" for i, n in enumerate(names))
    if not isinstance(traffic, Mapping):
        raise ConfigError(
            f"{where}: traffic must map deployment names to percentages, e.g. {{{example}}}; "
            f"got {traffic!r}."
        )
    unknown = sorted(set(map(str, traffic)) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: traffic names unknown deployment(s) {unknown}; deployments are {names}."
        )
    split = {name: 0 for name in names}
    for name, value in traffic.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise ConfigError(
                f"{where}: traffic of {name!r} is {value!r}: expected a whole percentage 0-100."
            )
        split[str(name)] = value
    if sum(split.values()) != 100:
        raise ConfigError(
            f"{where}: traffic adds up to {sum(split.values())}%: it must add up to 100 "
            f"(e.g. {{{example}}})."
        )
    return split


def specs_traffic(specs: list[DeploymentSpec]) -> dict[str, int]:
    """The split given with ``--deployment NAME=REF:WEIGHT`` arguments (one alone may omit it)."""
    if len(specs) == 1 and specs[0].traffic is None:
        return {specs[0].name: 100}
    missing = [s.name for s in specs if s.traffic is None]
    if missing:
        raise ConfigError(
            f"--deployment {', '.join(missing)} has no weight: with several deployments give "
            "each one, e.g. --deployment blue=<ref>:90 --deployment green=<ref>:10."
        )
    return check_traffic(
        [s.name for s in specs], {s.name: s.traffic for s in specs}, where="--deployment"
    )


class Deployment:
    """One named model: its loading state, predictor and batcher.

    Attributes:
        state: ``loading``, ``ready`` or ``failed``.
        error: why loading failed (``failed`` only).
    """

    def __init__(self, spec: DeploymentSpec, batcher: MicroBatcher) -> None:
        self.spec = spec
        self.name = spec.name
        self.batcher = batcher
        self.predictor: PredictorLike | None = None
        self.state = "loading"
        self.error: str | None = None


class DeploymentSet:
    """The deployments of one endpoint, their traffic split and background loading.

    Args:
        specs: the deployments (unique names).
        traffic: a split accepted by :func:`check_traffic`.
        loader: builds the predictor of a spec (called in a background thread).
        max_batch_size: see :class:`visionauto.serve.batching.MicroBatcher`.
        max_wait_ms: see :class:`visionauto.serve.batching.MicroBatcher`.
        seed: seeds the traffic draw (tests); None = random.
    """

    def __init__(
        self,
        specs: list[DeploymentSpec],
        traffic: dict[str, int],
        *,
        loader: Callable[[DeploymentSpec], PredictorLike],
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        seed: int | None = None,
    ) -> None:
        names = [s.name for s in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"deployment names must be unique: {duplicates} given twice.")
        self.deployments = {
            s.name: Deployment(
                s, MicroBatcher(None, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms)
            )
            for s in specs
        }
        self.traffic = check_traffic(names, traffic, where="traffic")
        self._loader = loader
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether every deployment is loaded."""
        return all(d.state == "ready" for d in self.deployments.values())

    def load_all(self) -> None:
        """Loads every deployment in turn (run it in a background thread)."""
        for deployment in self.deployments.values():
            try:
                predictor = self._loader(deployment.spec)
            except Exception as err:  # shown by /health/ready; a bug also gets its traceback
                if not isinstance(err, VisionAutoError):
                    log.exception("loading deployment %s failed", deployment.name)
                deployment.error = f"{type(err).__name__}: {err}"
                deployment.state = "failed"
                log.error("deployment %s failed to load: %s", deployment.name, err)
                continue
            deployment.predictor = predictor
            deployment.batcher.predictor = predictor
            deployment.state = "ready"
            log.info("deployment %s ready (%s)", deployment.name, deployment.spec.model)

    def choose(self, pinned: str | None = None) -> Deployment:
        """The deployment of one request: ``pinned`` if given, else a draw by traffic weight.

        Raises:
            KeyError: ``pinned`` names no deployment.
        """
        if pinned:
            return self.deployments[pinned]
        with self._lock:
            names = [n for n, w in self.traffic.items() if w > 0]
            weights = [self.traffic[n] for n in names]
            name = self._rng.choices(names, weights=weights)[0]
        return self.deployments[name]

    def set_traffic(self, traffic: Any, *, where: str = "traffic") -> dict[str, int]:
        """Replaces the split (validated first); returns the new one."""
        split = check_traffic(list(self.deployments), traffic, where=where)
        with self._lock:
            self.traffic = split
        log.info("traffic is now %s", split)
        return split

    def describe(self) -> list[dict[str, Any]]:
        """One dict per deployment: name, model, traffic, state, error, batching counters."""
        return [
            {
                "name": d.name,
                "model": d.spec.model,
                "traffic": self.traffic.get(d.name, 0),
                "state": d.state,
                "error": d.error,
                "stats": d.batcher.stats.as_dict(),
            }
            for d in self.deployments.values()
        ]


class TrafficFileWatcher:
    """Re-reads the ``traffic`` of a deployments file when it changes (polling its mtime)."""

    def __init__(self, path: Path, deployments: DeploymentSet, interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.deployments = deployments
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._mtime = self._stat()
        self._thread = threading.Thread(target=self._run, name="visionauto-traffic", daemon=True)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            mtime = self._stat()
            if mtime is None or mtime == self._mtime:
                continue
            self._mtime = mtime
            self.reload()

    def reload(self) -> None:
        """Applies the file's traffic; a bad file is logged and the current split kept."""
        try:
            specs, traffic = load_deployments_file(self.path)
            current = {n: d.spec.model for n, d in self.deployments.deployments.items()}
            if {s.name: s.model for s in specs} != current:
                log.warning(
                    "%s changed its deployments or models: only 'traffic' is applied without a "
                    "restart; restart the endpoint to change models.",
                    self.path,
                )
            self.deployments.set_traffic(traffic, where=str(self.path))
        except VisionAutoError as err:
            log.error("ignoring the new %s: %s", self.path, err)
