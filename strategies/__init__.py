"""Cooperative training strategies, built by name: ``strategies.build("dbl", loss="abs", scenario="oss")``.

| name | scenario | branches |
|---|---|---|
| baseline | – | target |
| kd, rkd, sp, darkrank | OAS | frozen teacher (trained baseline) + student initialised from it |
| dml | OSS | K peers trained together |
| momentum | MSS | target + EMA teacher |
| dbl | OAS / OSS / MSS | anchor(s) + target |

kd, rkd, sp, darkrank, dml and momentum are reconstructions from the DBL paper's description
(``Strategy.reconstructed``): the DBL repository's code for them does not run as shipped.
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
    """Import every module of the package, as ``models`` does: a new strategy is one new file here."""
    import importlib
    import pkgutil

    import strategies

    for mod in pkgutil.iter_modules(strategies.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"strategies.{mod.name}")


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


def reconstruction_note(names) -> str:
    """The table note for the strategies among ``names`` that are reconstructions (``Strategy.reconstructed``);
    empty when there are none. Unknown names are ignored."""
    _import_all()
    recon = sorted({n for n in names if n in _REGISTRY and _REGISTRY[n].reconstructed})
    if not recon:
        return ""
    return (f"Reconstructed from the DBL paper's description: {', '.join(recon)} (the DBL repository's code for "
            "these comparisons does not run as shipped: its losses fail to construct, and KD is absent).")


def build(name: str, **params) -> Strategy:
    """Build strategy ``name``; unknown parameters raise a TypeError naming the valid ones."""
    cls = get(name)
    try:
        strategy = cls(**params)
    except TypeError as e:
        import inspect

        valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise TypeError(f"strategy {name!r}: {e}. Valid parameters: {', '.join(valid)}") from e
    ema = [b.name for b in strategy.branches() if b.update.startswith("ema:")]
    if ema and cls.momentum is Strategy.momentum:  # found here, before any training, not at the first EMA step
        raise TypeError(f"strategy {name!r}: branch(es) {', '.join(ema)} follow another by EMA but {cls.__name__} "
                        "defines no momentum(step, total_steps): add one (strategies/momentum.py has an example)")
    return strategy


__all__ = ["Branch", "StepContext", "Strategy", "available", "build", "get", "reconstruction_note", "register"]
