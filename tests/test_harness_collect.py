"""collect / summarize / tables / figures on result files written here; ΔRSUM's reasons when it is missing."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.harness.cells import expand
from bench.harness.collect import collect, rsum_from_ranks, summarize, write_tables
from bench.harness.config import load_suite
from bench.harness.figures import make_figures
from bench.harness.store import run_dir_for, write_atomic, write_json_atomic
from bench.metrics import REPORT_KEYS, RESULT_KEYS

SUITE = {
    "name": "tc",
    # results are written by hand here: no data folder, so no fingerprint to compare (a data/synth-demo
    # left by `make demo` in the working tree must not make them stale)
    "datasets": [{"name": "f30k_precomp", "label": "f30k", "data_root": "/nonexistent/tc-data"}],
    "matchers": [{"name": "vse_infty"}],
    "strategies": [{"name": "baseline"}, {"name": "dbl", "label": "DBL abs", "params": {"loss": "abs", "scenario": "oss"}}],
    "seeds": [0, 1, 2],
    "scales": {"full": {"schedule": {"default": {"epochs": 2, "lr": 1e-3, "batch_size": 8}}}},
    "reference": [{"matcher": "vse_infty", "where": {"matcher": "VSE-infinity", "text_encoder": "BiGRU"}}],
}


def correlated_ranks(rng, n, p_base, p_new):
    """Paired ranks: a query is a hit (rank 0) for the baseline when u < p_base, for the new run when
    u < p_new, else rank 20 (a miss at every K); so E[ΔRSUM] = 100·3·(p_new − p_base) per direction."""
    u = rng.random(n)
    return np.where(u < p_new, 0, 20), np.where(u < p_base, 0, 20)


def write_result(root, cell, i2t_r1, rsum_shift=0.0, ranks=None):
    d = run_dir_for(cell, root)
    d.mkdir(parents=True)
    m = {"i2t_r1": i2t_r1, "i2t_r5": 80.0, "i2t_r10": 90.0, "t2i_r1": 40.0, "t2i_r5": 70.0, "t2i_r10": 80.0}
    m["rsum"] = sum(m.values()) + rsum_shift
    if ranks is not None:
        np.savez(d / "ranks.npz", **{"f30k_1k/i2t": ranks[0], "f30k_1k/t2i": ranks[1]})
    write_json_atomic(d / "result.json", {"metrics": {"f30k_1k": m}, "best_epoch": 1, "ranks_file": "ranks.npz",
                                          "dev_curve": [{"epoch": 0, "rsum": 100.0 + i2t_r1},
                                                        {"epoch": 1, "rsum": 150.0 + i2t_r1}],
                                          "cost": {"train_wall_s": 10.0 + i2t_r1, "steps": 4},
                                          # real data at full scale: the published rows stand beside these
                                          "provenance": {"data": {"kind": "real", "root": "tc-data"}},
                                          "eval_data": {"f30k_1k": {"images": 200, "captions": 1000, "folds": 1,
                                                                    "fold_images": 200, "captions_per_image": 5}}})
    (d / "done").touch()


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "tc.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    suite = load_suite(path)
    cells = {(c.strategy.label, c.seed): c for c in expand(suite)}
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    for seed, r1 in zip([0, 1, 2], [50.0, 52.0, 54.0]):
        new_i2t, base_i2t = correlated_ranks(rng, 200, 0.5, 0.6)
        new_t2i, base_t2i = correlated_ranks(rng, 1000, 0.4, 0.45)
        write_result(root, cells[("baseline", seed)], r1, ranks=(base_i2t, base_t2i))
        if seed == 0:
            write_result(root, cells[("DBL abs", 0)], 60.0, ranks=(new_i2t, new_t2i))
    failed = run_dir_for(cells[("DBL abs", 1)], root)
    failed.mkdir(parents=True)
    write_atomic(failed / "failed", "RuntimeError: loss became NaN\n")
    return suite, root, tmp_path


def test_collect_lists_every_cell_with_its_state(filled):
    suite, root, _ = filled
    df = collect(suite, root)
    assert len(df) == 6
    states = {(r.strategy, r.seed): r.state for r in df.itertuples()}
    assert states == {("baseline", 0): "done", ("baseline", 1): "done", ("baseline", 2): "done",
                      ("DBL abs", 0): "done", ("DBL abs", 1): "failed", ("DBL abs", 2): "pending"}
    failed = df[df["state"] == "failed"].iloc[0]
    assert "NaN" in failed["error"] and np.isnan(failed["rsum"])


def test_summary_mean_std_and_published_rows(filled):
    suite, root, _ = filled
    s = summarize(collect(suite, root), suite, n_boot=200)
    base = s[(s["strategy"] == "baseline") & ~s["published"]].iloc[0]
    assert base["i2t_r1_mean"] == pytest.approx(52.0) and base["i2t_r1_std"] == pytest.approx(2.0)
    assert base["rsum_mean"] == pytest.approx(52.0 + 80 + 90 + 40 + 70 + 80) and base["n_done"] == 3
    dbl = s[s["strategy"] == "DBL abs"].iloc[0]
    assert dbl["n_done"] == 1 and dbl["n_declared"] == 3 and np.isnan(dbl["rsum_std"])  # one seed: no sd
    assert "1 failed" in dbl["states"] and "1 pending" in dbl["states"]
    # one seed pair: the delta, no interval (the seed-to-seed variance is unknown)
    assert dbl["delta_seeds"] == 1 and np.isnan(dbl["ci_low"]) and np.isnan(dbl["ci_high"])
    df = collect(suite, root)
    files = {r.strategy: r.ranks_file for r in df[df["seed"] == 0].itertuples()}
    rsum = {k: rsum_from_ranks(*(lambda z: (z["f30k_1k/i2t"], z["f30k_1k/t2i"]))(np.load(f))) for k, f in files.items()}
    assert dbl["delta_rsum"] == pytest.approx(rsum["DBL abs"] - rsum["baseline"])  # from the ranks, seed 0
    pub = s[s["published"].astype(bool)]
    assert list(pub["protocol"]) == ["f30k_1k"] and pub.iloc[0]["rsum_mean"] == 498.1  # coco rows not asked
    assert "Chen et al." in pub.iloc[0]["source"] and pub.iloc[0]["matcher"] == "vse_infty"


def test_write_tables_and_figures(filled):
    suite, root, tmp = filled
    df = collect(suite, root)
    paths = write_tables(df, suite, tmp / "tables", n_boot=200)
    md = paths["md"].read_text()
    assert "52.0 ± 2.0" in md and "498.1" in md and "published: baseline" in md and "1/3 (1 failed, 1 pending)" in md
    assert "pub. [1]" in md and "[1] Chen et al., CVPR 2021" in md
    dbl_row = next(line for line in md.splitlines() if "| DBL abs |" in line)  # one seed: no "± 0.0"
    assert "| 60.0 | 80.0 |" in dbl_row and "±" not in dbl_row and "(n=1: no interval)" in dbl_row
    assert "ΔRSUM [95% CI]" in md
    assert "### f30k · Flickr30K 1K" in md and "Seeds needed: unknown" in md
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}" in tex and r"52.0 $\pm$ 2.0" in tex
    assert paths["csv"].stat().st_size > 0 and paths["cells_csv"].read_text().count("\n") == 7
    # the per-cell columns: each protocol's metrics as before (bench.metrics.REPORT_KEYS, in order, after the
    # protocol), then COCO 5K's ECCV Caption / CxC (NaN here: Flickr30K), then the data facts
    columns = paths["cells_csv"].read_text().splitlines()[0].split(",")
    at = columns.index("protocol") + 1
    assert columns[at:at + len(RESULT_KEYS)] == list(RESULT_KEYS) and RESULT_KEYS[:len(REPORT_KEYS)] == REPORT_KEYS
    figs = make_figures(df, summarize(df, suite, n_boot=50), suite.name, tmp / "figures")
    names = sorted(p.name for p in figs)
    assert names == sorted(f"{s}.{e}" for s in ("delta_rsum_f30k_1k", "rsum_by_strategy", "rsum_vs_cost", "dev_curves")
                           for e in ("png", "pdf"))
    assert all(p.stat().st_size > 1000 for p in figs)


def test_reconstructed_strategies_are_labelled_in_the_tables(filled, tmp_path):
    suite, root, tmp = filled
    assert "Reconstructed from the DBL paper" not in write_tables(collect(suite, root), suite, tmp / "t1",
                                                                   n_boot=50)["md"].read_text()
    spec = dict(SUITE, name="tc2", seeds=[0],
                strategies=[{"name": "baseline"}, {"name": "dml", "label": "DML one-sided",
                                                   "params": {"symmetric": False}}])
    path = tmp_path / "tc2.yaml"
    path.write_text(yaml.safe_dump(spec))
    suite2 = load_suite(path)
    runs = tmp_path / "runs2"
    for cell in expand(suite2):
        write_result(runs, cell, 50.0 if cell.strategy.name == "baseline" else 51.0)
    md = write_tables(collect(suite2, runs), suite2, tmp_path / "t2", n_boot=50)["md"].read_text()
    assert "Reconstructed from the DBL paper's description: dml" in md


@pytest.mark.slow
def test_end_to_end_with_the_real_trainer(tiny_data, tmp_path):
    """Suite -> cells -> bench.train.run_cell in the store (W&B offline) -> tables and figures."""
    from bench.harness.cells import topological_order
    from bench.harness.store import run_cell_in_store
    from bench.harness.tracking import offline_runs, read_offline_run

    raw = {"name": "e2e",
           "datasets": [{"name": "f30k_precomp", "label": "tiny", "data_root": str(tiny_data),
                         "vocab_root": str(tiny_data / "vocab")}],
           "matchers": [{"name": "vse_infty", "overrides": {"embed_size": 32, "word_dim": 16}}],
           "strategies": ["baseline", {"name": "kd", "label": "KD"}],
           "seeds": [0], "eval": {"batch_size": 64},
           "scales": {"smoke": {"schedule": {"default": {
               "epochs": 1, "batch_size": 32, "lr": 2e-3, "max_steps_per_epoch": 3, "log_every": 1,
               "oas_stage2": {"epochs": 1, "lr": 1e-3, "lr_schedule": "constant"}}}}},
           "scale": "smoke"}
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(raw))
    suite = load_suite(path)
    cells = topological_order(expand(suite))
    assert [c.strategy.name for c in cells] == ["baseline", "kd"]
    root = tmp_path / "runs"
    for c in cells:
        assert run_cell_in_store(c, root)["state"] == "done"
    df = collect(suite, root)
    assert list(df["state"]) == ["done", "done"] and df["rsum"].notna().all()
    summary = summarize(df, suite, n_boot=100)
    kd = summary[summary["strategy"] == "KD"].iloc[0]
    assert kd["delta_seeds"] == 1 and np.isnan(kd["ci_low"])  # one seed: no interval
    for c in cells:  # ranks.npz names the cell it belongs to
        with np.load(root / "e2e" / c.id / "ranks.npz") as z:
            assert str(z["cell_id"]) == c.id
    assert kd["delta_rsum"] == pytest.approx(kd["rsum_mean"] - summary[summary["strategy"] == "baseline"]
                                             .iloc[0]["rsum_mean"], abs=1e-6)
    write_tables(df, suite, tmp_path / "tables", n_boot=100)
    assert make_figures(df, summary, suite.name, tmp_path / "figures")
    runs = offline_runs(root)
    assert len(runs) == 2
    for run in runs:
        back = read_offline_run(run)
        cell_dir = next(p for p in run.parents if (p / "result.json").exists())
        result = json.loads((cell_dir / "result.json").read_text())
        # the W&B run holds the same cell config and the same final metrics as the cell's result.json
        assert back["config"]["id"] == result["cell_id"]
        assert back["config"]["strategy"]["name"] == result["cell"]["strategy"]["name"]
        assert back["config"]["schedule"] == result["cell"]["schedule"]
        for proto, metrics in result["metrics"].items():
            for key, value in metrics.items():
                assert back["summary"][f"test/{proto}/{key}"] == pytest.approx(value, abs=1e-9), (proto, key)
        dev = [h for h in back["history"] if "dev/rsum" in h]
        assert [h["dev/rsum"] for h in dev] == pytest.approx([d["rsum"] for d in result["dev_curve"]])
        assert any("train/loss/target" in h for h in back["history"])


# ----------------------------------------------------------------------------- verdicts in the tables

TWO_DATASETS = {
    "name": "tv",
    "datasets": [{"name": "f30k_precomp", "label": "f30k", "data_root": "/nonexistent/tv-data"},
                 {"name": "coco_precomp", "label": "coco", "data_root": "/nonexistent/tv-data"}],
    "matchers": [{"name": "vse_infty", "label": "VSE"}],
    "strategies": [{"name": "baseline"}, {"name": "dbl", "label": "DBL", "params": {"loss": "abs", "scenario": "oss"}},
                   {"name": "kd", "label": "KD"}],
    "seeds": [0, 1, 2],
    "scales": {"full": {"schedule": {"default": {"epochs": 2, "lr": 1e-3, "batch_size": 8}}}},
}


def _write_cell(root, cell, ranks_by_protocol, cell_id=None):
    """A done cell whose result.json agrees with its ranks.npz (which names ``cell_id``)."""
    d = run_dir_for(cell, root)
    d.mkdir(parents=True)
    metrics, arrays = {}, {"cell_id": np.array(cell_id or cell.id)}
    for p, (i2t, t2i) in ranks_by_protocol.items():
        arrays[f"{p}/i2t"], arrays[f"{p}/t2i"] = i2t, t2i
        m = {f"{d}_r{k}": 100 * float(np.mean(r < k)) for d, r in (("i2t", i2t), ("t2i", t2i)) for k in (1, 5, 10)}
        metrics[p] = m | {"rsum": rsum_from_ranks(i2t, t2i)}
    np.savez(d / "ranks.npz", **arrays)
    write_json_atomic(d / "result.json", {"metrics": metrics, "best_epoch": 0, "ranks_file": "ranks.npz",
                                          "cost": {"train_wall_s": 1.0, "steps": 2}})
    (d / "done").touch()
    return d


@pytest.fixture
def verdicts(tmp_path):
    """3 seeds; DBL beats the baseline by ~60 RSUM in every seed, KD is the baseline plus noise."""
    path = tmp_path / "tv.yaml"
    path.write_text(yaml.safe_dump(TWO_DATASETS))
    suite = load_suite(path)
    rng = np.random.default_rng(0)
    root = tmp_path / "runs"
    for c in expand(suite):
        n = 200 if c.dataset.name == "f30k_precomp" else 250
        gain = {"baseline": 0.0, "dbl": 0.1, "kd": 0.0}[c.strategy.name]
        ranks = {}
        for p in c.eval.protocols:
            u_i, u_t = np.random.default_rng([c.seed, n]).random((2, 5 * n))  # shared by the seed's runs
            skill = 0.5 + gain + rng.normal(0, 0.01)
            ranks[p] = (np.where(u_i[:n] < skill, 0, 20), np.where(u_t < skill - 0.1, 0, 20))
        _write_cell(root, c, ranks)
    return suite, root, tmp_path


def test_a_table_per_protocol_with_holm_markers_and_seeds_needed(verdicts):
    suite, root, tmp = verdicts
    df = collect(suite, root)
    summary = summarize(df, suite, n_boot=200)
    paths = write_tables(df, suite, tmp / "tables", n_boot=200, summary=summary)
    md = paths["md"].read_text()
    titles = [line for line in md.splitlines() if line.startswith("### ")]
    # results written without their data kind (as before it was recorded): the title says so
    assert titles == ["### f30k · Flickr30K 1K (the whole test split) · full scale, data kind not recorded",
                      "### coco · COCO 1K (testall in 5 folds, metrics averaged) · full scale, data kind not recorded",
                      "### coco · COCO 5K (the whole testall) · full scale, data kind not recorded"]
    assert md.count("Seeds needed: with the observed sd of paired per-seed ΔRSUM") == 3
    assert "Holm–Bonferroni" in md and "t(S−1)" in md
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| VSE |")}
    assert "†" in rows["DBL"] and "†" not in rows["KD"] and "| 1.00 |" in rows["DBL"]
    dbl = summary[(summary["strategy"] == "DBL") & (summary["protocol"] == "f30k_1k")].iloc[0]
    assert dbl["holm_5pct"] and dbl["delta_seeds"] == 3 and dbl["ci_low"] > 0
    assert set(json.loads(dbl["per_seed_deltas"])) == {"0", "1", "2"}
    assert dbl["delta_rsum"] == pytest.approx(np.mean(list(json.loads(dbl["per_seed_deltas"]).values())), abs=1e-3)
    kd = summary[(summary["strategy"] == "KD") & (summary["protocol"] == "coco_5k")].iloc[0]
    assert not kd["holm_5pct"] and kd["ci_low"] <= kd["delta_rsum"] <= kd["ci_high"]
    csv = pd.read_csv(paths["csv"])
    assert {"p_improve", "per_seed_deltas", "holm_5pct", "p_value", "delta_missing"} <= set(csv.columns)
    tex = paths["tex"].read_text()
    assert tex.count(r"\begin{table*}") == 3 and r"$^\dagger$" in tex


def test_a_baseline_without_usable_ranks_says_why(verdicts):
    """bad input: the baseline's ranks.npz is missing or belongs to another cell -> ΔRSUM says why."""
    suite, root, tmp = verdicts
    cells = {(c.dataset_label, c.strategy.name, c.seed): c for c in expand(suite)}
    missing = run_dir_for(cells[("f30k", "baseline", 0)], root) / "ranks.npz"
    missing.unlink()
    other = cells[("coco", "baseline", 0)]
    with np.load(run_dir_for(other, root) / "ranks.npz") as z:
        arrays = dict(z)
    arrays["cell_id"] = np.array("0123456789ab")  # another cell's ranks copied over this one's
    np.savez(run_dir_for(other, root) / "ranks.npz", **arrays)
    df = collect(suite, root)
    summary = summarize(df, suite, n_boot=100)
    f30k = summary[(summary["strategy"] == "DBL") & (summary["protocol"] == "f30k_1k")].iloc[0]
    assert f30k["delta_seeds"] == 2 and f"seed 0: baseline ranks file {missing} is missing" in f30k["delta_missing"]
    coco = summary[(summary["strategy"] == "KD") & (summary["protocol"] == "coco_5k")].iloc[0]
    assert f"belongs to cell 0123456789ab, not {other.id}" in coco["delta_missing"]
    md = write_tables(df, suite, tmp / "tables", n_boot=100, summary=summary)["md"].read_text()
    assert f"ΔRSUM of VSE / DBL: seed 0: baseline ranks file {missing} is missing." in md
    # with one baseline left, the cell itself says why there is no ΔRSUM
    for seed in (1, 2):
        (run_dir_for(cells[("f30k", "baseline", seed)], root) / "ranks.npz").unlink()
    md = write_tables(collect(suite, root), suite, tmp / "tables", n_boot=100)["md"].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| VSE | DBL |"))
    assert "– (seed 0: baseline ranks.npz missing; seed 1: baseline ranks.npz missing; " in row
