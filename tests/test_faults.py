"""Fault injection: a training process SIGKILLed at named points (bench/faults.py) and run again
finishes with metrics bitwise equal to an uninterrupted run; the store never holds a torn file;
corrupted checkpoints, full and failing disks and concurrent readers are handled."""

import errno
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench import checkpoint as ckpt
from bench.faults import ENV
from bench.harness.store import cell_state, run_cell_in_store, run_dir_for, write_json_atomic
from bench.run_folder import RunOptions
from bench.spec import Cell

REPO = Path(__file__).resolve().parents[1]
RUNNER = ("import json, sys; from bench.harness.store import run_cell_in_store; from bench.spec import Cell; "
          "run_cell_in_store(Cell.from_dict(json.loads(sys.argv[1])), sys.argv[2], tracker_factory=None)")


def make_cell(data, cid="faultcell0001", **sched) -> Cell:
    return Cell.from_dict({"id": cid, "suite": "faults", "seed": 0,
            "dataset": {"name": "f30k_precomp", "data_root": str(data), "vocab_root": str(data / "vocab")},
            "matcher": {"name": "vse_infty", "embed_size": 16, "word_dim": 8},
            "strategy": {"name": "baseline", "params": {}},
            "schedule": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 3,
                         "checkpoint_every": 1, **sched},
            "eval": {"dev_images": 1000, "batch_size": 64}})


