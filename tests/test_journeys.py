"""The documented journeys, typed as a user types them: every ``make table-*`` target, the README's
command blocks, ``make demo`` / ``make readme`` / ``make status`` / ``make collect`` and the
embedded-data generator, each run in a copy of this working tree (so nothing lands in the repository's
``results/``) on the ``tiny`` embedded dataset.

Schedules are minimal: the commands run as documented with ``key=value`` overrides appended (one
epoch of one step of 16 pairs, a 10-image dev set; see ``MINIMAL``), which the command line accepts
anywhere. Each journey asserts the table it writes: a row per strategy of the expanded suite, for
every dataset and protocol, with ``n`` = seeds done / declared. ``test_every_readme_command_is_run_by_a_test``
fails when the README documents a command that no test runs.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import build_parser, main, parse_args
from bench.harness.cells import expand
from bench.harness.config import load_suite

REPO = Path(__file__).resolve().parents[1]
STAMP = ".venv/.installed-stamp"  # the Makefile's set-up stamp: the tests run in the installed .venv
TABLES = ["dbl", "oas", "oss", "mss", "ablation", "cohort"]

# The cheapest schedule that still runs every part of a cell (train, dev evaluation, checkpoints,
# test evaluation, ranks, W&B offline): one epoch of one step of 16 pairs and a 10-image dev set.
MINIMAL = ["schedule.default.epochs=1", "schedule.default.max_steps_per_epoch=1",
           "schedule.default.batch_size=16", "eval.dev_images=10"]
ONE_MATCHER = "matchers=[vse_infty]"
F30K_ONLY = "datasets=[{name: f30k_precomp, label: f30k}]"
# what each table target adds to MINIMAL through ARGS= (every strategy of the suite is kept)
TABLE_ARGS = {
    "dbl": [ONE_MATCHER, F30K_ONLY],
    "oas": [ONE_MATCHER, F30K_ONLY],
    "oss": [ONE_MATCHER],  # both datasets (COCO's 1K folds and 5K on the tiny testall): the README journey
    "mss": [ONE_MATCHER, F30K_ONLY],
    "ablation": [],  # one matcher and dataset already
    "cohort": [],
}

# The README's command blocks, as written there (test_every_readme_command_is_run_by_a_test checks
# that each README command appears verbatim in a test).
README_TWO_COMMANDS = ["make demo", "make test"]  # make test: the suite itself (CI: .ci/run)
README_OVERRIDES = [
    ".venv/bin/python -m bench sweep oss scale=smoke seeds=[0,1] data_root=data/synth-demo",
    ".venv/bin/python -m bench status oss",
    ".venv/bin/python -m bench collect oss",
    ".venv/bin/python -m bench list",
]
README_SYNTH = "python -m bench.data.synth --preset tiny|demo|f30k --out DIR --seed S"
README_SLURM = "python -m bench sweep SUITE --executor slurm --cluster PROFILE"


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    return make_checkout(tmp_path_factory.mktemp("checkout"))


def make_checkout(dest: Path) -> Path:
    """A copy of this working tree (tracked and untracked, not ignored files: a fresh clone of the
    current state) with ``.venv`` pointing at the environment that runs the tests."""
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if sys.prefix != sys.base_prefix:  # a virtual environment (make's .venv, or another)
        (dest / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    else:
        (dest / ".venv" / "bin").mkdir(parents=True)
        (dest / ".venv" / "bin" / "python").symlink_to(sys.executable)
    return dest


def env() -> dict:
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WANDB_DIR")}
    return out | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MPLBACKEND": "Agg"}


def run(cwd: Path, argv: list[str], timeout=900) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} failed ({out.returncode}) in {cwd}:\n{out.stdout[-4000:]}\n"
                             f"{out.stderr[-6000:]}")
    return out.stdout


def make(cwd: Path, target: str, **variables) -> str:
    """``make TARGET VAR=value …`` as documented; ``-o`` keeps make from reinstalling the .venv
    that runs these tests (make test set it up)."""
    return run(cwd, ["make", "--no-print-directory", "-o", STAMP, target,
                     *(f"{k}={v}" for k, v in variables.items())])


def readme_command(line: str, *extra: str) -> list[str]:
    """A README line as argv (its ``# comment`` dropped), with ``extra`` overrides appended."""
    return [*shlex.split(line, comments=True), *extra]


def table_rows(md: str) -> dict[str, list[dict]]:
    """{block title: [{matcher, strategy, n}, …]} of a suite's Markdown tables."""
    blocks: dict[str, list[dict]] = {}
    title, header = None, None
    for line in md.splitlines():
        if line.startswith("### "):
            title, header = line[4:].strip(), None
            blocks[title] = []
        elif line.startswith("|") and title is not None:
            # a cell as the reader sees it: split on unescaped pipes, Markdown escapes (collect.md_text) undone
            cells = [re.sub(r"\\(.)", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if header is None:
                header = cells
            elif not set(cells[0]) <= {"-", ":"}:
                blocks[title].append(dict(zip(header, cells)))
    return blocks


def assert_table(md_path: Path, suite: str, overrides: list[str], seeds: int):
    """The table holds, in every block of a dataset, one row per (matcher, strategy) of the expanded
    suite with n = seeds/seeds, and no other rows of this run."""
    assert md_path.is_file(), f"{md_path} was not written"
    cells = expand(load_suite(suite, overrides))
    blocks = table_rows(md_path.read_text())
    assert blocks, f"no tables in {md_path}"
    expected: dict[str, set] = {}
    for c in cells:
        expected.setdefault(c.dataset_label, set()).add((c.matcher_label, c.strategy.label))
    for dataset, rows in expected.items():
        mine = [t for t in blocks if t.split(" · ")[0] == dataset]
        assert mine, f"{md_path}: no table for dataset {dataset}; tables: {list(blocks)}"
        for title in mine:
            ours = [r for r in blocks[title] if not r["n"].startswith("pub")]
            got = [(r["matcher"], r["strategy"]) for r in ours]
            assert sorted(got) == sorted(rows), f"{md_path} [{title}]: rows {got}, expected {sorted(rows)}"
            assert {r["n"] for r in ours} == {f"{seeds}/{seeds}"}, f"{md_path} [{title}]: {ours}"
            # a Recall@K block's RSUM, or the first column of COCO 5K's ECCV Caption / CxC block
            assert all(re.match(r"\d", r.get("RSUM", r.get("ECCV mAP@R i2t", ""))) for r in ours), ours
    return cells


def result_stamps(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.glob("*/*/result.json")}


# ----------------------------------------------------------------------------- the command line

def subcommands(ap: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a.choices for a in ap._actions if isinstance(a, argparse._SubParsersAction))


def test_overrides_are_accepted_anywhere_for_every_subcommand(capsys):
    """``key=value`` before, between and after the options, for every subcommand that takes
    overrides (those added later too); anything else left over is argparse's usual error."""
    ap = build_parser()
    takes = {n: p for n, p in subcommands(ap).items() if any(a.dest == "overrides" for a in p._actions)}
    assert {"run", "sweep", "status", "collect", "demo"} <= set(takes)
    for name, p in takes.items():
        argv = [name, *("X" for a in p._actions if not a.option_strings and a.dest != "overrides"), "a=1"]
        for a in p._actions:
            if a.option_strings and a.required:
                argv += [a.option_strings[0], "V"]
        if any("--root" in a.option_strings for a in p._actions):
            argv += ["--root", "/r", "b.c=[0,1]"]
        argv += ["d={x: 1}"]
        args = parse_args(ap, argv)
        assert args.overrides == ["a=1", *(["b.c=[0,1]"] if "--root" in argv else []), "d={x: 1}"], name
        for stray in ("--no-such-option", "stray"):
            with pytest.raises(SystemExit):
                parse_args(ap, [*argv, stray])
            assert f"unrecognized arguments: {stray}" in capsys.readouterr().err
    # a subcommand without overrides keeps refusing key=value
    with pytest.raises(SystemExit):
        parse_args(ap, ["readme", "a=1"])
    assert "unrecognized arguments: a=1" in capsys.readouterr().err


def test_run_one_cell_with_overrides_after_the_options(tmp_path, capsys):
    """``python -m bench run SUITE --cell ID seeds=[0]`` (refused by argparse before): the cell list
    it answers an unknown id with is the overridden suite's."""
    overrides = ["scale=smoke", "seeds=[0]", ONE_MATCHER, F30K_ONLY]
    with pytest.raises(SystemExit) as info:
        main(["run", "oss", "--cell", "nomatch", "--root", str(tmp_path), *overrides])
    assert info.value.code == 2
    msg = capsys.readouterr().err
    cells = expand(load_suite("oss", overrides))
    assert f"--cell 'nomatch' matches none of the {len(cells)} cells of suite oss" in msg
    near = re.findall(r"([0-9a-f]{12}) (\S+/\S+/[^;]+/s\d)", msg)  # the nearest, with full names
    assert len(near) == min(5, len(cells)) and all(n.startswith("f30k/vse_infty/") and n.endswith("/s0")
                                                   for _, n in near)
    assert {i for i, _ in near} <= {c.id for c in cells}


# ----------------------------------------------------------------------------- make table-*

@pytest.mark.slow
@pytest.mark.parametrize("suite", [t for t in TABLES if t != "oss"])
def test_make_table_target(suite, checkout, tiny_data, tmp_path):
    """``make table-<suite> DATA=<tiny data> SCALE=smoke SEEDS=[0] ARGS=…`` with ROOT/TABLES/FIGURES
    in a temporary folder (table-oss: in the README journey below, on the README's own store)."""
    args = " ".join(shlex.quote(a) for a in [*TABLE_ARGS[suite], *MINIMAL])
    out = make(checkout, f"table-{suite}", DATA=tiny_data, SCALE="smoke", SEEDS="[0]", ARGS=args,
               ROOT=tmp_path / "runs", TABLES=tmp_path / "tables", FIGURES=tmp_path / "figures")
    overrides = [f"data_root={tiny_data}", "scale=smoke", "seeds=[0]", *TABLE_ARGS[suite], *MINIMAL]
    cells = assert_table(tmp_path / "tables" / f"{suite}.md", suite, overrides, seeds=1)
    assert f"{len(cells)} cells: done {len(cells)}" in out, out[-3000:]
    assert {p.parent.name for p in (tmp_path / "runs" / suite).glob("*/done")} == {c.id for c in cells}
    assert (tmp_path / "tables" / f"{suite}.csv").is_file() and (tmp_path / "tables" / f"{suite}.tex").is_file()
    assert any((tmp_path / "figures" / suite).rglob("*.png"))
    # ROOT, TABLES and FIGURES are where everything went: nothing under the checkout's results/
    assert not (checkout / "results" / "runs" / suite).exists()
    assert not (checkout / "results" / "tables" / f"{suite}.md").exists()
    assert not (checkout / "results" / "figures" / suite).exists()


# ----------------------------------------------------------------------------- the README

def readme_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block (one per line, comments and blank lines dropped)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)
    return [[norm(line) for line in b.splitlines() if norm(line)] for b in blocks]


def readme_sections(text: str) -> list[tuple[str, list[str]]]:
    """(the ``## heading`` above it, its commands) for each ```bash block of the README."""
    out, heading = [], ""
    for part in re.split(r"^(```bash\n.*?^```)", text, flags=re.S | re.M):
        if part.startswith("```bash"):
            out.append((heading, readme_blocks(part + "\n")[0]))
        else:
            heads = re.findall(r"^## (.+)$", part, flags=re.M)
            heading = heads[-1].strip() if heads else heading
    return out


def norm(line: str) -> str:
    return " ".join(re.sub(r"(^|\s)#.*$", "", line).split())


@pytest.mark.slow
def test_readme_overrides_block_then_make_table_oss_status_and_collect(checkout, tiny_data):
    """The README's "any suite key can be overridden" block exactly as written (plus the minimal
    schedule and one matcher), on the data the README's generator command writes; then
    ``make table-oss`` with the same settings finds every cell done and trains nothing, and
    ``make status`` / ``make collect`` show the same store."""
    readme = (checkout / "README.md").read_text()
    assert README_OVERRIDES in readme_blocks(readme)
    assert f"`{README_SYNTH}`" in readme
    # the generator, as documented (preset tiny, DIR = the path the README's commands use)
    synth = README_SYNTH.replace("tiny|demo|f30k", "tiny").replace("DIR", "data/synth-demo").replace(" S", " 0")
    run(checkout, [".venv/bin/" + synth.split()[0], *synth.split()[1:]])
    data = checkout / "data" / "synth-demo"
    for name in ("f30k_precomp/train_ims.npy", "coco_precomp/testall_caps.txt", "vocab/f30k_precomp_vocab.json"):
        assert (data / name).read_bytes() == (tiny_data / name).read_bytes()  # deterministic from the seed
    extra = [ONE_MATCHER, *MINIMAL]
    overrides = ["scale=smoke", "seeds=[0,1]", "data_root=data/synth-demo", *extra]
    # the sweep with the minimal schedule appended; status, collect and list as written: they find its cells
    sweep = run(checkout, readme_command(README_OVERRIDES[0], *extra))
    status, collect, listed = (run(checkout, readme_command(line)) for line in README_OVERRIDES[1:])
    cells = expand(load_suite("oss", [*overrides[:2], f"data_root={data}", *extra]))
    n = len(cells)
    assert n == 2 * 2 * len(load_suite("oss").spec["strategies"])  # 2 datasets x 2 seeds x strategies
    assert f"suite oss: {n} cells: done {n}" in sweep, sweep
    assert f"suite oss: {n} cells: done {n}" in status and status.count(" done ") >= n, status
    md = checkout / "results" / "tables" / "oss.md"
    assert_table(md, "oss", [*overrides[:2], f"data_root={data}", *extra], seeds=2)
    assert "DBL rel (OSS)" in collect and "2/2" in collect
    assert re.search(rf"^oss: .*\n  sweep \S+ .*scale=smoke seeds=\[0,1\] data_root=data/synth-demo .*\n    {n} cells: "
                     rf"done {n}$", listed, re.M), listed
    assert any((checkout / "results" / "figures" / "oss").rglob("*.png"))
    stamps = result_stamps(checkout / "results" / "runs")
    assert len(stamps) == n

    # make table-oss on the same store and data: nothing to train, the same table
    args = " ".join(shlex.quote(a) for a in extra)
    out = make(checkout, "table-oss", DATA="data/synth-demo", SCALE="smoke", SEEDS="[0,1]", ARGS=args)
    assert f"suite oss: {n} cells: done {n}" in out
    assert result_stamps(checkout / "results" / "runs") == stamps  # trained nothing
    assert_table(md, "oss", [*overrides[:2], f"data_root={data}", *extra], seeds=2)

    # make status / make collect with the sweep's overrides (ARGS), default store
    args = " ".join(shlex.quote(a) for a in overrides)
    out = make(checkout, "status", SUITE="oss", ARGS=args)
    assert f"suite oss: {n} cells: done {n}" in out, out
    md.unlink()
    out = make(checkout, "collect", SUITE="oss", ARGS=args)
    assert "DBL abs (OSS)" in out
    assert_table(md, "oss", [*overrides[:2], f"data_root={data}", *extra], seeds=2)
    # without the sweep's overrides the same commands take the latest sweep of the store (the one above)
    out = make(checkout, "status", SUITE="oss")
    assert f"suite oss: {n} cells: done {n}" in out, out


@pytest.mark.slow
def test_make_demo_then_make_readme(tmp_path):
    """``make demo`` (the README's first command; its schedule cut to one step by ARGS, one seed),
    then ``make readme`` puts the demo table into that checkout's README."""
    checkout = make_checkout(tmp_path / "checkout")
    assert README_TWO_COMMANDS in readme_blocks((checkout / "README.md").read_text())
    args = " ".join(["seeds=[0]", *MINIMAL])
    out = make(checkout, "demo", ARGS=args)  # generates data/synth-demo (preset demo) first
    assert (checkout / "data" / "synth-demo" / "MANIFEST.json").is_file()
    assert "suite demo: 4 cells: done 4" in out, out[-3000:]
    table = checkout / "results" / "tables" / "demo.md"
    cells = assert_table(table, "demo", ["seeds=[0]", *MINIMAL], seeds=1)
    assert len(cells) == 4 and "make sync" in out
    before = (checkout / "README.md").read_text()
    make(checkout, "readme")
    after = (checkout / "README.md").read_text()
    block = after.split("<!-- demo-table:begin -->")[1].split("<!-- demo-table:end -->")[0]
    assert block != before.split("<!-- demo-table:begin -->")[1].split("<!-- demo-table:end -->")[0]
    for c in cells:
        assert f"| {c.strategy.label} | 1/1 |" in block
    assert after.split("<!-- demo-table:begin -->")[0] == before.split("<!-- demo-table:begin -->")[0]


@pytest.mark.slow
@pytest.mark.slurm
def test_readme_slurm_sweep_command(checkout, slurm_cluster, tiny_data, tmp_path):
    """The README's SLURM command on the local test cluster (two cells, one step each)."""
    assert f"`{README_SLURM}`" in (checkout / "README.md").read_text()
    line = README_SLURM.replace("SUITE", "oss").replace("PROFILE", slurm_cluster["profile"])
    overrides = [f"data_root={tiny_data}", "scale=smoke", "seeds=[0]", ONE_MATCHER, F30K_ONLY,
                 'strategies=[{name: baseline}, {name: dbl, label: "DBL rel", params: {loss: rel, scenario: oss}}]',
                 *MINIMAL]
    root = tmp_path / "runs"
    out = run(checkout, [".venv/bin/" + line.split()[0], *line.split()[1:], "--root", str(root), *overrides])
    cells = expand(load_suite("oss", overrides))
    assert len(cells) == 2 and "suite oss: 2 cells: done 2" in out, out
    assert {p.parent.name for p in (root / "oss").glob("*/done")} == {c.id for c in cells}
    for c in cells:  # each cell ran as a SLURM job
        result = json.loads((root / "oss" / c.id / "result.json").read_text())
        assert result["provenance"]["slurm_job_id"], result["provenance"]
    status = run(checkout, [".venv/bin/python", "-m", "bench", "status", "oss", "--root", str(root), *overrides])
    assert "suite oss: 2 cells: done 2" in status


# ----------------------------------------------------------------------------- nothing undocumented untested

def test_every_readme_command_is_run_by_a_test():
    """Every command of every ```bash block of README.md is run by a test, which either holds the
    command verbatim or reads the block from README.md by its section (the ``## heading`` above it,
    named in the test); and every ``make table-*`` the README lists is a Makefile target run above."""
    readme = (REPO / "README.md").read_text()
    tests = {p.name: p.read_text() for p in sorted((REPO / "tests").glob("*.py"))}
    tests[".ci/run"] = (REPO / ".ci" / "run").read_text()
    flat = " ".join(" ".join(tests.values()).split())
    untested = []
    for heading, commands in readme_sections(readme):
        by_section = any("README.md" in src and f"## {heading}" in src for src in tests.values())
        untested += [c for c in commands if not by_section and c not in flat]
    assert not untested, ("README commands that no test runs (run each, as written, in a test on the tiny "
                          f"data): {untested}")
    listed = set(re.findall(r"`make (table-[a-z]+)`", readme))
    assert listed == {f"table-{t}" for t in TABLES}
    makefile = (REPO / "Makefile").read_text()
    for target in listed:
        assert re.search(rf"^[^#\n]*\b{target}\b[^\n]*:", makefile, flags=re.M), target
