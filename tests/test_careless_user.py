"""Issue 29's careless-user run, round three (docs/bad-inputs.md, "Careless user" entries): inputs the issue did
not list, each found silently wrong, destroyed or dangerous on main a333e68, and the test of its fix."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest

from bench.harness.store import run_cell_in_store, run_dir_for, run_status
from tests.test_untrusted_files import cell_of, refused


@pytest.fixture(scope="module")
def two_seeds(tiny_data, tmp_path_factory):
    """A store holding two finished baseline cells (seeds 0 and 1) of one matcher; tests work on copies."""
    root = tmp_path_factory.mktemp("careless") / "runs"
    cells = [replace(cell_of(tiny_data, cid=f"seed{s}cell"), seed=s) for s in (0, 1)]
    for cell in cells:
        assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    return root, cells


@pytest.fixture
def swapped(two_seeds, tmp_path):
    """A copy of the store in which seed 1's run holds seed 0's ``best.pt`` with its digest file (an rsync or a
    ``cp`` mixing two run folders): whole, but not the model seed 1's result was evaluated from."""
    root, cells = two_seeds
    mine = tmp_path / "runs"
    shutil.copytree(root, mine)
    a, b = (run_dir_for(c, mine) for c in cells)
    for name in ("best.pt", "best.pt.sha256"):
        shutil.copy(a / name, b / name)
    return mine, cells, b


# ----------------------------------------------------------------------------- C1: another run's best.pt

@pytest.mark.parametrize("command", ["export", "evaluate"])
def test_another_runs_best_pt_in_a_finished_run_is_refused(capsys, swapped, tiny_data, tmp_path, command):
    _, _, run_b = swapped
    if command == "export":
        args = ("export", run_b, tmp_path / "out" / "model_best.pth")
    else:
        args = ("evaluate", run_b / "best.pt", "--data-root", tiny_data, "--dataset", "f30k_precomp")
    err = refused(capsys, *args)  # was: exit 0, seed 0's model exported / its Recall@K printed as seed 1's
    assert "is not the model of the run's result" in err and str(run_b / "best.pt") in err
    assert not (tmp_path / "out").exists()


def test_another_runs_best_pt_in_an_oas_baseline_makes_it_corrupt(swapped):
    root, cells, run_b = swapped
    info = run_status(cells[1], run_b, anchor=True)  # the baseline an OAS student of seed 1 would distil from
    assert info["state"] == "corrupt" and info.get("checkpoint_damaged")
    assert "is not the model of the run's result" in info["error"]
    assert run_status(cells[0], run_dir_for(cells[0], root), anchor=True)["state"] == "done"  # its own: done


# ----------------------------------------------------------------------------- C2: bench.train's schedule values

@pytest.mark.parametrize("override, message", [
    ("schedule.epochs=1.5", "schedule.epochs: expected int, got float 1.5"),  # trained 2 epochs, recorded 1.5
    ("schedule.lr=.nan", "schedule.lr: expected a finite number, got float nan"),  # a `failed` run folder
    ("schedule.lr_schedule=cosine", "schedule.lr_schedule: unknown value 'cosine'"),
    ("schedule.lr_decay_epochs=[0.5]", "schedule.lr_decay_epochs: expected int, got float 0.5"),
    ("schedule.amp=1", "schedule.amp: expected true or false, got int 1"),
    ("schedule=3", "schedule: expected a mapping of schedule keys, got int 3"),
])
def test_a_schedule_value_of_the_wrong_type_given_to_bench_train(capsys, two_seeds, tmp_path, override, message):
    root, cells = two_seeds
    config = run_dir_for(cells[0], root) / "config.yaml"
    err = refused(capsys, config, "--run-dir", tmp_path / "alone", override, module="bench.train")
    assert message in err and str(config) in err
    assert not (tmp_path / "alone").exists()  # checked before the run folder is made


