"""Search spaces of a sweep: Azure's list of sub-spaces plus Hydra sweeps from the command line.

A :class:`SearchSpace` is a list of sub-spaces; each maps a parameter name to a
:class:`~visionauto.sweep.expressions.Param`. Azure names (``model_name``, ``learning_rate``, ...)
become Hydra overrides through :func:`azure_key_to_override`; Hydra keys
(``training.learning_rate``) are used as they are.

Optuna parameter names: with one sub-space, the parameter's own name (``learning_rate``,
``training.optimizer``). With several (a conditional space), the trial first suggests
``subspace`` (categorical, ``0 .. n-1``), then that sub-space's parameters as ``s<i>:<name>``
(``s1:learning_rate``), so a parameter of one sub-space never shares an Optuna distribution with
another sub-space's (TPE, grid and the importance plots all rely on one distribution per name).
Fixed values are not suggested: they only appear in the override dict.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import visionauto
from visionauto.config.schema import TrainingConfig
from visionauto.errors import ConfigError, ModelError
from visionauto.sweep.expressions import Param, format_value, parse_azure_param
from visionauto.sweep.hydra_syntax import parse_hydra_param

if TYPE_CHECKING:
    import optuna

OverrideDict = dict[str, str]
"""Hydra override key -> value text, e.g. ``{"model": "resnet18", "training.learning_rate": "0.003"}``."""

CONF_DIR = Path(visionauto.__file__).resolve().parent.parent / "conf"
SUBSPACE_PARAM = "subspace"
MODEL_KEY = "model_name"


@dataclass
class SearchSpace:
    """A sweep's search space (spec §5.2).

    Attributes:
        subspaces: Azure's list of sub-spaces (one entry when the space is not conditional);
            each maps a parameter name to its :class:`Param`.
    """

    subspaces: list[dict[str, Param]]

    def __post_init__(self) -> None:
        if not self.subspaces:
            self.subspaces = [{}]

    @property
    def is_conditional(self) -> bool:
        """More than one sub-space: the trial first picks one (Optuna param ``subspace``)."""
        return len(self.subspaces) > 1

    @property
    def is_discrete(self) -> bool:
        """Every parameter is enumerable, so grid search is possible."""
        return all(param.is_discrete for _, _, param in self.items())

    def items(self) -> Iterator[tuple[int, str, Param]]:
        """``(sub-space index, parameter name, Param)`` for every parameter, fixed ones included."""
        for index, sub in enumerate(self.subspaces):
            for name, param in sub.items():
                yield index, name, param

    def optuna_name(self, index: int, name: str) -> str:
        """The Optuna parameter name of ``name`` in sub-space ``index`` (see the module doc)."""
        return f"s{index}:{name}" if self.is_conditional else name

    def suggest(self, trial: optuna.trial.BaseTrial) -> OverrideDict:
        """Draw one point, define-by-run, and return it as Hydra overrides.

        Args:
            trial: an Optuna trial (``study.ask()``), or a ``FixedTrial`` for tests.

        Returns:
            Override key -> value text, e.g. ``{"model": "seresnext", "training.learning_rate":
            "0.0042"}``; only the keys of the chosen sub-space.
        """
        index = 0
        if self.is_conditional:
            index = trial.suggest_categorical(SUBSPACE_PARAM, list(range(len(self.subspaces))))
        overrides: OverrideDict = {}
        for name, param in self.subspaces[index].items():
            value = param.suggest(trial, self.optuna_name(index, name))
            overrides.update(to_override(name, param.origin, value))
        return overrides

    def grid_size(self) -> int | None:
        """Number of distinct points (sum over sub-spaces of the product of value counts), or
        None when a parameter is continuous."""
        if not self.is_discrete:
            return None
        total = 0
        for sub in self.subspaces:
            size = 1
            for param in sub.values():
                size *= param.count()
            total += size
        return total

    def grid_values(self) -> dict[str, list[Any]]:
        """``{optuna name: values}`` of a one-sub-space discrete space, for ``GridSampler``."""
        assert not self.is_conditional and self.is_discrete
        return {
            name: param.grid_values()
            for name, param in self.subspaces[0].items()
            if param.kind != "fixed"
        }

    def params_for(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        """The Optuna params for which :meth:`suggest` returns exactly ``overrides``.

        Use it to queue known points: ``study.enqueue_trial(space.params_for(o))`` (the AutoMode
        portfolio), so that samplers such as TPE learn from those trials too.

        Raises:
            ConfigError: no sub-space produces these overrides (unknown key, value out of range).
        """
        for index, sub in enumerate(self.subspaces):
            try:
                return self._invert(index, sub, overrides)
            except (KeyError, ValueError):
                continue
        raise ConfigError(
            f"The overrides {dict(overrides)} are not a point of the search space "
            f"({self.describe()}): every key must be a parameter of one sub-space "
            "and every value in its range."
        )

    def _invert(
        self, index: int, sub: dict[str, Param], overrides: Mapping[str, str]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {SUBSPACE_PARAM: index} if self.is_conditional else {}
        used: set[str] = set()
        for name, param in sub.items():
            if param.origin == "azure" and name == MODEL_KEY:
                key = "model.name" if overrides["model"] == "timm" else "model"
                used.add("model")
            else:
                key = name if param.origin == "override" else f"training.{name}"

            def render(value: Any, name: str = name, param: Param = param, key: str = key) -> str:
                return to_override(name, param.origin, value).get(key, "")

            value = param.invert(overrides[key], render)
            used.add(key)
            if param.kind != "fixed":
                params[self.optuna_name(index, name)] = value
        if set(overrides) - used:
            raise ValueError(f"keys not in sub-space {index}: {set(overrides) - used}")
        return params

    def describe(self) -> str:
        """One line per sub-space, e.g. ``s0: model_name=seresnext, learning_rate=uniform(...)``."""
        lines = []
        for index, sub in enumerate(self.subspaces):
            body = ", ".join(f"{name}={param.describe()}" for name, param in sub.items())
            lines.append(f"s{index}: {body or '(defaults)'}")
        return "\n".join(lines)


def build_search_space(
    search_space: list[dict] | Mapping | None, sweep_overrides: Mapping[str, str] | None = None
) -> SearchSpace:
    """Build a search space from Azure's YAML/REST form and Hydra sweeps of the command line.

    Args:
        search_space: Azure's list of sub-spaces (plain containers, e.g. from
            ``OmegaConf.to_container``), each ``{azure name: expression or fixed value}``; a
            single mapping is one sub-space. None or ``[]``: no Azure space.
        sweep_overrides: Hydra override key -> raw value text, e.g.
            ``{"training.learning_rate": "interval(1e-4,1e-2)", "model": "resnet18,seresnext"}``.
            They apply to every sub-space (and replace a sub-space's entry for the same key),
            or form the only sub-space when ``search_space`` is empty.

    Raises:
        ConfigError: an unknown parameter name (with close matches), a bad expression, an
            unknown model config.
        ModelError: an unknown ``model_name`` value (with close matches).
    """
    hydra_params = {
        str(k): parse_hydra_param(str(k), str(v)) for k, v in (sweep_overrides or {}).items()
    }
    for key, param in hydra_params.items():
        _check_override_key(key, param)
    raw = [search_space] if isinstance(search_space, Mapping) else list(search_space or [])
    if not raw:
        return SearchSpace([dict(hydra_params)])
    subspaces = []
    for index, sub in enumerate(raw):
        where = f"sweeper.search_space[{index}]"
        if not isinstance(sub, Mapping):
            raise ConfigError(
                f"{where} must map parameter names to expressions, e.g. "
                "{model_name: seresnext, learning_rate: {type: uniform, "
                f"min_value: 0.001, max_value: 0.01}}; got {sub!r}."
            )
        params: dict[str, Param] = {}
        for name, spec in sub.items():
            name = str(name)
            check_azure_key(name, f"{where}.{name}")
            params[name] = parse_azure_param(spec, f"{where}.{name}")
            if name == MODEL_KEY:
                _check_model_names(params[name], f"{where}.{name}")
        # Command-line sweeps win over the same key of the YAML space (they come later).
        taken = set(hydra_params)
        params = {n: p for n, p in params.items() if not _override_keys(n) & taken}
        subspaces.append({**params, **hydra_params})
    return SearchSpace(subspaces)


def azure_key_to_override(name: str, value: Any) -> OverrideDict:
    """Translate one Azure job-API parameter and its value into Hydra overrides.

    ``model_name`` -> ``{"model": <name>}`` when ``conf/model/<name>.yaml`` exists, else
    ``{"model": "timm", "model.name": <name>}``; any other name -> ``{"training.<name>": value}``
    (bools written ``true``/``false`` and whole floats as ints for integer fields, since Azure
    spaces give ``nesterov`` as 0/1 and ``quniform`` yields floats).

    Raises:
        ConfigError: ``name`` is not ``model_name`` nor a field of ``TrainingConfig``.
    """
    if name == MODEL_KEY:
        model = str(value)
        if _model_config_exists(model):
            return {"model": format_value(model)}
        return {"model": "timm", "model.name": format_value(model)}
    check_azure_key(name, name)
    return {f"training.{name}": format_value(_coerce(value, _training_fields()[name]))}


def to_override(name: str, origin: str, value: Any) -> OverrideDict:
    """A parameter value as overrides: Azure names are translated, Hydra keys used as they are."""
    if origin == "azure":
        return azure_key_to_override(name, value)
    return {name: format_value(value)}


def check_azure_key(name: str, where: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is ``model_name`` or an Azure training param."""
    known = [MODEL_KEY, *_training_fields()]
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(
        f"{where}: unknown search-space parameter {name!r}.{hint} Parameters are "
        f"Azure job-API names: {', '.join(known)}."
    )


def _check_override_key(key: str, param: Param) -> None:
    """Catch typos of command-line sweeps before any trial runs (the rest fails at compose)."""
    if key.startswith("training."):
        field = key.removeprefix("training.")
        if field not in _training_fields():
            close = difflib.get_close_matches(field, list(_training_fields()), n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join('training.' + c for c in close)}?" if close else ""
            raise ConfigError(f"Sweep override {key}: unknown training parameter {field!r}.{hint}")
    values = param.values if param.kind in ("fixed", "choice") else ()
    if key == "model":
        options = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        for value in values:
            if not _model_config_exists(str(value)):
                close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.5)
                hint = f" Did you mean {' or '.join(close)}?" if close else ""
                raise ConfigError(
                    f"Sweep override model: no model config {value!r}.{hint} "
                    f"Options: {', '.join(options)}; any timm model: "
                    "model=timm model.name=<timm name>."
                )
    if key == "model.name":
        _check_model_names(param, "Sweep override model.name")


def _check_model_names(param: Param, where: str) -> None:
    from visionauto.models.registry import get_model_spec

    for value in param.values if param.kind in ("fixed", "choice") else ():
        try:
            get_model_spec(str(value))
        except ModelError as err:
            raise ModelError(f"{where}: {err}") from None


def _override_keys(name: str) -> set[str]:
    """The override keys an Azure name writes (to let a command-line sweep replace it)."""
    if name == MODEL_KEY:
        return {"model", "model.name"}
    return {f"training.{name}"}


def _coerce(value: Any, field_type: str) -> Any:
    """Fit a sampled value to the schema field's type (annotations are strings here)."""
    if field_type.startswith("bool") and value in (0, 1) and not isinstance(value, float):
        return bool(value)
    if field_type.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and field_type.startswith(("int", "float")):
        # REST search spaces may hold numbers as strings: "0.01" must not reach Hydra as a string.
        for parse in (int, float):
            try:
                return _coerce(parse(value), field_type)
            except ValueError:
                continue
    return value


@cache
def _training_fields() -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(TrainingConfig)}


def _model_config_exists(name: str) -> bool:
    return "/" not in name and (CONF_DIR / "model" / f"{name}.yaml").is_file()
