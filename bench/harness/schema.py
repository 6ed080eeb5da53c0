"""The suite schema: the layout of a suite file (``bench.harness.config``) as pydantic models, built once at
runtime (:func:`schema`) from the owners of the names: the registries (``bench.harness.registry``), the
schedule's facts (``bench.spec.Schedule``: type, range, choices), the resources' keys, the protocols. Every
model is strict and forbids unknown keys; a rule pydantic has no constraint for is a validator raising
``fail``; ``bench.harness.schema_errors.config_error`` turns pydantic's first error into the ConfigError a
user reads (:func:`validate`)."""

from __future__ import annotations

import difflib
import types
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)

from bench.harness.registry import (
    REQUIRED,
    _valid_cache,
    default_protocols_for,
    known_datasets,
    matcher_arg_kinds,
    matcher_args,
    strategy_params,
    valid_matchers,
    valid_strategies,
    weight_kinds,
)
from bench.harness.schema_errors import _Called, config_error
from bench.harness.schema_values import (
    STRICT,
    a_string,
    annotation,
    by_name_alone,
    defined_by_suite,
    fail,
    fail_at,
    in_range,
    list_or_nothing,
    name_of,
    non_empty_list,
    null_is_empty,
    sweep_values,
)
from bench.spec import (
    EVAL_DEFAULTS,
    PLAIN_NAME_RULE,
    REHEARSAL_LIMITS,
    RESOURCE_KEYS,
    SCHEDULE_CHOICES,
    SCHEDULE_LIMITS,
    Rehearsal,
    Wandb,
    argument_problem,
    is_plain_name,
    schedule_limit_problem,
    schedule_types,
)
from bench.values import expand_path, shown


class _Strict(BaseModel):
    """A mapping of the suite layout: strict types, no unknown keys; null (``key:`` alone) is empty."""

    model_config = STRICT
    missing_message: ClassVar[str] = "required key missing"  # what a required key left out is told

    @model_validator(mode="before")
    @classmethod
    def _null(cls, data):
        return null_is_empty(data)


class _Given(_Strict):
    """A mapping of optional keys whose spec keeps only the keys given: in the order given (a scale's
    matcher overrides, a sweep, a resource entry) or, ``in_given_order = False``, in the schema's
    (a schedule entry: the trainer's defaults fill the rest)."""

    in_given_order: ClassVar[bool] = True
    _given: list = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_keys(cls, data, handler):
        model = handler(data)
        model._given = list(data) if isinstance(data, dict) else []
        return model

    @model_serializer
    def _given_only(self):
        keys = self._given
        if not self.in_given_order:
            given = set(keys)
            keys = [k for k in type(self).model_fields if k in given]
        return {k: getattr(self, k) for k in keys}


class _Schedule(_Given):
    in_given_order: ClassVar[bool] = False


class _Labelled(_Strict):
    """A dataset or matcher entry: ``label`` (how tables name it) defaults to its name."""

    @model_validator(mode="after")
    def _label_defaults_to_name(self):
        if self.label is None:
            self.label = self.name
        return self


class _StrategyEntry(_Strict):
    """A ``strategies`` entry of one strategy (``_strategy_model`` adds name, label, sweep, params).
    A swept parameter counts as given: its first value stands in while ``params`` is checked against
    the strategy's own parameters; the spec keeps it in ``sweep`` only."""

    @field_validator("params", mode="before", check_fields=False)
    @classmethod
    def _swept_count_as_given(cls, params, info: ValidationInfo):
        sweep = info.data.get("sweep")
        if sweep is None or (params is not None and not isinstance(params, dict)):
            return params
        return {**(params or {}), **{k: values[0] for k, values in sweep.model_dump().items()}}

    @model_validator(mode="after")
    def _the_strategy_accepts_them(self):
        """The strategy's constructor (the owner of its parameters' ranges) accepts every variant."""
        import itertools

        from bench.registry_facts import strategy_variant

        params = {k: getattr(self.params, k) for k in type(self.params).model_fields}
        swept = {k: v for k, v in self.sweep.model_dump().items()}
        for combo in itertools.product(*swept.values()):
            variant = {**params, **dict(zip(swept, combo))}
            error = strategy_variant(self.name, variant).get("error")  # strategies.build's refusal, remembered
            if error is not None:
                at = f" (sweep {dict(zip(swept, combo))})" if swept else ""
                raise fail(f"params{at}: {error}")
        return self

    @model_serializer(mode="wrap")
    def _spec(self, handler):
        out = handler(self)
        params = {k: v for k, v in out["params"].items() if k not in out["sweep"]}
        return {"name": out["name"], "label": out["label"], "params": params, "sweep": out["sweep"]}


