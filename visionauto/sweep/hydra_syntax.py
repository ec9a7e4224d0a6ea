"""Hydra's sweep syntax on the command line as search-space parameters.

``training.learning_rate=interval(1e-4,1e-2)``, ``tag(log, interval(...))``,
``tag(int, interval(1,10))``, ``range(5,15,5)``, ``choice(a,b)`` and ``a,b`` are parsed with
Hydra's own override parser and become :class:`~visionauto.sweep.expressions.Param` objects
(``origin="override"``: the key is a Hydra override key, used as is).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from visionauto.errors import ConfigError
from visionauto.sweep.expressions import Param, choice_param, primitive


def parse_hydra_param(key: str, text: str) -> Param:
    """Read a Hydra override value, sweep or not: ``interval(1e-4,1e-2)``,
    ``tag(log, interval(...))``, ``tag(int, interval(1,10))``, ``range(5,15,5)``,
    ``choice(a,b)``, ``a,b`` or a plain value (fixed).

    Raises:
        ConfigError: the text is not valid override syntax, or the sweep kind is unsupported.
    """
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    try:
        override = _hydra_parser().parse_overrides([f"{key}={text}"])[0]
    except HydraException as err:
        first = str(err).splitlines()[1] if len(str(err).splitlines()) > 1 else str(err)
        raise ConfigError(
            f"{key}={text}: not a valid Hydra sweep ({first.strip()}). Examples: "
            "interval(1e-4,1e-2), tag(log,interval(1e-4,1e-2)), range(5,20,5), "
            "choice(resnet18,seresnext), sgd,adam."
        ) from None
    value = override.value()
    if not override.is_sweep_override():
        return Param("fixed", "override", (primitive(value, key),))
    if isinstance(value, IntervalSweep):
        return _interval(key, text, value)
    if isinstance(value, RangeSweep):
        items = list(override.sweep_iterator())
        if (
            all(isinstance(v, int) for v in (value.start, value.stop, value.step))
            and value.step > 0
        ):
            if not items:
                raise ConfigError(f"{key}={text}: the range is empty.")
            return Param("int", "override", low=items[0], high=items[-1], q=int(value.step))
        return choice_param(_float_range(value.start, value.stop, value.step), "override", key)
    if isinstance(value, ChoiceSweep):
        return choice_param(list(override.sweep_iterator()), "override", key)
    raise ConfigError(
        f"{key}={text}: {type(value).__name__} sweeps are not supported in a "
        "search space; use choice(...), range(...) or interval(...)."
    )


def _interval(key: str, text: str, value: Any) -> Param:
    unknown = set(value.tags) - {"log", "int"}
    if unknown:
        raise ConfigError(
            f"{key}={text}: unknown tag(s) {', '.join(sorted(unknown))}; "
            "interval takes the tags log and int."
        )
    low, high, log = float(value.start), float(value.end), "log" in value.tags
    if low > high:
        raise ConfigError(f"{key}={text}: the start {low:g} is larger than the end {high:g}.")
    if log and low <= 0:
        raise ConfigError(f"{key}={text}: a log interval needs a start > 0.")
    if "int" in value.tags:
        if not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"{key}={text}: tag(int, ...) needs whole-number bounds.")
        return Param("int", "override", low=low, high=high, q=1, log=log)
    return Param("interval", "override", low=low, high=high, log=log)


def _float_range(start: float, stop: float, step: float) -> list[float]:
    """Like ``range`` for floats, in decimal steps: Hydra's own float range accumulates binary
    rounding and can include ``stop`` (``range(0.1, 0.4, 0.1)`` would give 0.4)."""
    begin, end, inc = (Decimal(str(x)) for x in (start, stop, step))
    count = max(0, math.ceil((end - begin) / inc)) if inc else 0
    return [float(begin + i * inc) for i in range(count)]


_PARSER: Any = None


def _hydra_parser() -> Any:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER
