"""Matchers, built by name: ``models.build("sgr", vocab_size=8481)``.

Defaults are the published configurations; keyword overrides change any constructor argument.
"""

from __future__ import annotations

import difflib
import functools
import inspect
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


def _constructor(name: str) -> Callable[..., Matcher]:
    _import_all()
    if name not in _REGISTRY:
        build(name)  # raises the registry's error listing the valid names
    return _REGISTRY[name]


def matcher_class(name: str) -> type[Matcher]:
    """The class matcher ``name`` builds: the registered class, or the class of a :func:`preset`."""
    ctor = _constructor(name)
    return ctor if inspect.isclass(ctor) else ctor.matcher_class


def parameters(name: str) -> dict[str, inspect.Parameter]:
    """The constructor arguments matcher ``name`` declares (its class's, less ``self``; a preset's are its
    class's less the ones it fixes): the one place a matcher's arguments are read, for the suite schema
    (names, types, ranges of overrides), the trainer (sizes the data gives) and the cell id (defaults)."""
    return dict(inspect.signature(_constructor(name)).parameters)


def input_kind(name: str) -> str:
    """``"regions"`` or ``"pixels"``: what the data layer must feed matcher ``name``."""
    return matcher_class(name).input_kind


def matcher_attribute(name: str, attr: str, default=None):
    """Class attribute ``attr`` of matcher ``name`` (e.g. its ``augment`` or ``weight_decay``), else ``default``."""
    return getattr(matcher_class(name), attr, default)


def constructor_args(name: str) -> set[str] | None:
    """Keyword arguments matcher ``name``'s constructor accepts (None when it takes ``**kwargs``)."""
    params = parameters(name)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_POSITIONAL}


def preset(cls: type[Matcher], **fixed) -> Callable[..., Matcher]:
    """A registry constructor building ``cls`` with ``fixed`` arguments (``register("sgr")(preset(SGRAF,
    module="SGR"))``): it declares ``cls``'s arguments less ``fixed``, and ``matcher_class`` reads ``cls``'s
    attributes through it, so a preset answers as its class does."""

    def build(**kwargs) -> Matcher:
        return cls(**fixed, **kwargs)

    sig = inspect.signature(cls)
    build.__signature__ = sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in fixed])
    build.__doc__ = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in fixed.items())}, ...)"
    build.matcher_class = cls
    return build


def from_official(path, vocab_size: int | None = None, bert_path: str | None = None) -> Matcher:
    """Our matcher holding an official checkpoint's weights (VSE∞, SGR, SAF, DBL): see ``models.official``."""
    from models.official import from_official as _from_official

    return _from_official(path, vocab_size=vocab_size, bert_path=bert_path)


@functools.cache
def _import_all() -> None:
    """Import every matcher module once (each registers itself)."""
    import importlib
    import pkgutil

    import models

    for mod in pkgutil.iter_modules(models.__path__):
        if mod.name not in ("base",) and not mod.name.startswith("_"):
            importlib.import_module(f"models.{mod.name}")


__all__ = ["Matcher", "available", "build", "constructor_args", "from_official", "input_kind", "matcher_attribute",
           "matcher_class", "parameters", "preset", "register"]
