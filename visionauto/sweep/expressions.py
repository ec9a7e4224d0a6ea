"""One search-space parameter: Azure's sampling expressions and Hydra's sweeps as Optuna suggestions.

A :class:`Param` is one entry of a sub-space. It comes from Azure's YAML/REST search space
(:func:`parse_azure_param`, spec §5.2) or from Hydra's sweep syntax on the command line
(:func:`visionauto.sweep.hydra_syntax.parse_hydra_param`). ``Param.suggest`` draws a value through an Optuna trial, define-by-run:

==================  ==================================================================
expression          Optuna suggestion (the value the trial stores under the param name)
==================  ==================================================================
choice(values)      ``suggest_categorical(values)``
randint(upper)      ``suggest_int(0, upper - 1)``
uniform(a, b)       ``suggest_float(a, b)``
quniform(a, b, q)   the multiples of ``q`` that ``round(U(a, b) / q) * q`` can give:
                    ``suggest_int``/``suggest_float`` with ``step=q`` (the value itself);
                    uniform over them (Azure's rounding gives the two ends half weight)
loguniform(a, b)    ``suggest_float(exp(a), exp(b), log=True)``: bounds are **exponents**
qloguniform(a,b,q)  ``suggest_int(k_lo, k_hi, log=True)`` on the multiplier ``k``; value ``k*q``.
                    Log-uniform like Azure, yet finite, so grid search can enumerate it.
                    ``k >= 1``: a quantized log value is never 0
normal(mu, s)       Optuna has no normal distribution: a quantile ``u`` is suggested
(q/log variants)    uniform in ``(1e-6, 1 - 1e-6)`` and mapped through the normal inverse
                    CDF ``NormalDist(mu, s).inv_cdf(u)``; ``exp`` for lognormal, then
                    ``round(x / q) * q`` for the q-variants. Random sampling of ``u`` gives
                    exactly the normal law (truncated at +-4.75 sigma); TPE models ``u``.
interval(a, b)      Hydra: ``suggest_float(a, b)``; ``tag(log, ...)`` log scale (real bounds);
                    ``tag(int, ...)`` ``suggest_int`` (parsed in :mod:`.hydra_syntax`)
range(a, b, s)      Hydra: ``suggest_int(a, last, step=s)`` for integers, else a choice
a,b / choice(a, b)  Hydra: ``suggest_categorical``
==================  ==================================================================
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from visionauto.errors import ConfigError

if TYPE_CHECKING:
    import optuna

# Azure expression -> its YAML keys, in the positional order of the REST string form (spec §5.2).
AZURE_EXPRESSIONS: dict[str, tuple[str, ...]] = {
    "choice": ("values",),
    "randint": ("upper",),
    "uniform": ("min_value", "max_value"),
    "quniform": ("min_value", "max_value", "q"),
    "loguniform": ("min_value", "max_value"),
    "qloguniform": ("min_value", "max_value", "q"),
    "normal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "lognormal": ("mu", "sigma"),
    "qlognormal": ("mu", "sigma", "q"),
}
NORMAL_KINDS = ("normal", "qnormal", "lognormal", "qlognormal")
# Kinds with finitely many values: what grid search can enumerate.
DISCRETE_KINDS = ("fixed", "choice", "randint", "quniform", "qloguniform", "int")
# Quantile bounds of the normal family (inv_cdf is infinite at 0 and 1).
U_EPS = 1e-6

_EXPRESSION_RE = re.compile(r"^\s*([A-Za-z]+)\s*\(")
_PLAIN_STRING_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")
_HYDRA_KEYWORDS = {"true", "false", "null", "nan", "inf"}
_EXAMPLES = (
    'e.g. {type: uniform, min_value: 0.001, max_value: 0.01}, "uniform(0.001, 0.01)", '
    "{type: choice, values: [resnet18, seresnext]} or a plain value"
)


@dataclass(frozen=True)
class Param:
    """One search-space entry.

    Attributes:
        kind: ``"fixed"``, an Azure expression (:data:`AZURE_EXPRESSIONS`), ``"interval"``
            (Hydra float interval, real bounds) or ``"int"`` (Hydra int range / int interval).
        origin: ``"azure"`` (an Azure job-API name such as ``learning_rate``) or ``"override"``
            (a Hydra override key such as ``training.learning_rate``, used as is).
        values: ``fixed``: ``(value,)``; ``choice``: the options.
        low: ``min_value`` (an exponent for the log kinds) or the interval's start.
        high: ``max_value`` (an exponent for the log kinds), the interval's end (inclusive),
            or ``upper`` (exclusive) for ``randint``.
        q: quantization step of the q-kinds, the step of ``int``.
        mu: mean of the normal family.
        sigma: standard deviation of the normal family.
        log: log scale for ``interval`` and ``int``.
    """

    kind: str
    origin: str = "azure"
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    q: float | None = None
    mu: float = 0.0
    sigma: float = 1.0
    log: bool = False

    @property
    def is_discrete(self) -> bool:
        """Whether every value can be enumerated (grid search possible)."""
        return self.kind in DISCRETE_KINDS

    def suggest(self, trial: optuna.trial.BaseTrial, name: str) -> Any:
        """Draw this parameter's value through ``trial`` under the Optuna name ``name``."""
        kind = self.kind
        if kind == "fixed":
            return self.values[0]
        if kind == "choice":
            return trial.suggest_categorical(name, list(self.values))
        if kind == "randint":
            return trial.suggest_int(name, 0, int(self.high) - 1)
        if kind in ("uniform", "interval"):
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if kind == "loguniform":
            return trial.suggest_float(name, math.exp(self.low), math.exp(self.high), log=True)
        if kind == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.q or 1), log=self.log
            )
        if kind == "quniform":
            k_lo, k_hi = self.multipliers()
            if self._integral_q:
                q = int(self.q)
                return trial.suggest_int(name, k_lo * q, k_hi * q, step=q)
            low, high = self.times_q(k_lo), self.times_q(k_hi)
            return _clean(trial.suggest_float(name, low, high, step=self.q))
        if kind == "qloguniform":
            return self.times_q(trial.suggest_int(name, *self.multipliers(), log=True))
        assert kind in NORMAL_KINDS, kind
        return self.from_quantile(trial.suggest_float(name, U_EPS, 1.0 - U_EPS))

    def from_quantile(self, u: float) -> float | int:
        """Normal family: the value at quantile ``u`` of ``N(mu, sigma)`` (then exp, round)."""
        x = NormalDist(self.mu, self.sigma).inv_cdf(u)
        if self.kind in ("lognormal", "qlognormal"):
            x = math.exp(x)
        if self.q is not None:
            return self.times_q(math.floor(x / self.q + 0.5))
        return x

    def multipliers(self) -> tuple[int, int]:
        """q-kinds: the range ``[k_lo, k_hi]`` of ``k`` in ``value = k * q``."""
        assert self.q is not None
        if self.kind == "qloguniform":
            lo, hi = math.exp(self.low), math.exp(self.high)
            return max(1, _round_half_up(lo / self.q)), _round_half_up(hi / self.q)
        return _round_half_up(self.low / self.q), _round_half_up(self.high / self.q)

    def times_q(self, k: int) -> int | float:
        """``k * q`` as an int when ``q`` is a whole number, else a float without rounding noise."""
        assert self.q is not None
        return k * int(self.q) if self._integral_q else _clean(k * self.q)

    @property
    def _integral_q(self) -> bool:
        return self.q is not None and float(self.q).is_integer()

    def grid_values(self) -> list[Any]:
        """Every value the Optuna param can take (what :class:`optuna.samplers.GridSampler` needs).

        For ``qloguniform`` these are the multipliers ``k``, as stored by the trial.
        """
        kind = self.kind
        assert self.is_discrete and kind != "fixed", kind
        if kind == "choice":
            return list(self.values)
        if kind == "randint":
            return list(range(int(self.high)))
        if kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.q or 1)))
        k_lo, k_hi = self.multipliers()
        if kind == "qloguniform":
            return list(range(k_lo, k_hi + 1))
        return [self.times_q(k) for k in range(k_lo, k_hi + 1)]

    def count(self) -> int:
        """Number of values (1 for a fixed value); only for discrete kinds."""
        return 1 if self.kind == "fixed" else len(self.grid_values())

    def invert(self, text: str, render: Callable[[Any], str]) -> Any:
        """The Optuna param value that makes :meth:`suggest` produce the override ``text``.

        Args:
            text: the override value, as produced by ``render``.
            render: turns a value of this param into its override text (for choice/fixed).

        Raises:
            ValueError: ``text`` is not a value of this param.
        """
        kind = self.kind
        if kind in ("fixed", "choice"):
            for value in self.values:
                if render(value) == text:
                    return value
            raise ValueError(f"{text!r} is not one of {self.values}")
        x = float(text)
        if kind in NORMAL_KINDS:
            x = math.log(x) if kind in ("lognormal", "qlognormal") else x
            u = NormalDist(self.mu, self.sigma).cdf(x)
            return min(max(u, U_EPS), 1.0 - U_EPS)
        if kind in ("quniform", "qloguniform"):
            k, (k_lo, k_hi) = x / float(self.q or 1), self.multipliers()
            if abs(k - round(k)) > 1e-9 or not k_lo <= round(k) <= k_hi:
                raise ValueError(f"{text} is not a multiple of {self.q} in range")
            return round(k) if kind == "qloguniform" else self.times_q(round(k))
        low, high = self.low, self.high
        if kind == "loguniform":
            low, high = math.exp(low), math.exp(high)
        if kind == "randint":
            low, high = 0, high - 1
        tol = 1e-12 * max(1.0, abs(low), abs(high))
        if not low - tol <= x <= high + tol:
            raise ValueError(f"{text} is out of [{low}, {high}]")
        if kind in ("randint", "int"):
            if not x.is_integer() or (int(x) - int(low)) % int(self.q or 1):
                raise ValueError(f"{text} is not a value of {self.describe()}")
            return int(x)
        return x

    def describe(self) -> str:
        """The expression in Azure's / Hydra's notation, e.g. ``loguniform(-9, -4)``."""
        kind = self.kind
        if kind == "fixed":
            return format_value(self.values[0])
        if kind == "choice":
            return f"choice({', '.join(format_value(v) for v in self.values)})"
        if kind == "randint":
            return f"randint({int(self.high)})"
        if kind == "interval":
            text = f"interval({self.low:g}, {self.high:g})"
            return f"tag(log, {text})" if self.log else text
        if kind == "int":
            step = int(self.q or 1)
            text = f"range({int(self.low)}, {int(self.high) + step}, {step})"
            return (
                f"tag(log, int, interval({int(self.low)}, {int(self.high)}))" if self.log else text
            )
        args = (self.mu, self.sigma) if kind in NORMAL_KINDS else (self.low, self.high)
        args += (self.q,) if self.q is not None else ()
        return f"{kind}({', '.join(f'{a:g}' for a in args)})"


