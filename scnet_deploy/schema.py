"""The shapes a JSON value from outside must have (``door.check_schema`` holds values to them): plain types and
the few structures below. Kept apart from the door so that the registry can name a backend's manifest section in
these terms without importing the door (which reads the registry)."""

from dataclasses import dataclass
from typing import Union

# A schema: a Python type (bool, str, int, float, dict, list), NUMBER, Int, Fields, ListOf, MapOf or Opt.
Schema = Union[type, str, "Int", "Fields", "ListOf", "MapOf", "Opt"]


@dataclass(frozen=True)
class Opt:
    """A value that may be null (or absent, as a field)."""
    schema: Schema


@dataclass(frozen=True)
class ListOf:
    item: Schema
    max_len: int = 100_000
    length: int | None = None


@dataclass(frozen=True)
class MapOf:
    value: Schema
    max_len: int = 100_000


@dataclass(frozen=True)
class Fields:
    """A JSON object with these fields (others are allowed and not checked: newer writers may add some)."""
    required: dict
    optional: dict | None = None


@dataclass(frozen=True)
class Int:
    low: int = -(2**63)
    high: int = 2**63


NUMBER = "number"  # int or float (inf and nan allowed: ours record inf for identical outputs); no int past a float
FLOAT_MAX = 1.7976931348623157e308


@dataclass(frozen=True)
class Num:
    """A finite number (int or float) in [low, high]: a measurement (a time, a rate) from outside."""

    low: float = 0.0
    high: float = 1e9
