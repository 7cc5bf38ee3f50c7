"""Declared domains of spec values, written into the type where the value is defined:

    epochs: Annotated[int, Range(min=1)] = 10                        # a config dataclass field
    dropout: Annotated[float, Range(0, 1, max_open=True)] = 0.3      # a builder's parameter

`pipelines.core.spec.validate` reads them with `typing.get_type_hints(..., include_extras=True)`,
so a value is checked where it is declared and the list cannot drift from the code.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """min <= value <= max (either end open or absent); for a tuple, every element."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def allowed(self) -> str:
        low = "" if self.min is None else f"{'>' if self.min_open else '>='} {self.min:g}"
        high = "" if self.max is None else f"{'<' if self.max_open else '<='} {self.max:g}"
        return " and ".join(part for part in (low, high) if part)

    def admits(self, value) -> bool:
        if isinstance(value, tuple):
            return all(self.admits(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            return False
        if self.max is not None and (value > self.max or (self.max_open and value == self.max)):
            return False
        return value == value  # NaN is in no range


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of values; for a tuple, every element."""

    choices: tuple

    def allowed(self) -> str:
        return "one of " + ", ".join(map(str, self.choices))

    def admits(self, value) -> bool:
        if isinstance(value, tuple):
            return all(self.admits(v) for v in value)
        return value in self.choices


def domain_of(owner, name: str):
    """The Range/OneOf annotated on `owner`'s field or parameter `name`, or None."""
    hints = typing.get_type_hints(owner, include_extras=True)
    hint = hints.get(name)
    for extra in getattr(hint, "__metadata__", ()):
        if isinstance(extra, (Range, OneOf)):
            return extra
    return None
