"""The result store: atomic results, done/failed/running states, skip, force, provenance."""

import hashlib
import json
import logging
import os

import numpy as np
import pytest

from bench.harness.store import (
    cell_state,
    data_fingerprint,
    load_result,
    provenance,
    run_cell_in_store,
    run_dir_for,
    write_json_atomic,
)
from bench.run_folder import RunOptions
from bench.spec import Cell

RECALL_K = (1, 5, 10)


def make_cell(strategy="baseline", seed=0, depends_on=(), cid=None) -> Cell:
    return Cell.from_dict({"id": cid or f"{strategy}{seed}".ljust(12, "0"), "suite": "t", "seed": seed,
            "dataset": {"name": "f30k"}, "dataset_label": "f30k", "matcher": {"name": "vse_infty"},
            "matcher_label": "vse_infty", "strategy": {"name": strategy, "label": strategy, "scenario": "none",
                                                        "params": {}},
            "schedule": {"epochs": 1}, "eval": {"protocols": ["f30k_1k"]}, "depends_on": list(depends_on)})


class RankTrainer:
    """A stand-in for bench.train.run_cell (the trainer is tested on its own): it 'evaluates' a random
    score matrix of 20 images x 100 captions, writes ranks.npz and best.pt as the contract says, and
    records how it was called."""

    def __init__(self, fail=False, status="done"):
        self.calls, self.fail, self.status = [], fail, status

    def __call__(self, cell, run_dir, tracker=None, anchor_checkpoint=None):
        self.calls.append({"run_dir": run_dir, "anchor": anchor_checkpoint})
        logging.getLogger("bench.train").info("epoch 0 done for %s", cell.id)
        if self.fail:
            raise RuntimeError("loss became NaN")
        if self.status != "done":
            return {"status": self.status}
        sims = np.random.default_rng(cell.seed).normal(size=(20, 100))
        order = np.argsort(-sims, axis=1)
        i2t = np.array([np.where((order[i] // 5) == i)[0].min() for i in range(20)])
        order_t = np.argsort(-sims.T, axis=1)
        t2i = np.array([np.where(order_t[c] == c // 5)[0][0] for c in range(100)])
        np.savez(run_dir / "ranks.npz", **{"f30k_1k/i2t": i2t, "f30k_1k/t2i": t2i})
        (run_dir / "best.pt").write_bytes(b"weights")  # with its digest, as bench.checkpoint.save writes it
        (run_dir / "best.pt.sha256").write_text(hashlib.sha256(b"weights").hexdigest())
        m = {f"i2t_r{k}": 100 * float((i2t < k).mean()) for k in RECALL_K}
        m |= {f"t2i_r{k}": 100 * float((t2i < k).mean()) for k in RECALL_K}
        m["rsum"] = sum(m.values())
        return {"status": "done", "metrics": {"f30k_1k": m}, "dev_curve": [{"epoch": 0, "rsum": m["rsum"]}],
                "best_epoch": 0, "cost": {"steps": 3, "train_wall_s": 0.1}, "ranks_file": "ranks.npz"}


def test_write_json_atomic_leaves_no_temporary(tmp_path):
    write_json_atomic(tmp_path / "r.json", {"a": np.float32(1.5), "b": np.arange(2)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1.5, "b": [0, 1]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_run_writes_result_done_config_log_and_skips_when_done(tmp_path):
    train = RankTrainer()
    cell = make_cell()
    out = run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=train)
    d = run_dir_for(cell, tmp_path)
    assert out["state"] == "done" and cell_state(d) == "done" and d == tmp_path / "t" / cell.id
    names = {p.name for p in d.iterdir()}
    assert {"config.yaml", "log.txt", "ranks.npz", "result.json", "done", "best.pt"} <= names
    assert "running" not in names and not any(n.endswith(".tmp") or ".tmp-" in n for n in names)
    result = load_result(d)
    assert result["cell_id"] == cell.id and result["metrics"]["f30k_1k"]["rsum"] > 0
    assert "epoch 0 done for" in (d / "log.txt").read_text()
    again = run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=train)
    assert again["skipped"] and len(train.calls) == 1 and again["result"] == result


def test_force_keeps_previous_result_until_new_one_is_complete(tmp_path):
    cell = make_cell()
    run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=RankTrainer())
    final = run_dir_for(cell, tmp_path)
    seen = {}

    class Checking(RankTrainer):
        def __call__(self, cell, run_dir, **kw):
            seen["old_done_during_rerun"] = cell_state(final) == "done"
            seen["run_dir"] = run_dir
            return super().__call__(cell.replace(seed=7), run_dir, **kw)

    (final / "result.json").write_text((final / "result.json").read_text().replace('"best_epoch": 0', '"best_epoch": -1'))
    out = run_cell_in_store(cell, tmp_path, RunOptions(force=True), tracker_factory=None, train_fn=Checking())
    assert seen["old_done_during_rerun"] and seen["run_dir"] != final
    assert out["state"] == "done" and load_result(final)["best_epoch"] == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [cell.id]


def test_failure_writes_failed_state_and_rerun_recovers(tmp_path):
    cell = make_cell()
    with pytest.raises(RuntimeError, match="NaN"):
        run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=RankTrainer(fail=True))
    d = run_dir_for(cell, tmp_path)
    assert cell_state(d) == "failed" and "RuntimeError: loss became NaN" in (d / "failed").read_text()
    assert "Traceback" in (d / "traceback.txt").read_text()
    out = run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=RankTrainer(fail=True), raise_errors=False)
    assert out["state"] == "failed" and "NaN" in out["error"]
    run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=RankTrainer())
    assert cell_state(d) == "done" and not (d / "failed").exists()


def test_interrupted_run_is_interrupted_and_states(tmp_path):
    cell = make_cell()
    d = run_dir_for(cell, tmp_path)
    assert cell_state(d) == "pending"
    out = run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=RankTrainer(status="interrupted"))
    assert out["state"] == "interrupted" and cell_state(d) == "interrupted" and load_result(d) is None
    (d / "running").write_text("{}")
    assert cell_state(d) == "running"


def test_oas_cell_needs_done_anchor_and_gets_its_best_checkpoint(tmp_path):
    base = make_cell()
    oas = make_cell("kd", depends_on=[base.id])
    with pytest.raises(RuntimeError, match=f"anchor cell {base.id} is not done"):
        run_cell_in_store(oas, tmp_path, tracker_factory=None, train_fn=RankTrainer())
    run_cell_in_store(base, tmp_path, tracker_factory=None, train_fn=RankTrainer())
    train = RankTrainer()
    run_cell_in_store(oas, tmp_path, tracker_factory=None, train_fn=train)
    assert train.calls[0]["anchor"] == run_dir_for(base, tmp_path) / "best.pt"


def test_done_run_of_same_cell_in_other_suite_is_reused(tmp_path):
    cell = make_cell()
    run_cell_in_store(cell, tmp_path, tracker_factory=None, train_fn=RankTrainer())
    train = RankTrainer()
    out = run_cell_in_store(cell.replace(suite="other"), tmp_path, tracker_factory=None, train_fn=train)
    assert out["skipped"] and not train.calls
    out = run_cell_in_store(cell.replace(suite="other"), tmp_path, tracker_factory=None, train_fn=train,
                            reuse_other_suites=False)
    assert not out["skipped"] and cell_state(tmp_path / "other" / cell.id) == "done"


def test_provenance_keys(tmp_path):
    p = provenance(make_cell(), wall_time_s=1.0)
    assert {"git", "packages", "python", "host", "device", "data_fingerprint", "seed", "wall_time_s"} <= set(p)
    assert set(p["packages"]) == {"torch", "transformers", "wandb", "numpy", "pandas", "submitit"}
    assert p["packages"]["numpy"] == np.__version__ and p["seed"] == 0
    assert len(p["git"]["commit"]) == 40 and isinstance(p["git"]["dirty"], bool)


def test_data_fingerprint_reads_edges_not_whole_files(tmp_path):
    f = tmp_path / "train_ims.npy"
    f.write_bytes(bytes(100_000))
    st = os.stat(f)
    a = data_fingerprint([tmp_path])
    with open(f, "r+b") as h:  # same size, same mtime, last byte changed
        h.seek(99_999)
        h.write(b"\x01")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    b = data_fingerprint([tmp_path])
    with open(f, "r+b") as h:  # a change in the middle is not seen (by design: cheap)
        h.seek(50_000)
        h.write(b"\x01")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert a != b and data_fingerprint([tmp_path]) == b and data_fingerprint([None]) is None
