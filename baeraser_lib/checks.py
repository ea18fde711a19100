"""Checks of single values, shared by every config: a bad value fails with a ConfigError naming it."""

from __future__ import annotations

from .errors import ConfigError


def positive_int(name: str, value) -> None:
    """ConfigError unless `value` is a positive int (bools are not ints here)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def check_number(name: str, value, integer: bool = False) -> None:
    """ConfigError unless `value` is a positive number (a positive int if `integer`)."""
    if integer:
        return positive_int(name, value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def check_fraction(name: str, value: float) -> None:
    """ConfigError unless `value` lies in the open interval (0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must lie in (0, 1), got {value!r}")
