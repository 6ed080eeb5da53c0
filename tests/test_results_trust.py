"""A table never pools what it should not, a finished result is never overwritten, a stop is never lost.

Real processes (``python -m bench …``) on the tiny data, 1 epoch x 2 steps per cell; each test is an entry
of docs/bad-inputs.md ("Results, store and signals").
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.harness.sweep import SweepError, sweep
from tests.test_store_integrity import env, write_suite

REPO = Path(__file__).resolve().parents[1]


def bench(*args, code=REPO, check=None, **extra):
    """``python -m bench ARGS`` in a subprocess (``code``: the checkout whose code runs)."""
    e = env(**extra) | {"PYTHONPATH": str(code)}
    p = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=code, env=e, capture_output=True,
                       text=True, timeout=600)
    if check is not None:
        assert p.returncode == check, p.stdout + p.stderr
    return p


def tiny_suite(tmp_path, data, seeds=(0,), name="trust", **spec_extra):
    path = write_suite(tmp_path, data, name=name, seeds=seeds, epochs=1)
    if spec_extra:
        spec = yaml.safe_load(path.read_text()) | spec_extra
        path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A store with the two seeds of suite ``trust`` done (one sweep); tests work on a copy (:func:`store`)."""
    tmp = tmp_path_factory.mktemp("trained")
    suite = tiny_suite(tmp, tiny_data, seeds=(0, 1))
    bench("sweep", suite, "--root", tmp / "runs", check=0)
    return suite, tmp / "runs"


def store(trained, tmp_path):
    """(suite file, a private copy of the trained store)."""
    suite, root = trained
    shutil.copytree(root, tmp_path / "runs", symlinks=True)
    return suite, tmp_path / "runs"


def run_dirs(root, name="trust"):
    return sorted(p for p in (root / name).iterdir() if p.is_dir())


def by_seed(root, name="trust"):
    return {json.loads((d / "result.json").read_text())["cell"]["seed"]: d for d in run_dirs(root, name)
            if (d / "result.json").is_file()}


# ----------------------------------------------------------------------------- one table, two versions of code

def other_code_checkout(tmp_path):
    """A copy of the training code with one edit in strategies/ (another training-code fingerprint)."""
    dst = tmp_path / "other-code"
    for d in ("bench", "models", "strategies"):
        shutil.copytree(REPO / d, dst / d, ignore=shutil.ignore_patterns("__pycache__"))
    with open(dst / "strategies" / "__init__.py", "a") as f:
        f.write("\n# an edit to the strategies: other training code\n")
    return dst


def test_one_table_two_code_versions_is_marked_retrained_or_pooled_with_its_versions(tiny_data, tmp_path):
    root, tables = tmp_path / "runs", tmp_path / "tables"
    suite = tiny_suite(tmp_path, tiny_data, seeds=(0, 1))
    bench("sweep", suite, "seeds=[0]", "--root", root, code=other_code_checkout(tmp_path), check=0)
    bench("sweep", suite, "--root", root, check=0)  # seed 1 with this code
    old = by_seed(root)[0]
    prov = json.loads((old / "result.json").read_text())["provenance"]
    assert len(prov["source_fingerprint"]) == 40 and "commit" in prov["git"]

    status = bench("status", suite, "--root", root, check=0).stdout
    assert "mixed-code" in status and "made by other code than the rest of the suite" in status
    out = bench("collect", suite, "--root", root, "--tables", tables, "--figures", tmp_path / "figs",
                check=0)
    assert "| 1/2 (1 mixed-code) |" in out.stdout and "left out of the table" in out.stderr
    assert "Code of every result in this table: commit" in out.stdout  # the one version it pools
    cells = __import__("pandas").read_csv(tables / "trust_cells.csv")
    assert set(cells["state"]) == {"done", "mixed-code"} and cells["code"].notna().all()

    pooled = bench("collect", suite, "--root", root, "--tables", tables, "--figures", tmp_path / "figs",
                   "--pool-mixed-code", check=0).stdout
    assert "| 2/2 |" in pooled and "pools results of 2 training-code versions (--pool-mixed-code)" in pooled

    before = (by_seed(root)[1] / "result.json").read_bytes()
    bench("sweep", suite, "--root", root, check=0)  # a plain sweep retrains the mixed-code cell with this code
    assert (by_seed(root)[1] / "result.json").read_bytes() == before
    again = bench("collect", suite, "--root", root, "--tables", tables, "--figures", tmp_path / "figs",
                  check=0).stdout
    assert "| 2/2 |" in again and "mixed-code" not in again

    # a result written before the store kept the fingerprint: its own clear version, never a crash
    r = json.loads((by_seed(root)[0] / "result.json").read_text())
    del r["provenance"]["source_fingerprint"]
    (by_seed(root)[0] / "result.json").write_text(json.dumps(r))
    legacy = bench("status", suite, "--root", root, check=0).stdout
    assert "mixed-code" in legacy and "training code not recorded (a result from before)" in legacy


