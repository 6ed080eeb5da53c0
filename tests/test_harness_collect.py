"""collect / summarize / tables / figures on result files written here, and the paired bootstrap."""

import json

import numpy as np
import pytest
import yaml

from bench.harness import expand, load_suite
from bench.harness.collect import collect, paired_bootstrap_delta, rsum_from_ranks, summarize, write_tables
from bench.harness.figures import make_figures
from bench.harness.store import run_dir_for, write_atomic, write_json_atomic

SUITE = {
    "name": "tc",
    "datasets": [{"name": "f30k_precomp", "label": "f30k"}],
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
                                          "cost": {"train_wall_s": 10.0 + i2t_r1, "steps": 4}})
    (d / "done").touch()


@pytest.fixture
def filled(tmp_path):
    path = tmp_path / "tc.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    suite = load_suite(path)
    cells = {(c["strategy"]["label"], c["seed"]): c for c in expand(suite)}
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
    assert dbl["n_done"] == 1 and dbl["n_declared"] == 3 and dbl["rsum_std"] == 0.0
    assert "1 failed" in dbl["states"] and "1 pending" in dbl["states"]
    assert dbl["delta_seeds"] == 1 and dbl["ci_low"] < dbl["delta_rsum"] < dbl["ci_high"]
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
    assert "ΔRSUM [95% CI]" in md
    tex = paths["tex"].read_text()
    assert r"\begin{tabular}" in tex and r"52.0 $\pm$ 2.0" in tex
    assert paths["csv"].stat().st_size > 0 and paths["cells_csv"].read_text().count("\n") == 7
    figs = make_figures(df, summarize(df, suite, n_boot=50), suite.name, tmp / "figures")
    names = sorted(p.name for p in figs)
    assert names == sorted(f"{s}.{e}" for s in ("rsum_by_strategy", "rsum_vs_cost", "dev_curves") for e in ("png", "pdf"))
    assert all(p.stat().st_size > 1000 for p in figs)


def test_bootstrap_point_estimate_is_the_rsum_difference():
    rng = np.random.default_rng(1)
    a = {"i2t": rng.integers(0, 15, 100), "t2i": rng.integers(0, 15, 500)}
    b = {"i2t": rng.integers(0, 15, 100), "t2i": rng.integers(0, 15, 500)}
    point, lo, hi = paired_bootstrap_delta([(a, b)], n_boot=200)
    assert point == pytest.approx(rsum_from_ranks(a["i2t"], a["t2i"]) - rsum_from_ranks(b["i2t"], b["t2i"]))
    assert lo < point < hi
    # identical runs: a zero-width interval at zero
    assert paired_bootstrap_delta([(a, a)], n_boot=50) == (0.0, 0.0, 0.0)


def test_bootstrap_ci_covers_the_true_delta():
    """True ΔRSUM = 100·3·(0.6−0.5) + 100·3·(0.45−0.40) = 45; the 95% CI should cover it ~95% of the time."""
    rng = np.random.default_rng(2)
    covered, widths = 0, []
    for _ in range(40):
        pairs = []
        for _seed in range(2):
            ni, bi = correlated_ranks(rng, 300, 0.5, 0.6)
            nt, bt = correlated_ranks(rng, 1500, 0.4, 0.45)
            pairs.append(({"i2t": ni, "t2i": nt}, {"i2t": bi, "t2i": bt}))
        _, lo, hi = paired_bootstrap_delta(pairs, n_boot=400)
        covered += lo <= 45.0 <= hi
        widths.append(hi - lo)
    assert covered >= 34  # P(X >= 34) > 0.97 for X ~ Bin(40, 0.95)
    assert 5 < np.mean(widths) < 40


@pytest.mark.slow
def test_end_to_end_with_the_real_trainer(tiny_data, tmp_path):
    """Suite -> cells -> bench.train.run_cell in the store (W&B offline) -> tables and figures."""
    from bench.harness import topological_order
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
    assert [c["strategy"]["name"] for c in cells] == ["baseline", "kd"]
    root = tmp_path / "runs"
    for c in cells:
        assert run_cell_in_store(c, root)["state"] == "done"
    df = collect(suite, root)
    assert list(df["state"]) == ["done", "done"] and df["rsum"].notna().all()
    summary = summarize(df, suite, n_boot=100)
    kd = summary[summary["strategy"] == "KD"].iloc[0]
    assert kd["delta_seeds"] == 1 and kd["ci_low"] <= kd["delta_rsum"] <= kd["ci_high"]
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
