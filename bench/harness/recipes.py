"""Recipes: each published schedule written once, ``bench/recipes/<group>/<option>.yaml``, composed by a suite
(``recipes: {group: option}``) under its own keys, in the spirit of Hydra's config groups. A cell records the
recipes it was made from as ``option@version`` (version: a hash of the recipe's values)."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from bench.config_files import ConfigError, read_yaml
from bench.harness.registry import known_datasets
from bench.harness.schema import schema, validate
from bench.harness.schema_errors import _unknown
from bench.values import shown

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def available_recipes() -> dict[str, list[str]]:
    """Recipe groups (``bench/recipes/<group>/``) -> their options (``<option>.yaml``)."""
    return {g.name: sorted(p.stem for p in g.glob("*.yaml"))
            for g in sorted(RECIPES_DIR.iterdir()) if g.is_dir() and any(g.glob("*.yaml"))}


def recipe_hash(content: Any) -> str:
    """8 hex digits of sha1 over a recipe's parsed values (comments, layout, description do not count)."""
    return hashlib.sha1(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                   default=str).encode()).hexdigest()[:8]


def _deep_merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge key by key, anything else (lists too) is replaced."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def recipe_fragments(chosen: dict, path: Path) -> list[tuple[str, str, Path, dict]]:
    """(group, option, file, its values) of each recipe ``chosen`` names (``{group: option}``; a None option drops
    the group), each read and checked as a suite's scales and resources (schedule ``datasets``: the ones the
    readers know)."""
    groups = available_recipes()
    out = []
    for group, option in chosen.items():
        if group not in groups:
            raise ConfigError(f"{path}: recipes.{group}: {_unknown(group, groups, 'recipe group')}")
        if option is None:  # `recipes.<group>=null` drops a group
            continue
        if option not in groups[group]:
            raise ConfigError(f"{path}: recipes.{group}: {_unknown(option, groups[group], f'{group} recipe')}")
        file = RECIPES_DIR / group / f"{option}.yaml"
        fragment = read_yaml(file) or {}
        validate(schema()["recipe"], fragment, file, {"schedule_datasets": known_datasets()})
        out.append((group, option, file, fragment))
    return out


def _levels(matcher: str, dataset: str) -> list[tuple[str, ...]]:
    """The entries of a schedule table that apply to ``matcher`` on ``dataset``, least specific first (the order
    ``bench.harness.cells.resolve_schedule`` merges them in: a later one wins)."""
    return [("default",), ("default", "datasets", dataset), (matcher,), (matcher, "datasets", dataset)]


def _at(tree, keys: tuple):
    for k in keys:
        tree = tree.get(k) if isinstance(tree, dict) else None
    return tree if isinstance(tree, dict) else {}


def shadowed(own: dict, spec: dict, path: Path) -> list[str]:
    """Each key the suite sets itself (its file or an override) that a recipe hides from a cell: the recipe sets
    the same key in a more specific entry of the schedule (``scales.smoke.schedule.default.lr`` under the smoke
    recipe's ``vse_infty.lr``) or of the resources (``resources.default.time_min`` under ``sgr.time_min``), which
    wins for that matcher (``resolve_schedule``). One line each naming the key, the recipe, its key and the fix;
    ``spec`` is the validated suite (its scale, matchers, datasets)."""
    chosen = own.get("recipes")
    if not isinstance(chosen, dict) or any(isinstance(x, dict) for x in chosen.values()):
        return []
    scale = spec["scale"]
    matchers = sorted({m["name"] for m in spec["matchers"]})
    datasets = sorted({d["name"] for d in spec["datasets"]})
    tables = [(("scales", scale, "schedule"), f"scales.{scale}.schedule", [_levels(m, d) for m in matchers
                                                                         for d in datasets]),
              (("resources",), "resources", [[("default",), (m,)] for m in matchers])]
    lines = []
    for group, option, file, fragment in recipe_fragments(chosen, path):
        for keys, name, chains in tables:
            mine, theirs = _at(own, keys), _at(fragment, keys)
            for chain in chains:
                for i, low in enumerate(chain):
                    for stage in ((), ("oas_stage2",)):
                        given = {k: v for k, v in _at(mine, low + stage).items() if k not in ("datasets", "oas_stage2")}
                        for high in chain[i + 1:]:
                            wins = _at(theirs, high + stage)
                            for key in sorted(set(given) & set(wins)):
                                here, there = ".".join((name, *low, *stage, key)), ".".join((name, *high, *stage, key))
                                lines.append(
                                    f"{here}: {shown(given[key])} is hidden by recipe {group}={option} ({file.relative_to(RECIPES_DIR.parents[1])}), "
                                    f"whose {there}: {shown(wins[key])} is more specific and wins for {high[0]}; set "
                                    f"{there} yourself" + (f" (or schedule.{'.'.join((*low, *stage, key))}, which wins "
                                                           "over every recipe)" if name.startswith("scales") else ""))
    return list(dict.fromkeys(lines))


def compose_recipes(raw: dict, path: Path) -> dict:
    """The suite ``raw`` over its recipes (``recipes: {group: option}``, composed in that order).

    Each recipe (``bench/recipes/<group>/<option>.yaml``) holds ``scales``, ``resources`` and/or
    ``reference`` entries (and a ``description``); the suite's own keys win over every recipe. The result
    carries ``recipes: {group: {"option", "version", "description", "file"}}``.
    """
    chosen = raw.get("recipes")
    if chosen is None or (isinstance(chosen, dict) and all(isinstance(x, dict) for x in chosen.values())):
        return raw  # no recipes, or already composed
    if not isinstance(chosen, dict):
        raise ConfigError(f"{path}: recipes: expected a mapping group: option, e.g. {{full: published}}, "
                          f"got {shown(chosen)}")
    merged: dict = {}
    record: dict = {}
    for group, option, file, fragment in recipe_fragments(chosen, path):
        record[group] = {"option": option, "version": recipe_hash({k: x for k, x in fragment.items()
                                                                   if k != "description"}),
                         "description": str(fragment.get("description", "")),
                         "file": str(file.relative_to(RECIPES_DIR.parents[1]))}
        merged = _deep_merge(merged, {k: copy.deepcopy(x) for k, x in fragment.items() if k != "description"})
    own = {k: x for k, x in raw.items() if k != "recipes"}
    out = _deep_merge(merged, own)
    out["recipes"] = record
    return out


def recipe_label(recipes: dict | None) -> str:
    """``full=published@1a2b3c4d, oas_stage2=lr_2e-5@…`` (``-`` for a suite without recipes)."""
    if not recipes:
        return "-"
    return ", ".join(f"{g}={r['option']}@{r['version']}" for g, r in recipes.items())
