"""The value checks of the suite schema (:mod:`bench.harness.schema` builds its models from them): YAML 1.1
numbers read as numbers, the kinds of this schema as pydantic annotations, a broken rule reported at its key
path (:func:`fail`, :func:`fail_at`), and the small validators of single values (names, lists, seeds, names
the suite defines itself)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

from bench.harness.schema_errors import _unknown
from bench.spec import SEED_RANGE
from bench.values import shown


def yaml11_float(v):
    """YAML 1.1 (PyYAML) reads ``5e-4`` as a string: read it as the number it means."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


STRICT = ConfigDict(strict=True, extra="forbid")
ANNOTATIONS: dict[Any, Any] = {
    float: Annotated[float, BeforeValidator(yaml11_float), Field(allow_inf_nan=False)],
    int: StrictInt, bool: StrictBool, str: StrictStr, object: Any,
}


def annotation(kind) -> Any:
    """A kind of this module (type, tuple of choices, [type]) as a pydantic annotation."""
    if isinstance(kind, list):
        return list[annotation(kind[0])]
    if isinstance(kind, tuple):
        return Literal[kind]
    return ANNOTATIONS.get(kind, kind)


def fail(message: str) -> PydanticCustomError:
    """A rule of this schema broken: pydantic reports it at its key path, with this message."""
    return PydanticCustomError("suite_rule", "{message}", {"message": message})


def fail_at(loc: tuple, message: str, value) -> ValidationError:
    """``fail`` at ``loc`` below the field a validator checks (for rules over a whole list)."""
    return ValidationError.from_exception_data("suite", [{"type": fail(message), "loc": loc, "input": value}])


def null_is_empty(value):
    """``key:`` with nothing after it (YAML null) is an empty mapping."""
    return {} if value is None else value


def by_name_alone(value):
    """An entry given by its name alone: ``- dbl`` means ``- {name: dbl}``."""
    return {"name": value} if isinstance(value, str) else value


def non_empty_list(value):
    if not isinstance(value, list) or not value:
        raise fail(f"expected a non-empty list, got {shown(value)}")
    return value


def list_or_nothing(value):
    """``reference``: left out, null or empty means none."""
    return non_empty_list(value) if value else []


def sweep_values(value):
    if not isinstance(value, list) or not value:
        raise fail(f"expected a non-empty list of values, got {shown(value)}")
    return value


def a_string(value):
    """A protocol name is a string first (``expected str``), then one of the protocols."""
    if not isinstance(value, str):
        raise PydanticKnownError("string_type")
    return value


def name_of(what: str) -> BeforeValidator:
    """A matcher or strategy ``name`` is a string first, then one of the registry's."""
    def check(value):
        if not isinstance(value, str):
            raise fail(f"expected a {what} name (str), got {shown(value)}")
        return value
    return BeforeValidator(check)


def in_range(seed: int) -> int:
    lo, hi = SEED_RANGE
    if not lo <= seed < hi:
        raise fail(f"seed {seed} is outside [0, 2**32) (numpy's seed range); use a seed in 0 … {hi - 1}")
    return seed


def defined_by_suite(scope: str, what: str) -> AfterValidator:
    """A name the suite defines itself (its datasets): one of ``context[scope]``, which ``SuiteFile``
    fills as its earlier keys pass."""
    def check(value, info: ValidationInfo):
        valid = (info.context or {}).get(scope, [])
        if value not in valid:
            raise fail(_unknown(value, valid, what))
        return value
    return AfterValidator(check)