def format_value(value: Any) -> str:
    """A Python value as a Hydra override value: ``true``, ``0.003``, ``seresnext``, ``'a b'``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    text = str(value)
    if _PLAIN_STRING_RE.fullmatch(text) and text.lower() not in _HYDRA_KEYWORDS:
        return text
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def parse_azure_param(spec: Any, where: str) -> Param:
    """Read one Azure search-space value: a dict ``{type: ..., ...}``, a REST string such as
    ``"uniform(0.001, 0.01)"``, or a plain value (fixed).

    Args:
        spec: the value of the sub-space entry.
        where: location for messages, e.g. ``sweeper.search_space[0].learning_rate``.

    Raises:
        ConfigError: unknown expression type, missing/unexpected/invalid arguments.
    """
    if isinstance(spec, Mapping):
        if "type" not in spec:
            raise ConfigError(f"{where}: a mapping needs a 'type' key, {_EXAMPLES}.")
        kind = str(spec["type"]).strip().lower()
        args = {str(k): v for k, v in spec.items() if k != "type"}
        return _azure_param(kind, args, where)
    if isinstance(spec, str) and (match := _EXPRESSION_RE.match(spec)):
        kind = match.group(1).lower()
        if kind in AZURE_EXPRESSIONS:
            if not spec.rstrip().endswith(")"):
                raise ConfigError(f"{where}: the expression {spec!r} lacks its closing ')'.")
            args = spec.strip()[len(match.group(1)) :].strip()[1:-1]
            return _azure_param(kind, _parse_call_args(kind, args, spec, where), where)
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        raise ConfigError(
            f"{where}: a list is not a search expression; write "
            f"{{type: choice, values: {list(spec)}}} to sweep over these values."
        )
    return Param("fixed", values=(primitive(spec, where),))


def _parse_call_args(kind: str, text: str, spec: str, where: str) -> dict[str, Any]:
    """``"'a', 'b'"`` of ``choice('a', 'b')`` -> ``{"values": ["a", "b"]}`` (positional or named)."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
        assert isinstance(call, ast.Call)
        positional = [_literal(node) for node in call.args]
        named = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError, TypeError) as err:
        raise ConfigError(
            f"{where}: cannot read the expression {spec!r} ({err}); write it "
            f'like "{kind}({", ".join(AZURE_EXPRESSIONS[kind])})" with '
            "literal values."
        ) from None
    if kind == "choice":
        if len(positional) == 1 and isinstance(positional[0], (list, tuple, range)):
            positional = list(positional[0])
        return named if "values" in named else {"values": positional, **named}
    keys = AZURE_EXPRESSIONS[kind]
    if len(positional) > len(keys):
        raise ConfigError(
            f"{where}: {spec!r} has {len(positional)} arguments; {kind} takes "
            f"{len(keys)}: {', '.join(keys)}."
        )
    return {**dict(zip(keys, positional, strict=False)), **named}