class _Wandb(_Strict):
    project: StrictStr | None = Wandb().project
    entity: StrictStr | None = None

    @field_validator("project")
    @classmethod
    def _a_wandb_project_name(cls, project: str | None) -> str | None:
        """W&B's own rule for a project name (``wandb.sdk.wandb_settings``: at most 128 characters, none of
        ``/\\#?%:``): a name it refuses trained every cell without tracking, under a warning per cell."""
        bad = sorted({c for c in project or "" if c in WANDB_PROJECT_FORBIDDEN})
        if project is not None and (bad or len(project) > 128):
            why = f"holds {', '.join(map(repr, bad))}" if bad else f"has {len(project)} characters, more than 128"
            raise fail(f"{shown(project)} {why}: W&B refuses such a project name and every cell would train without "
                        f"tracking; use at most 128 characters, none of {' '.join(WANDB_PROJECT_FORBIDDEN)}")
        return project


#: Characters W&B refuses in a project name (``wandb.sdk.wandb_settings.Settings.validate_project``).
WANDB_PROJECT_FORBIDDEN = "/\\#?%:"


class _Only(_Strict):
    """``only:``: a filter on the suite's cells that keeps their labels (and so their ids): datasets and matchers by
    name or label, strategies by label or name. Left out (or null): every one."""

    datasets: list[StrictStr] | None = None
    matchers: list[StrictStr] | None = None
    strategies: list[StrictStr] | None = None


class _Reference(_Strict):
    matcher: StrictStr = None  # left out: the rule below says what is needed
    where: Annotated[dict[Any, Any], BeforeValidator(null_is_empty),
                     AfterValidator(lambda where: {k: str(v) for k, v in where.items()})] = None

    @model_validator(mode="after")
    def _both_given(self):
        if self.matcher is None or self.where is None:
            raise fail("needs `matcher` (our label) and `where` (published.csv filters)")
        return self


def _schedule_annotation(key: str, hint) -> tuple[Any, bool]:
    """(the pydantic annotation, nullable?) of schedule ``key`` from its type in ``bench.spec.Schedule``."""
    args = get_args(hint)
    nullable = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if nullable:
        (hint,) = (a for a in args if a is not type(None))
    if key in SCHEDULE_CHOICES:
        return Literal[SCHEDULE_CHOICES[key]], nullable
    if get_origin(hint) is list:
        return list[annotation(get_args(hint)[0])], nullable
    return annotation(hint), nullable


def schedule_fields() -> dict[str, tuple[Any, None]]:
    """The keys of one schedule entry, from ``bench.spec.Schedule`` (each fact written there once: type,
    choices, range): every key optional; a key whose trainer default is None may be given as null."""
    fields = {}
    for k, hint in schedule_types().items():
        ann, nullable = _schedule_annotation(k, hint)
        if k in SCHEDULE_LIMITS:
            ann = Annotated[ann, AfterValidator(_within_limits(k))]
        fields[k] = (Optional[ann] if nullable else ann, None)  # noqa: UP045 - a runtime annotation
    return fields


def _within_limits(key: str):
    """The check of schedule ``key`` against its range (``bench.spec.Schedule``; the value is kept as given)."""
    def check(value):
        problem = schedule_limit_problem(key, value)
        if problem:
            raise fail(problem)
        return value
    return check


