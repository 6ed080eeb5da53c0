"""Named sweeps (bench/harness/named_sweeps.py): a sweep remembers its suite, overrides and store, so plain
``status``, ``collect``, ``run --cell`` and ``list`` find its cells; ``only:`` filters cells keeping their labels
and ids; ``collect`` never replaces results with nothing."""

import re

import pytest
import yaml

from bench.__main__ import main
from bench.config_files import ConfigError
from bench.harness.cells import expand
from bench.harness.config import load_suite
from bench.harness.named_sweeps import SWEEPS_DIR, list_sweeps
from bench.harness.tracking import offline_runs

MINIMAL = ["schedule.default.epochs=1", "schedule.default.max_steps_per_epoch=1",
           "schedule.default.batch_size=16", "eval.dev_images=10"]


def _main(capsys, *argv, code=0) -> tuple[str, str]:
    try:
        main([str(a) for a in argv])
        got = 0
    except SystemExit as e:
        got = e.code
    out, err = capsys.readouterr()
    assert got == code, f"{argv}: exit {got}\n{out}\n{err}"
    return out, err


def test_only_keeps_labels_and_ids():
    """``only.datasets=[f30k_precomp]`` keeps the label f30k (in the id): the cells are the suite's own; the
    shorthand ``datasets=[f30k_precomp]`` relabels them (other ids). A name the suite lacks: the closest named."""
    full = {c.id: c for c in expand(load_suite("oss"))}
    only = expand(load_suite("oss", ["only.datasets=[f30k_precomp]", "only.matchers=[vse_infty]",
                                     "only.strategies=[DML, baseline]"]))
    assert len(only) == 3 * 2 and all(c.id in full and c.dataset_label == "f30k" for c in only)
    assert {c.strategy.label for c in only} == {"baseline", "DML"}
    relabelled = expand(load_suite("oss", ["datasets=[f30k_precomp]"]))
    assert not {c.id for c in relabelled} & set(full)
    kd = expand(load_suite("oas", ["only.strategies=[kd]"]))  # by name; its baselines come along
    assert {c.strategy.label for c in kd} == {"KD", "baseline"}
    with pytest.raises(ConfigError, match=r"only.datasets\[0\]: 'f30k' is none|did you mean 'f30k_precomp'"):
        load_suite("mss", ["only.datasets=[f30k_precom]"])


def test_an_unknown_sweep_name_is_one_line_naming_the_sweeps(tmp_path, capsys):
    _, err = _main(capsys, "status", "oss", "--root", tmp_path, "--sweep", "nosuch", code=2)
    assert err == (f"error: --sweep nosuch: no such sweep of suite oss in {tmp_path} (its sweeps: none); `python -m "
                   f"bench list --root {tmp_path}` lists them, or run `python -m bench sweep oss … --sweep nosuch` to "
                   "make it\n")


@pytest.mark.parametrize("name", ["../up", "a" * 101])
def test_a_sweep_name_that_cannot_be_a_file_name_is_one_line_and_writes_nothing(tmp_path, capsys, name):
    store = tmp_path / "runs"
    _, err = _main(capsys, "sweep", "oss", "--root", store, "--sweep", name, "--executor", "slurm", "--cluster",
                   "local", "--dry-run", code=2)
    assert err.startswith("error: --sweep ") and "use a plain name of at most 100 letters" in err
    assert len(err.splitlines()) == 1 and not store.exists()