def _literal(node: ast.AST) -> Any:
    # range(...) is how Azure's SDK writes integer choices: choice(range(1, 5)).
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        return range(*(int(ast.literal_eval(a)) for a in node.args))
    return ast.literal_eval(node)


def _azure_param(kind: str, args: dict[str, Any], where: str) -> Param:
    if kind not in AZURE_EXPRESSIONS:
        raise ConfigError(
            f"{where}: unknown expression type {kind!r}; expected one of "
            f"{', '.join(AZURE_EXPRESSIONS)}."
        )
    keys = AZURE_EXPRESSIONS[kind]
    missing = [k for k in keys if k not in args]
    extra = [k for k in args if k not in keys]
    if missing or extra:
        problem = f"missing {', '.join(missing)}" if missing else f"unexpected {', '.join(extra)}"
        raise ConfigError(f"{where}: {kind} takes {', '.join(keys)} ({problem}).")
    if kind == "choice":
        return choice_param(args["values"], "azure", where)
    if kind == "randint":
        upper = args["upper"]
        if (
            isinstance(upper, bool)
            or not isinstance(upper, (int, float))
            or upper < 1
            or not float(upper).is_integer()
        ):
            raise ConfigError(
                f"{where}: randint upper={upper!r} must be an integer >= 1 "
                "(values are 0 .. upper-1)."
            )
        return Param("randint", high=int(upper))
    num = {k: _number(args[k], f"{where}: {k}") for k in keys}
    q = num.get("q")
    if q is not None and q <= 0:
        raise ConfigError(f"{where}: q={q:g} must be > 0.")
    if kind in NORMAL_KINDS:
        if num["sigma"] <= 0:
            raise ConfigError(f"{where}: sigma={num['sigma']:g} must be > 0.")
        return Param(kind, mu=num["mu"], sigma=num["sigma"], q=q)
    low, high = num["min_value"], num["max_value"]
    if low > high:
        raise ConfigError(f"{where}: min_value={low:g} is larger than max_value={high:g}.")
    if "log" in kind and high > 700:
        raise ConfigError(
            f"{where}: {kind} bounds are exponents (value = exp(U(min, max))); "
            f"max_value={high:g} overflows. For 1e-4..1e-2 write "
            "loguniform(-9.21, -4.61)."
        )
    param = Param(kind, low=low, high=high, q=q)
    if kind == "qloguniform" and param.multipliers()[1] < param.multipliers()[0]:
        raise ConfigError(
            f"{where}: qloguniform({low:g}, {high:g}, {q:g}) gives no positive "
            f"multiple of q: exp(max_value)={math.exp(high):.4g} rounds to 0. "
            "Raise max_value or lower q."
        )
    return param


def choice_param(values: Any, origin: str, where: str) -> Param:
    """A ``choice`` over ``values`` (checked: a non-empty list of plain values)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, range)) or not values:
        raise ConfigError(f"{where}: choice needs a non-empty list of values, got {values!r}.")
    return Param("choice", origin, tuple(primitive(v, where) for v in values))


def primitive(value: Any, where: str) -> Any:
    """Optuna stores only None/bool/int/float/str (choices and fixed values)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(
        f"{where}: the value {value!r} is a {type(value).__name__}; search-space "
        "values must be numbers, strings, booleans or null."
    )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"{where}={value!r} must be a number.")
    return float(value)


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _clean(x: float) -> float:
    """Drop binary rounding noise (``0.30000000000000004`` -> ``0.3``) from computed values."""
    return float(f"{x:.12g}")
