"""Suite -> cells: one cell is one training run (dataset, matcher, strategy variant, seed, schedule).

A cell is a :class:`bench.spec.Cell` (typed, frozen) from here to the trainer; files (``config.yaml``,
``result.json``, W&B config, job pickles) hold its plain form (``Cell.to_dict`` / ``Cell.from_dict``).
:func:`expand` sets what a suite adds to the run: ``id``, ``suite``, ``scale``, ``dataset_label``,
``matcher_label``, the strategy's ``label`` and ``scenario``, ``resources`` (a ``spec.Resources``),
``wandb``, ``recipe`` (``{group: "option@version"}`` of the suite's recipes, ``bench/recipes/``),
``depends_on`` / ``anchor_checkpoint`` (OAS) and ``rehearsal`` (a rehearsal suite's cuts, ``bench.harness.rehearsal``).

Cell id (DomainBed style): the first 12 hex digits of sha1 over the canonical JSON of what decides
the result (``bench.spec.result_key``, read from the resolved cell: every default the code fills,
the matcher's and strategy's declared constructor defaults included). Excluded: suite name, scale,
labels, data paths, resources, W&B settings; the data itself is checked by its fingerprint
(``bench.harness.store``). So the same run declared in two suites has the same id (the store may reuse
it, see ``bench.harness.store.locate_run``), and moving the data to another disk keeps the ids.

OAS cells (kd, rkd, sp, darkrank, dbl with scenario oas: ``Strategy.needs_anchor_checkpoint``) fine-tune
from the baseline of the same dataset / matcher / seed / base schedule: they ``depends_on`` that baseline
cell, which :func:`expand` adds once if the suite does not list it. Their own schedule is the base
schedule updated with the ``oas_stage2`` entries (OAS stage 2 restarts optimiser and epochs).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import replace
from pathlib import Path

from bench.harness.config import ConfigError, Suite, resolve_root, strategy_params
from bench.harness.rehearsal import plan_of
from bench.spec import (
    DEFAULT_RESOURCES,
    SCHEDULE_REQUIRED,
    Anchor,
    Cell,
    Dataset,
    Eval,
    MatcherSpec,
    Resources,
    Schedule,
    StrategySpec,
    Wandb,
    cell_id,
    needs_baseline,
    strategy_scenario,
)

BASELINE = StrategySpec(name="baseline", label="baseline", scenario="none")


def scenario_of(name: str, params: dict) -> str:
    """The training scenario of a strategy variant, as the strategy says (``bench.spec.strategy_scenario``)."""
    return strategy_scenario(name, params)


def strategy_variants(entry: dict) -> list[StrategySpec]:
    """One suite strategy entry -> its variants (the Cartesian product of ``sweep``), each with a label
    and its scenario."""
    name, params, sweep = entry["name"], entry["params"], entry.get("sweep") or {}
    base_label = entry["label"] or _default_label(name, params)
    if not sweep:
        return [StrategySpec(name, base_label, scenario_of(name, params), dict(params))]
    keys = list(sweep)
    out = []
    for values in itertools.product(*(sweep[k] for k in keys)):
        p = dict(params) | dict(zip(keys, values))
        label = base_label + " " + " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in zip(keys, values))
        out.append(StrategySpec(name, label, scenario_of(name, p), p))
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
    """(base schedule, OAS stage-2 updates) for a matcher on a dataset at the suite's scale: the keys
    the suite gives (the trainer's defaults fill the rest, ``bench.spec.Schedule``).

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


def cell_recipe(cell: Cell) -> str:
    """``full=published@1a2b3c4d, …``: the recipes recorded in a cell (``-`` for a suite without)."""
    return ", ".join(f"{g}={v}" for g, v in (cell.recipe or {}).items()) or "-"


def _resources(spec: dict, matcher: str) -> Resources:
    return Resources.from_dict({**DEFAULT_RESOURCES, **spec["resources"].get("default", {}),
                                **spec["resources"].get(matcher, {})})


class _Collected:
    """The cells of a suite by id, in the order first added: an anchor added for an OAS cell (``declared``
    False) once, and named by the suite's own entry when the suite lists that baseline too."""

    def __init__(self, where) -> None:
        self.where = where
        self.by_id: dict[str, Cell] = {}
        self.auto_added: set[str] = set()

    def add(self, cell: Cell, declared: bool) -> Cell:
        have = self.by_id.get(cell.id)
        if have is None:
            self.by_id[cell.id] = cell
            if not declared:
                self.auto_added.add(cell.id)
            return cell
        if declared and cell.id in self.auto_added:  # the suite's own name wins over the added anchor's
            self.auto_added.discard(cell.id)
            self.by_id[cell.id] = have = replace(have, strategy=replace(have.strategy, label=cell.strategy.label))
        elif declared and have.matcher_label != cell.matcher_label:  # one row would vanish from every table
            raise ConfigError(f"{self.where}: matchers {have.matcher_label!r} and {cell.matcher_label!r} give the same "
                              f"cells ({cell.matcher.name} with the same arguments {cell.matcher.overrides}): a table "
                              "would show one of them only; list the matcher once, or give the entries different "
                              "arguments")
        elif declared and have.strategy.label != cell.strategy.label:
            raise ConfigError(f"{self.where}: strategies {have.strategy.label!r} and {cell.strategy.label!r} give "
                              "the same cell (identical params)")
        return have


def _dataset(spec: dict, ds: dict) -> Dataset:
    return Dataset(name=ds["name"], data_root=resolve_root(ds["data_root"], spec["data_root"], "DATA"),
                   vocab_root=resolve_root(ds["vocab_root"], spec["vocab_root"], "VOCAB"))


def _matcher(spec: dict, m: dict) -> MatcherSpec:
    scale_over = spec["scales"][spec["scale"]]["matchers"]
    return MatcherSpec(m["name"], dict(scale_over.get("default", {})) | dict(scale_over.get(m["name"], {}))
                       | weights_overrides(spec, m["name"]) | m["overrides"])


def _with_id(cell: Cell) -> Cell:
    return replace(cell, id=cell_id(cell))


def expand(suite: Suite) -> list[Cell]:
    """All cells of a suite, OAS anchors included once; order: dataset, matcher, strategy, seed."""
    spec = suite.spec
    collected = _Collected(suite.path)
    labels_seen: set[tuple] = set()
    only = spec.get("only") or {}
    variants = [v for entry in spec["strategies"] for v in strategy_variants(entry)
                if _kept(only.get("strategies"), entry["name"], entry["label"], v.label)]
    anchor = Anchor(**anchor_info(spec["anchor_checkpoint"])) if spec.get("anchor_checkpoint") else None
    for ds in spec["datasets"]:
        if not _kept(only.get("datasets"), ds["name"], ds["label"]):
            continue
        dataset = _dataset(spec, ds)
        ev = Eval.from_dict(dict(spec["eval"]) | {"protocols": list(ds["protocols"])})
        for m in spec["matchers"]:
            if m["datasets"] is not None and ds["name"] not in m["datasets"]:
                continue
            if not _kept(only.get("matchers"), m["name"], m["label"]):
                continue
            base_sched, stage2 = resolve_schedule(spec, m["name"], ds["name"])
            common = Cell(dataset=dataset, matcher=_matcher(spec, m), strategy=BASELINE, eval=ev,
                          suite=spec["name"], scale=spec["scale"], dataset_label=ds["label"], matcher_label=m["label"],
                          resources=_resources(spec, m["name"]), wandb=Wandb.from_dict(
                              {k: v for k, v in spec["wandb"].items() if v is not None}),
                          recipe=recipe_tags(spec) or None, rehearsal=plan_of(spec))
            for v in variants:
                if (ds["label"], m["label"], v.label) in labels_seen:
                    raise ConfigError(f"{suite.path}: strategy label {v.label!r} used twice; give each "
                                      "strategy entry a distinct `label`")
                labels_seen.add((ds["label"], m["label"], v.label))
                for seed in spec["seeds"]:
                    _add_variant(collected, replace(common, seed=seed), v, base_sched, stage2, anchor)
    return list(collected.by_id.values())


def _kept(wanted: list[str] | None, *names) -> bool:
    """Whether the suite's ``only:`` filter keeps an entry known by ``names`` (its name and labels)."""
    return wanted is None or any(n in wanted for n in names if n is not None)


def _add_variant(collected: _Collected, common: Cell, v: StrategySpec, base_sched: dict, stage2: dict,
                 anchor: Anchor | None) -> None:
    """The cell of strategy variant ``v`` (and, for one that starts from the baseline, that baseline)."""
    if not needs_baseline(v.name, v.params):
        collected.add(_with_id(replace(common, strategy=v, schedule=Schedule.from_dict(base_sched), depends_on=[])),
                      declared=True)
        return
    stage2_sched = Schedule.from_dict({**base_sched, **stage2})
    if anchor is not None:  # a released anchor replaces the baseline cell
        cell = replace(common, strategy=v, schedule=stage2_sched, depends_on=[], anchor_checkpoint=anchor)
    else:
        baseline = collected.add(_with_id(replace(common, schedule=Schedule.from_dict(base_sched), depends_on=[])),
                                 declared=False)
        cell = replace(common, strategy=v, schedule=stage2_sched, depends_on=[baseline.id])
    collected.add(_with_id(cell), declared=True)


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
    p = Path(path).resolve()
    st = p.stat()
    digest = _file_sha256(str(p), st.st_size, st.st_mtime_ns)
    return {"path": str(p), "sha256": digest, "source": f"checkpoint {p.name} (sha256 {digest[:12]})"}


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def topological_order(cells: list[Cell]) -> list[Cell]:
    """Cells with every dependency before its dependents; otherwise the input order (Kahn)."""
    ids = {c.id for c in cells}
    for c in cells:
        for d in c.depends_on or []:
            if d not in ids:
                raise ConfigError(f"cell {c.id} ({c.strategy.label}) depends on unknown cell {d}")
    done: set[str] = set()
    order: list[Cell] = []
    pending = list(cells)
    while pending:
        ready = [c for c in pending if all(d in done for d in c.depends_on or [])]
        if not ready:
            raise ConfigError("dependency cycle among cells: " + ", ".join(c.id for c in pending))
        order.extend(ready)
        done |= {c.id for c in ready}
        pending = [c for c in pending if c.id not in done]
    return order


def describe(cell: Cell) -> str:
    """A readable one-line name, e.g. ``synth-demo/vse_infty/dbl-abs/s0``."""
    return f"{cell.dataset_label}/{cell.matcher_label}/{cell.strategy.label}/s{cell.seed}"
