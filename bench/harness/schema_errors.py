"""The wording of a suite's errors: pydantic's first error as the one line a user reads, ``<file>: <key path>:
<what is wrong with the value>`` and, for a name, the closest valid ones (:func:`config_error`)."""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from bench.config_files import ConfigError
from bench.values import shown


@dataclass(frozen=True)
class _Called:
    """``Annotated`` metadata of a vocabulary (a ``Literal``): what one of its names is called in
    messages ("matcher", "protocol", "vse_infty argument"; else "value")."""

    what: str


def _unknown(name, valid, what: str = "key") -> str:
    """``unknown <what> 'x'. Did you mean: …? Valid: …`` with the closest valid names (difflib)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Valid: {', '.join(valid)}"


def _elsewhere(path: str, key) -> str | None:
    """The message of ``key``, unknown at ``path``, when it is a key of another part of a suite (``grad_clip=-2``
    at the top level: a schedule key, written ``schedule.default.grad_clip``), else None."""
    from bench.spec import key_homes

    if not isinstance(key, str):
        return None
    table = path.rsplit(".", 1)[0] if path.endswith(f".{key}") else ""
    schedule = table if table.endswith("schedule") else "schedule"
    where = {
        "schedule": f"a schedule key: write {schedule}.default.{key} (every matcher; {schedule}.<matcher>.{key} for "
                    "one; the top-level schedule wins over the scales and recipes)",
        "eval": f"an eval key: write eval.{key}",
        "resources": f"a resources key: write resources.default.{key} (every matcher; resources.<matcher>.{key} for "
                     "one)",
        "dataset": f"a dataset key: write datasets[<i>].{key}",
        "wandb": f"a wandb key: write wandb.{key}",
        "matcher": "an argument of matcher {names}: write matchers[<i>].overrides." + key
                   + " (or scales.<scale>.matchers.<matcher>." + key + ")",
        "strategy": "a parameter of strategy {names}: write strategies[<i>].params." + key,
    }
    homes = key_homes(key)
    if not homes:
        return None
    return f"unknown key {key!r} here: {key} is " + "; or ".join(
        where[part].format(names=", ".join(names)) for part, names in homes.items())


_EXPECTED = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
             "list_type": "a list", "dict_type": "a mapping", "model_type": "a mapping"}


def config_error(file, error: ValidationError, schema: type[BaseModel]) -> ConfigError:
    """The ConfigError of pydantic's first error (``_first``): the file, the key path, what is wrong
    with the value and, for a name, the closest valid ones."""
    err = _first(error.errors(include_url=False))
    path, node, owner = _locate(schema, err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        text = _elsewhere(path, err["loc"][-1]) or _unknown(err["loc"][-1], owner.model_fields)
    elif kind == "missing":
        text = owner.missing_message
    elif kind == "literal_error":
        names, what = _vocabulary(node)
        text = (what == "key" and _elsewhere(path, value)) or _unknown(value, names, what)
    elif kind in _EXPECTED:
        text = f"expected {_EXPECTED[kind]}, got {type(value).__name__} {shown(value)}"
    elif kind == "finite_number":
        text = (f"expected a finite number, got {shown(value)} (YAML reads .nan and .inf as floats); "
                "give a number, e.g. 1.0")
    elif kind == "greater_than_equal":
        least = (err.get("ctx") or {}).get("ge", 1)
        text = f"must be at least {least}, got {shown(value)}" + (
            "; a count of 0 or less trains or evaluates nothing (leave the key out for the default)"
            if least == 1 else "")
    elif kind == "suite_rule":  # raised by this schema's validators (`_fail`): the message says it all
        text = err["msg"]
    else:
        text = f"{err['msg']}, got {type(value).__name__} {shown(value)}"
    return ConfigError(f"{file}: {path}: {text}")


def _first(errors: list[dict]) -> dict:
    """The error a reader meets first. Pydantic lists a mapping's unknown and missing keys after the
    errors of its values; read top-down, a mapping's unknown keys come first, then its missing ones."""
    loc = errors[0]["loc"]
    keys = [(problem, e) for e in errors if (problem := _key_problem(e))]
    for depth in range(len(loc)):
        for kind in ("unknown", "missing"):
            for (problem, mapping), e in keys:
                if problem == kind and mapping == loc[:depth]:
                    return e
    return errors[0]


def _key_problem(err: dict) -> tuple[str, tuple] | None:
    """("unknown" or "missing", the location of the mapping) for an error about a key, else None."""
    loc = err["loc"]
    if err["type"] == "extra_forbidden":
        return "unknown", loc[:-1]
    if loc[-1:] == ("[key]",):  # a key of a table: pydantic locates it as (..., key, "[key]")
        return "unknown", loc[:-2]
    if err["type"] == "missing":
        return "missing", loc[:-1]
    return None


def _locate(schema: type[BaseModel], loc: tuple) -> tuple[str, Any, type[BaseModel]]:
    """Follow pydantic's error location through the schema: the key path as the file spells it
    (``strategies[1].params.scenario``), the annotation found there and the model holding its key."""
    path, node, owner = "", schema, schema
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        node = _bare(node)
        origin = get_origin(node)
        if origin in (Union, types.UnionType):  # an entry picked by name (`_by_name`): `part` is its tag
            node = next(m for m in get_args(node) if _tag(m) == part)
            continue
        if isinstance(node, type) and issubclass(node, BaseModel):
            owner, field = node, node.model_fields.get(part)
            node = field.rebuild_annotation() if field else None
        elif origin is dict:
            key = parts[:1] == ["[key]"]
            parts = parts[1:] if key else parts
            node = get_args(node)[0 if key else 1]
        elif origin is list or isinstance(part, int):
            node = get_args(node)[0] if origin is list else None
            path += f"[{part}]"
            continue
        else:
            node = None
        path += f".{part}" if path else str(part)
    return path, node, owner


def _bare(node):
    """``node`` without its ``Annotated`` metadata and without ``| None``."""
    while True:
        if get_origin(node) is Annotated:
            node = get_args(node)[0]
        elif get_origin(node) in (Union, types.UnionType) and type(None) in get_args(node):
            node = next(a for a in get_args(node) if a is not type(None))
        else:
            return node


def _tag(member) -> str | None:
    return next((m.tag for m in get_args(member)[1:] if isinstance(m, Tag)), None)


def _vocabulary(node) -> tuple[tuple, str]:
    """The names of a ``Literal`` annotation and what one is called (``_Called``, else "value")."""
    what = "value"
    while get_origin(node) is Annotated:
        node, *meta = get_args(node)
        what = next((m.what for m in meta if isinstance(m, _Called)), what)
    return get_args(node), what