def test_resolve_checks_the_schedule_types_the_schema_checks(tiny_data):
    from bench import spec

    cell = cell_of(tiny_data)
    for key, value in [("epochs", 1.5), ("batch_size", True), ("lr", float("inf")), ("margin", "0.2")]:
        bad = replace(cell, schedule=replace(cell.schedule, **{key: value}))
        with pytest.raises(ValueError, match=f"schedule.{key}: expected"):
            spec.resolve(bad)
    assert spec.resolve(replace(cell, schedule=replace(cell.schedule, lr=1, weight_decay=None))).schedule.lr == 1


# ----------------------------------------------------------------------------- C3: an output path onto a user's file

def test_export_never_replaces_a_file_it_did_not_write(capsys, two_seeds, tiny_data, tmp_path):
    from bench.__main__ import main

    root, cells = two_seeds
    run = run_dir_for(cells[0], root)
    captions = shutil.copy(tiny_data / "f30k_precomp" / "train_caps.txt", tmp_path / "train_caps.txt")
    before = captions.read_bytes()
    err = refused(capsys, "export", run, captions)  # was: exit 0, the caption file replaced by a checkpoint
    assert "exists and is not a torch checkpoint" in err and captions.read_bytes() == before
    assert "is a folder" in refused(capsys, "export", run, tmp_path)  # was a torch RuntimeError traceback
    out = tmp_path / "export" / "model_best.pth"
    for _ in range(2):  # an earlier export is replaced, as the README's command run twice
        main(["export", str(run), str(out)])
        assert out.is_file()


def test_evaluate_out_never_replaces_a_file_it_did_not_write(capsys, two_seeds, tiny_data, tmp_path):
    from bench.__main__ import main

    root, cells = two_seeds
    best = run_dir_for(cells[0], root) / "best.pt"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    args = ("evaluate", best, "--data-root", tiny_data, "--dataset", "f30k_precomp", "--out")
    assert "exists and is not a result JSON" in refused(capsys, *args, notes)
    assert notes.read_text() == "my notes\n" and not (tmp_path / "notes.ranks.npz").exists()
    (tmp_path / "ev.ranks.npz").write_text("mine")
    assert "its ranks file" in refused(capsys, *args, tmp_path / "ev.json")
    assert (tmp_path / "ev.ranks.npz").read_text() == "mine"
    for _ in range(2):  # its own earlier result is replaced
        main([str(a) for a in (*args, tmp_path / "again.json")])
    assert (tmp_path / "again.json").is_file() and (tmp_path / "again.ranks.npz").is_file()


# ----------------------------------------------------------------------------- C4: two matcher entries, one cell

