"""Matchers, built by name: ``models.build("sgr", vocab_size=8481)``.

Defaults are the published configurations; keyword overrides change any constructor argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from models.base import Matcher

_REGISTRY: dict[str, Callable[..., Matcher]] = {}


def register(name: str):
    """Class/function decorator adding a matcher constructor to the registry under ``name``."""

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"matcher {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def build(name: str, **overrides) -> Matcher:
    """Build the matcher ``name`` with its published defaults, changed by ``overrides``."""
    _import_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown matcher {name!r}.{hint} Valid matchers: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**overrides)


def input_kind(name: str) -> str:
    """``"regions"`` or ``"pixels"``: what the data layer must feed matcher ``name``."""
    _import_all()
    if name not in _REGISTRY:
        build(name)  # raises the registry's error listing the valid names
    return getattr(_REGISTRY[name], "input_kind", "regions")


def matcher_attribute(name: str, attr: str, default=None):
    """Class attribute ``attr`` of matcher ``name`` (e.g. its ``augment`` or ``weight_decay``), else ``default``."""
    _import_all()
    if name not in _REGISTRY:
        build(name)  # raises the registry's error listing the valid names
    return getattr(_REGISTRY[name], attr, default)


def constructor_args(name: str) -> set[str] | None:
    """Keyword arguments matcher ``name``'s constructor accepts (None when it takes ``**kwargs``)."""
    import inspect

    _import_all()
    if name not in _REGISTRY:
        build(name)
    ctor = _REGISTRY[name]
    params = inspect.signature(ctor.__init__ if inspect.isclass(ctor) else ctor).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {p for p in params if p != "self"}


def build_kwargs(name: str, given: dict, overrides: dict) -> dict:
    """The keyword arguments of matcher ``name``: what the data gives (``given``: vocabulary size, region
    shape, words) where its constructor takes it, then the cell's own ``overrides`` (which win)."""
    accepted = constructor_args(name)
    return {**{k: v for k, v in given.items() if accepted is None or k in accepted}, **overrides}


def parameter_count(name: str, **overrides) -> int:
    """Parameters of matcher ``name`` built with ``overrides``, counted without allocating or reading
    weights (PyTorch's meta device; a local pretrained folder contributes its config)."""
    _import_all()
    if name not in _REGISTRY:
        build(name)  # raises the registry's error listing the valid names
    ctor = _REGISTRY[name]
    counter = getattr(ctor, "count_parameters", None)
    if counter is not None:
        return int(counter(**overrides))
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in ctor(**overrides).parameters())


def from_official(path, vocab_size: int | None = None, bert_path: str | None = None) -> Matcher:
    """Our matcher holding an official checkpoint's weights (VSE∞, SGR, SAF, DBL): see ``models.official``."""
    from models.official import from_official as _from_official

    return _from_official(path, vocab_size=vocab_size, bert_path=bert_path)


def _import_all() -> None:
    import importlib
    import pkgutil

    import models

    for mod in pkgutil.iter_modules(models.__path__):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"models.{mod.name}")


__all__ = ["Matcher", "available", "build", "build_kwargs", "from_official", "input_kind", "matcher_attribute",
           "parameter_count", "register"]