def _rehearsal_model() -> type[BaseModel]:
    """``rehearsal:`` (``python -m bench sweep SUITE --rehearse``): the cuts of ``bench.spec.Rehearsal``, its
    defaults and limits (``REHEARSAL_LIMITS``)."""
    def within(limit):
        def check(value):
            problem = None if value is None else limit.problem(value)
            if problem:
                raise fail(problem)
            return value
        return AfterValidator(check)

    fields = {}
    for k, default in Rehearsal().to_dict().items():
        ann = Annotated[StrictInt, within(REHEARSAL_LIMITS[k])]
        fields[k] = (Optional[ann] if default is None else ann, default)  # noqa: UP045 - a runtime annotation
    return create_model("Rehearsal", __base__=_Strict, **fields)


def _params_model(name: str):
    """The pydantic model of strategy ``name``'s parameters, made from ``strategy_params(name)``."""
    key = f"params_model:{name}"
    if key not in _valid_cache:
        fields = {p: (annotation(kind), ... if default is REQUIRED else default)
                  for p, (kind, default) in strategy_params(name).items()}
        _valid_cache[key] = create_model(
            f"Params_{name}", __base__=_Strict,
            missing_message=(ClassVar[str], f"required parameter of strategy {name!r} missing"), **fields)
    return _valid_cache[key]


def _strategy_model(name: str):
    """A ``strategies`` entry of strategy ``name``: its params model, and a sweep of its parameters."""
    sweep = create_model(f"Sweep_{name}", __base__=_Given, **{
        p: (Annotated[list[annotation(kind)], BeforeValidator(sweep_values)], None)
        for p, (kind, _) in strategy_params(name).items()})
    return create_model(f"Strategy_{name}", __base__=_StrategyEntry, name=(Literal[name], ...),
                        label=(StrictStr | None, None), sweep=(sweep, Field(default_factory=sweep)),
                        params=(_params_model(name), Field(None, validate_default=True)))


def _overrides(matcher: str) -> Any:
    """Overrides of ``matcher``'s constructor: its keyword arguments (any key for ``default`` or a
    matcher taking ``**kwargs``), in the order given."""
    args = None if matcher == "default" else matcher_args(matcher)
    key = Any if args is None else Annotated[Literal[tuple(sorted(args))], _Called(f"{matcher} argument")]
    return Annotated[dict[key, Any], BeforeValidator(null_is_empty), AfterValidator(_argument_values(matcher))]


_argument_problem = argument_problem  # bench.spec: the trainer checks a cell's matcher arguments the same way


def _argument_values(matcher: str):
    """The check of a matcher's override values against its constructor's argument types (``default``:
    against every matcher that has the argument); the mapping is kept as given (cell ids are unchanged)."""
    def check(overrides: dict) -> dict:
        names = valid_matchers() if matcher == "default" else [matcher]
        for arg, value in overrides.items():
            for name in names:
                kind = matcher_arg_kinds(name).get(arg)
                problem = kind and _argument_problem(arg, *kind, value)
                if problem:
                    raise fail_at((arg,), f"{problem}" + (f" (an argument of {name})" if matcher == "default" else ""),
                                   value)
        return overrides
    return check


def _matcher_model(name: str):
    in_suite = Annotated[StrictStr, defined_by_suite("datasets", "dataset")]
    return create_model(f"Matcher_{name}", __base__=_Labelled, name=(Literal[name], ...),
                        label=(StrictStr, None), overrides=(_overrides(name), Field(default_factory=dict)),
                        datasets=(list[in_suite] | None, None))


def _by_name(models: dict[str, type[BaseModel]], what: str) -> Any:
    """An entry whose ``name`` picks its model (a discriminated union; the name alone is shorthand);
    an entry without a known name goes to a fallback that reports the name (``expected a <what> name``,
    ``unknown <what>``) after its unknown keys, as for any entry."""
    keys = next(iter(models.values())).model_fields
    name = Annotated[Literal[tuple(models)], _Called(what), name_of(what)]
    fallback = create_model(f"Unknown_{what}", __base__=_Strict, **{k: (Any, None) for k in keys} | {
        "name": (name, Field(None, validate_default=True))})

    def tag(entry) -> str:
        name = entry.get("name") if isinstance(entry, dict) else getattr(entry, "name", None)
        return name if isinstance(name, str) and name in models else "?"

    members = tuple(Annotated[m, Tag(n)] for n, m in models.items()) + (Annotated[fallback, Tag("?")],)
    return Annotated[Union[members], Discriminator(tag), BeforeValidator(by_name_alone)]  # noqa: UP007