def run_subprocess(cell, root, fault=None):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if fault:
        env[ENV] = fault
    return subprocess.run([sys.executable, "-c", RUNNER, json.dumps(cell.to_dict()), str(root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


def comparable(run_dir):
    r = json.loads((Path(run_dir) / "result.json").read_text())
    ranks = np.load(Path(run_dir) / "ranks.npz")
    return ({k: r[k] for k in ("metrics", "dev_curve", "best_epoch", "best_dev_rsum")},
            {k: ranks[k].tolist() for k in ranks.files})


def assert_store_consistent(root):
    """Every visible file of every run folder is whole: result.json parses (and `done` only next to a
    complete result), config.yaml and ranks.npz read."""
    for d in Path(root).glob("*/*"):
        if (d / "result.json").exists():
            result = json.loads((d / "result.json").read_text())
            assert result["status"] == "done" and result["metrics"]
        if (d / "done").exists():
            assert (d / "result.json").exists()
        if (d / "ranks.npz").exists():
            assert np.load(d / "ranks.npz").files
        if (d / "config.yaml").exists():
            import yaml

            assert yaml.safe_load((d / "config.yaml").read_text())["id"] == d.name


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """An uninterrupted run of the same cell, through the same subprocess entry."""
    root = tmp_path_factory.mktemp("reference")
    cell = make_cell(tiny_data)
    proc = run_subprocess(cell, root)
    assert proc.returncode == 0, proc.stderr
    return comparable(run_dir_for(cell, root))


# The cell makes 3 steps per epoch and checkpoints last.pt after steps 1 and 2 of an epoch
# (checkpoint_every=1), best.pt + last.pt at each epoch end. A hit count n means the n-th time the
# process that was started reaches the point; each run of a chain resumes from what the previous
# kill left. Every point is killed once, in three chains that together cover all of them.
CHAINS = {
    "training": [
        ("train.after_forward:2", "mid-step 2: forward done, no loss yet"),
        ("train.after_backward:3", "gradients of step 4 computed, weights not yet updated"),
        ("train.after_optimizer_step:2", "weights of step 5 updated, not checkpointed"),
        ("eval.dev:1", "mid dev evaluation at the end of epoch 1"),
        ("train.between_epochs:1", "after the last epoch's checkpoints, before the test evaluation"),
        ("eval.test:1", "mid final test evaluation"),
    ],
    "checkpoints": [
        ("checkpoint.before_rename:3", "last.pt of step 2: temp file written, not renamed"),
        ("checkpoint.before_digest:1", "last.pt of step 2 renamed, its .sha256 not written"),
        ("checkpoint.rotate:2", "epoch end: last.pt moved to last.prev.pt, its digest not yet moved"),
        ("checkpoint.before_rename:5", "last.pt of step 4: temp file written, not renamed"),
    ],
    "store": [
        ("store.before_result:1", "trained and tested, result.json not yet written"),
        ("store.before_rename:3", "result.json temp file written, not renamed (config.yaml=1, running=2)"),
        ("store.before_done:1", "result.json complete, `done` not yet written"),
    ],
}
ALL_POINTS = [(name, fault) for name, chain in CHAINS.items() for fault, _ in chain]


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(CHAINS))
def test_sigkill_at_every_point_then_rerun_is_bitwise_equal_and_never_torn(tiny_data, tmp_path, reference, chain):
    cell = make_cell(tiny_data)
    run_dir = run_dir_for(cell, tmp_path)
    previous = None
    for fault, where in CHAINS[chain]:
        killed = run_subprocess(cell, tmp_path, fault=fault)
        assert killed.returncode == -9, f"{fault} ({where}) was never reached\n{killed.stderr[-2000:]}"
        assert cell_state(run_dir) == "running" and not (run_dir / "done").exists()
        assert_store_consistent(tmp_path)
        if previous == "checkpoint.before_digest:1":  # this run refused last.pt by name, used the previous
            assert f"checkpoint {run_dir / 'last.pt'} has no digest file last.pt.sha256" in killed.stderr
            assert f"resuming from the previous checkpoint {run_dir / 'last.prev.pt'}" in killed.stderr
        previous = fault

    resumed = run_subprocess(cell, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert cell_state(run_dir) == "done" and not (run_dir / "running").exists()
    assert comparable(run_dir) == reference
    assert_store_consistent(tmp_path)
    ckpt.verify(run_dir / "last.pt")
    ckpt.verify(run_dir / "best.pt")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ITM_BENCH_FAULTS_EXHAUSTIVE"),
                    reason="set ITM_BENCH_FAULTS_EXHAUSTIVE=1: each point killed alone (about 2x the chains)")
@pytest.mark.parametrize("fault", [f for _, f in ALL_POINTS if f != "checkpoint.before_digest:1"]
                         + ["checkpoint.before_digest:2", "checkpoint.before_digest:3"])
def test_sigkill_at_one_point_then_rerun_is_bitwise_equal(tiny_data, tmp_path, reference, fault):
    cell = make_cell(tiny_data)
    run_dir = run_dir_for(cell, tmp_path)
    killed = run_subprocess(cell, tmp_path, fault=fault)
    assert killed.returncode == -9, f"{fault} was never reached\n{killed.stderr[-2000:]}"
    assert cell_state(run_dir) == "running" and not (run_dir / "done").exists()
    assert_store_consistent(tmp_path)
    resumed = run_subprocess(cell, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert cell_state(run_dir) == "done" and comparable(run_dir) == reference
    assert_store_consistent(tmp_path)


@pytest.mark.slow
def test_a_truncated_last_checkpoint_after_a_kill_falls_back_with_a_warning(tiny_data, tmp_path, reference):
    """A checkpoint whose bytes do not match its digest is refused by name and the previous one is
    used; the result is still bitwise equal."""
    cell = make_cell(tiny_data)
    assert run_subprocess(cell, tmp_path, fault="train.after_forward:5").returncode == -9
    last = run_dir_for(cell, tmp_path) / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])  # truncated on disk after the kill
    resumed = run_subprocess(cell, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"checkpoint {last} is corrupted or truncated" in resumed.stderr
    assert f"resuming from the previous checkpoint {last.with_name('last.prev.pt')}" in resumed.stderr
    assert comparable(last.parent) == reference


def test_both_checkpoints_corrupted_says_how_to_restart(tiny_data, tmp_path):
    cell = make_cell(tiny_data)
    run_dir = run_dir_for(cell, tmp_path)
    out = run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=_stop_after(2))
    assert out["state"] == "interrupted"
    for name in ("last.pt", "last.prev.pt"):
        (run_dir / name).write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ckpt.CheckpointError, match="last.prev.pt is corrupted or truncated"):
            run_cell_in_store(cell, tmp_path, tracker_factory=None)
    assert cell_state(run_dir) == "failed"


def _stop_after(steps):
    from bench.train import run_cell

    def train(cell, run_dir, tracker=None, anchor_checkpoint=None):
        return run_cell(cell, run_dir, tracker=tracker, anchor_checkpoint=anchor_checkpoint,
                        stop_after_steps=steps)
    return train


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 4 MiB tmpfs (needs root / CAP_SYS_ADMIN), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path, leave_bytes: int) -> None:
    """Fill the filesystem holding ``path`` until less than ``leave_bytes`` remain."""
    with open(path, "wb") as f:
        while os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize > leave_bytes:
            try:
                f.write(b"\0" * 4096)
                f.flush()
            except OSError:
                break


