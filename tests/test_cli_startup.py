"""The commands that neither train nor score start without torch (their time is measured in ``make bench``,
bench/benchmarks/bench_cli.py, never here), and the registries' facts they read are the registries' own."""

import inspect
import json

import pytest

from bench import registry_facts
from bench.benchmarks.bench_cli import COMMANDS, _argv, _env, torch_imported


def test_commands_that_neither_train_nor_score_do_not_import_torch(tiny_data, tmp_path):
    """--help, status, list, show and a SLURM dry run: after one run has read the registries' facts for this code
    (the cache file named by the sources' fingerprint), torch is not in sys.modules after the command."""
    env = _env(tmp_path / "cache")
    for name in COMMANDS:
        argv = _argv(name, tiny_data, tmp_path / "runs")
        torch_imported(argv, env)  # the first run may read the registries (and count parameters) with torch
        imported, code = torch_imported(argv, env)
        assert code == 0 and not imported, (name, code, imported)
    (cache,) = (tmp_path / "cache").glob("registry-*.json")
    assert cache.name == f"registry-{registry_facts.fingerprint()}.json"
    remembered = json.loads(cache.read_text())["remembered"]
    assert remembered["strategy_variant"] and remembered["parameter_count"]  # show's counts, once per matcher/data


def test_the_facts_are_the_registries_own():
    """Every fact the command line reads through bench.registry_facts equals what the registries say."""
    import models
    import strategies
    from bench.harness import registry
    from bench.protocols import PROTOCOLS
    from bench.spec import TRAINER_STRATEGY_ARGS, declared_defaults, matcher_defaults, strategy_defaults

    facts = registry_facts._read_registries()
    assert registry_facts.matcher_names() == sorted(models.available()) == sorted(facts["matchers"])
    assert registry_facts.strategy_names() == sorted(strategies.available())
    for name in models.available():
        params = models.parameters(name)
        assert matcher_defaults(name) == declared_defaults(params.values()), name
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        assert registry.matcher_args(name) == (None if takes_any else models.constructor_args(name)), name
        cls = models.matcher_class(name)
        for attr in ("dual_encoder", "mask_word", "input_kind", "weight_decay", "hinge_warmup_epochs"):
            assert registry_facts.matcher_attr(name, attr) == getattr(cls, attr, facts["matchers"][name]["attrs"][attr])
        assert registry_facts.matcher_attr(name, "token_aug") == bool((getattr(cls, "augment", None) or {})
                                                                      .get("token_aug", False))
    for name in strategies.available():
        ctor = declared_defaults(inspect.signature(strategies.get(name)).parameters.values())
        assert strategy_defaults(name) == {k: v for k, v in ctor.items() if k not in TRAINER_STRATEGY_ARGS}
    assert registry.strategy_params("dbl")["loss"] == (("abs", "rel"), registry.REQUIRED)
    assert registry_facts.protocols() == {n: {"dataset": p.dataset, "split": p.split, "n_folds": p.n_folds}
                                          for n, p in PROTOCOLS.items()}
    for name, params in (("dbl", {"loss": "rel", "scenario": "oas"}), ("dml", {"peers": 3}), ("kd", {})):
        built = strategies.build(name, **params)
        assert registry_facts.strategy_variant(name, params) == {
            "scenario": built.scenario, "needs_anchor": built.needs_anchor_checkpoint, "branches": len(built.branches())}
    with pytest.raises(ValueError) as refused:
        strategies.build("dbl", loss="bogus", scenario="oss")
    assert registry_facts.strategy_variant("dbl", {"loss": "bogus", "scenario": "oss"}) == {
        "error": str(refused.value), "error_type": "ValueError"}
