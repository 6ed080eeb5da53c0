"""Cooperative training strategies, built by name: ``strategies.build("dbl", loss="abs", scenario="oss")``.

| name | scenario | branches |
|---|---|---|
| baseline | – | target |
| kd, rkd, sp, darkrank | OAS | frozen teacher (trained baseline) + student initialised from it |
| dml | OSS | K peers trained together |
| momentum | MSS | target + EMA teacher |
| dbl | OAS / OSS / MSS | anchor(s) + target |
"""

from __future__ import annotations

import difflib

from strategies.base import Branch, StepContext, Strategy

_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    if cls.name in _REGISTRY:
        raise ValueError(f"strategy {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _import_all() -> None:
    from strategies import baseline, dbl, distill, momentum, mutual  # noqa: F401


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get(name: str) -> type[Strategy]:
    _import_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown strategy {name!r}.{hint} Valid strategies: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build(name: str, **params) -> Strategy:
    """Build strategy ``name``; unknown parameters raise a TypeError naming the valid ones."""
    cls = get(name)
    try:
        return cls(**params)
    except TypeError as e:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise TypeError(f"strategy {name!r}: {e}. Valid parameters: {', '.join(valid)}") from e


__all__ = ["Branch", "StepContext", "Strategy", "available", "build", "get", "register"]
