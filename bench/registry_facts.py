"""What the command line needs from the registries, without importing them (they import torch: 1.5-2 s).

The suite schema, the resolver and the estimates read facts of the matchers and strategies: their names,
declared arguments and defaults, class attributes (``weight_decay``, ``dual_encoder``, …), each strategy
variant's scenario, branches and whether it builds at all, the datasets and protocols. The registries own
them (``models``, ``strategies``, ``bench.protocols``, ``bench.data.precomp``); this module reads them from
there once and keeps what it read in a JSON file named by the fingerprint of those sources
(``<cache>/registry-<fingerprint>.json``; ``<cache>`` = ``$ITM_COOP_BENCH_CACHE``, else
``$XDG_CACHE_HOME/itm-coop-bench``, else ``~/.cache/itm-coop-bench``). Any change of a source file gives
another fingerprint, so a fact is never older than its code. Facts that depend on a value (a strategy
variant's parameters, a model's parameter count for its data) are added to the file as they are first
asked for (:func:`remembered`). Where the folder cannot be written the facts are read in the process as
before. ``python -m bench --help``, ``status``, ``show``, ``list`` and dry runs then start without torch
(``make bench``: ``bench/benchmarks/bench_cli.py``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The sources the facts come from: a change in any of them is another fingerprint (another cache file).
SOURCES = ("models", "strategies", "bench/protocols.py", "bench/data/precomp.py", "bench/spec.py",
           "bench/registry_facts.py")
_PLAIN = {"int": int, "float": float, "bool": bool, "str": str}
_facts: dict[str, Any] = {}


def cache_dir() -> Path:
    given = os.environ.get("ITM_COOP_BENCH_CACHE")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "itm-coop-bench"


@functools.cache
def fingerprint() -> str:
    """sha1 (16 hex) over the path and bytes of every ``.py`` file of ``SOURCES``."""
    h = hashlib.sha1()
    for source in SOURCES:
        p = REPO_ROOT / source
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(str(f.relative_to(REPO_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _path() -> Path:
    return cache_dir() / f"registry-{fingerprint()}.json"


def facts() -> dict:
    """The facts of this code (read from the cache file, else from the registries, then saved)."""
    if not _facts:
        try:
            loaded = json.loads(_path().read_text())
        except (OSError, ValueError):
            loaded = None
        if not isinstance(loaded, dict) or loaded.get("fingerprint") != fingerprint():
            loaded = _read_registries()
            _save(loaded)
        _facts.update(loaded)
    return _facts


def _save(data: dict) -> None:
    """Write the facts (merged with what another process added meanwhile); a folder that cannot be written is
    not an error: the facts are kept in this process."""
    from bench.atomic import atomic_write_bytes

    path = _path()
    try:
        on_disk = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        on_disk = {}
    if isinstance(on_disk, dict) and on_disk.get("fingerprint") == data.get("fingerprint"):
        for section in ("remembered",):
            for kind, values in (on_disk.get(section) or {}).items():
                data.setdefault(section, {}).setdefault(kind, {}).update(
                    {k: v for k, v in values.items() if k not in data[section][kind]})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(data, sort_keys=True).encode())
    except OSError:
        pass


def remembered(kind: str, key: str, compute: Callable[[], Any]) -> Any:
    """The fact ``kind``/``key`` of this code: remembered in the cache file, else ``compute()`` (which may import
    the registries), remembered. ``compute``'s value must be JSON."""
    table = facts().setdefault("remembered", {}).setdefault(kind, {})
    if key not in table:
        table[key] = compute()
        _save(facts())
    return table[key]


# ------------------------------------------------------------------------------------ reading the registries

def _json_default(value) -> tuple[bool, Any]:
    """(whether ``value`` survives JSON unchanged, the value)."""
    try:
        return json.loads(json.dumps(value)) == value and not isinstance(value, tuple), value
    except (TypeError, ValueError):
        return False, None


def _param(p: inspect.Parameter, hint) -> dict:
    out: dict[str, Any] = {"kind": p.kind.name}
    if p.default is not p.empty:
        ok, value = _json_default(p.default)
        out["default" if ok else "default_repr"] = value if ok else repr(p.default)
    if typing.get_origin(hint) is typing.Literal:
        out["choices"] = list(typing.get_args(hint))
    elif hint in (int, float, bool, str):
        out["hint"] = hint.__name__
    return out


def _hints(fn) -> dict:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: the defaults' types
        return {}


