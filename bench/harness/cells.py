"""Suite -> cells: one cell is one training run (dataset, matcher, strategy variant, seed, schedule).

A cell is a plain dict (YAML/JSON-friendly, passed as is to ``bench.train.run_cell``)::

    {"id", "suite", "scale", "dataset_label", "matcher_label",
     "dataset":  {"name", "data_root"?, "vocab_root"?},   # None paths left out: the trainer's defaults
     "matcher":  {"name", **overrides},                   # models.build(name, **overrides)
     "strategy": {"name", "label", "scenario", "params"}, # strategies.build(name, **params)
     "schedule": {...}, "eval": {"protocols", "dev_images"}, "seed",
     "depends_on": [cell ids], "resources": {...}, "wandb": {"project", "entity"},
     "recipe"?: {group: "option@version"}}               # the suite's recipes (bench/recipes/)

Cell id (DomainBed style): the first 12 hex digits of sha1 over the canonical JSON of what decides
the result: dataset name and label, matcher name + overrides, strategy name + params, schedule, eval, seed and
the ids it depends on, each over the code's defaults (``bench.spec.result_key``: a default changed in
``bench.spec`` or in a matcher's or strategy's constructor changes the ids it reaches). Excluded: suite name, scale, labels, data paths,
resources, W&B settings; the data itself is checked by its fingerprint (``bench.harness.store``).
So the same run declared in two suites has the same id (the store may reuse it, see
``bench.harness.store.locate_run``), and moving the data to another disk keeps the ids.

OAS cells (kd, rkd, sp, darkrank, dbl with scenario oas) fine-tune from the baseline of the same
dataset / matcher / seed / base schedule: they ``depends_on`` that baseline cell, which
:func:`expand` adds once if the suite does not list it. Their own schedule is the base schedule
updated with the ``oas_stage2`` entries (method.md: OAS stage 2 restarts optimiser and epochs).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools

from bench.harness.config import (
    SCHEDULE_REQUIRED,
    ConfigError,
    Suite,
    resolve_root,
    strategy_params,
    strategy_scenario,
)
from bench.spec import DEFAULT_RESOURCES, canonical_json, cell_id, code_defaults  # noqa: F401 - re-exported

Cell = dict  # the plain form of ``bench.spec.Cell`` (``Cell.from_dict`` / ``to_dict``)
HASHED_KEYS = ("dataset.name", "dataset_label", "matcher", "strategy.name", "strategy.params",
               "schedule", "eval", "seed", "depends_on")  # bench.spec.result_key


def scenario_of(name: str, params: dict) -> str:
    """The training scenario: a ``scenario`` parameter (DBL) or the strategy class's own."""
    return strategy_scenario(name, params)


def strategy_variants(entry: dict) -> list[dict]:
    """One strategy entry -> its variants (the Cartesian product of ``sweep``), each with a label."""
    name, params, sweep = entry["name"], entry["params"], entry.get("sweep") or {}
    base_label = entry["label"] or _default_label(name, params)
    if not sweep:
        return [{"name": name, "label": base_label, "params": dict(params)}]
    keys = list(sweep)
    out = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        p = dict(params) | dict(zip(keys, values))
        label = base_label + " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in zip(keys, values))
        out.append({"name": name, "label": label, "params": p})
    return out


def _default_label(name: str, params: dict) -> str:
    vocab = strategy_params(name) or {}
    shown = {k: v for k, v in params.items() if k not in vocab or vocab[k][1] != v}
    return name if not shown else name + "(" + ",".join(f"{k}={v}" for k, v in shown.items()) + ")"


def _merge_schedule(chain: list[dict]) -> tuple[dict, dict]:
    base, stage2 = {}, {}
    for e in chain:
        base.update({k: v for k, v in e.items() if k not in ("datasets", "oas_stage2")})
        stage2.update(e.get("oas_stage2", {}))
    return base, stage2