def test_two_matcher_entries_that_make_the_same_cells_are_refused(capsys, tiny_data, tmp_path):
    import yaml

    suite = {"name": "twins", "scale": "smoke",
             "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data)}],
             "matchers": [{"name": "vse_infty", "label": "A", "overrides": {"embed_size": 16}},
                          {"name": "vse_infty", "label": "B", "overrides": {"embed_size": 16}}],
             "strategies": [{"name": "baseline"}], "seeds": [0],
             "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3}}}}}
    path = tmp_path / "twins.yaml"
    path.write_text(yaml.safe_dump(suite))
    # was: exit 0, one cell; the table showed row A only and B vanished without a word
    err = refused(capsys, "show", path, "--root", tmp_path / "runs")
    assert "matchers 'A' and 'B' give the same cells" in err and str(path) in err
    refused_too = refused(capsys, "sweep", path, "--root", tmp_path / "runs")
    assert "give the same cells" in refused_too and not (tmp_path / "runs" / "twins").exists()
    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    assert len(expand(load_suite(path, ["matchers.1.overrides.embed_size=32"]))) == 2  # different: two rows


# ----------------------------------------------------------------------------- C5: collect --n-boot out of range

@pytest.mark.parametrize("value", ["-5", "1"])
def test_collect_n_boot_without_a_variance_is_refused(capsys, tmp_path, value):
    from bench.__main__ import main

    # was: exit 0; -5 put scipy's "`n_resamples` must be a non-negative integer" into the ΔRSUM cells, 1 left the
    # test-set variance out of every interval (one resample has none)
    with pytest.raises(SystemExit) as e:
        main(["collect", "demo", "--root", str(tmp_path / "runs"), "--tables", str(tmp_path / "t"),
              "--figures", str(tmp_path / "f"), "--no-wandb", "--n-boot", value])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"argument --n-boot: must be 0 (the bootstrap's closed-form limit) or at least 2 " \
                                  f"resamples, got {value}" in err
    assert not (tmp_path / "t").exists()


def test_n_boot_takes_the_closed_form_and_real_counts():
    from bench.harness.collect_options import n_boot

    assert [n_boot(v) for v in ("0", "2", "1000")] == [0, 2, 1000]


# ----------------------------------------------------------------------------- C6: synth --overwrite deletes only its own

def test_synth_overwrite_never_deletes_what_the_generator_did_not_write(capsys, tiny_data, tmp_path):
    from bench.data.synth import main

    data = shutil.copytree(tiny_data, tmp_path / "data")
    (data / "runs" / "t" / "abc").mkdir(parents=True)  # a results store kept beside the data, and notes
    (data / "runs" / "t" / "abc" / "result.json").write_text("{}")
    (data / "f30k_precomp" / "notes.txt").write_text("mine")
    # was: exit 0, the whole folder replaced: the store and the notes deleted
    assert main(["--preset", "tiny", "--out", str(data), "--seed", "1", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds files the generator did not write (f30k_precomp/notes.txt, runs)" in err
    assert (data / "runs" / "t" / "abc" / "result.json").is_file() and (data / "f30k_precomp" / "notes.txt").is_file()
    real = shutil.copytree(tiny_data, tmp_path / "real")  # real data: no MANIFEST.json of the generator
    (real / "MANIFEST.json").unlink()
    assert main(["--preset", "tiny", "--out", str(real), "--overwrite"]) == 2  # was: replaced by synthetic data
    assert "holds no MANIFEST.json: it is no dataset of this generator" in capsys.readouterr().err
    assert sorted(p.name for p in real.iterdir()) == sorted(p.name for p in tiny_data.iterdir() if p.name != "MANIFEST.json")
    own = shutil.copytree(tiny_data, tmp_path / "own")  # the generator's output alone: replaced
    assert main(["--preset", "tiny", "--out", str(own), "--seed", "1", "--overwrite"]) == 0


# ----------------------------------------------------------------------------- C7: an empty path option

@pytest.mark.parametrize("option", ["--root", "--tables", "--figures"])
@pytest.mark.parametrize("value, said", [("", "'' is an empty path"),  # was: the current folder / results/tables
                                         ("-", "'-' (standard input or output) is not a path here")])  # was: ./-
def test_an_empty_path_option_is_refused(capsys, monkeypatch, tiny_data, tmp_path, option, value, said):
    from bench.__main__ import main

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # was: --root "" trained into the current folder, --tables "" wrote results/tables
    out = {"--root": str(tmp_path / "runs"), "--tables": str(tmp_path / "t"), "--figures": str(tmp_path / "f")}
    args = ["collect", "demo", *[a for k, v in {**out, option: value}.items() for a in (k, v)], "--no-wandb"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert f"argument {option}: {said}" in capsys.readouterr().err
    assert not any(work.iterdir())


def test_export_to_a_dash_writes_no_file_named_dash(capsys, monkeypatch, tmp_path):
    from bench.__main__ import main

    monkeypatch.chdir(tmp_path)  # was: a checkpoint written to ./-
    with pytest.raises(SystemExit) as e:
        main(["export", str(tmp_path / "run"), "-"])
    assert e.value.code == 2 and "argument out: '-' (standard input or output) is not a path" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bench_train_with_an_empty_run_dir_writes_nothing_in_the_current_folder(capsys, monkeypatch, two_seeds, tmp_path):
    from bench.train import main

    root, cells = two_seeds
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([str(run_dir_for(cells[0], root) / "config.yaml"), "--run-dir", ""])
    assert e.value.code == 2 and "argument --run-dir: '' is an empty path" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- UGLY, fixed: a killed sweep's zombie

def test_a_process_that_exited_but_is_not_reaped_is_gone():
    import subprocess
    import sys
    import time

    from bench.run_folder import process_start

    # a sweep killed with kill -9 stays a zombie until its parent reaps it: status said "trained now by process
    # <pid> (its lock file … is gone)" for a free lock whose file was there
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 30
    while time.time() < deadline and "Z" not in open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[-1].split()[:1]:
        time.sleep(0.05)
    assert process_start(child.pid) is None
    child.wait()
    assert process_start(os.getpid()) is not None


# ----------------------------------------------------------------------------- UGLY, fixed: suggested commands quoted

def test_the_suggested_status_command_quotes_the_root(capsys, two_seeds, tmp_path):
    import shlex

    import yaml

    from bench.__main__ import main

    root, cells = two_seeds
    store = tmp_path / "my runs $(touch PWNED)"
    shutil.copytree(root, store)
    suite = tmp_path / "files.yaml"
    cell = cells[0]
    suite.write_text(yaml.safe_dump({
        "name": "files", "scale": "smoke", "seeds": [0],
        "datasets": [{"name": "f30k_precomp", "label": "f30k_precomp", "data_root": cell.dataset.data_root,
                      "vocab_root": cell.dataset.vocab_root}],
        "matchers": [{"name": cell.matcher.name, "overrides": dict(cell.matcher.overrides)}],
        "strategies": [{"name": "baseline"}],
        "scales": {"smoke": {"schedule": {"default": cell.schedule.to_dict()}}}, "eval": {"dev_images": 30}}))
    capsys.readouterr()
    main(["sweep", str(suite), "--root", str(store)])
    line = next(x for x in capsys.readouterr().out.splitlines() if "shows it (the latest)" in x)
    command = line.split("`")[1]  # was: the root unquoted, so pasting it ran $(touch PWNED) or split the path
    assert shlex.split(command)[-1] == str(store)


# ----------------------------------------------------------------------------- UGLY, fixed: a W&B project it refuses

@pytest.mark.parametrize("project, why", [("a/b", "holds '/'"), ("p" * 129, "has 129 characters, more than 128")])
def test_a_wandb_project_that_wandb_refuses_is_a_suite_error(capsys, tmp_path, project, why):
    # was: every cell trained without tracking, a RuntimeWarning per cell ("W&B init failed … Invalid project name")
    err = refused(capsys, "show", "demo", f"wandb.project={project}", "--root", tmp_path / "runs")
    assert "wandb.project: " in err and why in err and "W&B refuses such a project name" in err


# ----------------------------------------------------------------------------- UGLY, fixed: YAML merge keys

MERGED = """name: m
scale: smoke
datasets: [{name: f30k_precomp, label: tiny, data_root: DATA}]
matchers: [{name: vse_infty, overrides: {embed_size: 16}}]
strategies:
  - &b {name: dbl, label: A, params: {loss: abs, scenario: oss}}
  - <<: *b
    label: B
    params: {loss: rel, scenario: oss}
seeds: [0]
scales: {smoke: {schedule: {default: {epochs: 1, batch_size: 32, lr: 2.0e-3}}}}
"""


def test_a_yaml_merge_key_in_a_suite_is_read(capsys, tiny_data, tmp_path):
    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    path = tmp_path / "m.yaml"
    path.write_text(MERGED.replace("DATA", str(tiny_data)))
    # was: `not valid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:merge'`
    cells = expand(load_suite(path))
    assert {(c.strategy.label, c.strategy.params["loss"]) for c in cells} == {("A", "abs"), ("B", "rel")}
    path.write_text(MERGED.replace("DATA", str(tiny_data)).replace("    label: B\n", "    label: B\n    label: C\n"))
    assert "duplicate key 'label'" in refused(capsys, "show", path, "--root", tmp_path / "runs")  # still one line


# ----------------------------------------------------------------------------- UGLY, fixed: run --cell of a student first

def test_run_of_an_oas_student_before_its_baseline_is_one_line_and_writes_nothing(capsys, tiny_data, tmp_path):
    import yaml

    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    path = tmp_path / "kd.yaml"
    path.write_text(yaml.safe_dump({
        "name": "kd", "scale": "smoke", "seeds": [0],
        "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data)}],
        "matchers": [{"name": "vse_infty", "overrides": {"embed_size": 16}}], "strategies": [{"name": "kd"}],
        "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3}}}}}))
    student = next(c for c in expand(load_suite(path)) if c.depends_on)
    # was: a RuntimeError traceback, exit 1, and the student left `failed` (a plain sweep then kept it failed
    # with that stale reason after training its baseline)
    err = refused(capsys, "run", path, "--root", tmp_path / "runs", "--cell", student.id)
    assert f"anchor cell {student.depends_on[0]} is not done (pending" in err and "train that baseline first" in err
    assert not (tmp_path / "runs" / "kd" / student.id).exists()


# ----------------------------------------------------------------------------- UGLY, fixed: a long override quoted whole

def test_a_long_bad_override_is_quoted_cut_short(capsys, tmp_path):
    value = "[" * 5000 + "]" * 5000  # nested past the YAML loader's bound
    err = refused(capsys, "show", "demo", f"description={value}", "--root", tmp_path / "runs")
    # was: the 10,000-character override printed whole (twice over, with the value cut short beside it)
    assert "is not valid YAML (values nested more than 64 levels deep)" in err and len(err) < 600


# ----------------------------------------------------------------------------- C8: a vocabulary of the same size

def test_a_checkpoint_with_a_reordered_vocabulary_of_the_same_size_is_refused(capsys, two_seeds, tiny_data, tmp_path):
    import json

    from bench.data.vocab import load_vocab, other_vocabulary

    root, cells = two_seeds
    best = run_dir_for(cells[0], root) / "best.pt"
    vocab = shutil.copytree(tiny_data / "vocab", tmp_path / "vocab")
    path = vocab / "f30k_precomp_vocab.json"
    d = json.loads(path.read_text())
    a, b = list(d["word2idx"])[10:12]  # two words trade ids: the same 87 ids, other captions
    d["word2idx"][a], d["word2idx"][b] = d["word2idx"][b], d["word2idx"][a]
    d["idx2word"][str(d["word2idx"][a])], d["idx2word"][str(d["word2idx"][b])] = a, b
    path.write_text(json.dumps(d))
    # was: exit 0 and the Recall@K of a model fed other word ids for every caption
    err = refused(capsys, "evaluate", best, "--data-root", tiny_data, "--dataset", "f30k_precomp", "--vocab-root", vocab)
    assert "was trained with another vocabulary than the data's" in err and str(best) in err
    own = load_vocab(tiny_data / "vocab" / "f30k_precomp_vocab.json")
    assert other_vocabulary(best, own.fingerprint(), own.with_mask()) is None  # <mask> added by a trainer: the same
    assert other_vocabulary(best, None, own) is None  # a checkpoint from before the fingerprint: not checked


# ----------------------------------------------------------------------------- UGLY, fixed: only.<part>=[]

@pytest.mark.parametrize("part", ["datasets", "matchers", "strategies"])
def test_an_empty_only_list_is_refused(capsys, tmp_path, part):
    # was: show listed 0 cells (exit 0), sweep recorded a sweep of no cell (then the latest for status), collect
    # crashed with KeyError: 'state'
    err = refused(capsys, "collect", "demo", f"only.{part}=[]", "--root", tmp_path / "runs", "--tables",
                  tmp_path / "t", "--figures", tmp_path / "f", "--no-wandb")
    assert f"only.{part}: an empty list keeps none of the suite's {part}" in err
    assert not (tmp_path / "t").exists()


# ----------------------------------------------------------------------------- C9: --root a suite or run folder

@pytest.mark.parametrize("command", ["status", "sweep"])
def test_a_root_that_is_a_suite_or_run_folder_of_a_store_is_refused(capsys, two_seeds, tmp_path, command):
    root, cells = two_seeds
    suite_dir, run_dir = run_dir_for(cells[0], root).parent, run_dir_for(cells[0], root)
    for wrong, what in ((suite_dir, "the folder of suite"), (run_dir, "a run folder")):
        before = sorted(p.relative_to(root) for p in root.rglob("*"))
        # was: exit 0, every cell `pending` under it, and a sweep trained them all again inside it
        err = refused(capsys, command, "demo", "--root", wrong)
        assert f"--root {wrong} is {what}" in err and f"give --root {root}" in err
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


# ----------------------------------------------------------------------------- UGLY, fixed: a device or pipe as a suite

def test_a_device_a_pipe_or_a_huge_file_as_a_yaml_file_is_one_line(capsys, monkeypatch, tmp_path):
    from bench import yamlsafe

    # was: `show /dev/zero` read until memory ran out (MemoryError traceback); a pipe blocked for ever
    assert "/dev/zero is not a regular file" in refused(capsys, "show", "/dev/zero")
    fifo = tmp_path / "suite.yaml"
    os.mkfifo(fifo)
    assert f"{fifo} is not a regular file" in refused(capsys, "show", fifo)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200)
    monkeypatch.setattr(yamlsafe, "MAX_BYTES", 1000)
    assert "holds 2,000 bytes, more than the 1,000" in refused(capsys, "show", big)


# ----------------------------------------------------------------------------- UGLY, fixed: results readable as any file

def test_files_written_atomically_have_the_umask_mode(tmp_path):
    from bench.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:  # was: 0600 (mkstemp's), so tables, figures, results and checkpoints were unreadable by the group
        atomic_write_bytes(tmp_path / "t.md", b"table")
        assert (tmp_path / "t.md").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "private.md", b"table")
        assert (tmp_path / "private.md").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- C10: a sweep of another file named alike

def test_the_latest_sweep_of_another_suite_file_with_the_same_name_is_not_taken(capsys, two_seeds, tmp_path):
    import yaml

    from bench.__main__ import main

    root, cells = two_seeds
    store = tmp_path / "runs"
    shutil.copytree(root, store)
    cell = cells[0]
    mine = tmp_path / "mine.yaml"  # another file that calls itself `demo`
    mine.write_text(yaml.safe_dump({
        "name": "files", "description": "my probe", "scale": "smoke", "seeds": [0],
        "datasets": [{"name": "f30k_precomp", "label": "f30k_precomp", "data_root": cell.dataset.data_root,
                      "vocab_root": cell.dataset.vocab_root}],
        "matchers": [{"name": cell.matcher.name, "overrides": dict(cell.matcher.overrides)}],
        "strategies": [{"name": "baseline"}],
        "scales": {"smoke": {"schedule": {"default": cell.schedule.to_dict()}}}, "eval": {"dev_images": 30}}))
    main(["sweep", str(mine), "--root", str(store), "name=demo"])  # its cell is done already: nothing trains
    capsys.readouterr()
    tables = tmp_path / "tables"
    # was: exit 0 and tables/demo.md written from mine.yaml ("Suite `demo`: my probe"), the latest sweep of "demo"
    err = refused(capsys, "collect", "demo", "--root", store, "--tables", tables, "--figures", tmp_path / "f",
                  "--no-wandb")
    assert "none of its" in err and "as declared" in err and not tables.exists()
    main(["status", "demo", "--root", str(store)])
    assert f"ran other suite files ({mine})" in capsys.readouterr().out
    main(["status", "demo", "--root", str(store), "--sweep", next((store / "demo" / "sweeps").glob("*.yaml")).stem])
    assert "name=demo" in capsys.readouterr().out  # named explicitly: taken


# ----------------------------------------------------------------------------- C11: a dataset label as a path

def test_a_dataset_label_never_writes_figures_outside_the_figures_folder(capsys, tiny_data, tmp_path):
    import yaml

    from bench.__main__ import main

    suite = tmp_path / "two.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "two", "scale": "smoke", "seeds": [0], "strategies": [{"name": "baseline"}],
        "datasets": [{"name": "f30k_precomp", "label": label, "data_root": str(tiny_data)} for label in ("../../up", "B")],
        "matchers": [{"name": "vse_infty", "overrides": {"embed_size": 16}}],
        "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 32, "lr": 2e-3,
                                                      "max_steps_per_epoch": 2}}}}, "eval": {"dev_images": 30}}))
    main(["sweep", str(suite), "--root", str(tmp_path / "runs")])
    figures = tmp_path / "out" / "figures"
    main(["collect", str(suite), "--root", str(tmp_path / "runs"), "--tables", str(tmp_path / "out" / "tables"),
          "--figures", str(figures), "--no-wandb"])
    # was: the figures of dataset "../../up" written to <out>/up/, outside --figures (a label "../demo" replaced the
    # README's demo figures)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["figures", "tables"]
    assert sorted(p.name for p in (figures / "two").iterdir()) == [".._.._up", "B"]
    assert any((figures / "two" / ".._.._up").glob("*.png"))
    from bench.harness.figures import folder_name

    assert [folder_name(x) for x in ("a/b", "..", ".", "synth-demo")] == ["a_b", "_..", "_.", "synth-demo"]


