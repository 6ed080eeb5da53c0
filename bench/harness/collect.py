"""Collect a suite's results into tables (Markdown, LaTeX, CSV).

``collect(suite, root)`` expands the suite and reads every cell's run folder, so cells that are
pending, running or failed appear as such (never silently dropped): one row per (cell, protocol).

``summarize`` aggregates over seeds: mean ± sample std (ddof = 1; 0 for a single seed) of i2t/t2i
R@1/5/10 and RSUM per (dataset, matcher, strategy) and protocol, ``n`` = seeds done / declared,
published reference rows from ``results/reference/published.csv``, and ΔRSUM against the same
matcher's baseline with a paired bootstrap 95% CI over queries:

    For query q let c(q) = #{K ∈ {1,5,10}: rank(q) < K}; RSUM = 100·(mean_img c_i2t + mean_cap c_t2i).
    Per seed s present in both runs, Δc_s = c_strategy,s − c_baseline,s. When captions are the 5 per
    image, an image and its 5 captions are resampled together (a cluster bootstrap): per image
    d(i) = mean_s [Δc_i2t,s(i) + (1/5)·Σ_{its captions} Δc_t2i,s], ΔRSUM = 100·mean_i d(i), and each of
    ``n_boot`` resamples draws N image indices with replacement (the same indices for both runs and
    every seed: paired). Otherwise images and captions are resampled independently. The CI is the
    2.5 / 97.5 percentiles; the seed of the resampling is fixed (0), so tables are reproducible.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness.cells import cell_recipe, describe, expand, scenario_of
from bench.harness.config import Suite, load_suite, recipe_label
from bench.harness.store import DEFAULT_ROOT, REPO_ROOT, failure_message, load_result, locate_run, run_status

RECALLS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
METRICS = RECALLS + ["rsum", "i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr"]
TABLE_METRICS = RECALLS + ["rsum"]
COST_KEYS = ["step_time_s", "samples_per_s", "train_wall_s", "cpu_hours", "gpu_hours", "peak_mem_mb",
             "forward_passes_per_step", "backward_passes_per_step", "steps"]
PUBLISHED_CSV = REPO_ROOT / "results" / "reference" / "published.csv"
TABLES_DIR = REPO_ROOT / "results" / "tables"
HEADER = {"i2t_r1": "i2t R@1", "i2t_r5": "i2t R@5", "i2t_r10": "i2t R@10", "t2i_r1": "t2i R@1",
          "t2i_r5": "t2i R@5", "t2i_r10": "t2i R@10", "rsum": "RSUM"}


def _as_suite(suite) -> Suite:
    return suite if isinstance(suite, Suite) else load_suite(suite)


def collect(suite, root: str | Path = DEFAULT_ROOT) -> pd.DataFrame:
    """One row per (cell, protocol) of ``suite`` (a name, path or Suite) with its state and metrics."""
    suite = _as_suite(suite)
    rows, left_out, fps = [], [], {}
    for cell in expand(suite):
        run_dir = locate_run(cell, root, fingerprints=fps)
        status = run_status(cell, run_dir, fps)  # stale (other data) and corrupt results are never read
        state = status["state"]
        result = load_result(run_dir) if state == "done" else None
        if state == "done" and result is None:  # result.json vanished or broke since run_status read it
            state, status["error"] = "corrupt", f"{Path(run_dir) / 'result.json'} does not parse"
        if state in ("stale", "corrupt"):
            left_out.append(f"{describe(cell)} ({state}: {status['error']})")
        base = {"suite": suite.name, "cell_id": cell["id"], "dataset": cell["dataset_label"],
                "matcher": cell["matcher_label"], "matcher_name": cell["matcher"]["name"],
                "strategy": cell["strategy"]["label"], "strategy_name": cell["strategy"]["name"],
                "scenario": cell["strategy"]["scenario"], "seed": cell["seed"], "state": state,
                "run_dir": str(run_dir), "name": describe(cell),
                "recipe": cell_recipe((result or {}).get("cell") or cell),  # as recorded when done
                "error": failure_message(run_dir) if state == "failed" else status.get("error")}
        cost = (result or {}).get("cost") or {}
        for k in COST_KEYS:
            base[f"cost_{k}"] = cost.get(k, math.nan)
        base["best_epoch"] = (result or {}).get("best_epoch", math.nan)
        base["dev_curve"] = (result or {}).get("dev_curve")
        base["ranks_file"] = str(run_dir / result.get("ranks_file", "ranks.npz")) if result else None
        for protocol in cell["eval"]["protocols"]:
            m = ((result or {}).get("metrics") or {}).get(protocol, {})
            rows.append(base | {"protocol": protocol} | {k: float(m.get(k, math.nan)) for k in METRICS})
    if left_out:
        warnings.warn(f"collect {suite.name}: {len(left_out)} cell(s) left out of the table: " + "; ".join(left_out),
                      stacklevel=2)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- bootstrap

def recall_hits(ranks: np.ndarray) -> np.ndarray:
    """c(q) = number of K ∈ {1, 5, 10} with rank(q) < K (0-based ranks), so RSUM = 100·Σ mean c."""
    r = np.asarray(ranks)
    return (r < 1).astype(np.int8) + (r < 5) + (r < 10)


def rsum_from_ranks(i2t: np.ndarray, t2i: np.ndarray) -> float:
    return float(100 * (recall_hits(i2t).mean() + recall_hits(t2i).mean()))


def paired_bootstrap_delta(pairs: list[tuple[dict, dict]], n_boot: int = 1000, seed: int = 0,
                           chunk: int = 100) -> tuple[float, float, float]:
    """(ΔRSUM, CI low, CI high) of ``strategy − baseline`` (module docstring).

    ``pairs``: one (strategy ranks, baseline ranks) per seed, each ``{"i2t": [N], "t2i": [M]}``.
    """
    d_i2t = np.mean([recall_hits(a["i2t"]) - recall_hits(b["i2t"]).astype(float) for a, b in pairs], axis=0)
    d_t2i = np.mean([recall_hits(a["t2i"]) - recall_hits(b["t2i"]).astype(float) for a, b in pairs], axis=0)
    n, m = len(d_i2t), len(d_t2i)
    point = float(100 * (d_i2t.mean() + d_t2i.mean()))
    rng = np.random.default_rng(seed)
    boots = []
    clustered = m % n == 0 and m > 0
    per_image = d_i2t + d_t2i.reshape(n, m // n).mean(axis=1) if clustered else None
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        if clustered:
            boots.append(100 * per_image[idx].mean(axis=1))
        else:
            jdx = rng.integers(0, m, size=(b, m))
            boots.append(100 * (d_i2t[idx].mean(axis=1) + d_t2i[jdx].mean(axis=1)))
    boots = np.concatenate(boots)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return point, float(lo), float(hi)


def _load_ranks(path: str | None, protocol: str) -> dict | None:
    if not path or not Path(path).exists():
        return None
    try:
        with np.load(path) as z:
            return {"i2t": z[f"{protocol}/i2t"], "t2i": z[f"{protocol}/t2i"]}
    except (OSError, KeyError, ValueError):
        return None


# ----------------------------------------------------------------------------- summary

def published_rows(suite: Suite, csv_path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """The reference rows the suite asks for, in the summary's long form (marked ``published``)."""
    refs = suite.spec.get("reference") or []
    if not refs or not Path(csv_path).exists():
        return pd.DataFrame()
    pub = pd.read_csv(csv_path, dtype=str)
    protocol_dataset = {p: d["label"] for d in suite.spec["datasets"] for p in d["protocols"]}
    m_label = {}
    for m in suite.spec["matchers"]:
        m_label.setdefault(m["name"], m["label"])
        m_label.setdefault(m["label"], m["label"])
    rows = []
    for ref in refs:
        sel = pub
        for col, val in ref["where"].items():
            sel = sel[sel[col] == val]
        for _, r in sel.iterrows():
            if r["protocol"] not in protocol_dataset:
                continue
            row = {"dataset": protocol_dataset[r["protocol"]], "matcher": m_label.get(ref["matcher"], ref["matcher"]),
                   "strategy": f"published: {r['strategy']}", "protocol": r["protocol"], "published": True,
                   "source": r["source"], "n_done": math.nan, "n_declared": math.nan}
            for k in TABLE_METRICS:
                row[f"{k}_mean"], row[f"{k}_std"] = float(r[k]), math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, suite=None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Long summary: one row per (dataset, matcher, strategy, protocol), published rows appended."""
    keys = ["dataset", "matcher", "strategy", "protocol"]
    done_mask = (df["state"] == "done").to_numpy()
    values = {k: df[k].to_numpy(dtype=float) for k in TABLE_METRICS + [f"cost_{c}" for c in COST_KEYS]}
    # done baseline runs by (dataset, matcher, protocol, seed) -> ranks file, for the paired deltas
    baseline_ranks = {}
    for ds, m, p, sd, sn, ok, rf in zip(df["dataset"], df["matcher"], df["protocol"], df["seed"],
                                        df["strategy_name"], done_mask, df["ranks_file"]):
        if sn == "baseline" and ok:
            baseline_ranks.setdefault((ds, m, p, sd), rf)
    col = {k: df[k].to_numpy() for k in ("strategy_name", "scenario", "state", "seed", "ranks_file")}
    out = []
    for key, idx in df.groupby(keys, sort=False).indices.items():
        done_idx = idx[done_mask[idx]]
        counts: dict[str, int] = {}
        for st in col["state"][idx]:
            counts[st] = counts.get(st, 0) + 1
        row = dict(zip(keys, key))
        row.update({"strategy_name": col["strategy_name"][idx[0]], "scenario": col["scenario"][idx[0]],
                    "published": False, "source": "this run", "n_done": len(done_idx), "n_declared": len(idx),
                    "states": ", ".join(f"{n} {s}" for s, n in counts.items() if s != "done")})
        for k in TABLE_METRICS:
            vals = values[k][done_idx]
            vals = vals[~np.isnan(vals)]
            row[f"{k}_mean"] = vals.mean() if len(vals) else math.nan
            row[f"{k}_std"] = vals.std(ddof=1) if len(vals) > 1 else (0.0 if len(vals) else math.nan)
        for c in COST_KEYS:
            vals = values[f"cost_{c}"][done_idx]
            row[f"cost_{c}"] = np.nanmean(vals) if len(vals) and not np.isnan(vals).all() else math.nan
        row["delta_rsum"] = row["ci_low"] = row["ci_high"] = math.nan
        row["delta_seeds"] = 0
        if row["strategy_name"] != "baseline":
            pairs = []
            ds, m, _, p = key
            for i in done_idx:
                base_file = baseline_ranks.get((ds, m, p, col["seed"][i]))
                if base_file is None:
                    continue
                ra, rb = _load_ranks(col["ranks_file"][i], p), _load_ranks(base_file, p)
                if ra is not None and rb is not None:
                    pairs.append((ra, rb))
            if pairs:
                row["delta_rsum"], row["ci_low"], row["ci_high"] = paired_bootstrap_delta(pairs, n_boot, seed)
                row["delta_seeds"] = len(pairs)
        out.append(row)
    summary = pd.DataFrame(out)
    if suite is not None:
        pub = published_rows(_as_suite(suite))
        if len(pub):
            summary = pd.concat([pub, summary], ignore_index=True)
    return summary


# ----------------------------------------------------------------------------- tables

def _fmt(mean, std, n=None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def _fmt_delta(r) -> str:
    if isinstance(r.get("delta_rsum"), float) and not math.isnan(r["delta_rsum"]):
        return f"{r['delta_rsum']:+.1f} [{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"
    return "–"


def wide_table(summary: pd.DataFrame, sources: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and string rows: dataset, matcher, strategy, n, then per protocol 6 recalls, RSUM, ΔRSUM.

    Published rows show ``pub. [k]``; their sources are appended to ``sources`` (k = position + 1)."""
    sources = [] if sources is None else sources
    protocols = list(dict.fromkeys(summary["protocol"]))
    header = ["dataset", "matcher", "strategy", "n"]
    for p in protocols:
        header += [f"{p} {HEADER[k]}" for k in TABLE_METRICS] + [f"{p} ΔRSUM [95% CI]"]
    rows = []
    for (ds, m, s), g in summary.groupby(["dataset", "matcher", "strategy"], sort=False):
        first = g.iloc[0]
        if first["published"]:
            if first["source"] not in sources:
                sources.append(first["source"])
            n = f"pub. [{sources.index(first['source']) + 1}]"
        else:
            n = f"{int(first['n_done'])}/{int(first['n_declared'])}"
            if first.get("states"):
                n += f" ({first['states']})"
        cells = [ds, m, s, n]
        for p in protocols:
            r = g[g["protocol"] == p]
            if not len(r):
                cells += ["–"] * (len(TABLE_METRICS) + 1)
                continue
            r = r.iloc[0]
            cells += [_fmt(r[f"{k}_mean"], r[f"{k}_std"]) for k in TABLE_METRICS] + [_fmt_delta(r)]
        rows.append(cells)
    return header, rows