def _table(entry, keys: tuple) -> Any:
    """``{key: entry}``: checked, and kept, in the order given."""
    key = Annotated[Literal[keys], _Called("key")]
    return Annotated[dict[key, entry], BeforeValidator(null_is_empty)]


def _schedules(per_matcher: tuple) -> Any:
    """``SCHEDULES`` (module docstring of ``bench.harness.config``): per matcher, per dataset, OAS stage 2."""
    sched = schedule_fields()
    stage2 = create_model("OasStage2", __base__=_Schedule, **sched)
    per_dataset = create_model("DatasetSchedule", __base__=_Schedule, **sched, oas_stage2=(stage2, None))
    dataset_key = Annotated[Any, defined_by_suite("schedule_datasets", "key")]
    return _table(create_model(
        "Schedule", __base__=_Schedule, **sched, oas_stage2=(stage2, None),
        datasets=(Annotated[dict[dataset_key, per_dataset], BeforeValidator(null_is_empty)], None)), per_matcher)


def _scales(per_matcher: tuple, schedules) -> Any:
    matchers = create_model("ScaleMatchers", __base__=_Given, **{m: (_overrides(m), None) for m in per_matcher})
    scale = create_model("Scale", __base__=_Strict, schedule=(schedules, Field(default_factory=dict)),
                         matchers=(matchers, Field(default_factory=matchers)))
    return _table(scale, ("full", "smoke"))


def _resources(per_matcher: tuple) -> Any:
    return _table(create_model("Resource", __base__=_Given, **{
        k: (Annotated[annotation(kind), Field(ge=0 if k == "gpus" else 1)] if kind is int else annotation(kind),
            None) for k, kind in RESOURCE_KEYS.items()}), per_matcher)


def _protocol() -> Any:
    from bench.registry_facts import protocols

    return Annotated[Literal[tuple(protocols())], _Called("protocol"), BeforeValidator(a_string)]


_COUNT = Annotated[StrictInt, Field(ge=1)]


def _eval_model(protocol) -> type[BaseModel]:
    return create_model("Eval", __base__=_Strict, protocols=(list[protocol], Field(default_factory=list)),
                        dev_images=(_COUNT, EVAL_DEFAULTS["dev_images"]),
                        batch_size=(_COUNT, Field(None, exclude_if=lambda v: v is None)),
                        # bench.eccv; left out: bench.spec's default (so a suite's spec, and its ids, stay as given)
                        eccv=(StrictBool, Field(None, exclude_if=lambda v: v is None)))


class _DatasetRules(_Labelled):
    """A ``datasets`` entry's protocols: its own, else the suite's ``eval.protocols``, else the dataset's;
    each one of the dataset's."""

    @field_validator("protocols", mode="before", check_fields=False)
    @classmethod
    def _else_the_suites(cls, protocols, info: ValidationInfo):
        return protocols or (info.context or {}).get("protocols", [])

    @field_validator("protocols", check_fields=False)
    @classmethod
    def _else_the_datasets(cls, protocols, info: ValidationInfo):
        from bench.registry_facts import protocols as known_protocols

        name = info.data.get("name")
        if name is None:  # reported already
            return protocols
        protocols = protocols or default_protocols_for(name)
        if not protocols:
            raise fail(f"no evaluation protocol known for dataset {name!r}: set `protocols` here or in "
                        "eval.protocols")
        own = default_protocols_for(name)
        if twice := sorted({p for p in protocols if protocols.count(p) > 1}):  # another cell id for the same result
            raise fail(f"protocol(s) {twice} listed more than once in {list(protocols)}; list each protocol once")
        for p in protocols:  # a protocol reads one dataset's split: on another it would title a lie
            if p not in own:
                from_eval = " (from eval.protocols, which applies to every dataset)" \
                    if info.context.get("protocols") == protocols else ""
                raise fail(f"protocol {p!r}{from_eval} evaluates {known_protocols()[p]['dataset']}, not this dataset's "
                            f"{name}; give {' or '.join(own)}, or leave `protocols` out for the dataset's own")
        return protocols