def _read_registries() -> dict:
    import models
    import strategies
    from bench.data.precomp import DATASETS
    from bench.protocols import PROTOCOLS

    matchers = {}
    for name in models.available():
        cls = models.matcher_class(name)
        hints = _hints(cls.__init__)
        matchers[name] = {
            "params": {n: _param(p, hints.get(n)) for n, p in models.parameters(name).items()},
            "attrs": {"hinge_warmup_epochs": getattr(cls, "hinge_warmup_epochs", 0),
                      "weight_decay": getattr(cls, "weight_decay", 0.0),
                      "token_aug": bool((getattr(cls, "augment", None) or {}).get("token_aug", False)),
                      "dual_encoder": bool(getattr(cls, "dual_encoder", False)),
                      "mask_word": bool(getattr(cls, "mask_word", False)),
                      "input_kind": str(getattr(cls, "input_kind", "regions")),
                      "weights_args": dict(getattr(cls, "weights_args", None) or {})}}
    strats = {}
    for name in strategies.available():
        cls = strategies.get(name)
        ctor = {n: _param(p, _hints(cls.__init__).get(n)) for n, p in inspect.signature(cls).parameters.items()}
        mro = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass) or klass.__module__ == "strategies.base":
                continue
            hints = _hints(klass.__init__)
            mro.append({n: _param(p, hints.get(n)) for n, p in inspect.signature(klass.__init__).parameters.items()})
        strats[name] = {"ctor": ctor, "mro": mro, "reconstructed": bool(cls.reconstructed)}
    return {"fingerprint": fingerprint(), "matchers": matchers, "strategies": strats,
            "datasets": {k: list(v) for k, v in DATASETS.items()},
            "protocols": {n: {"dataset": p.dataset, "split": p.split, "n_folds": p.n_folds}
                          for n, p in PROTOCOLS.items()},
            "remembered": {}}


# ------------------------------------------------------------------------------------ the facts, typed

def matcher_names() -> list[str]:
    return sorted(facts()["matchers"])


def strategy_names() -> list[str]:
    return sorted(facts()["strategies"])


def matcher_params(name: str) -> dict[str, dict]:
    """{argument: {"kind", "default"?, "default_repr"?, "choices"?, "hint"?}} of matcher ``name``; KeyError naming
    the valid matchers for an unknown one."""
    known = facts()["matchers"]
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown matcher {name!r}.{hint} Valid matchers: {', '.join(sorted(known))}")
    return known[name]["params"]


def matcher_attr(name: str, attr: str, default=None):
    """A class attribute of matcher ``name`` the command line reads (``hinge_warmup_epochs``, ``weight_decay``,
    ``token_aug``, ``dual_encoder``, ``mask_word``, ``input_kind``, ``weights_args``)."""
    matcher_params(name)  # the registry's error for an unknown name
    return facts()["matchers"][name]["attrs"].get(attr, default)


def strategy_info(name: str) -> dict | None:
    return facts()["strategies"].get(name)


def kind_of(param: dict):
    """The schema's kind of a strategy parameter: its ``Literal`` choices, else bool / float / int / str by the
    default's type (float also by annotation), else object (as ``bench.harness.registry.strategy_params``)."""
    if "choices" in param:
        return tuple(param["choices"])
    default = param.get("default")
    if isinstance(default, bool):
        return bool
    if isinstance(default, float) or param.get("hint") == "float":
        return float
    if isinstance(default, int | str):
        return type(default)
    return object


def declared_defaults(params: dict[str, dict]) -> dict:
    """The JSON defaults of declared arguments (as ``bench.spec.declared_defaults`` of the signature)."""
    return {n: p["default"] for n, p in params.items()
            if p["kind"] not in ("VAR_KEYWORD", "VAR_POSITIONAL") and "default" in p}


def plain_hint(param: dict):
    return _PLAIN.get(param.get("hint"))


def matcher_argument_kinds(name: str) -> dict[str, tuple[type, Any]]:
    """{argument: (int | float | bool | str, default)} of matcher ``name``'s declared arguments
    (``models.parameters``): the annotation where it is a plain type, else the default's type (arguments of
    neither are not checked)."""
    kinds = {}
    for pname, p in matcher_params(name).items():
        default = p.get("default")
        kind = plain_hint(p)
        if kind is None:
            kind = type(default) if isinstance(default, (int, float, bool, str)) else None
        if kind is not None:
            kinds[pname] = (kind, default)
    return kinds


def strategy_variant(name: str, params: dict) -> dict:
    """``{"scenario", "needs_anchor", "branches"}`` of a strategy variant, or ``{"error", "error_type"}`` when it does
    not build (``strategies.build``'s ValueError / TypeError): remembered per (name, parameters)."""
    def build() -> dict:
        import strategies

        try:
            s = strategies.build(name, **params)
        except (ValueError, TypeError) as e:
            return {"error": str(e), "error_type": type(e).__name__}
        return {"scenario": s.scenario, "needs_anchor": bool(s.needs_anchor_checkpoint), "branches": len(s.branches())}

    return remembered("strategy_variant", _key([name, params]), build)


def _key(value) -> str:
    """A cache key: the value's canonical JSON (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def protocols() -> dict[str, dict]:
    """{protocol: {"dataset", "split", "n_folds"}} (``bench.protocols.PROTOCOLS``)."""
    return facts()["protocols"]


def datasets() -> dict[str, list[str]]:
    """{dataset: splits} the readers know (``bench.data.precomp.DATASETS``)."""
    return facts()["datasets"]