def test_a_full_disk_fails_the_cell_clearly_and_keeps_earlier_results(tiny_data, tiny_tmpfs):
    root = tiny_tmpfs / "runs"
    first = make_cell(tiny_data, cid="earliercell01", epochs=1, checkpoint_every=0)
    assert run_cell_in_store(first, root, tracker_factory=None)["state"] == "done"
    earlier = {p.name: p.read_bytes() for p in run_dir_for(first, root).iterdir() if p.is_file()}
    _fill(tiny_tmpfs / "filler", leave_bytes=48 * 1024)  # the small files fit, the next checkpoint (~100 KB) cannot

    second = make_cell(tiny_data, cid="fullcell00001", epochs=1)
    with pytest.raises(OSError) as info:
        run_cell_in_store(second, root, tracker_factory=None)
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device: cannot write" in str(info.value) and ".pt" in str(info.value)
    assert "previous" in str(info.value) and "unchanged" in str(info.value)
    assert cell_state(run_dir_for(second, root)) != "done"
    assert {p.name: p.read_bytes() for p in run_dir_for(first, root).iterdir() if p.is_file()} == earlier
    assert not list(run_dir_for(second, root).glob(".*tmp*"))  # no temporary left behind

    (tiny_tmpfs / "filler").unlink()  # space freed: the same command now finishes the cell
    assert run_cell_in_store(second, root, tracker_factory=None)["state"] == "done"


def test_an_io_error_writing_a_forced_rerun_keeps_the_previous_result(tiny_data, tmp_path, monkeypatch):
    cell = make_cell(tiny_data, cid="eiocell000001", epochs=1, checkpoint_every=0)
    assert run_cell_in_store(cell, tmp_path, tracker_factory=None)["state"] == "done"
    run_dir = run_dir_for(cell, tmp_path)
    before = (run_dir / "result.json").read_bytes()
    monkeypatch.setenv(ENV, "store.before_rename:3:eio")  # config.yaml=1, running=2, result.json=3
    out = run_cell_in_store(cell, tmp_path, RunOptions(force=True), tracker_factory=None, raise_errors=False)
    assert out["state"] == "failed"
    assert "Input/output error: cannot write" in out["error"] and "result.json" in out["error"]
    assert (run_dir / "result.json").read_bytes() == before and cell_state(run_dir) == "done"
    (staging,) = run_dir.parent.glob(run_dir.name + ".rerun-*")  # this process's own staging folder
    assert "cannot write" in (staging / "failed").read_text()


def test_collect_never_reads_a_partial_result_while_cells_write(tmp_path):
    """A writer rewrites a cell's result.json atomically (large, so a torn read would show) while
    ``collect`` runs in a loop: every read is a whole result (no JSON error, the metric it holds)."""
    import yaml

    from bench.harness.cells import expand
    from bench.harness.collect import collect
    from bench.harness.config import load_suite

    suite_yaml = tmp_path / "s.yaml"
    suite_yaml.write_text(yaml.safe_dump({
        "name": "s", "datasets": [{"name": "f30k_precomp", "data_root": "/data"}], "matchers": ["vse_infty"],
        "strategies": ["baseline"], "seeds": [0], "scales": {"full": {"schedule": {"default": {"epochs": 1, "lr": 1e-3, "batch_size": 8}}}}}))
    suite = load_suite(suite_yaml)
    (cell,) = expand(suite)
    root = tmp_path / "runs"
    run_dir = run_dir_for(cell, root)
    run_dir.mkdir(parents=True)

    def result(version):
        return {"status": "done", "metrics": {"f30k_1k": {"rsum": float(version)}}, "pad": "x" * 400_000}

    write_json_atomic(run_dir / "result.json", result(0))
    (run_dir / "done").touch()
    stop = threading.Event()
    written = []

    def writer():
        i = 1
        while not stop.is_set():
            write_json_atomic(run_dir / "result.json", result(i))
            written.append(i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    seen = set()
    try:
        for _ in range(30):
            df = collect(suite, root)  # a torn read raises JSONDecodeError here
            (rsum,) = df["rsum"].tolist()
            seen.add(rsum)
    finally:
        stop.set()
        t.join()
    assert len(written) > 3 and len(seen) > 1  # the reads really overlapped the writes
    assert all(float(v).is_integer() for v in seen)