@pytest.mark.slow
def test_a_sweep_with_overrides_then_plain_status_collect_run_and_list_find_its_cells(tiny_data, tmp_path, capsys):
    """Done-when (1): a sweep with overrides is recorded; plain status / collect / run --cell / list use it (the
    latest, saying which); --sweep NAME picks another; collect with no done cell writes nothing and names the
    sweeps that have some; an unknown --cell prefix gets the nearest ids with their full names."""
    root, tables, figures = tmp_path / "runs", tmp_path / "tables", tmp_path / "figures"
    overrides = ["scale=smoke", "seeds=[0]", f"data_root={tiny_data}", "only.datasets=[f30k_precomp]",
                 "only.matchers=[vse_infty]", "only.strategies=[baseline, DBL rel (OSS)]", *MINIMAL]
    cells = expand(load_suite("oss", overrides))
    assert len(cells) == 2 and {c.dataset_label for c in cells} == {"f30k"}
    out, err = _main(capsys, "sweep", "oss", *overrides, "--root", root)
    assert "suite oss: 2 cells: done 2" in out
    (record,) = list_sweeps(root, "oss")
    assert record.overrides == tuple(overrides) and (root / "oss" / SWEEPS_DIR / f"{record.name}.yaml").is_file()
    assert yaml.safe_load(record.path.read_text())["overrides"] == overrides  # Hydra's overrides.yaml, in order

    out, err = _main(capsys, "status", "oss", "--root", root)  # no overrides: the latest sweep, said first
    assert out.startswith(f"sweep {record.name} of suite oss: {' '.join(overrides)} (the latest")
    assert "suite oss: 2 cells: done 2" in out
    out, err = _main(capsys, "collect", "oss", "--root", root, "--tables", tables, "--figures", figures)
    assert "cells {'done': 2}" in out and "DBL rel (OSS)" in (tables / "oss.md").read_text()
    (summary,) = [r for r in offline_runs(root) if "_summary" in r.parts]
    out, err = _main(capsys, "run", "oss", "--cell", cells[1].id[:5], "--root", root)
    assert f"\ndone: {root / 'oss' / cells[1].id}" in out  # the same cell, done: nothing trained
    out, _ = _main(capsys, "list", "--root", root)
    assert re.search(rf"^oss: .*\n  sweep {record.name} .*only.strategies=\[baseline, DBL rel \(OSS\)\].*\n"
                     r"    2 cells: done 2$", out, re.M) and "demo: " in out

    # the same overrides under a name: a second sweep (nothing to train), now the latest; the first by --sweep
    _main(capsys, "sweep", "oss", *overrides, "--root", root, "--sweep", "again")
    out, _ = _main(capsys, "status", "oss", "--root", root, "--sweep", record.name)
    assert out.startswith(f"sweep {record.name} of suite oss") and "latest" not in out.splitlines()[0]
    out, _ = _main(capsys, "status", "oss", "--root", root)
    assert out.startswith("sweep again of suite oss") and f"others: {record.name}" in out
    _, err = _main(capsys, "sweep", "oss", "scale=smoke", "--root", root, "--sweep", "again", code=2)
    assert "--sweep again: recorded with the overrides scale=smoke seeds=[0]" in err

    # overrides matching no done cell: one line naming the sweeps with done cells; nothing replaced
    stamp = (tables / "oss.md").stat().st_mtime_ns
    _, err = _main(capsys, "collect", "oss", "scale=smoke", "--root", root, "--tables", tables, "--figures",
                   figures, code=2)
    assert len(err.strip().splitlines()) == 1
    assert "collect oss: none of its 60 cells with the overrides scale=smoke is done" in err
    assert f"sweeps with done cells: {record.name} (2 done: scale=smoke" in err and "again (2 done" in err
    assert (tables / "oss.md").stat().st_mtime_ns == stamp and summary.is_dir()  # the summary run stays

    # an id of no cell: the nearest ids with their full names (dataset included), and the sweep that has it
    _, err = _main(capsys, "run", "oss", "--cell", "zzzzz", "--root", root, code=2)
    assert "--cell 'zzzzz' matches none of the 2 cells of sweep again of suite oss" in err
    assert all(f"{c.id} f30k/vse_infty/{c.strategy.label}/s0" in err for c in cells) and err.count("\n") == 1
    _, err = _main(capsys, "run", "oss", "--cell", cells[0].id, "--root", root, "seeds=[5]", code=2)
    assert f"it is a cell of sweep {record.name} (--sweep {record.name}), sweep again" in err

    # the store's readers walk cells, not folders: `sweeps` is no run folder (migrate, show's records)
    out, _ = _main(capsys, "migrate", "--root", root, "--dry-run")
    assert SWEEPS_DIR not in out and "nothing to move" in out
    out, _ = _main(capsys, "show", "oss", *overrides, "--root", root)
    assert "based on: seconds per step of 2 done cell(s)" in out