def resolve_schedule(spec: dict, matcher: str, dataset: str) -> tuple[dict, dict]:
    """(base schedule, OAS stage-2 updates) for a matcher on a dataset at the suite's scale.

    Precedence, later wins: scale default, scale matcher, scale matcher×dataset, then the same three
    from the top-level ``schedule`` (command-line overrides land there).
    """
    chain = []
    for table in (spec["scales"][spec["scale"]]["schedule"], spec["schedule"]):
        for m in ("default", matcher):
            entry = table.get(m)
            if entry:
                chain.append(entry)
                if dataset in entry.get("datasets", {}):
                    chain.append(entry["datasets"][dataset])
    base, stage2 = _merge_schedule(chain)
    missing = [k for k in SCHEDULE_REQUIRED if k not in base]
    if missing:
        raise ConfigError(f"suite {spec['name']!r}: scales.{spec['scale']}.schedule.{matcher}: no "
                          f"{', '.join(missing)} for dataset {dataset!r} (set it for {matcher} or `default`)")
    return base, stage2


def recipe_tags(spec: dict) -> dict:
    """{group: "option@version"} of the recipes a suite composed (bench/recipes/<group>/<option>.yaml)."""
    return {g: f"{r['option']}@{r['version']}" for g, r in (spec.get("recipes") or {}).items()}


def cell_recipe(cell: dict) -> str:
    """``full=published@1a2b3c4d, …``: the recipes recorded in a cell (``-`` for a suite without)."""
    return ", ".join(f"{g}={v}" for g, v in (cell.get("recipe") or {}).items()) or "-"


def _resources(spec: dict, matcher: str) -> dict:
    res = dict(DEFAULT_RESOURCES)
    res.update(spec["resources"].get("default", {}))
    res.update(spec["resources"].get(matcher, {}))
    return res


def expand(suite: Suite) -> list[Cell]:
    """All cells of a suite, OAS anchors included once; order: dataset, matcher, strategy, seed."""
    spec = suite.spec
    cells: list[Cell] = []
    by_id: dict[str, Cell] = {}
    labels_seen: dict[tuple, str] = {}
    variants = [v for entry in spec["strategies"] for v in strategy_variants(entry)]
    scale_over = spec["scales"][spec["scale"]]["matchers"]

    def add(cell: Cell, declared: bool) -> Cell:
        cid = cell["id"]
        if cid in by_id:
            if declared and by_id[cid]["strategy"]["label"] != cell["strategy"]["label"] \
                    and not by_id[cid].get("auto_added"):
                raise ConfigError(f"{suite.path}: strategies {by_id[cid]['strategy']['label']!r} and "
                                  f"{cell['strategy']['label']!r} give the same cell (identical params)")
            if declared and by_id[cid].pop("auto_added", False):
                by_id[cid]["strategy"]["label"] = cell["strategy"]["label"]  # the suite's own name wins
            return by_id[cid]
        by_id[cid] = cell
        cells.append(cell)
        return cell

    for ds in spec["datasets"]:
        dataset = {"name": ds["name"],
                   "data_root": resolve_root(ds["data_root"], spec["data_root"], "DATA"),
                   "vocab_root": resolve_root(ds["vocab_root"], spec["vocab_root"], "VOCAB")}
        dataset = {k: v for k, v in dataset.items() if v is not None}
        ev = dict(spec["eval"]) | {"protocols": list(ds["protocols"])}
        for m in spec["matchers"]:
            if m["datasets"] is not None and ds["name"] not in m["datasets"]:
                continue
            overrides = dict(scale_over.get("default", {})) | dict(scale_over.get(m["name"], {})) \
                | weights_overrides(spec, m["name"]) | m["overrides"]
            matcher = {"name": m["name"], **overrides}
            base_sched, stage2 = resolve_schedule(spec, m["name"], ds["name"])
            for v in variants:
                key = (ds["label"], m["label"], v["label"])
                if key in labels_seen:
                    raise ConfigError(f"{suite.path}: strategy label {v['label']!r} used twice; give each "
                                      "strategy entry a distinct `label`")
                labels_seen[key] = v["label"]
                scenario = scenario_of(v["name"], v["params"])
                for seed in spec["seeds"]:
                    common = {"suite": spec["name"], "scale": spec["scale"], "dataset_label": ds["label"],
                              "matcher_label": m["label"], "dataset": dict(dataset),
                              "matcher": copy.deepcopy(matcher), "eval": copy.deepcopy(ev), "seed": seed,
                              "resources": _resources(spec, m["name"]), "wandb": dict(spec["wandb"])}
                    if spec.get("recipes"):  # the recipe versions of this cell (the resolved schedule is hashed)
                        common["recipe"] = recipe_tags(spec)
                    depends = []
                    schedule = dict(base_sched)
                    if scenario == "oas" and spec.get("anchor_checkpoint"):
                        common["anchor_checkpoint"] = anchor_info(spec["anchor_checkpoint"])  # no baseline cell
                        schedule.update(stage2)
                    elif scenario == "oas":
                        anchor = _make_cell(common, {"name": "baseline", "label": "baseline", "params": {}},
                                            "none", dict(base_sched), [])
                        anchor["auto_added"] = True
                        anchor = add(anchor, declared=False)
                        depends = [anchor["id"]]
                        schedule.update(stage2)
                    add(_make_cell(common, v, scenario, schedule, depends), declared=True)
    for c in cells:
        c.pop("auto_added", None)
    return cells


