"""What a reader sees: tables and figures that say their scale and data, published rows only beside real
full-scale results, notes for small folds and saturated recalls, the ECCV Caption / CxC block, LaTeX that
compiles (``pdflatex`` where installed; ``REQUIRE_LATEX=1``, set by ``.ci/run``, makes its absence a failure),
and figures whose intervals are the verdict's, whose axes stay in RSUM's range and whose legends cover nothing.

Results are written here as a cell writes them (``result.json`` with provenance and test sizes, ``ranks.npz``)."""

import math
import os
import shutil
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml

from bench import eccv
from bench.harness import figures, latex
from bench.harness.cells import expand
from bench.harness.collect import collect, summarize, write_tables
from bench.harness.config import load_suite
from bench.harness.store import run_dir_for, write_json_atomic
from bench.metrics import ECCV_KEYS, ECCV_SIZE_KEY

matplotlib.use("Agg")

REFERENCE = [{"matcher": "vse_infty", "where": {"matcher": "VSE-infinity", "text_encoder": "BiGRU"}}]
STRATEGIES = [{"name": "baseline"}, {"name": "dbl", "label": "DBL abs", "params": {"loss": "abs", "scenario": "oss"}}]
FOLDS = {"f30k_1k": 1, "coco_1k": 5, "coco_5k": 1}  # COCO's two protocols read the same split (testall)


