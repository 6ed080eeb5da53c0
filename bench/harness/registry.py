"""What the suite schema reads from the registries that own the names: matcher and strategy names
(``models.available()``, ``strategies.available()``), a matcher's declared arguments (``models.parameters``),
a strategy's parameters (its constructors' signatures, ``typing.Literal`` annotations giving the choices),
the datasets the readers know and their protocols. Read once per process (``_valid_cache``)."""

from __future__ import annotations

from typing import Any

from bench import registry_facts
from bench.spec import TRAINER_STRATEGY_ARGS

REQUIRED = object()

# Strategy parameters a suite must state (their constructor defaults exist for direct use). Every
# other fact about a parameter (name, type, default, choices) comes from the constructor's
# signature (`typing.Literal` annotations give the choices): see `strategy_params`.
SUITE_REQUIRED_PARAMS = {"dbl": ("loss", "scenario")}

_valid_cache: dict[str, Any] = {}


def valid_matchers() -> list[str]:
    """Matcher names: the registry's (``models.available()``, read through ``bench.registry_facts``)."""
    return registry_facts.matcher_names()


def valid_strategies() -> list[str]:
    """Strategy names: the registry's (``strategies.available()``, read through ``bench.registry_facts``)."""
    return registry_facts.strategy_names()


def weight_kinds() -> tuple[str, ...]:
    """Kinds of local pretrained folders a suite's ``weights:`` names (``bench.weights.KINDS``)."""
    from bench.weights import KINDS

    return tuple(KINDS)


def known_datasets() -> list[str]:
    """Dataset names the readers know (``bench.data.precomp.DATASETS``)."""
    return sorted(registry_facts.datasets())


def matcher_args(name: str) -> set[str] | None:
    """Keyword arguments of matcher ``name``'s constructor (None: it takes ``**kwargs``)."""
    params = registry_facts.matcher_params(name)
    if any(p["kind"] == "VAR_KEYWORD" for p in params.values()):
        return None
    return {n for n, p in params.items() if p["kind"] != "VAR_POSITIONAL"}


# Set by the trainer from the schedule (bench.train.build_strategy), not by a suite.
_TRAINER_STRATEGY_ARGS = {"self", *TRAINER_STRATEGY_ARGS}


def strategy_params(name: str) -> dict[str, tuple[Any, Any]] | None:
    """Accepted parameters of strategy ``name``: {param: (kind, default)}; None if unknown.

    Read from the constructors' signatures along the class's MRO (``bench.registry_facts``): the kind is the
    ``Literal`` choices when annotated so, else the default's type; ``SUITE_REQUIRED_PARAMS`` marks the
    parameters a suite must state (default ``REQUIRED``).
    """
    key = f"params:{name}"
    if key not in _valid_cache:
        info = registry_facts.strategy_info(name)
        if info is None:
            _valid_cache[key] = None
            return None
        vocab: dict[str, tuple[Any, Any]] = {}
        for params in info["mro"]:
            for pname, p in params.items():
                if pname in _TRAINER_STRATEGY_ARGS or p["kind"] in ("VAR_KEYWORD", "VAR_POSITIONAL"):
                    continue
                vocab.setdefault(pname, (registry_facts.kind_of(p), p.get("default")))
        for p in SUITE_REQUIRED_PARAMS.get(name, ()):
            vocab[p] = (vocab[p][0], REQUIRED)
        _valid_cache[key] = vocab
    return _valid_cache[key]


matcher_arg_kinds = registry_facts.matcher_argument_kinds


def default_protocols_for(dataset: str) -> list[str]:
    """The protocols ``bench.protocols`` names for a dataset (f30k -> f30k_1k; coco -> coco_1k, coco_5k)."""
    name = dataset if dataset.endswith("_precomp") else f"{dataset}_precomp"
    return [p for p, info in registry_facts.protocols().items() if info["dataset"] == name]
