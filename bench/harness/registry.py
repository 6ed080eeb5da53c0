"""What the suite schema reads from the registries that own the names: matcher and strategy names
(``models.available()``, ``strategies.available()``), a matcher's declared arguments (``models.parameters``),
a strategy's parameters (its constructors' signatures, ``typing.Literal`` annotations giving the choices),
the datasets the readers know and their protocols. Read once per process (``_valid_cache``)."""

from __future__ import annotations

import inspect
import typing
from typing import Any

from bench.spec import TRAINER_STRATEGY_ARGS

REQUIRED = object()

# Strategy parameters a suite must state (their constructor defaults exist for direct use). Every
# other fact about a parameter (name, type, default, choices) comes from the constructor's
# signature (`typing.Literal` annotations give the choices): see `strategy_params`.
SUITE_REQUIRED_PARAMS = {"dbl": ("loss", "scenario")}

_valid_cache: dict[str, Any] = {}


def valid_matchers() -> list[str]:
    """Matcher names: the registry's (``models.available()``)."""
    if "models" not in _valid_cache:
        import models

        _valid_cache["models"] = sorted(models.available())
    return _valid_cache["models"]


def valid_strategies() -> list[str]:
    """Strategy names: the registry's (``strategies.available()``)."""
    if "strategies" not in _valid_cache:
        import strategies

        _valid_cache["strategies"] = sorted(strategies.available())
    return _valid_cache["strategies"]


def weight_kinds() -> tuple[str, ...]:
    """Kinds of local pretrained folders a suite's ``weights:`` names (``bench.weights.KINDS``)."""
    from bench.weights import KINDS

    return tuple(KINDS)


def known_datasets() -> list[str]:
    """Dataset names the readers know (``bench.data.precomp.DATASETS``)."""
    from bench.data.precomp import DATASETS

    return sorted(DATASETS)


def matcher_args(name: str) -> set[str] | None:
    """Keyword arguments of matcher ``name``'s constructor (None: it takes ``**kwargs``)."""
    key = f"margs:{name}"
    if key not in _valid_cache:
        import models

        _valid_cache[key] = models.constructor_args(name)
    return _valid_cache[key]


# Set by the trainer from the schedule (bench.train.build_strategy), not by a suite.
_TRAINER_STRATEGY_ARGS = {"self", *TRAINER_STRATEGY_ARGS}


def strategy_params(name: str) -> dict[str, tuple[Any, Any]] | None:
    """Accepted parameters of strategy ``name``: {param: (kind, default)}; None if unknown.

    Read from the constructors' signatures along the class's MRO: the kind is the ``Literal``
    choices when annotated so, else the default's type; ``SUITE_REQUIRED_PARAMS`` marks the
    parameters a suite must state (default ``REQUIRED``).
    """
    key = f"params:{name}"
    if key not in _valid_cache:
        import strategies

        if name not in strategies.available():
            _valid_cache[key] = None
            return None
        vocab: dict[str, tuple[Any, Any]] = {}
        for klass in strategies.get(name).__mro__:
            if "__init__" not in vars(klass) or klass.__module__ == "strategies.base":
                continue
            try:
                hints = typing.get_type_hints(klass.__init__)
            except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the defaults' types
                hints = {}
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name in _TRAINER_STRATEGY_ARGS or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                    continue
                default = None if p.default is p.empty else p.default
                hint = hints.get(p.name)
                if typing.get_origin(hint) is typing.Literal:
                    kind: Any = tuple(typing.get_args(hint))
                elif isinstance(default, bool):
                    kind = bool
                elif isinstance(default, float) or hint is float:
                    kind = float
                elif isinstance(default, (int, str)):
                    kind = type(default)
                else:
                    kind = object
                vocab.setdefault(p.name, (kind, default))
        for p in SUITE_REQUIRED_PARAMS.get(name, ()):
            vocab[p] = (vocab[p][0], REQUIRED)
        _valid_cache[key] = vocab
    return _valid_cache[key]


def matcher_arg_kinds(name: str) -> dict[str, tuple[type, Any]]:
    """{argument: (int | float | bool | str, default)} of matcher ``name``'s declared arguments
    (``models.parameters``): the annotation where it is a plain type, else the default's type (arguments of
    neither are not checked)."""
    key = f"mkinds:{name}"
    if key not in _valid_cache:
        import models

        try:
            hints = typing.get_type_hints(models.matcher_class(name).__init__)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: the defaults' types
            hints = {}
        kinds = {}
        for p in models.parameters(name).values():
            default = None if p.default is p.empty else p.default
            kind = hints.get(p.name)
            if kind not in (int, float, bool, str):
                kind = type(default) if isinstance(default, (int, float, bool, str)) else None
            if kind is not None:
                kinds[p.name] = (kind, default)
        _valid_cache[key] = kinds
    return _valid_cache[key]


def default_protocols_for(dataset: str) -> list[str]:
    """The protocols ``bench.protocols`` names for a dataset (f30k -> f30k_1k; coco -> coco_1k, coco_5k)."""
    try:
        from bench.protocols import protocols_for

        return [p.name for p in protocols_for(dataset)]
    except Exception:  # noqa: BLE001 - unknown dataset or module not importable: the suite must say
        return []