def _suite(tmp, name, scale, dataset, seeds):
    raw = {"name": name, "scale": scale, "seeds": list(seeds), "strategies": STRATEGIES, "reference": REFERENCE,
           "datasets": [{"name": dataset, "label": "scan" if scale == "full" else "synth-x",
                         "data_root": f"/nonexistent/{name}"}],
           "matchers": [{"name": "vse_infty", "label": "VSE∞"}],
           "scales": {scale: {"schedule": {"default": {"epochs": 2, "lr": 1e-3, "batch_size": 8}}}}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return load_suite(path)


def _fill(suite, root, kind, images, eccv_seeds=(), saturate=False, curve_spread=0.0):
    """One result per cell: ranks from a per-seed skill (DBL better), the data kind and test sizes recorded
    as the trainer records them; ECCV / CxC metrics on coco_5k for the seeds in ``eccv_seeds`` only (the
    others as results written before the metric set)."""
    for cell in expand(suite):
        d = run_dir_for(cell, root)
        d.mkdir(parents=True)
        seed, dbl = cell.seed, cell.strategy.name == "dbl"
        metrics, ranks, eval_data = {}, {}, {}
        for p in cell.eval.protocols:
            folds, n = FOLDS[p], images
            u_i, u_t = (np.random.default_rng([seed, k, len(p)]).random(m) for k, m in ((1, n), (2, 5 * n)))
            skill = 0.5 + 0.08 * dbl + 0.01 * seed
            i2t, t2i = np.where(u_i < skill, 0, 20), np.where(u_t < skill - 0.1, 0, np.where(u_t < 0.9, 6, 20))
            ranks[f"{p}/i2t"], ranks[f"{p}/t2i"] = i2t, t2i
            m = {f"{dirn}_r{k}": 100 * float(np.mean(r < k)) for dirn, r in (("i2t", i2t), ("t2i", t2i))
                 for k in (1, 5, 10)}
            if saturate:
                m["t2i_r10"] = 100.0
            m["rsum"] = sum(m.values())
            if p == "coco_5k" and seed in eccv_seeds:
                m.update({k: 40.0 + 5 * dbl + seed for k in ECCV_KEYS} | {ECCV_SIZE_KEY: float(n)})
            metrics[p] = m
            eval_data[p] = {"images": n, "captions": 5 * n, "folds": folds, "fold_images": n // folds,
                            "captions_per_image": 5}
        np.savez(d / "ranks.npz", **ranks)
        curve = [{"epoch": e, "rsum": 280.0 + 5 * e + 20 * dbl + curve_spread * (seed - 1)} for e in range(4)]
        write_json_atomic(d / "result.json", {
            "cell_id": cell.id, "metrics": metrics, "best_epoch": 3, "ranks_file": "ranks.npz", "dev_curve": curve,
            "cost": {"train_wall_s": 60.0 * (1 + dbl), "cpu_hours": 0.1 * (1 + dbl)},
            "provenance": {"data": {"kind": kind, "root": suite.spec["datasets"][0]["label"],
                                    **({"generator": {"preset": "x", "seed": 0, "version": 2}}
                                       if kind == "synthetic" else {})}},
            "eval_data": eval_data})
        (d / "done").touch()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """COCO on synthetic data at smoke scale: folds of 10 images, a saturated column, ECCV for 2 of 3 seeds."""
    tmp = tmp_path_factory.mktemp("smoke")
    suite = _suite(tmp, "sm", "smoke", "coco_precomp", range(3))
    _fill(suite, tmp / "runs", "synthetic", images=50, eccv_seeds=(0, 1), saturate=True, curve_spread=270.0)
    df = collect(suite, tmp / "runs")
    summary = summarize(df, suite, n_boot=100)
    return suite, df, summary, write_tables(df, suite, tmp / "tables", n_boot=100, summary=summary), tmp


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Flickr30K on real data at full scale (5 seeds), with a published DBL row beside the published baseline."""
    tmp = tmp_path_factory.mktemp("real")
    suite = _suite(tmp, "rl", "full", "f30k_precomp", range(5))
    _fill(suite, tmp / "runs", "real", images=1000)
    df = collect(suite, tmp / "runs")
    summary = summarize(df, suite, n_boot=100)
    pub = summary[summary["published"].astype(bool)].iloc[[0]].copy()
    pub["strategy"], pub["rsum_mean"] = "published: DBL abs", pub["rsum_mean"] + 8.0  # a published gain of +8.0
    summary = pd.concat([pub, summary], ignore_index=True)
    return suite, df, summary, write_tables(df, suite, tmp / "tables", n_boot=100, summary=summary), tmp


def test_a_smoke_table_says_smoke_and_synthetic_and_shows_no_published_row(smoke):
    _, _, _, paths, _ = smoke
    md, tex = paths["md"].read_text(), paths["tex"].read_text()
    titles = [line for line in md.splitlines() if line.startswith("### ")]
    assert len(titles) == 3 and all(t.endswith("· smoke scale, synthetic data") for t in titles), titles
    assert "*Data: synth-x (generated by bench.data.synth: preset x, seed 0) · 5 folds of 10 test images × 5 " \
           "captions*" in md
    assert "pub." not in md and "published: baseline" not in md and "498.1" not in md and "520.8" not in md
    assert md.count("Published rows (results/reference/published.csv) left out: they were measured on the real "
                    "datasets at full scale, this table on synthetic data at smoke scale.") == 2
    assert "Small test set: COCO 1K has 1,000 images per fold on the real data, here 10" in md
    assert "Small test set: COCO 5K has 5,000 images on the real data, here 50" in md
    assert "Saturated: t2i R@10 reaches 100.0 in some row" in md
    captions = [line for line in tex.splitlines() if line.startswith(r"\caption{")]
    assert len(captions) == 3 and all("smoke scale, synthetic data" in c and "synth-x" in c for c in captions)
    assert all(len(c) < 600 for c in captions)  # short: the method details go under the table
    assert "published" not in " ".join(captions) and "pub. [" not in tex


def test_the_eccv_block_says_which_results_lack_it_and_on_how_many_images(smoke):
    _, _, summary, paths, _ = smoke
    md = paths["md"].read_text()
    block = md.split("### synth-x · COCO 5K (the whole testall): ECCV Caption and CxC · smoke scale, synthetic data",
                     1)[1]
    header = next(line for line in block.splitlines() if line.startswith("| matcher"))
    assert [h.strip() for h in header.strip("|").split("|")][3:] == [eccv.HEADER[k] for k in ECCV_KEYS]
    dbl = next(line for line in block.splitlines() if "| DBL abs |" in line)
    assert "| 2/3 | 45.5 ± 0.7 |" in dbl  # seeds 0 and 1 hold the metrics: mean of 45 and 46
    assert "VSE∞ / DBL abs: 1 of 3 done results hold no ECCV Caption / CxC metrics" in block
    assert "On the first 50 of the 5,000 images of the COCO 5K test split" in block
    row = summary[(summary["strategy"] == "DBL abs") & (summary["protocol"] == "coco_5k")].iloc[0]
    assert row["eccv_n"] == 2 and row["eccv_map_at_r_i2t_mean"] == pytest.approx(45.5)
    csv = pd.read_csv(paths["csv"])
    assert {f"{k}_mean" for k in ECCV_KEYS} <= set(csv.columns)
    assert r"\label{tab:sm-synth-x-coco-5k-eccv}" in paths["tex"].read_text()


def test_a_real_full_scale_table_shows_the_published_rows_and_no_size_note(real):
    _, _, _, paths, _ = real
    md = paths["md"].read_text()
    assert "### scan · Flickr30K 1K (the whole test split) · full scale, real data" in md
    assert "*Data: scan · 1,000 test images × 5 captions*" in md
    assert "| VSE∞ | published: baseline | pub. [1] |" in md and "498.1" in md
    assert "left out" not in md and "Small test set" not in md and "Saturated" not in md


def test_latex_is_table_star_with_label_booktabs_and_the_best_in_bold(real, smoke):
    tex = real[3]["tex"].read_text()
    assert tex.startswith("% requires \\usepackage{booktabs}")
    assert tex.count(r"\begin{table*}") == 1 and r"\resizebox{\textwidth}{!}{%" in tex
    assert r"\label{tab:rl-scan-f30k-1k}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    rows = {line.split(" & ")[1]: line for line in tex.splitlines() if line.startswith("VSE")}
    assert r"\textbf{" in rows["DBL abs"] and r"\textbf{" not in rows["published: baseline"]
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{"))
    assert len(caption) < 600 and "Holm" not in caption  # the method details are the note under the table
    note = next(line for line in tex.splitlines() if line.startswith(r"\begin{minipage}"))
    assert "Holm--Bonferroni" in note and "Verdict" in note
    for t in (tex, smoke[3]["tex"].read_text()):
        assert latex.balance_problems(t) == []


def test_bold_marks_the_best_mean_and_the_rows_whose_interval_overlaps_it():
    values = [None,  # a published row: never bold
              {"R": (50.0, 1.0, 3)}, {"R": (49.0, 1.0, 3)},  # intervals (t(2) = 4.3) overlap: both bold
              {"R": (40.0, 0.1, 3)},  # far below: plain
              {"R": (49.5, math.nan, 1)},  # one seed: its value is its interval; inside the best's: bold
              {"R": (45.0, math.nan, 1)}]  # one seed below the best's interval: plain
    assert latex.best_cells(values, ["R"]) == {(1, "R"), (2, "R"), (4, "R")}
    assert latex.best_cells([{"R": (50.0, math.nan, 1)}, {"R": (50.0, math.nan, 1)}, {"R": (49.9, math.nan, 1)}],
                            ["R"]) == {(0, "R"), (1, "R")}  # one seed each: only exact ties


def test_the_tex_compiles_with_pdflatex(real, smoke, tmp_path):
    if not shutil.which("pdflatex"):
        if os.environ.get("REQUIRE_LATEX") == "1":
            pytest.fail("REQUIRE_LATEX=1 but pdflatex is not installed (apt-get install texlive-latex-base "
                        "texlive-latex-recommended)")
        pytest.skip("pdflatex not installed (CI installs it: .ci/run)")
    for name, paths in (("real", real[3]), ("smoke", smoke[3])):
        doc = tmp_path / f"{name}.tex"
        doc.write_text(latex.document(paths["tex"].read_text()))
        out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-3000:]
        assert (tmp_path / f"{name}.pdf").stat().st_size > 1000
        assert "Missing character" not in (tmp_path / f"{name}.log").read_text()


def _inside(inner, outer, tol=1.0) -> bool:
    return (inner.x0 >= outer.x0 - tol and inner.x1 <= outer.x1 + tol and inner.y0 >= outer.y0 - tol
            and inner.y1 <= outer.y1 + tol)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _unused_tick(text) -> bool:
    """A tick label outside its axis' view limits (kept by matplotlib, never drawn)."""
    for ax in text.figure.axes:
        for axis, labels, locs in ((ax.xaxis, ax.get_xticklabels(), ax.get_xticks()),
                                   (ax.yaxis, ax.get_yticklabels(), ax.get_yticks())):
            lo, hi = sorted(axis.get_view_interval())
            if any(text is lbl and not lo - 1e-9 <= loc <= hi + 1e-9 for lbl, loc in zip(labels, locs)):
                return True
    return False


def _check_layout(fig):
    """Every text inside the area saved (tight bounding box), no legend over an axes."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    saved = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()
             and not _unused_tick(t)]
    assert texts and all(_inside(t.get_window_extent(renderer), saved) for t in texts)
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for lg in legends:
        box = lg.get_window_extent(renderer)
        assert not any(_overlaps(box, ax.get_window_extent(renderer)) for ax in fig.axes), "a legend covers an axes"


def test_the_forest_plot_draws_the_verdicts_interval_and_the_published_gain_on_real_data_only(real, smoke):
    for (suite, _, summary, _, _), protocol, published in ((real, "f30k_1k", True), (smoke, "coco_1k", False)):
        dataset = summary["dataset"].iloc[-1]
        fig = figures.delta_forest(summary, suite.name, dataset, protocol)
        ax = fig.axes[0]
        row = summary[(summary["strategy"] == "DBL abs") & (summary["protocol"] == protocol)].iloc[0]
        bar = next(c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection))
        (x0, _), (x1, _) = bar.get_segments()[0]
        assert (x0, x1) == pytest.approx((row["ci_low"], row["ci_high"]))  # the table's interval (delta_stats)
        assert ax.get_yticklabels()[0].get_text() == "VSE∞ · DBL abs"
        diamonds = [line for line in ax.lines if line.get_marker() == "D"]
        assert len(diamonds) == (1 if published else 0)
        if published:
            assert diamonds[0].get_xdata()[0] == pytest.approx(8.0)
        title = ax.get_title(loc="left")
        assert ("full scale, real data" if published else "smoke scale, synthetic data") in title
        assert all(len(line) <= 8.0 * figures.CHARS_PER_INCH for line in title.splitlines())
        _check_layout(fig)
        matplotlib.pyplot.close(fig)


def test_dev_curves_show_every_seed_and_stay_in_rsums_range(smoke):
    suite, df, summary, _, _ = smoke
    fig = figures.dev_curves(df, suite.name, df["dataset"].iloc[0], "smoke scale, synthetic data")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    # seeds at 10..600 around a mean of ~300: a t-interval over 3 seeds spans about [-420, 1020]; the axis stays
    # within RSUM's range [0, 600]
    assert 0 <= low < high <= 600
    thin = [line for line in ax.lines if line.get_linewidth() < 1]
    bold = [line for line in ax.lines if line.get_linewidth() > 2]
    assert len(thin) == 6 and len(bold) == 2  # 3 seeds x 2 strategies, and their means
    assert not ax.collections  # 3 seeds: no band (a t-interval over 3 seeds would span the axis)
    assert {line.get_linestyle() for line in bold} == {"-", "--"}  # overlapping means stay apart
    _check_layout(fig)
    matplotlib.pyplot.close(fig)


def test_every_figure_states_its_data_and_lays_out_cleanly(smoke, real, tmp_path):
    for suite, df, summary, _, _ in (smoke, real):
        paths = figures.make_figures(df, summary, suite.name, tmp_path)
        assert sorted(p.name for p in paths if p.suffix == ".png") == sorted(
            [f"delta_rsum_{p}.png" for p in dict.fromkeys(summary["protocol"])]
            + ["dev_curves.png", "rsum_by_strategy.png", "rsum_vs_cost.png"])
    suite, df, summary, _, _ = smoke
    for fig in (figures.rsum_by_strategy(summary, suite.name, "synth-x"),
                figures.rsum_vs_cost(summary, suite.name, "synth-x")):
        words = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
        assert "smoke scale, synthetic data" in words and "synth-x" in words and "COCO 1K" in words
        assert "coco_1k" not in words  # protocols by their human names
        _check_layout(fig)
        matplotlib.pyplot.close(fig)