# ----------------------------------------------------------------------------- a result checked against its cell

def test_a_result_is_checked_against_its_cell(trained, tmp_path):
    suite, root = store(trained, tmp_path)
    runs = by_seed(root)
    own = (runs[0] / "result.json").read_bytes()

    shutil.copy(runs[1] / "result.json", runs[0] / "result.json")  # another cell's result copied here
    st = bench("status", suite, "--root", root, check=0).stdout
    assert f"belongs to cell {runs[1].name}, not {runs[0].name}" in st and "corrupt" in st
    out = bench("collect", suite, "--root", root, "--tables", tmp_path / "t", "--figures", tmp_path / "f",
                check=0).stdout
    assert "| 1/2 (1 corrupt) |" in out

    r = json.loads(own)
    (runs[0] / "result.json").write_text(json.dumps(r | {"metrics": {}}))  # no metrics: not done
    assert "holds no metrics" in bench("status", suite, "--root", root, check=0).stdout

    (runs[0] / "result.json").write_text(json.dumps(r | {"metrics": {"coco_5k": {"rsum": 1}}}))
    assert "holds no metrics for f30k_1k" in bench("status", suite, "--root", root, check=0).stdout

    (runs[0] / "result.json").unlink()
    (runs[0] / "result.json").mkdir()  # a folder where result.json belongs
    (runs[0] / "result.json" / "note.txt").write_text("kept")
    assert "corrupt" in bench("status", suite, "--root", root, check=0).stdout
    sw = bench("sweep", suite, "--root", root, check=0)  # retrains it; the folder is moved aside, not lost
    assert "done 2" in sw.stdout
    aside = list(runs[0].glob("result.json.not-a-file-*"))
    assert len(aside) == 1 and (aside[0] / "note.txt").read_text() == "kept"
    assert json.loads((runs[0] / "result.json").read_text())["cell_id"] == runs[0].name


# ----------------------------------------------------------------------------- collect: names, committed outputs

def test_collect_names_outputs_by_the_suite_and_never_overwrites_the_committed_demo(tiny_data, tmp_path):
    root, tables = tmp_path / "runs", tmp_path / "tables"
    (tmp_path / "x").mkdir()
    suite = tiny_suite(tmp_path / "x", tiny_data, name="advt")
    demo_named = tmp_path / "x" / "demo.yaml"
    suite.rename(demo_named)  # a file demo.yaml whose suite is named advt
    bench("sweep", demo_named, "--root", root, check=0)
    out = bench("collect", demo_named, "--root", root, "--tables", tables, "--figures", tmp_path / "f",
                check=0).stdout
    assert "# Suite `advt`" in out and (tables / "advt.md").is_file() and not (tables / "demo.md").exists()

    committed = {p: p.read_bytes() for p in [REPO / "results/tables/demo.md", REPO / "results/tables/demo.csv",
                                            REPO / "results/figures/demo/rsum_by_strategy.png"]}
    for args in ([demo_named, "name=demo"], ["demo", "seeds=[0]"]):  # another file, or other overrides
        p = bench("collect", *args, "--root", root, check=2)
        assert p.stderr.count("\n") == 1 and "would overwrite the committed" in p.stderr
        assert "results/tables/demo.md" in p.stderr and "--tables DIR --figures DIR" in p.stderr
        assert "--overwrite" in p.stderr
    assert all(p.read_bytes() == b for p, b in committed.items())