def to_markdown(header, rows) -> str:
    esc = [[str(c).replace("|", "\\|") for c in row] for row in [header] + rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$"), ("∞", r"$\infty$"), ("–", "--")]:
        s = s.replace(a, b)
    return s


def to_latex(header, rows, caption: str = "") -> str:
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", r"\begin{tabular}{" + "l" * 4 + "r" * (len(header) - 4) + "}",
             r"\toprule", " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(str(c)) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(df: pd.DataFrame, suite, out_dir: str | Path = TABLES_DIR, n_boot: int = 1000) -> dict:
    """Write ``<out_dir>/<suite>.{md,tex,csv}`` (+ ``<suite>_cells.csv``, the per-cell rows)."""
    suite = _as_suite(suite)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(df, suite, n_boot=n_boot)
    sources: list[str] = []
    header, rows = wide_table(summary, sources)
    note = ("mean ± std over seeds (n = seeds done/declared); ΔRSUM vs the same matcher's baseline, "
            f"paired bootstrap over queries ({n_boot} resamples, 95% CI); 'published' rows from "
            "results/reference/published.csv.")
    if suite.spec.get("anchor_checkpoint"):  # OAS cells started from a released checkpoint, no baseline cell
        from bench.harness.cells import anchor_info

        from models.official import describe

        anchor = suite.spec["anchor_checkpoint"]
        note += (f" OAS anchor/teacher: {describe(anchor)} (sha256 {anchor_info(anchor)['sha256'][:12]}), not a "
                 "baseline cell.")
    for group, r in (suite.spec.get("recipes") or {}).items():  # which recipe versions made the cells
        if group == "oas_stage2" and any(scenario_of(e["name"], e["params"]) == "oas"
                                         for e in suite.spec["strategies"]):
            note += f" OAS stage 2: recipe {r['option']}@{r['version']} ({r['description']})."
    if suite.spec.get("recipes"):
        note += f" Recipes: {recipe_label(suite.spec['recipes'])}."
    paths = {"md": out_dir / f"{suite.name}.md", "tex": out_dir / f"{suite.name}.tex",
             "csv": out_dir / f"{suite.name}.csv", "cells_csv": out_dir / f"{suite.name}_cells.csv"}
    title = f"# Suite `{suite.name}`: {suite.spec.get('description', '')}\n\n"
    refs = "".join(f"[{i + 1}] {src}\n" for i, src in enumerate(sources))
    paths["md"].write_text(title + to_markdown(header, rows) + "\n" + note + "\n\n" + refs)
    paths["tex"].write_text(to_latex(header, rows, caption=f"{suite.name}: {note} " + "; ".join(
        f"[{i + 1}] {src}" for i, src in enumerate(sources))))
    summary.to_csv(paths["csv"], index=False)
    df.drop(columns=["dev_curve"], errors="ignore").to_csv(paths["cells_csv"], index=False)
    return paths


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.harness.collect SUITE [key=value ...] [--root R] [--tables T] [--figures F]``."""
    import argparse

    from bench.harness.figures import FIGURES_DIR, make_figures

    ap = argparse.ArgumentParser(description="Tables (md, tex, csv) and figures of a suite's results")
    ap.add_argument("suite", help="suite name (bench/suites/<name>.yaml) or path")
    ap.add_argument("overrides", nargs="*", help="key=value overrides, as for running the suite")
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="the result store (results/runs)")
    ap.add_argument("--tables", default=str(TABLES_DIR))
    ap.add_argument("--figures", default=str(FIGURES_DIR))
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    suite = load_suite(args.suite, args.overrides)
    df = collect(suite, args.root)
    paths = write_tables(df, suite, args.tables, n_boot=args.n_boot)
    figs = make_figures(df, summarize(df, suite, n_boot=args.n_boot), suite.name, args.figures)
    counts = df.drop_duplicates("cell_id")["state"].value_counts().to_dict()
    print(f"suite {suite.name}: cells {counts}")
    for p in list(paths.values()) + figs:
        print(f"  wrote {p}")


if __name__ == "__main__":
    main()
