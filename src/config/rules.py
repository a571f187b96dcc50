"""What a config key allows, declared beside the code that reads the key: each owner of a config group holds a
`KEY_RULES` table (`"optimizer.lr": POSITIVE_NUMBER`), and src.config.validation checks a composed config against
all of them, listing every problem in one message.

A rule is a test and the words that say what passes it; the words go into the message (`optimizer.lr=-1: allowed
is a number > 0`). Measured on the same keys and messages, pydantic models took as many lines and a new
dependency, and OmegaConf structured configs more while still accepting `yes` for true (they have no ranges, and a
merge stops at the first error), so a table it is. This module imports nothing of the project: every layer may
declare rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# The largest number the optimizer can multiply into the weights: torch turns a larger lr (or decay, eps, ...)
# into an error ("value cannot be converted to type float without overflow") at the first step.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_BOUND = f"magnitude <= {FLOAT32_MAX:.8g} (the largest float32, which the optimizer computes in)"


class Problem(str):
    """One problem of a config: the line that says it (the key, the value and what is allowed), and `key`, the key
    it is about (the schedule waits for its inputs). A str, so callers that add lines of their own can mix them."""

    key: str

    def __new__(cls, key: str, message: str) -> Problem:
        problem = super().__new__(cls, message)
        problem.key = key
        return problem

    def __getnewargs__(self) -> tuple[str, str]:  # pickled, e.g. by a launcher's worker
        return self.key, str(self)


class ConfigError(ValueError):
    """The config has problems; the message lists every one of them."""

    def __init__(self, problems: Sequence[Problem]):
        super().__init__("\n".join(f"  - {problem}" for problem in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Rule:
    """What a key allows: `test` on its value, and the words that say it. `float32`: its numbers must also fit the
    float32 the optimizer computes in (an lr, a decay, a schedule's factor)."""

    test: Callable[[Any], bool]
    allowed: str
    float32: bool = False

    def where(self, test: Callable[[Any], bool], allowed: str) -> Rule:
        """This kind of value, and only those passing `test`."""
        return Rule(lambda value: self.test(value) and test(value), allowed, self.float32)

    def optional(self, null_means: str = "") -> Rule:
        return Rule(
            lambda value: value is None or self.test(value), f"null{null_means} or {self.allowed}", self.float32
        )

    def in_float32(self) -> Rule:
        return Rule(self.test, self.allowed, float32=True)


def one_of(choices: Sequence[str]) -> Rule:
    return Rule(lambda value: value in choices, f"one of {', '.join(choices)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_list(value: Any) -> bool:  # a ListConfig or a list, without importing omegaconf here
    return isinstance(value, Sequence) and not isinstance(value, str)


BOOLEAN = Rule(lambda value: isinstance(value, bool), "true or false")
INTEGER = Rule(lambda value: isinstance(value, int) and not isinstance(value, bool), "an integer")
NUMBER = Rule(_is_number, "a number")
STRING = Rule(lambda value: isinstance(value, str), "a string")
FOLDER = STRING.where(lambda value: value.strip() != "", "a folder")
NAME = Rule(FOLDER.test, "a name")
POSITIVE = INTEGER.where(lambda v: v >= 1, "an integer >= 1")
POSITIVE_NUMBER = NUMBER.where(lambda v: v > 0, "a number > 0")
NON_NEGATIVE_NUMBER = NUMBER.where(lambda v: v >= 0, "a number >= 0")
NUMBERS = Rule(lambda v: _is_list(v) and all(map(_is_number, v)), "a list of numbers")


def fraction(name: str, note: str = "") -> Rule:
    """0 <= value < 1 (a momentum, a warmup share, a smoothing factor)."""
    return NUMBER.where(lambda v: 0 <= v < 1, f"a number with 0 <= {name} < 1{note}")


def integer_in(low: int, high: int, note: str = "") -> Rule:
    return INTEGER.where(lambda v: low <= v <= high, f"an integer {low}..{high}{note}")