@pytest.mark.parametrize("ref, says", [
    ({"matcher": "VSE", "where": {"strategy": "boosting"}}, "no row of"),
    ({"matcher": "VSE", "where": {"stratgy": "baseline"}}, "has no column 'stratgy'"),
    ({"matcher": "SGR", "where": {"strategy": "baseline"}}, "matcher 'SGR' is not a matcher of this suite"),
])
def test_a_reference_row_matching_nothing_is_named(tiny_data, tmp_path, ref, says):
    suite = tiny_suite(tmp_path, tiny_data, reference=[ref])
    p = bench("collect", suite, "--root", tmp_path / "runs", "--tables", tmp_path / "t", "--figures", tmp_path / "f",
              check=2)
    assert says in p.stderr and "reference[0]" in p.stderr and str(suite) in p.stderr
    assert not (tmp_path / "t").exists()


def test_labels_with_markdown_and_latex_characters_are_escaped(tiny_data, tmp_path):
    spec = yaml.safe_load(tiny_suite(tmp_path, tiny_data).read_text())
    spec["matchers"][0]["label"] = "VSE\nsmall"
    spec["strategies"] = [{"name": "baseline", "label": "base_$x^2$ {a} ~b %c | *d*"}]
    spec["description"] = "line one\n## a heading of its own _x_"  # was: a heading of its own in the table
    (tmp_path / "trust.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    bench("sweep", tmp_path / "trust.yaml", "--root", tmp_path / "runs", check=0)
    bench("collect", tmp_path / "trust.yaml", "--root", tmp_path / "runs", "--tables", tmp_path / "t",
          "--figures", tmp_path / "f", check=0)
    md = (tmp_path / "t" / "trust.md").read_text()
    assert r"| VSE small | base\_\$x\^2\$ {a} \~b %c \| \*d\* | 1/1 |" in md
    assert md.splitlines()[0] == r"# Suite `trust`: line one \#\# a heading of its own \_x\_"
    tex = (tmp_path / "t" / "trust.tex").read_text()
    assert r"VSE small & base\_\$x\textasciicircum{}2\$ \{a\} \textasciitilde{}b \%c | *d* & 1/1" in tex


def test_a_done_cell_whose_data_is_gone_shows_unverified(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    suite = tiny_suite(tmp_path, data)
    bench("sweep", suite, "--root", tmp_path / "runs", check=0)
    shutil.rmtree(data)
    st = bench("status", suite, "--root", tmp_path / "runs", check=0).stdout
    assert "done" in st and "could not be compared (unverified)" in st
    out = bench("collect", suite, "--root", tmp_path / "runs", "--tables", tmp_path / "t", "--figures",
                tmp_path / "f", check=0).stdout
    assert "| 1/1 (1 unverified) |" in out


def test_collect_on_a_full_disk_leaves_no_empty_file(trained, tmp_path):
    suite, _ = store(trained, tmp_path)
    args = ["collect", suite, "--root", tmp_path / "runs", "--tables", tmp_path / "t", "--figures", tmp_path / "f"]
    bench(*args, check=0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "t").iterdir()}
    for n in (1, 3):  # the Markdown file, then the CSV
        p = bench(*args, ITM_BENCH_FAULT=f"collect.write:{n}:enospc")
        assert p.returncode != 0 and "No space left on device" in p.stderr
        assert {q.name: q.read_bytes() for q in (tmp_path / "t").iterdir()} == before


# ----------------------------------------------------------------------------- export / evaluate, job logs

def test_export_and_evaluate_never_write_into_a_run_folder(trained, tiny_data, tmp_path):
    suite, root = store(trained, tmp_path)
    a, b = by_seed(root)[0], by_seed(root)[1]
    files = {p: p.read_bytes() for d in (a, b) for p in d.iterdir() if p.is_file()}
    for args in (["export", a, a / "best.pt"], ["export", a, b / "result.json"], ["export", a, b / "sub" / "x.pth"],
                 ["evaluate", a / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp",
                  "--out", b / "result.json"]):
        p = bench(*args, check=2)
        assert "is inside the run folder" in p.stderr and "elsewhere" in p.stderr
    assert {p: p.read_bytes() for p in files} == files and not (b / "sub").exists()
    bench("export", a, tmp_path / "out" / "model_best.pth.tar", check=0)  # outside the store: fine


def test_local_job_logs_stay_inside_root(tiny_data, tmp_path):
    root = tmp_path / "store" / "runs"
    bench("sweep", tiny_suite(tmp_path, tiny_data), "--executor", "local", "--root", root, check=0)
    assert any((root / ".jobs").rglob("*.err")) or any((root / ".jobs").rglob("*_log.err"))
    assert not (tmp_path / "store" / "jobs").exists()


# ----------------------------------------------------------------------------- files where others belong

def test_a_file_where_a_cell_folder_belongs_blocks_only_that_cell(tiny_data, tmp_path):
    root = tmp_path / "runs"
    suite = tiny_suite(tmp_path, tiny_data, seeds=(0, 1))
    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    first = expand(load_suite(suite))[0].id
    (root / "trust").mkdir(parents=True)
    (root / "trust" / first).write_text("not a folder")
    sw = bench("sweep", suite, "--root", root, check=1)  # a blocked cell: exit 1, as a failed one (issue 29)
    assert "blocked 1" in sw.stdout and "done 1" in sw.stdout and "some cells are blocked (exit code 1)" in sw.stderr
    assert f"{root / 'trust' / first} is a file where the cell's run folder belongs: move it away" in sw.stdout
    (root / "trust" / first).unlink()
    assert "done 2" in bench("sweep", suite, "--root", root, check=0).stdout


def test_locks_as_a_file_names_the_locks_path(tiny_data, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (root / ".locks").write_text("a file")
    p = bench("sweep", tiny_suite(tmp_path, tiny_data), "--root", root, check=2)
    last = p.stderr.strip().splitlines()[-1]  # after the progress bar: one line
    assert last.startswith("error: cannot create the cell's lock file") and "Traceback" not in p.stderr
    assert f"{root / '.locks'} is a file where the store's folder belongs" in p.stderr


# ----------------------------------------------------------------------------- options, signals

def test_options_an_executor_does_not_use_are_refused(tiny_data, tmp_path):
    suite = tiny_suite(tmp_path, tiny_data)
    for args, says in ((["--executor", "inline", "--cluster", "local"], "--cluster applies to --executor slurm only"),
                       (["--executor", "local", "--no-wait"], "--no-wait applies to --executor slurm")):
        p = bench("sweep", suite, "--root", tmp_path / "runs", *args, check=2)
        assert says in p.stderr and p.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_a_suite_of_zero_cells_is_an_error(tiny_data, tmp_path):
    from bench.harness.config import load_suite

    empty = load_suite(tiny_suite(tmp_path, tiny_data))  # valid, then emptied as code building suites could
    empty.spec["strategies"] = []
    with pytest.raises(SweepError, match=r"expands to 0 cells: nothing to run"):
        sweep(empty, root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_the_final_evaluation_stops_the_sweep(tiny_data, tmp_path, sig):
    root = tmp_path / "runs"
    suite = tiny_suite(tmp_path, tiny_data, seeds=(0, 1))
    e = env(ITM_BENCH_SLOW="eval.test:4") | {"PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(suite), "--root", str(root)], cwd=REPO,
                            env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # the first cell's last epoch is evaluated on dev: the test evaluation is next
        logs = list(root.glob("trust/*/log.txt"))
        if logs and "dev rsum" in logs[0].read_text():
            break
        time.sleep(0.2)
    time.sleep(1.5)
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, out + err
    assert f"sweep stopped by {sig.name}: no cell was interrupted" in err and "1 cell(s) not run yet" in err
    assert "done 1" in out and "pending 1" in out  # the finished cell kept, the next one not started
    done = [d for d in run_dirs(root) if (d / "done").exists()]
    assert len(done) == 1 and "signal" not in json.loads((done[0] / "result.json").read_text())


# ----------------------------------------------------------------------------- more files where others belong

def test_readme_is_replaced_whole_and_only_by_the_demo_table(tmp_path):
    checkout = other_code_checkout(tmp_path)
    shutil.copy(REPO / "README.md", checkout / "README.md")
    (checkout / "results" / "tables").mkdir(parents=True)
    shutil.copy(REPO / "results" / "tables" / "demo.md", checkout / "results" / "tables" / "demo.md")
    before = (checkout / "README.md").read_bytes()
    p = bench("readme", code=checkout, ITM_BENCH_FAULT="readme.write:1:enospc")  # a full disk
    assert p.returncode == 1 and p.stderr.startswith("error: [Errno 28] No space left on device: cannot write")
    assert (checkout / "README.md").read_bytes() == before
    other = tmp_path / "oss.md"
    other.write_text("# Suite `oss`: another suite\n\n| a |\n")
    p = bench("readme", "--table", other, code=checkout, check=2)
    assert "is not the demo suite's table" in p.stderr and (checkout / "README.md").read_bytes() == before
    bench("readme", code=checkout, check=0)  # the demo's own table goes in


@pytest.mark.parametrize("where", ["suite folder", "root"])
def test_a_file_where_the_suite_folder_or_root_belongs_is_one_line(tiny_data, tmp_path, where):
    root = tmp_path / "runs"
    suite = tiny_suite(tmp_path, tiny_data)
    blocker = root / "trust" if where == "suite folder" else root
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file")
    p = bench("sweep", suite, "--root", root, check=2)
    last = p.stderr.strip().splitlines()[-1]
    if where == "root":  # refused before any command runs
        assert last == f"error: --root {root} is a file, not a results folder; give a folder (default {REPO}/results/runs)"
    else:
        assert last.startswith("error: cannot create the") and f"{blocker} is a file where the store's folder belongs" in last
    assert "Traceback" not in p.stderr and blocker.read_text() == "a file"


def test_export_of_an_unfinished_run_is_refused(trained, tmp_path):
    _, root = store(trained, tmp_path)
    run = run_dirs(root)[0]
    (run / "done").unlink()  # as while it trains: best.pt is the best so far
    p = bench("export", run, tmp_path / "out.pth.tar", check=2)
    assert "is not a finished run (no `done` marker)" in p.stderr and not (tmp_path / "out.pth.tar").exists()


def test_jobs_folder_as_a_file_is_one_line(tiny_data, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    (root / ".jobs").write_text("a file")
    p = bench("sweep", tiny_suite(tmp_path, tiny_data), "--executor", "local", "--root", root, check=2)
    assert p.stderr.strip().splitlines()[-1] == (f"error: {root / '.jobs'} is a file where the sweep keeps its job "
                                                 "logs: move it away")


@pytest.mark.parametrize("case", ["tables is a file", "figures under a file", "tables inside a run folder"])
def test_collect_output_folders_that_cannot_hold_tables(trained, tmp_path, case):
    suite, root = store(trained, tmp_path)
    tables, figures = tmp_path / "t", tmp_path / "f"
    if case == "tables is a file":
        tables.write_text("a file")
        says = f"cannot write into {tables}: {tables} is a file"
    elif case == "figures under a file":
        figures.write_text("a file")
        says = f"cannot write into {figures / 'trust'}: {figures} is a file"
    else:
        tables = run_dirs(root)[0] / "tables"
        says = f"{tables} is inside the run folder {run_dirs(root)[0]}"
    p = bench("collect", suite, "--root", root, "--tables", tables, "--figures", figures, check=2)
    assert says in p.stderr and p.stderr.count("\n") == 1


def test_a_done_cell_whose_weights_folder_is_gone_names_the_folder(tiny_data, tmp_path):
    """A cell's id holds its weights folder's content: with the folder gone it cannot be computed, so status and
    collect say so, naming the folder (not `pending`, which would send a sweep to train it again); with the
    folder back (anywhere, `weights.clip=` naming it) the cell is done again. collect, with nothing else done,
    writes no table and names the cell and why."""
    import models

    weights = tmp_path / "clip-tiny"
    models.build("clip", preset="tiny", vocab_words=["a", "dog"]).save_pretrained(weights)
    suite = tiny_suite(tmp_path, tiny_data, matchers=[{"name": "clip", "label": "CLIP", "overrides": {"preset": "tiny"}}])
    given = [f"weights.clip={weights}"]
    bench("sweep", suite, "--root", tmp_path / "runs", *given, check=0)
    assert "done" in bench("status", suite, "--root", tmp_path / "runs", *given, check=0).stdout
    moved = weights.rename(tmp_path / "elsewhere")
    st = bench("status", suite, "--root", tmp_path / "runs", *given, check=0).stdout
    assert "unidentified" in st and "pending" not in st
    assert f"weights folder {weights} (pretrained_path) missing or holding no model files: cannot identify the cell" in st
    out = bench("collect", suite, "--root", tmp_path / "runs", "--tables", tmp_path / "t", "--figures", tmp_path / "f",
                *given, check=2)  # nothing done to tabulate: no table, the cell named with why
    assert f"(unidentified: weights folder {weights}" in out.stderr and not (tmp_path / "t").exists()
    assert "done" in bench("status", suite, "--root", tmp_path / "runs", f"weights.clip={moved}", check=0).stdout


def test_a_pixel_cells_data_fingerprint_covers_its_captions_and_images(tiny_data, tmp_path):
    """Every input of a cell by content (``bench.data.layout.cell_inputs``): a CLIP cell's Karpathy file and each
    image it reads, not the precomp folder or the vocabulary it does not read; a region cell's fingerprint is
    the one it always had (its precomp folder and vocabulary), so its results stay verified."""
    from bench.provenance import cell_fingerprint, data_fingerprint
    from bench.spec import Cell

    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))

    def cell(matcher: str, dataset: str = "f30k_precomp") -> Cell:
        return Cell.from_dict({"dataset": {"name": dataset, "data_root": str(data)}, "matcher": {"name": matcher},
                               "strategy": {"name": "baseline"}})

    region, clip, coco_clip = cell("vse_infty"), cell("clip"), cell("clip", "coco_precomp")
    assert cell_fingerprint(region) == data_fingerprint([data / "f30k_precomp", data / "vocab" / "f30k_precomp_vocab.json"])
    before = {id(c): cell_fingerprint(c) for c in (region, clip, coco_clip)}
    (data / "vocab" / "coco_precomp_vocab.json").write_text("{}")  # read by no cell above
    (data / "f30k_precomp" / "train_caps.txt").write_text("")  # read by the region cell only
    assert cell_fingerprint(clip) == before[id(clip)] and cell_fingerprint(coco_clip) == before[id(coco_clip)]
    assert cell_fingerprint(region) != before[id(region)]
    image = data / "images" / "f30k_test_000029.png"  # the last test image
    image.write_bytes(image.read_bytes() + b"\0")
    assert cell_fingerprint(clip) != before[id(clip)] and cell_fingerprint(coco_clip) == before[id(coco_clip)]
    changed = cell_fingerprint(clip)
    karpathy = data / "karpathy" / "dataset_f30k.json"
    karpathy.write_text(karpathy.read_text().replace('"raw": "', '"raw": "A ', 1))
    assert cell_fingerprint(clip) != changed


def test_results_of_one_training_code_at_several_commits_are_one_code_version():
    """A sweep that spans commits touching no training code (docs, tests, the harness) pools nothing mixed: the note
    said "pools results of 6 code versions (--pool-mixed-code)" for one training code (the committed rehearsal)."""
    import pandas as pd

    from bench.harness.collect import code_note

    df = pd.DataFrame({"state": ["done"] * 3, "cell_id": ["a", "b", "c"], "dataset": ["f30k"] * 3,
                       "matcher": ["vse_infty"] * 3, "strategy": ["baseline"] * 3, "seed": [0, 1, 2],
                       "commit": ["1" * 40, "2" * 40, "1" * 40], "code": ["f" * 40] * 3})
    assert code_note(df) == (f"Code of every result in this table: training code {'f' * 12} (commits {'1' * 10}, "
                             f"{'2' * 10}: they differ outside the training code).")
    assert code_note(df.assign(commit=["1" * 40] * 3)) == (
        f"Code of every result in this table: commit {'1' * 10} / training code {'f' * 12}.")
    two = code_note(df.assign(code=["f" * 40, "e" * 40, "f" * 40]))
    assert two.startswith("This table pools results of 2 training-code versions (--pool-mixed-code): f30k / "
                          f"vse_infty / baseline / seed 0: commit {'1' * 10} / training code {'f' * 12}; ")
