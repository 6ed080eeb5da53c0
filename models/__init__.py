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


def build_kwargs(name: str, given: dict, overrides: dict) -> dict:
    """The keyword arguments of matcher ``name``: what the data gives (``given``: vocabulary size, region
    shape, words) where its constructor takes it, then the cell's own ``overrides`` (which win)."""
    accepted = constructor_args(name)
    return {**{k: v for k, v in given.items() if accepted is None or k in accepted}, **overrides}


def parameter_count(name: str, **overrides) -> int:
    """Parameters of matcher ``name`` built with ``overrides``, counted without allocating or reading
    weights (PyTorch's meta device; a local pretrained folder contributes its config: the class's
    ``count_parameters``; a :func:`preset` is built as registered, its fixed arguments included)."""
    ctor = _constructor(name)
    counter = getattr(ctor, "count_parameters", None)  # a Matcher class's; a preset has none
    if counter is not None:
        return int(counter(**overrides))
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in ctor(**overrides).parameters())


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


__all__ = ["Matcher", "available", "build", "build_kwargs", "constructor_args", "from_official", "input_kind",
           "matcher_attribute", "matcher_class", "parameter_count", "parameters", "preset", "register"]