# ----------------------------------------------------------------------------- UGLY, fixed: a protocol listed twice

def test_a_protocol_listed_twice_is_refused(capsys, tmp_path):
    # was: exit 0 and another cell id for the same result (a plain sweep trained it again)
    err = refused(capsys, "show", "demo", "datasets.0.protocols=[f30k_1k, f30k_1k]", "--root", tmp_path / "runs")
    assert "protocol(s) ['f30k_1k'] listed more than once" in err


# ----------------------------------------------------------------------------- UGLY, fixed: a size beyond any model

def test_a_matcher_size_beyond_any_model_is_one_line(capsys, tiny_data):
    # was: show printed a 30-line RuntimeError (Storage size overflowed) from the parameter count
    err = refused(capsys, "show", "demo", f"datasets.0.data_root={tiny_data}", "matchers.0.overrides.embed_size=99999999999")
    assert "embed_size" in err and "must be at most 1,048,576" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- UGLY, fixed: synth's seed and --out, sync's root

def test_synth_refuses_a_seed_out_of_range_and_an_out_that_is_a_file(tmp_path, capsys):
    from bench.data.synth import main

    with pytest.raises(SystemExit) as e:  # was: numpy's ValueError traceback
        main(["--preset", "tiny", "--out", str(tmp_path / "d"), "--seed", "-1"])
    assert e.value.code == 2 and "outside [0, 2**32)" in capsys.readouterr().err
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    for out in (notes, notes / "sub"):  # was: NotADirectoryError traceback
        assert main(["--preset", "tiny", "--out", str(out)]) == 2
        assert f"{notes} is a file, not a folder" in capsys.readouterr().err
    assert notes.read_text() == "mine\n"


