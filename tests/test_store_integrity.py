
"""A result belongs to its data, its code and its config; one process per cell; nothing finished is lost.

Real training on the tiny embedded data (2 epochs x 2 steps); concurrent sweeps, SIGTERM and SIGKILL
are real subprocesses on one store.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import checkpoint as ckpt
from bench.harness.cells import cell_id, expand, topological_order
from bench.harness.collect import collect
from bench.harness.config import load_suite
from bench.harness.store import (
    CellLock,
    cell_state,
    lock_path,
    run_cell_in_store,
    run_dir_for,
    run_status,
)
from bench.harness.sweep import cell_states, select_cells, sweep
from bench.run_folder import RunOptions
from bench.spec import Cell

REPO = Path(__file__).resolve().parents[1]


def write_suite(tmp_path, data, name="integrity", seeds=(0,), epochs=2, steps=2, fname=None):
    spec = {
        "name": name,
        "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(data)}],
        "matchers": [{"name": "vse_infty", "label": "VSE"}],
        "strategies": [{"name": "baseline"}],
        "seeds": list(seeds),
        "scale": "smoke",
        "scales": {"smoke": {"schedule": {"default": {"epochs": epochs, "batch_size": 32, "lr": 2e-3,
                                                      "max_steps_per_epoch": steps, "checkpoint_every": 1}},
                             "matchers": {"vse_infty": {"embed_size": 16, "word_dim": 8}}}},
        "eval": {"dev_images": 30},
    }
    path = tmp_path / (fname or f"{name}.yaml")
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ITM_BENCH_")}
    return e | {"WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"} | extra


def comparable(run_dir):
    r = json.loads((Path(run_dir) / "result.json").read_text())
    with np.load(Path(run_dir) / "ranks.npz") as z:
        ranks = {k: z[k].tolist() for k in z.files}
    return {k: r[k] for k in ("metrics", "dev_curve", "best_epoch", "best_dev_rsum")}, ranks


def copy_data(src, dst):
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- data as a key

def test_regenerated_data_makes_a_done_cell_stale_and_sweep_retrains_it(tiny_data, tmp_path, capsys):
    from bench.__main__ import main
    from bench.data.synth import generate

    data = copy_data(tiny_data, tmp_path / "data")
    suite_path = write_suite(tmp_path, data, epochs=1)
    root = tmp_path / "runs"
    suite = load_suite(suite_path)
    sweep(suite, root=root, progress=False, tracker_factory=None)
    (cell,) = expand(suite)
    run_dir = run_dir_for(cell, root)
    before = json.loads((run_dir / "result.json").read_text())
    assert cell_states([cell], root)[cell.id]["state"] == "done"

    generate(data, preset="tiny", seed=1, overwrite=True)  # regenerated in place: other features and captions
    info = cell_states([cell], root)[cell.id]
    old_fp = before["provenance"]["data_fingerprint"]
    assert info["state"] == "stale" and info["result_fingerprint"] == old_fp
    assert info["data_fingerprint"] not in (None, old_fp)
    main(["status", str(suite_path), "--root", str(root)])
    shown = capsys.readouterr().out
    assert "stale" in shown and old_fp in shown and info["data_fingerprint"] in shown
    with pytest.warns(UserWarning, match=r"left out of the table: .*stale"):
        df = collect(suite, root)
    assert (df["state"] == "stale").all() and df["rsum"].isna().all()  # never mixed into a table

    seen = {}

    def train_checking_old_result(c, work, tracker=None, anchor_checkpoint=None):
        from bench.train import run_cell

        seen["old_kept"] = json.loads((run_dir / "result.json").read_text()) == before and work != run_dir
        return run_cell(c, work, tracker=tracker, anchor_checkpoint=anchor_checkpoint)

    out = run_cell_in_store(cell, root, tracker_factory=None, train_fn=train_checking_old_result)
    assert out["state"] == "done" and seen["old_kept"]
    after = json.loads((run_dir / "result.json").read_text())
    assert after["provenance"]["data_fingerprint"] == info["data_fingerprint"]
    assert cell_states([cell], root)[cell.id]["state"] == "done"
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [cell.id]  # no staging left


def test_another_suite_reuses_a_run_only_for_the_same_data(tiny_data, tmp_path):
    root = tmp_path / "runs"
    a = load_suite(write_suite(tmp_path, tiny_data, name="first", epochs=1))
    sweep(a, root=root, progress=False, tracker_factory=None)
    broken = copy_data(tiny_data, tmp_path / "broken")
    (broken / "f30k_precomp" / "train_ims.npy").write_bytes(b"")  # the 0-byte features of the issue
    same = load_suite(write_suite(tmp_path, tiny_data, name="second", epochs=1))
    other = load_suite(write_suite(tmp_path, broken, name="third", epochs=1))
    (c_a,), (c_same,), (c_other,) = expand(a), expand(same), expand(other)
    assert c_a.id == c_same.id == c_other.id  # same config, hence the same id
    assert cell_states([c_same], root)[c_same.id] == {**cell_states([c_a], root)[c_a.id]}
    st = cell_states([c_other], root)[c_other.id]
    assert st["state"] == "pending" and st["run_dir"] == str(run_dir_for(c_other, root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert collect(other, root)["rsum"].isna().all()  # never RSUM of another suite's data


def test_a_corrupt_result_is_shown_rerun_and_left_out_of_the_table(tiny_data, tmp_path, capsys):
    from bench.__main__ import main

    suite_path = write_suite(tmp_path, tiny_data, seeds=(0, 1), epochs=1, steps=1)
    suite = load_suite(suite_path)
    root = tmp_path / "runs"
    sweep(suite, root=root, progress=False, tracker_factory=None)
    c0, c1 = expand(suite)
    d0, d1 = run_dir_for(c0, root), run_dir_for(c1, root)
    good = (d1 / "result.json").read_text()
    (d0 / "result.json").write_text(good[: len(good) // 2])  # torn: an interrupted rsync
    (d1 / "result.json").unlink()  # `done` without result.json
    states = cell_states([c0, c1], root)
    assert [states[c.id]["state"] for c in (c0, c1)] == ["corrupt", "corrupt"]
    assert f"{d0 / 'result.json'} does not parse" in states[c0.id]["error"]
    assert f"{d1 / 'result.json'} is missing" in states[c1.id]["error"]
    main(["status", str(suite_path), "--root", str(root)])
    assert str(d0 / "result.json") in capsys.readouterr().out

    (d1 / "result.json").write_text(good)  # one whole again: the table has it and leaves the other out
    with pytest.warns(UserWarning, match=r"1 cell\(s\) left out of the table: .*corrupt.*does not parse"):
        df = collect(suite, root)
    assert df.set_index("seed")["state"].to_dict() == {0: "corrupt", 1: "done"}
    assert df.set_index("seed")["rsum"].notna().to_dict() == {0: False, 1: True}

    report = sweep(suite, root=root, progress=False, tracker_factory=None)
    assert report["selected"] == [c0.id]
    assert cell_state(d0) == "done" and json.loads((d0 / "result.json").read_text())["metrics"]


def test_a_suite_name_cannot_write_outside_the_results_folder(tiny_data, tmp_path):
    from bench.harness.config import ConfigError

    root = tmp_path / "deep" / "runs"
    # a 300-character name was Errno 36 (File name too long) once the sweep made its folder
    for bad in ("../../x", str(tmp_path / "abs"), "a" * 300):
        path = write_suite(tmp_path, tiny_data, name=bad, fname="bad.yaml")
        with pytest.raises(ConfigError, match=rf"bad.yaml: name: '{bad[:30]}.*cannot name the folder of its run "
                                              r"folders and tables under --root: use a plain name of at most 100"):
            load_suite(path)
        cell = Cell.from_dict({"suite": bad, "id": "0123456789ab", "dataset": {"name": "f30k_precomp"},
                               "matcher": {"name": "vse_infty"}, "strategy": {"name": "baseline"}})
        # the store checks too (cells not made by load_suite)
        with pytest.raises(ValueError, match=r"suite name .* cannot name a folder inside the results folder"):
            run_dir_for(cell, root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # nothing written anywhere


# ----------------------------------------------------------------------------- code as a key

def test_a_changed_code_default_changes_the_cell_id(tiny_data, tmp_path, monkeypatch):
    from bench import train

    path = write_suite(tmp_path, tiny_data)
    (cell,) = expand(load_suite(path))
    monkeypatch.setitem(train.SCHEDULE_DEFAULTS, "margin", 0.3)  # code with another default expands the suite
    (changed,) = expand(load_suite(path))
    assert changed.schedule.margin == 0.3 and changed.id != cell.id == cell_id(cell)
    monkeypatch.setitem(train.SCHEDULE_DEFAULTS, "margin", 0.2)
    assert expand(load_suite(path))[0].id == cell.id
    # an override equal to the constructor's default is the same run, one that differs is not
    for layers, same in ((1, True), (2, False)):
        other = cell.replace(matcher=replace(cell.matcher, overrides={**cell.matcher.overrides, "num_layers": layers}))
        assert (cell_id(other) == cell.id) is same


def _stop_after(steps, **kwargs):
    from bench.train import run_cell

    def train(cell, run_dir, tracker=None, anchor_checkpoint=None, **kw):
        return run_cell(cell, run_dir, tracker=tracker, anchor_checkpoint=anchor_checkpoint,
                        stop_after_steps=steps, **kw)
    return train


def test_resuming_across_a_code_change_is_refused_or_recorded(tiny_data, tmp_path, monkeypatch):
    from bench import train

    (cell,) = expand(load_suite(write_suite(tmp_path, tiny_data)))
    root = tmp_path / "runs"
    out = run_cell_in_store(cell, root, tracker_factory=None, train_fn=_stop_after(1))
    run_dir = run_dir_for(cell, root)
    assert out["state"] == "interrupted" and cell_state(run_dir) == "interrupted"
    saved = ckpt.load(run_dir / "last.pt")
    assert saved["code"]["commit"] and saved["code"]["cell"]["schedule"]["margin"] == 0.2

    monkeypatch.setitem(train.SCHEDULE_DEFAULTS, "margin", 0.3)  # "a commit changing the margin"
    # the cell as older code recorded it (a job's pickle, a config.yaml), its margin left to the code's default
    cell = Cell.from_dict({**cell.to_dict(), "schedule": {k: v for k, v in cell.schedule.to_dict().items()
                                                          if k != "margin"}})
    assert cell.schedule.margin == 0.3 and run_dir_for(cell, root) == run_dir
    out = run_cell_in_store(cell, root, tracker_factory=None, raise_errors=False)
    assert out["state"] == "failed"
    assert "schedule.margin: 0.2 -> 0.3" in out["error"] and "--force" in out["error"]
    assert "--allow-code-change" in out["error"] and str(run_dir / "last.pt") in out["error"]

    saved["code"]["commit"], saved["code"]["source"] = "0" * 40, "1" * 40  # and written by other code
    ckpt.save(saved, run_dir / "last.pt")
    with pytest.warns(UserWarning, match="across a code change"):
        out = run_cell_in_store(cell, root, RunOptions(allow_code_change=True), tracker_factory=None)
    prov = out["result"]["provenance"]
    (change,) = prov["code_changes"]
    assert change["from_commit"] == "0" * 40 and change["to_commit"] == prov["git"]["commit"]
    assert "schedule.margin: 0.2 -> 0.3" in change["changes"] and change["at_step"] == 1
    assert any(c.startswith(f"code: commit {'0' * 40} -> ") for c in change["changes"])

    out = run_cell_in_store(cell, root, RunOptions(force=True), tracker_factory=None)  # --force: from scratch
    assert out["state"] == "done" and "code_changes" not in out["result"]["provenance"]


# ----------------------------------------------------------------------------- one process per cell

def test_a_locked_cell_is_skipped_and_taken_when_free(tiny_data, tmp_path):
    suite = load_suite(write_suite(tmp_path, tiny_data, seeds=(0, 1), epochs=1, steps=1))
    root = tmp_path / "runs"
    c0, c1 = expand(suite)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bench.harness.store import CellLock; l = CellLock(sys.argv[1]); "
        "assert l.acquire(); print('held', flush=True); time.sleep(60)"), str(lock_path(c0, root))],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run_dir_for(c0, root).mkdir(parents=True)
        (run_dir_for(c0, root) / "running").write_text("{}")
        assert cell_states([c0], root)[c0.id]["state"] == "running"  # its lock is held
        report = sweep(suite, root=root, progress=False, tracker_factory=None)
        assert report["selected"] == [c1.id] and report["outcomes"] == {c1.id: "done"}
        assert cell_state(run_dir_for(c1, root)) == "done"
        assert run_cell_in_store(c0, root, tracker_factory=None)["state"] == "locked"  # selected meanwhile
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its marker is stale and the cell is taken over
    info = cell_states([c0], root)[c0.id]
    assert info["state"] == "interrupted" and "process that is gone" in info["error"]
    assert select_cells([c0], {c0.id: info}, retry_failed=True) == [c0]
    sweep(suite, root=root, progress=False, tracker_factory=None, retry_failed=True)
    assert cell_state(run_dir_for(c0, root)) == "done"
    lock = CellLock(lock_path(c0, root))
    assert lock.acquire()  # released by the store after training
    lock.release()


SWEEP = ("import json, sys; from bench.harness.config import load_suite; from bench.harness.sweep import sweep; "
         "from bench.run_folder import RunOptions; r = sweep(load_suite(sys.argv[1]), root=sys.argv[2], "
         "options=RunOptions(force=sys.argv[3] == 'force'), progress=False, tracker_factory=None); "
         "print(json.dumps(r['outcomes']))")


def _two_sweeps(suite_path, root, mode):
    slow = {"ITM_BENCH_SLOW": "train.after_optimizer_step:0.4"}  # cells long enough to overlap
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP, str(suite_path), str(root), mode], cwd=REPO,
                              env=env(**slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]


def _assert_whole(suite, root):
    for c in expand(suite):
        d = run_dir_for(c, root)
        assert cell_state(d) == "done" and json.loads((d / "result.json").read_text())["metrics"]
        assert (d / "ranks.npz").exists() and (d / "best.pt").exists()
    assert sorted(p.name for p in (Path(root) / suite.name).iterdir()) == sorted(c.id for c in expand(suite))


@pytest.mark.slow
def test_two_sweeps_at_once_plain_then_forced_train_each_cell_once_and_lose_nothing(tiny_data, tmp_path):
    suite_path = write_suite(tmp_path, tiny_data, seeds=(0, 1), epochs=1, steps=2)
    suite = load_suite(suite_path)
    root = tmp_path / "runs"
    for mode in ("plain", "force"):
        started = time.time()
        a, b = _two_sweeps(suite_path, root, mode)
        trained = [cid for o in (a, b) for cid, s in o.items() if s == "done"]
        assert sorted(trained) == sorted(c.id for c in expand(suite)), (mode, a, b)  # each once
        _assert_whole(suite, root)
        for c in expand(suite):  # every result is this round's
            assert (run_dir_for(c, root) / "done").stat().st_mtime >= started


# ----------------------------------------------------------------------------- signals and faults

def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_last_and_a_plain_sweep_finishes_the_cell_as_if_uninterrupted(tiny_data, tmp_path):
    suite_path = write_suite(tmp_path, tiny_data)
    suite = load_suite(suite_path)
    (cell,) = expand(suite)
    reference_root = tmp_path / "reference"
    sweep(suite, root=reference_root, progress=False, tracker_factory=None)
    reference = comparable(run_dir_for(cell, reference_root))

    root = tmp_path / "runs"
    run_dir = run_dir_for(cell, root)
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(suite_path), "--root", str(root)],
                            cwd=REPO, env=env(ITM_BENCH_SLOW="train.after_optimizer_step:1.0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run_dir / "last.pt.sha256", proc)  # the first step's checkpoint, mid epoch 1
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "sweep stopped by SIGTERM" in err, err[-3000:]
    info = cell_states([cell], root)[cell.id]
    assert info["state"] == "interrupted" and not (run_dir / "running").exists()
    assert json.loads((run_dir / "interrupted").read_text())["signal"] == "SIGTERM"
    assert ckpt.load(run_dir / "last.pt")["state"]["global_step"] < 4

    report = sweep(suite, root=root, progress=False, tracker_factory=None)  # a plain sweep resumes it
    assert report["selected"] == [cell.id] and cell_state(run_dir) == "done"
    assert comparable(run_dir) == reference


@pytest.mark.slow
def test_a_run_folder_turning_read_only_fails_that_cell_and_the_sweep_goes_on(tiny_data, tmp_path):
    suite_path = write_suite(tmp_path, tiny_data, seeds=(0, 1))
    suite = load_suite(suite_path)
    c0, c1 = topological_order(expand(suite))
    root = tmp_path / "runs"
    d0 = run_dir_for(c0, root)
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", str(suite_path), "--root", str(root)],
                            cwd=REPO, env=env(ITM_BENCH_SLOW="train.after_optimizer_step:0.5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(d0 / "last.pt.sha256", proc)
    bound = subprocess.run(["mount", "--bind", str(d0), str(d0)], capture_output=True, text=True)
    if bound.returncode != 0:
        proc.kill()
        proc.wait()
        pytest.skip(f"cannot bind-mount here: {bound.stderr.strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(d0)], capture_output=True, text=True)
        assert ro.returncode == 0, ro.stderr
        out, err = proc.communicate(timeout=300)
    finally:
        subprocess.run(["umount", "-l", str(d0)], check=False)
    assert f"cell {c0.id} failed: the run folder {d0} is not writable any more" in err, err[-3000:]
    assert "make the folder writable and sweep again" in err
    assert cell_state(run_dir_for(c1, root)) == "done"  # the other cell went on
    assert cell_states([c0], root)[c0.id]["state"] in ("interrupted", "failed")
    sweep(suite, root=root, progress=False, tracker_factory=None, retry_failed=True)  # writable again
    assert cell_state(d0) == "done"


def test_run_status_of_a_running_marker_follows_its_lock(tiny_data, tmp_path):
    (cell,) = expand(load_suite(write_suite(tmp_path, tiny_data)))
    root = tmp_path / "runs"
    d = run_dir_for(cell, root)
    d.mkdir(parents=True)
    (d / "running").write_text("{}")
    lock = CellLock(lock_path(cell, root))
    assert lock.acquire()
    try:
        assert run_status(cell, d)["state"] == "running"
        assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "locked"
    finally:
        lock.release()
    assert run_status(cell, d)["state"] == "interrupted"


@pytest.mark.slow
def test_a_forced_rerun_killed_mid_swap_loses_nothing(tiny_data, tmp_path):
    (cell,) = expand(load_suite(write_suite(tmp_path, tiny_data, epochs=1, steps=1)))
    root = tmp_path / "runs"
    assert run_cell_in_store(cell, root, tracker_factory=None)["state"] == "done"
    final = run_dir_for(cell, root)
    runner = ("import json, sys; from bench.harness.store import RunOptions, run_cell_in_store; "
              "from bench.spec import Cell; run_cell_in_store(Cell.from_dict(json.loads(sys.argv[1])), sys.argv[2], "
              "RunOptions(force=True), tracker_factory=None)")
    killed = subprocess.run([sys.executable, "-c", runner, json.dumps(cell.to_dict()), str(root)], cwd=REPO,
                            env=env(ITM_BENCH_FAULT="store.swap:1"), capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    old = final.with_name(final.name + ".old")
    (staging,) = final.parent.glob(final.name + ".rerun-*")
    assert not final.exists() and cell_state(old) == "done" and cell_state(staging) == "done"  # both whole
    new_result = (staging / "result.json").read_text()
    out = run_cell_in_store(cell, root, tracker_factory=None)  # the next process repairs the swap
    assert out["state"] == "done" and out["skipped"]
    assert (final / "result.json").read_text() == new_result
    assert sorted(p.name for p in final.parent.iterdir()) == [cell.id]


def test_wait_lock_waits_for_the_holder_then_trains(tiny_data, tmp_path):
    (cell,) = expand(load_suite(write_suite(tmp_path, tiny_data, epochs=1, steps=1)))
    root = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bench.harness.store import CellLock; l = CellLock(sys.argv[1]); "
        "assert l.acquire(); print('held', flush=True); time.sleep(1.5); "
        "open(sys.argv[2], 'w').close(); l.release(); time.sleep(1)"), str(lock_path(cell, root)),
        str(tmp_path / "released")], cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    seen = {}

    def train(c, work, tracker=None, anchor_checkpoint=None):
        from bench.train import run_cell

        seen["holder_done"] = (tmp_path / "released").exists()
        return run_cell(c, work, tracker=tracker, anchor_checkpoint=anchor_checkpoint)

    out = run_cell_in_store(cell, root, RunOptions(wait_lock=True), tracker_factory=None, train_fn=train)
    holder.wait()
    assert out["state"] == "done" and seen["holder_done"]