def weights_overrides(spec: dict, matcher: str) -> dict:
    """The suite's local pretrained folders (``weights: {kind: DIR}``) as the matcher's arguments (its
    ``weights_args``), absolute; a matcher's own override of the argument wins."""
    import os

    from bench.weights import weights_args

    given = spec.get("weights") or {}
    return {arg: os.path.abspath(os.path.expanduser(given[kind]))
            for arg, kind in weights_args(matcher).items() if given.get(kind)}


def anchor_info(path: str) -> dict:
    """``{"path", "sha256", "source"}`` of a released OAS anchor (``anchor_checkpoint:``); hashed once per file
    version (path, size, modification time) in this process."""
    from pathlib import Path

    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "sha256": _file_sha256(str(p), st.st_size, st.st_mtime_ns),
            "source": f"checkpoint {p.name} (sha256 {_file_sha256(str(p), st.st_size, st.st_mtime_ns)[:12]})"}


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _make_cell(common: dict, variant: dict, scenario: str, schedule: dict, depends: list[str]) -> Cell:
    cell = copy.deepcopy(common)
    cell["strategy"] = {"name": variant["name"], "label": variant["label"], "scenario": scenario,
                        "params": dict(variant["params"])}
    cell["schedule"] = schedule
    cell["depends_on"] = list(depends)
    cell["id"] = cell_id(cell)
    return cell


def topological_order(cells: list[Cell]) -> list[Cell]:
    """Cells with every dependency before its dependents; otherwise the input order (Kahn)."""
    by_id = {c["id"]: c for c in cells}
    for c in cells:
        for d in c.get("depends_on", []):
            if d not in by_id:
                raise ConfigError(f"cell {c['id']} ({c['strategy']['label']}) depends on unknown cell {d}")
    done: set[str] = set()
    order: list[Cell] = []
    pending = list(cells)
    while pending:
        ready = [c for c in pending if all(d in done for d in c.get("depends_on", []))]
        if not ready:
            raise ConfigError("dependency cycle among cells: " + ", ".join(c["id"] for c in pending))
        ready_ids = {c["id"] for c in ready}
        order.extend(ready)
        done |= ready_ids
        pending = [c for c in pending if c["id"] not in ready_ids]
    return order


def describe(cell: Cell) -> str:
    """A readable one-line name, e.g. ``synth-demo/vse_infty/dbl-abs/s0``."""
    return f"{cell['dataset_label']}/{cell['matcher_label']}/{cell['strategy']['label']}/s{cell['seed']}"
