"""Checks of single values, shared by every config: a bad value fails with a ConfigError naming it.

The one place where numbers are checked. A config declares its ranges once, as a class-level
`RULES` table of intervals written as text (`"(0, 1]"`, `"[1, 1000]"`, `"[0, inf)"`), and calls
`validate(self)` first thing in `__post_init__`. `validate` then checks every field against its
type annotation (no bool where a number belongs, no text where an int belongs, no NaN or ±inf
anywhere) and every ruled field against its interval, before any data is read or any weight is
trained. Relations between fields (a staircase that must rise, chunks that must divide) stay in
the config's own `__post_init__`.
"""

from __future__ import annotations

import math
import numbers
import re
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache

from .errors import ConfigError

__all__ = ["Interval", "check_fraction", "check_interval", "check_number", "interval", "positive_int", "rules",
           "validate"]


@dataclass(frozen=True)
class Interval:
    """A closed, open or half-open interval; `integer` demands an int (bools excluded)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        def end(v):
            return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"
        return f"{'(' if self.lo_open else '['}{end(self.lo)}, {end(self.hi)}{')' if self.hi_open else ']'}"

    def holds(self, v) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below

    def describe(self) -> str:
        """In words: "be a positive integer ≤ 100", "be positive", "lie in (0, 1]"."""
        cap = "" if self.hi == math.inf else f" ≤ {self.hi:g}"
        if self.integer and not self.lo_open and self.lo in (0, 1):
            return f"be a {'positive' if self.lo == 1 else 'non-negative'} integer{cap}"
        if self.integer:
            return f"be an integer in {self}"
        if self.lo == 0 and self.lo_open and self.hi == math.inf:
            return "be positive"
        return f"lie in {self}"

    def check(self, name: str, value) -> None:
        """ConfigError unless `value` is a finite number (an int if `integer`) inside the interval."""
        ok = _is_int(value) if self.integer else _is_real(value) and _finite(value)
        if not ok or not self.holds(value):
            raise ConfigError(f"{name} must {self.describe()}, got {value!r}")


_INTERVAL = re.compile(r"^\s*([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])\s*$")


def interval(text: str, integer: bool = False) -> Interval:
    """`"(0, 1]"` → Interval(0, 1, lo_open=True); ends may be `inf` / `-inf` (always open)."""
    m = _INTERVAL.match(text)
    if m is None:
        raise ValueError(f"not an interval: {text!r}")  # a programming error, not a user's
    lo, hi = float(m.group(2)), float(m.group(3))
    if integer:
        lo = lo if math.isinf(lo) else int(lo)
        hi = hi if math.isinf(hi) else int(hi)
    return Interval(lo, hi, m.group(1) == "(", m.group(4) == ")", integer)


def rules(**spec: str) -> dict[str, str]:
    """A config's `RULES` table, checked as it is written: each value must parse as an interval."""
    for name, text in spec.items():
        interval(text)
    return dict(spec)


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite(v) -> bool:
    """math.isfinite, False (not OverflowError) for an int too large for a float."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _members(hint) -> tuple:
    """The alternatives of a union hint (`int | None` → (int, NoneType)); a plain hint alone."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _matches(value, hint) -> bool:
    """Whether `value` has the annotated type. Generic containers are checked by their outer type;
    their items are the config's own business."""
    if hint is typing.Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_real(value) and _finite(value)
    origin = typing.get_origin(hint)
    if origin in (tuple, list):  # lists stand in for tuples (YAML, JSON); number items must be finite
        if not isinstance(value, (tuple, list)):
            return False
        return float not in typing.get_args(hint) or all(_is_real(v) and _finite(v) for v in value)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _kind(hint) -> str:
    names = []
    for m in _members(hint):
        names.append("None" if m is type(None) else "a finite number" if m is float else "an integer" if m is int
                     else getattr(m, "__name__", str(m)))
    return " or ".join(names)


def validate(cfg) -> None:
    """Check every field of dataclass `cfg` against its annotation and its class's `RULES`.

    Numbers given as numpy scalars become Python ints and floats (so they hash and serialise as
    the same config). A field whose value is None skips its interval: None means "the default
    rule", and the annotation says whether None is allowed."""
    cls = type(cfg)
    assert is_dataclass(cfg), f"{cls.__name__} is not a dataclass"
    hints = _hints(cls)
    table = rules_of(cls)
    names = {f.name for f in fields(cfg)}
    assert set(table) <= names, f"{cls.__name__}.RULES names unknown fields {sorted(set(table) - names)}"
    for f in fields(cfg):
        value = _plain(getattr(cfg, f.name))
        if value is not getattr(cfg, f.name):
            object.__setattr__(cfg, f.name, value)
        hint, label = hints[f.name], f"{cls.__name__}.{f.name}"
        members = _members(hint)
        assert f.name not in table or int in members or float in members, \
            f"{label}: RULES apply to int and float fields only"
        if value is None and type(None) in members:
            continue
        if f.name in table and (int in members or float in members):  # its interval checks the type too
            interval(table[f.name], integer=int in members).check(label, value)
        elif not any(_matches(value, m) for m in members):
            raise ConfigError(f"{label} must be {_kind(hint)}, got {value!r}")


def rules_of(cls: type) -> dict[str, str]:
    """The `RULES` of `cls` merged over its bases (a subclass adds to or overrides its parent's)."""
    merged = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("RULES", {}))
    return merged


def _plain(value):
    """numpy scalars as Python numbers and bools, 1-D arrays as tuples, so a config hashes and
    serialises the same whichever of them it was given; anything else unchanged."""
    if type(value).__module__ == "numpy":
        if getattr(value, "ndim", 0) == 1:
            return tuple(_plain(v) for v in value.tolist())
        if getattr(value, "ndim", None) == 0:
            return value.item()
    return value


def check_interval(name: str, value, text: str, integer: bool = False) -> None:
    """ConfigError unless `value` lies in the interval written as `text` (e.g. "(0, 1]")."""
    interval(text, integer=integer).check(name, value)


def positive_int(name: str, value) -> None:
    """ConfigError unless `value` is a positive int (bools are not ints here)."""
    check_interval(name, value, "[1, inf)", integer=True)


def check_number(name: str, value, integer: bool = False) -> None:
    """ConfigError unless `value` is a positive number (a positive int if `integer`)."""
    check_interval(name, value, "[1, inf)" if integer else "(0, inf)", integer=integer)


def check_fraction(name: str, value: float) -> None:
    """ConfigError unless `value` lies in the open interval (0, 1)."""
    check_interval(name, value, "(0, 1)")