def test_sync_of_a_root_that_does_not_exist_says_so(capsys, tmp_path):
    # was: exit 0 and "no offline W&B runs under …", as for an existing store without runs
    err = refused(capsys, "sync", "--root", tmp_path / "nope")
    assert "no such results folder" in err


# ----------------------------------------------------------------------------- UGLY, fixed: a cell's parts of the wrong type

@pytest.mark.parametrize("override, said", [
    ("eval=3", "cell: eval: expected a mapping of eval keys, got int 3"),
    ("matcher=3", "cell: matcher: expected a mapping with its name"),
    ("strategy.params=3", "cell: strategy.params: expected a mapping, got int 3"),
    ("matcher.name=[1]", "cell: matcher.name: expected a name (str), got list [1]"),
    ("eval.protocols=f30k_1k", "cell: eval.protocols: expected a list, got str 'f30k_1k'; write [f30k_1k]"),
])
def test_bench_train_names_a_cell_part_of_the_wrong_type(tmp_path, tiny_data, override, said):
    # was: "'int' object is not iterable", "cell is missing 'matcher.name'", "unhashable type: 'list'",
    # "unknown protocol 'f'" (a string read letter by letter)
    import subprocess
    import sys

    import yaml

    from tests.test_untrusted_files import REPO

    config = tmp_path / "cell.yaml"
    config.write_text(yaml.safe_dump(cell_of(tiny_data).to_dict()))
    out = subprocess.run([sys.executable, "-m", "bench.train", str(config), override, "--run-dir", str(tmp_path / "run")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and said in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- UGLY, fixed: a binary file as a text file

def test_a_binary_file_given_as_a_yaml_or_csv_file_is_named_binary(capsys, tmp_path):
    """An array, checkpoint or archive given where a YAML/CSV file belongs: was "not UTF-8 (byte 0x93); re-save the
    file as UTF-8" (advice for a text file in another encoding)."""
    import numpy as np

    from bench.harness.published import PublishedCSVError, read_published
    from bench.harness.slurm import ProfileError, load_profile

    array = tmp_path / "train_ims.npy"
    np.save(array, np.zeros((3, 4), dtype=np.float32))
    assert "a binary file (a NUL byte at offset" in refused(capsys, "show", array)
    err = refused(capsys, array, "--run-dir", tmp_path / "run", module="bench.train")
    assert err == f"error: {array}: a binary file (a NUL byte at offset 7), not a cell file; give the path of the cell file"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ProfileError, match=r"a binary file .*not a cluster profile"):
        load_profile(str(array))
    with pytest.raises(PublishedCSVError, match=r"a binary file .*not a published-results CSV"):
        read_published(array)
    text = tmp_path / "latin1.yaml"  # a text file in another encoding keeps its advice
    text.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert refused(capsys, "show", text).endswith("not UTF-8 (byte 0xe9); re-save the file as UTF-8")


# ----------------------------------------------------------------------------- UGLY, fixed: a cut-short --force re-run

def test_status_names_a_force_rerun_left_beside_a_done_cell_and_the_next_force_takes_it(two_seeds, tmp_path):
    """A ``--force`` sweep killed mid-run leaves ``<id>.rerun-<host>-<pid>`` beside the done result; a plain sweep
    keeps the result (right) and the folder, which no command named."""
    from bench.harness.store_files import CellLock, folder_lock
    from bench.run_folder import RunOptions

    src, cells = two_seeds
    root = tmp_path / "runs"
    shutil.copytree(src, root)
    final = run_dir_for(cells[0], root)
    staged = final.with_name(f"{final.name}.rerun-elsewhere-4242")
    staged.mkdir()
    (staged / "config.yaml").write_text((final / "config.yaml").read_text())
    info = run_status(cells[0], final)
    assert info["state"] == "done"
    assert info["note"].startswith(f"a --force re-run of it was cut short: {staged.name} (the result above stays")
    lock = CellLock(folder_lock(final))
    assert lock.acquire()
    try:  # a re-run going on now is not "cut short"
        assert "note" not in run_status(cells[0], final)
    finally:
        lock.release()
    assert run_cell_in_store(cells[0], root, RunOptions(force=True), tracker_factory=None)["state"] == "done"
    assert not staged.exists() and "note" not in run_status(cells[0], final)
