"""Issue 29, round three, part B (docs/bad-inputs.md, B entries): a store made of links, tables that would lose
done cells, ``bench.train`` onto a folder it must not change, an override a recipe hides, a path option given an
override, liveness without the lock file, exit codes, bad seeds, a key in the wrong place, two Ctrl-C, and a done
baseline whose ``best.pt`` broke. Each bad input is one ``error:`` line and exit 2 before anything changes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bench import spec
from bench.harness.store import CellLock, StoreError, lock_path, run_cell_in_store, run_dir_for, run_status
from bench.run_folder import RunOptions
from tests.test_untrusted_files import REPO, bench, cell_of, refused

TRAIN = "bench.train"
# Names this round added are imported where they are used: on the code before it each test fails for its own reason.


@pytest.fixture(scope="module")
def stored(tiny_data, tmp_path_factory):
    """A store holding one finished baseline cell; tests work on copies of it."""
    root = tmp_path_factory.mktemp("round3") / "runs"
    cell = cell_of(tiny_data)
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    return root, cell, run_dir_for(cell, root)


@pytest.fixture
def run_copy(stored, tmp_path):
    """A private copy of the done store: (its run folder, the cell, the store root)."""
    root, cell, run_dir = stored
    shutil.copytree(root, tmp_path / "runs")
    return tmp_path / "runs" / run_dir.relative_to(root), cell, tmp_path / "runs"


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (links followed) by its sha256: what must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def unfinished(run_dir: Path) -> None:
    """Make a done run folder an interrupted one (its result and marker gone, last.pt kept)."""
    for name in ("done", "result.json"):
        (run_dir / name).unlink()
    (run_dir / "interrupted").write_text(json.dumps({"signal": "SIGTERM", "step": 2}))


# ----------------------------------------------------------------------------- a store made of links (cp -as)

def test_a_store_copied_with_cp_as_never_writes_into_the_colleagues_store(run_copy, tmp_path):
    run_dir, cell, root = run_copy
    unfinished(run_dir)
    before = digests(root)
    mine = tmp_path / "mine"
    subprocess.run(["cp", "-as", str(root), str(mine)], check=True)
    my_run = mine / run_dir.relative_to(root)
    assert (my_run / "log.txt").is_symlink() and (my_run / "last.pt").is_symlink()
    out = run_cell_in_store(cell, mine, tracker_factory=None)  # resumes from the (linked) last.pt
    assert out["state"] == "done"
    assert digests(root) == before  # the colleague's log.txt, markers and checkpoints as they were
    assert not any(p.is_symlink() for p in my_run.rglob("*"))
    assert len((my_run / "log.txt").read_bytes()) > len((run_dir / "log.txt").read_bytes())


def test_a_run_folder_linked_out_of_the_store_is_refused(run_copy, tmp_path):
    run_dir, cell, root = run_copy
    unfinished(run_dir)
    before = digests(run_dir)
    mine = tmp_path / "mine"
    (mine / run_dir.parent.name).mkdir(parents=True)
    (mine / run_dir.parent.name / run_dir.name).symlink_to(run_dir)
    info = run_status(cell, mine / run_dir.parent.name / run_dir.name)
    assert info["state"] == "blocked" and "is a symbolic link to" in info["error"] and "outside the results" in info["error"]
    with pytest.raises(StoreError, match="outside the results folder"):
        run_cell_in_store(cell, mine, tracker_factory=None)
    assert digests(run_dir) == before


# ----------------------------------------------------------------------------- tables never lose done cells

def test_collect_never_replaces_a_table_by_one_with_fewer_done_cells(capsys, tmp_path):
    import yaml

    from bench.harness.cells import expand
    from bench.harness.config import load_suite
    from tests.test_harness_collect import SUITE, write_result

    suite_file = tmp_path / "tc.yaml"
    suite_file.write_text(yaml.safe_dump(SUITE))
    root, tables, figures = tmp_path / "runs", tmp_path / "tables", tmp_path / "figures"
    write_result(root, expand(load_suite(suite_file))[0], 50.0)  # another --root, or a store that lost results: 1 done
    tables.mkdir()
    (tables / "tc.csv").write_text("matcher,strategy,n_done,published\nvse_infty,baseline,3,False\n")
    before = (tables / "tc.csv").read_text()
    args = ["collect", suite_file, "--root", root, "--tables", tables, "--figures", figures, "--no-wandb"]
    err = refused(capsys, *args)
    assert "holds 1 done result(s), fewer than the 3 of" in err and "--force" in err
    assert (tables / "tc.csv").read_text() == before and not (tables / "tc.md").exists()
    from bench.__main__ import main

    main([str(a) for a in [*args, "--force"]])  # asked for: replaced
    assert (tables / "tc.csv").read_text() != before and (tables / "tc.md").exists()
    (tables / "tc.csv").unlink()  # the CSV gone: its Markdown counts (1 done now, so 3 done there)
    (tables / "tc.md").write_text("# Suite `tc`\n\n| matcher | strategy | n |\n|---|---|---|\n| a | b | 3/3 |\n")
    assert "fewer than the 3 of" in refused(capsys, *args) and not (tables / "tc.csv").exists()


def test_readme_never_shows_a_table_with_fewer_done_cells(capsys, tmp_path):
    readme = (REPO / "README.md").read_text()
    table = tmp_path / "demo.md"
    table.write_text("# Suite `demo`\n\n| matcher | strategy | n | RSUM |\n|---|---|---|---|\n"
                     "| VSE∞ (small) | baseline | 0/3 (3 pending) | – |\n")
    err = refused(capsys, "readme", "--table", table)
    assert "holds 0 done result(s), fewer than the" in err and "README.md shows now" in err and "--force" in err
    assert (REPO / "README.md").read_text() == readme


def test_done_counts_read_both_table_forms(tmp_path):
    from bench.harness.done_counts import csv_done, md_done

    csv = tmp_path / "t.csv"
    csv.write_text("matcher,n_done,published\na,3,False\nb,2,False\nref,,True\n")
    assert csv_done(csv) == 5 and csv_done(tmp_path / "none.csv") is None
    assert md_done("| m | n |\n|---|---|\n| a | 3/3 |\n| b | 1/2 (1 mixed-code) |\n\ntext\n") == 4
    assert md_done((REPO / "README.md").read_text()) >= 3  # the committed demo table counts its done seeds


# ----------------------------------------------------------------------------- bench.train checks the folder first

def test_train_onto_a_finished_run_changes_nothing(capsys, run_copy):
    run_dir, _, _ = run_copy
    before = digests(run_dir)
    err = refused(capsys, run_dir / "config.yaml", "--run-dir", run_dir, module=TRAIN)
    assert "holds a finished run" in err and "give a fresh --run-dir" in err
    assert digests(run_dir) == before and not (run_dir / "failed").exists()


def test_train_onto_another_cells_run_changes_nothing(capsys, run_copy):
    run_dir, _, _ = run_copy
    unfinished(run_dir)
    before = digests(run_dir)
    err = refused(capsys, run_dir / "config.yaml", "--run-dir", run_dir, "seed=1", module=TRAIN)
    assert "holds the run of another cell" in err
    assert digests(run_dir) == before


# ----------------------------------------------------------------------------- seeds and keys in the wrong place

@pytest.mark.parametrize("value,says", [("abc", "seed: expected a whole number, got str"),
                                        ("-1", "seed: seed -1 is outside [0, 2**32)")])
def test_a_bad_seed_is_one_line_naming_the_key(capsys, run_copy, tmp_path, value, says):
    run_dir, _, _ = run_copy
    err = refused(capsys, run_dir / "config.yaml", "--run-dir", tmp_path / "new", f"seed={value}", module=TRAIN)
    assert says in err
    assert not (tmp_path / "new").exists()


def test_resolve_checks_the_cells_own_values(run_copy):
    _, cell, _ = run_copy
    with pytest.raises(ValueError, match=r"^seed: "):
        spec.resolve(replace(cell, seed=-1))
    with pytest.raises(ValueError, match=r"^eval\.dev_images: expected a whole number >= 1"):
        spec.resolve(replace(cell, eval=replace(cell.eval, dev_images=0)))
    with pytest.raises(ValueError, match=r"^matcher\.embed_size: must be at least 1"):
        spec.resolve(replace(cell, matcher=replace(cell.matcher, overrides={**cell.matcher.overrides, "embed_size": 0})))


def test_a_schedule_key_at_the_top_level_names_its_place(capsys):
    err = refused(capsys, "show", "demo", "grad_clip=-2")
    assert "grad_clip is a schedule key: write schedule.default.grad_clip" in err and "Did you mean" not in err


def test_an_override_a_recipe_hides_is_an_error_naming_the_recipe(capsys):
    err = refused(capsys, "show", "dbl", "scale=smoke", "scales.smoke.schedule.default.lr=0.05")
    assert "scales.smoke.schedule.default.lr: 0.05 is hidden by recipe smoke=embedded" in err
    assert "schedule.default.lr, which wins over every recipe" in err


@pytest.mark.parametrize("argv", [["sweep", "demo", "--root", "seeds=[0]"],
                                  ["collect", "demo", "--tables", "scale=smoke"]])
def test_a_path_option_refuses_an_override(capsys, argv, tmp_path, monkeypatch):
    from bench.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "is a key=value override, not a path" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- liveness without the lock file

def test_a_live_run_is_not_taken_over_when_the_locks_folder_is_removed(run_copy):
    from bench.run_folder import process_start

    run_dir, cell, root = run_copy
    unfinished(run_dir)
    (run_dir / "interrupted").unlink()
    holder = subprocess.Popen(["sleep", "60"])
    try:  # as a sweep training the cell wrote it; then `rm -rf <root>/.locks`
        (run_dir / "running").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                     "started_at": "now", "process_start": process_start(holder.pid)}))
        shutil.rmtree(root / ".locks", ignore_errors=True)
        before = digests(run_dir)
        info = run_status(cell, run_dir)
        assert info["state"] == "running" and f"process {holder.pid}" in info["error"]
        assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "locked"
        assert digests(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    assert run_status(cell, run_dir)["state"] == "interrupted"  # its process is gone: a sweep takes it over


# ----------------------------------------------------------------------------- exit codes

ONE_CELL = ["strategies=[{name: baseline}]", "seeds=[0]", "scales.smoke.schedule.default.epochs=1",
            "scales.smoke.schedule.default.max_steps_per_epoch=2"]


def test_a_sweep_with_a_failed_cell_exits_1(tiny_data, tmp_path):
    p = bench("sweep", "demo", *ONE_CELL, f"datasets.0.data_root={tiny_data}",
              f"datasets.0.vocab_root={tiny_data}/vocab", "--root", tmp_path / "runs",
              ITM_BENCH_FAULT="train.after_forward:1:eio")
    assert p.returncode == 1, p.stderr
    assert "failed" in p.stderr and "exit code 1" in p.stderr


def test_run_of_a_locked_cell_exits_non_zero(capsys, tiny_data, tmp_path):
    from bench.__main__ import EXIT_LOCKED, main
    from bench.harness.cells import expand
    from bench.harness.config import load_suite

    overrides = [*ONE_CELL, f"datasets.0.data_root={tiny_data}", f"datasets.0.vocab_root={tiny_data}/vocab"]
    (cell,) = expand(load_suite("demo", overrides))
    lock = CellLock(lock_path(cell, tmp_path / "runs"))
    assert lock.acquire()
    try:
        with pytest.raises(SystemExit) as info:
            main(["run", "demo", *overrides, "--cell", cell.id, "--root", str(tmp_path / "runs")])
    finally:
        lock.release()
    assert info.value.code == EXIT_LOCKED != 0
    assert "is being trained by another process now" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sweep", "run", "collect", "readme", "evaluate", "export", "status"])
def test_help_lists_the_exit_codes(capsys, command):
    from bench.__main__ import main

    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out and "  2  bad input" in out
    if command == "sweep":
        assert "  1  some cell failed" in out


def test_train_help_lists_the_exit_codes():
    p = bench("--help", module=TRAIN)
    assert p.returncode == 0 and "exit codes:" in p.stdout and "  2  bad input" in p.stdout


# ----------------------------------------------------------------------------- two Ctrl-C

def test_a_second_ctrl_c_in_the_first_step_is_one_line_and_promises_no_checkpoint(run_copy, tmp_path):
    run_dir, cell, _ = run_copy
    new = tmp_path / "new"
    e = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")}
    e |= {"WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
          "ITM_BENCH_SLOW": "train.after_forward:20"}  # the first step lasts 20 s
    p = subprocess.Popen([sys.executable, "-m", TRAIN, str(run_dir / "config.yaml"), "--run-dir", str(new)],
                         cwd=REPO, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (new / "running").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(4)  # in the first step
    p.send_signal(signal.SIGINT)
    deadline = time.time() + 15  # the first one is taken: "saving last.pt after this step"
    while "received SIGINT" not in (new / "log.txt").read_text() and time.time() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    assert "Traceback" not in err
    assert "error: stopped at once by a second Ctrl-C" in err and "from scratch (no last.pt was saved)" in err
    assert not (new / "last.pt").exists() and (new / "interrupted").exists()
    said = run_status(cell, new)
    assert said["state"] == "interrupted" and "no last.pt" in said["error"] and "from scratch" in said["error"]


# ----------------------------------------------------------------------------- a done baseline's best.pt broke

def test_a_truncated_best_pt_of_a_baseline_is_found_and_retrained(run_copy):
    from bench.atomic import digest_problem
    from bench.harness.sweep import select_cells

    run_dir, cell, root = run_copy
    best = run_dir / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])  # truncated
    assert run_status(cell, run_dir)["state"] == "done"  # nobody starts from it: its result is whole
    info = run_status(cell, run_dir, anchor=True)
    assert info["state"] == "corrupt" and "corrupted or truncated" in info["error"]
    student = replace(cell, id="student", depends_on=[cell.id])
    states = {cell.id: info, "student": {"state": "failed"}}
    assert [c.id for c in select_cells([cell, student], states, retry_failed=True)] == [cell.id, "student"]
    assert [c.id for c in select_cells([cell, student], states)] == [cell.id]  # a plain sweep retrains it
    out = run_cell_in_store(cell, root, RunOptions(anchors=(cell.id,)), tracker_factory=None)
    assert out["state"] == "done" and digest_problem(best) is None
    assert run_status(cell, run_dir, anchor=True)["state"] == "done"


def test_a_deleted_best_pt_of_a_baseline_is_found(run_copy):
    run_dir, cell, _ = run_copy
    (run_dir / "best.pt").unlink()
    info = run_status(cell, run_dir, anchor=True)
    assert info["state"] == "corrupt" and "does not exist" in info["error"]


def test_a_second_ctrl_c_in_a_stores_cell_leaves_a_status_that_promises_no_checkpoint(tiny_data, tmp_path):
    overrides = [*ONE_CELL, f"datasets.0.data_root={tiny_data}", f"datasets.0.vocab_root={tiny_data}/vocab"]
    root = tmp_path / "runs"
    e = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")}
    e |= {"WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
          "ITM_BENCH_SLOW": "train.after_forward:20"}
    p = subprocess.Popen([sys.executable, "-m", "bench", "sweep", "demo", *overrides, "--root", str(root)], cwd=REPO,
                         env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(root.glob("demo/*/running")) and time.time() < deadline:
        time.sleep(0.1)
    (run_dir,) = [m.parent for m in root.glob("demo/*/running")]
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    deadline = time.time() + 15
    while "received SIGINT" not in (run_dir / "log.txt").read_text() and time.time() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "Traceback" not in err, err
    assert "error: stopped by Ctrl-C at once" in err
    status = bench("status", "demo", *overrides, "--root", root).stdout
    assert "interrupted" in status and "no last.pt" in status and "trains it from scratch" in status, status
    assert not (run_dir / "last.pt").exists()
