"""``key=value`` overrides: the one grammar of every command (``python -m bench sweep|status|show|collect|run``
on a suite) and of the trainer alone (``python -m bench.train CONFIG key=value``).

A key is dotted (``schedule.vse_infty.epochs``; an integer part indexes a list: ``datasets.0.label``), a
value is YAML (``seeds=[0,1]``; read safely, no tags, no key twice; nothing after ``=`` is null). A key given
twice, or a path through a value that is neither a mapping nor a list, is refused. Every mistake is a
:class:`bench.config_files.ConfigError` naming the override, the problem and the fix.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from bench.config_files import ConfigError, load_yaml_text
from bench.values import shown

OVERRIDE_FIX = "expected key=value with a dotted key and a YAML value, e.g. scale=smoke, seeds=[0,1] or " \
               "schedule.vse_infty.epochs=2 (quote the whole override in the shell)"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"schedule.vse_infty.epochs=2"`` -> (["schedule", "vse_infty", "epochs"], 2); value read as YAML
    (safely: no tags, no key twice). ConfigError naming the override, the problem and the fix."""
    if "=" not in text:
        raise ConfigError(f"override {shown(text)}: no '=' in it; {OVERRIDE_FIX}")
    key, value = text.split("=", 1)
    path = key.strip().split(".")
    if not key.strip():
        raise ConfigError(f"override {shown(text)}: empty key before '='; {OVERRIDE_FIX}")
    if any(not p.strip() or p != p.strip() for p in path):
        raise ConfigError(f"override {shown(text)}: key {shown(key)} has an empty or blank-padded part between dots; "
                          f"{OVERRIDE_FIX}")
    if not value.strip():
        return path, None
    try:
        parsed = load_yaml_text(value)
    except yaml.YAMLError as e:
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        if "tag" in problem:
            problem += " (YAML tags are not read from overrides)"
        raise ConfigError(f"override {shown(text)}: the value {shown(value)} is not valid YAML ({problem}); close every "
                          "bracket and quote, or give a plain value, e.g. seeds=[0,1] or "
                          "datasets.0.label='my data'") from None
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Set each dotted ``key=value`` in a copy of ``raw`` (integer segments index lists; a missing mapping is
    made). A key given twice, or a path through a value that is neither a mapping nor a list, is a
    ConfigError."""
    raw = copy.deepcopy(raw)
    seen: dict[tuple[str, ...], str] = {}
    for text in overrides:
        path, value = parse_override(text)
        if tuple(path) in seen:
            raise ConfigError(f"override {shown(text)}: key {'.'.join(path)} is already set by {shown(seen[tuple(path)])} "
                              "(the last would silently win); give each key once")
        seen[tuple(path)] = text
        node = _parent(raw, path, text)
        if isinstance(node, list):
            node[_list_index(node, path[-1], text)] = value
        else:
            node[path[-1]] = value
    return raw


def _parent(raw: dict, path: list[str], text: str):
    """The mapping or list that holds ``path``'s last part (mappings made where missing)."""
    node = raw
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, text)]
        elif isinstance(node, dict):
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        if not isinstance(node, (dict, list)):
            where = ".".join(path[:depth + 1])
            raise ConfigError(f"override {shown(text)}: {where} is {type(node).__name__} {shown(node)}, not a mapping "
                              f"or a list, so it has no key {path[depth + 1]!r}; set {where}=… itself")
    return node


def _list_index(node: list, part: str, text: str) -> int:
    try:
        idx = int(part)
        node[idx]
        return idx
    except (ValueError, IndexError):
        raise ConfigError(f"override {shown(text)}: {shown(part)} is not an index of a list of {len(node)}") from None