def _dataset_model(protocol) -> type[BaseModel]:
    name = Annotated[Literal[tuple(known_datasets())], _Called("dataset"), BeforeValidator(a_string)]
    return create_model("Dataset", __base__=_DatasetRules, name=(name, ...), label=(StrictStr, None),
                        data_root=(StrictStr | None, None), vocab_root=(StrictStr | None, None),
                        protocols=(list[protocol], Field(None, validate_default=True)))


class _SuiteRules(_Strict):
    """The rules across a suite's keys, checked in the order of its keys. The names a suite defines for its
    later keys go to the validation context as they pass: eval.protocols (the datasets' default), the
    dataset names (``matchers[i].datasets``, a schedule's ``datasets``)."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _a_folder_name(cls, name: str) -> str:
        if not is_plain_name(name):
            raise fail(f"{shown(name)} cannot name the folder of its run folders and tables under --root: use "
                        f"{PLAIN_NAME_RULE}")
        return name

    @field_validator("anchor_checkpoint", check_fields=False)
    @classmethod
    def _a_file(cls, path: str | None) -> str | None:
        """A trained checkpoint (this suite's best.pt or an official one) that replaces the OAS baseline."""
        path = expand_path(path)  # ~ and $VARS, as every path of a suite
        if path is not None and not Path(path).is_file():
            raise fail(f"{shown(path)} is not a file; give the path of a best.pt of this suite or of an official "
                        "checkpoint (model_best.pth / model_best.pth.tar)")
        return path

    @field_validator("eval", check_fields=False)
    @classmethod
    def _share_protocols(cls, ev, info: ValidationInfo):
        info.context["protocols"] = ev.protocols
        return ev

    @field_validator("datasets", check_fields=False)
    @classmethod
    def _share_dataset_names(cls, datasets, info: ValidationInfo):
        _distinct_labels(datasets, "datasets", "dataset")
        names = [d.name for d in datasets]
        info.context.update(datasets=names, schedule_datasets=sorted(set(names) | set(known_datasets())))
        return datasets

    @field_validator("matchers", check_fields=False)
    @classmethod
    def _distinct_matcher_labels(cls, matchers):
        _distinct_labels(matchers, "matchers", "matcher", tagged=True)
        return matchers

    @field_validator("seeds", check_fields=False)
    @classmethod
    def _each_seed_once(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise fail("empty list: give at least one seed")
        dupes = sorted({x for x in seeds if seeds.count(x) > 1})
        if dupes:
            raise fail(f"seed(s) {dupes} listed more than once in {seeds}; list each seed once")
        return seeds

    @field_validator("only", check_fields=False)
    @classmethod
    def _only_what_the_suite_has(cls, only, info: ValidationInfo):
        """Each name of ``only`` is a name or label of the suite's datasets / matchers / strategies."""
        for key in ("datasets", "matchers", "strategies"):
            wanted, entries = getattr(only, key), info.data.get(key)
            if wanted is None or entries is None:
                continue
            known = list(dict.fromkeys([x for e in entries for x in (e.name, e.label) if x is not None]))
            if not wanted:  # keeps none: show listed 0 cells, sweep recorded a sweep of none, collect crashed
                raise fail_at((key,), f"an empty list keeps none of the suite's {key}; name the ones to keep (names "
                               f"and labels: {', '.join(map(str, known))}), or leave only.{key} out for every one",
                               wanted)
            for i, w in enumerate(wanted):
                if w not in known:
                    close = difflib.get_close_matches(w, known, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise fail_at((key, i), f"{w!r} is none of the suite's {key} ({hint}names and labels: "
                                   f"{', '.join(map(str, known))})", w)
        return only

    @field_validator("scales", check_fields=False)
    @classmethod
    def _the_chosen_scale(cls, scales, info: ValidationInfo):
        scale = info.data.get("scale")
        if scale is not None and scale not in scales:
            raise fail(f"no entry for the chosen scale {scale!r} (have: {', '.join(scales)})")
        return scales


def _suite_model(scales, schedules, resources) -> type[BaseModel]:
    """A suite, its keys in the order they are checked (``_SuiteRules``)."""
    protocol = _protocol()
    eval_model, dataset = _eval_model(protocol), _dataset_model(protocol)
    matcher = _by_name({m: _matcher_model(m) for m in valid_matchers()}, "matcher")
    strategy = _by_name({s: _strategy_model(s) for s in valid_strategies()}, "strategy")
    return create_model(
        "SuiteFile", __base__=_SuiteRules,
        name=(StrictStr, ...), description=(StrictStr, ""), wandb=(_Wandb, Field(default_factory=_Wandb)),
        scale=(Literal["full", "smoke"], "full"), data_root=(StrictStr | None, None),
        vocab_root=(StrictStr | None, None), anchor_checkpoint=(StrictStr | None, None),
        weights=(_table(StrictStr | None, weight_kinds()), Field(default_factory=dict)),
        rehearsal=(Optional[_rehearsal_model()], None),  # noqa: UP045 - a runtime annotation
        eval=(eval_model, Field(default_factory=eval_model)),
        datasets=(Annotated[list[Annotated[dataset, BeforeValidator(by_name_alone)]],
                            BeforeValidator(non_empty_list)], ...),
        matchers=(Annotated[list[matcher], BeforeValidator(non_empty_list)], ...),
        strategies=(Annotated[list[strategy], BeforeValidator(non_empty_list)], ...),
        only=(_Only, Field(default_factory=_Only)),
        seeds=(list[Annotated[StrictInt, AfterValidator(in_range)]], ...),
        scales=(scales, ...),
        recipes=(Annotated[Any, AfterValidator(lambda recipes: recipes or {})], Field(None, validate_default=True)),
        schedule=(schedules, Field(default_factory=dict)),
        reference=(Annotated[list[_Reference], BeforeValidator(list_or_nothing)], Field(default_factory=list)),
        resources=(resources, Field(default_factory=dict)))


def schema() -> dict[str, type[BaseModel]]:
    """The models of a suite file (``suite``) and of a recipe file (``recipe``), built once."""
    if "schema" not in _valid_cache:
        per_matcher = ("default", *valid_matchers())
        schedules, resources = _schedules(per_matcher), _resources(per_matcher)
        scales = _scales(per_matcher, schedules)
        recipe = create_model("Recipe", __base__=_Strict, description=(Any, None), reference=(Any, None),
                              scales=(scales, Field(default_factory=dict)),
                              resources=(resources, Field(default_factory=dict)))
        _valid_cache["schema"] = {"suite": _suite_model(scales, schedules, resources), "recipe": recipe}
    return _valid_cache["schema"]


def _distinct_labels(entries: list, key: str, what: str, tagged: bool = False) -> None:
    """Two datasets (matchers) of one label would share a table row. ``tagged``: the entries are a
    union by name, whose member (tag) is part of pydantic's location."""
    seen: dict[str, int] = {}
    for i, e in enumerate(entries):
        if e.label in seen:
            j = seen[e.label]
            raise fail_at((i, e.name, "label") if tagged else (i, "label"),
                           f"{what}s {key}[{j}] ({entries[j].name}) and {key}[{i}] ({e.name}) have the same label "
                           f"{shown(e.label)}; give each {what} a distinct `label`", e.label)
        seen[e.label] = i


def validate(schema: type[BaseModel], raw, file, context: dict) -> dict:
    """``raw`` checked against ``schema`` and dumped with defaults filled; ConfigError naming ``file``."""
    try:
        return schema.model_validate(raw, context=context).model_dump()
    except ValidationError as e:
        raise config_error(file, e, schema) from None
