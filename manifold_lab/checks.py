"""Input checks that fail with one clear line: the bad value and what is allowed."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is not allowed. The message names the value and the allowed set."""


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else raise ConfigError naming both."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


def check_positive(name: str, value: Any, *, integer: bool = False) -> Any:
    """Return ``value`` if it is a number > 0 (an int if ``integer``), else raise ConfigError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    return value


def check_keys(where: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise ConfigError if ``given`` holds a key outside ``allowed``."""
    allowed = sorted(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; allowed: {', '.join(allowed)}")
