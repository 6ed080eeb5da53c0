"""Collect a suite's results into tables (Markdown, LaTeX, CSV).

``collect(suite, root)`` expands the suite and reads every cell's run folder, so cells that are
pending, running or failed appear as such (never silently dropped): one row per (cell, protocol).

``summarize`` aggregates over seeds: mean ± sample std (ddof = 1; none for a single seed) of
i2t/t2i R@1/5/10 and RSUM per (dataset, matcher, strategy) and protocol, ``n`` = seeds done /
declared, published reference rows from ``results/reference/published.csv``, and ΔRSUM against the
same matcher's baseline from :mod:`bench.harness.stats`: an interval over seeds *and* test queries
(an image with its captions resampled together), P(X > baseline) over seed pairs, per-seed deltas,
and a Holm–Bonferroni marker across the strategies sharing a baseline. A ΔRSUM that cannot be
computed says why (baseline not done, its ``ranks.npz`` missing, unreadable or another cell's).

``write_tables`` prints one table per (dataset, protocol), as papers do, each with a "seeds
needed" line; the note under them says what every number is. Each table's title says its scale and
data kind and the line under it its data root and test sizes (:mod:`bench.harness.table_text`, read
from the results); published rows stand beside real full-scale results only; COCO 5K gets a second
block with ECCV Caption and CxC (:mod:`bench.eccv`). The LaTeX file holds one ``table*`` per block
(:mod:`bench.harness.latex`).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import models
import strategies
from bench import eccv
from bench.atomic import atomic_write_bytes
from bench.harness import latex, stats, table_text
from bench.harness.cells import cell_recipe, describe, expand, scenario_of
from bench.harness.config import Suite, load_suite, recipe_label
from bench.harness.published import read_published
from bench.harness.stats import recall_hits, rsum_from_ranks  # noqa: F401 - re-exported
from bench.harness.store import (
    DEFAULT_ROOT,
    REPO_ROOT,
    failure_message,
    load_result,
    locate_run,
    mark_mixed_code,
    run_status,
)
from bench.metrics import ECCV_KEYS, ECCV_SIZE_KEY, RECALL_KEYS, REPORT_KEYS, RESULT_KEYS
from bench.protocols import PROTOCOLS
from bench.spec import Cell

RECALLS = list(RECALL_KEYS)
METRICS = list(REPORT_KEYS)
TABLE_METRICS = RECALLS + ["rsum"]
EXTRA_METRICS = [*ECCV_KEYS, ECCV_SIZE_KEY]  # coco_5k's ECCV Caption and CxC (absent from older results: NaN)
COST_KEYS = ["step_time_s", "samples_per_s", "train_wall_s", "cpu_hours", "gpu_hours", "peak_mem_mb",
             "forward_passes_per_step", "backward_passes_per_step", "steps"]
PUBLISHED_CSV = REPO_ROOT / "results" / "reference" / "published.csv"
TABLES_DIR = REPO_ROOT / "results" / "tables"
HEADER = {"i2t_r1": "i2t R@1", "i2t_r5": "i2t R@5", "i2t_r10": "i2t R@10", "t2i_r1": "t2i R@1",
          "t2i_r5": "t2i R@5", "t2i_r10": "t2i R@10", "rsum": "RSUM"}


class CollectError(ValueError):
    """A table that cannot be made as asked (the message names the file, row or option and the fix)."""


def _as_suite(suite) -> Suite:
    return suite if isinstance(suite, Suite) else load_suite(suite)


def run_variant(result: dict | None, cell: Cell) -> str:
    """The row's variant suffix (e.g. ' [bf16]', ' [tf32, compiled]'; '' for fp32 eager): what the result
    recorded it ran with (``run_mode``), else what the cell asks for."""
    from bench.precision import variant_label

    mode = (result or {}).get("run_mode")
    if mode:
        return variant_label(mode["precision"], mode["compile"])
    sched = cell.schedule
    return variant_label("bf16" if sched.amp and sched.precision == "fp32" else sched.precision, sched.compile)


def recorded_cell(result: dict | None, cell: Cell) -> Cell:
    """The cell as its ``result.json`` recorded it (its recipes when it was made), else ``cell``."""
    try:
        return Cell.from_dict((result or {})["cell"])
    except (KeyError, TypeError, ValueError):
        return cell


def collect(suite, root: str | Path = DEFAULT_ROOT, pool_mixed_code: bool = False) -> pd.DataFrame:
    """One row per (cell, protocol) of ``suite`` (a name, path or Suite) with its state and metrics.

    Every done row names the code that made it (``commit``, ``code``: the training-code fingerprint).
    Done cells made by other training code than the rest are ``mixed-code`` and left out of the means
    (:func:`bench.harness.store.mark_mixed_code`), unless ``pool_mixed_code`` (then the table lists every
    version it pools)."""
    suite = _as_suite(suite)
    rows, left_out, fps = [], [], {}
    cells = expand(suite)
    statuses = {}
    for cell in cells:
        run_dir = locate_run(cell, root, fingerprints=fps)
        statuses[cell.id] = (run_dir, run_status(cell, run_dir, fps))  # stale/corrupt results are never read
    if not pool_mixed_code:
        mark_mixed_code({cid: st for cid, (_, st) in statuses.items()})
    for cell in cells:
        run_dir, status = statuses[cell.id]
        state = status["state"]
        result = load_result(run_dir) if state == "done" else None
        if state == "done" and result is None:  # result.json vanished or broke since run_status read it
            state, status["error"] = "corrupt", f"{Path(run_dir) / 'result.json'} does not parse"
        if state in ("stale", "corrupt", "mixed-code", "blocked", "unidentified"):
            left_out.append(f"{describe(cell)} ({state}: {status['error']})")
        base = {"suite": suite.name, "cell_id": cell.id, "dataset": cell.dataset_label,
                "matcher": cell.matcher_label + run_variant(result, cell), "matcher_name": cell.matcher.name,
                "strategy": cell.strategy.label, "strategy_name": cell.strategy.name,
                "scenario": cell.strategy.scenario, "seed": cell.seed, "state": state,
                "run_dir": str(run_dir), "name": describe(cell),
                "recipe": cell_recipe(recorded_cell(result, cell)),  # as recorded when done
                "error": failure_message(run_dir) if state == "failed" else status.get("error"),
                "commit": status.get("commit"), "code": status.get("code"), "unverified": status.get("unverified")}
        cost = (result or {}).get("cost") or {}
        for k in COST_KEYS:
            base[f"cost_{k}"] = cost.get(k, math.nan)
        base["best_epoch"] = (result or {}).get("best_epoch", math.nan)
        base["dev_curve"] = (result or {}).get("dev_curve")
        base["ranks_file"] = str(run_dir / result.get("ranks_file", "ranks.npz")) if result else None
        for protocol in cell.eval.protocols:
            m = ((result or {}).get("metrics") or {}).get(protocol, {})
            rows.append(base | {"protocol": protocol} | {k: float(m.get(k, math.nan)) for k in RESULT_KEYS}
                        | table_text.data_columns(result, cell, protocol))
    if left_out:
        warnings.warn(f"collect {suite.name}: {len(left_out)} cell(s) left out of the table: " + "; ".join(left_out),
                      stacklevel=2)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- ranks

def _load_ranks(path: str | None, protocol: str, cell_id: str | None = None) -> tuple[dict | None, str]:
    """(ranks, "") or (None, why they cannot be used): missing, unreadable, another cell's, no protocol.

    ``ranks.npz`` carries the id of the cell that wrote it (``cell_id``); a file naming another cell
    is refused (files written before the id was stored are taken as they are)."""
    if not path:
        return None, "no result.json naming its ranks file"
    if not Path(path).exists():
        return None, f"ranks file {path} is missing"
    try:
        with np.load(path) as z:
            owner = str(z["cell_id"]) if "cell_id" in z.files else None
            if owner is not None and cell_id is not None and owner != cell_id:
                return None, f"ranks file {path} belongs to cell {owner}, not {cell_id}"
            if f"{protocol}/i2t" not in z.files or f"{protocol}/t2i" not in z.files:
                return None, f"ranks file {path} has no {protocol} ranks (keys: {', '.join(z.files)})"
            return {"i2t": z[f"{protocol}/i2t"], "t2i": z[f"{protocol}/t2i"]}, ""
    except (OSError, KeyError, ValueError, EOFError) as e:
        return None, f"ranks file {path} is unreadable ({type(e).__name__}: {e})"


def _short_reason(why: str) -> str:
    for pattern, short in (("belongs to cell", "ranks.npz of another cell"), ("is missing", "ranks.npz missing"),
                           ("unreadable", "ranks.npz unreadable"), ("has no", "no ranks for this protocol"),
                           ("no result.json", "no ranks file"), ("not done", "not done")):
        if pattern in why:
            return short
    return why


# ----------------------------------------------------------------------------- summary

def published_rows(suite: Suite, csv_path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """The reference rows the suite asks for, in the summary's long form (marked ``published``)."""
    refs = suite.spec.get("reference") or []
    if not refs or not Path(csv_path).exists():
        return pd.DataFrame()
    pub = read_published(csv_path)  # every row checked first: one line naming file, line, column, value
    protocol_dataset = {p: d["label"] for d in suite.spec["datasets"] for p in d["protocols"]}
    m_label = {}
    for m in suite.spec["matchers"]:
        m_label.setdefault(m["name"], m["label"])
        m_label.setdefault(m["label"], m["label"])
    rows = []
    for i, ref in enumerate(refs):
        where = f"{suite.path}: reference[{i}] (matcher {ref['matcher']!r}, where {ref['where']})"
        if ref["matcher"] not in m_label and ref["matcher"] in models.available():
            continue  # a row for a matcher this suite (at this scale) does not train: not shown
        if ref["matcher"] not in m_label:
            raise CollectError(f"{where}: matcher {ref['matcher']!r} is not a matcher of this suite (its matchers: "
                               f"{', '.join(sorted(set(m_label)))}); use one of their names or labels")
        sel = pub
        for col, val in ref["where"].items():
            if col not in pub.columns:
                raise CollectError(f"{where}: {csv_path} has no column {col!r} (columns: {', '.join(pub.columns)}); "
                                   "fix the key under where:")
            sel = sel[sel[col] == str(val)]
        if not len(sel):
            raise CollectError(f"{where}: no row of {csv_path} matches; fix the values under where: (e.g. "
                               + "; ".join(f"{c}: {sorted(pub[c].dropna().unique())[:6]}" for c in ref["where"]
                                           if c in pub.columns) + ")")
        if not set(sel["protocol"]) & set(protocol_dataset):
            warnings.warn(f"{where}: the {len(sel)} matching row(s) of {csv_path} are for protocol(s) "
                          f"{', '.join(sorted(set(sel['protocol'])))}, none of this suite's "
                          f"({', '.join(sorted(protocol_dataset))}): not shown", stacklevel=2)
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


DELTA_COLUMNS = ["delta_rsum", "ci_low", "ci_high", "delta_seeds", "delta_se", "delta_df", "seed_sd_delta",
                 "query_se_delta", "p_value", "holm_5pct", "p_improve", "per_seed_deltas", "delta_missing", "delta_why"]


def _paired_delta(row: dict, key, idx, col, baseline, n_boot: int, seed: int) -> None:
    """Fill ``row``'s ΔRSUM columns (``DELTA_COLUMNS``) from the done seeds ``idx`` and their baselines."""
    ds, m, _, p = key
    pairs, seeds, why, short = [], [], [], []
    for i in idx:
        sd = col["seed"][i]
        if col["state"][i] != "done":
            continue
        base = baseline.get((ds, m, p, sd))
        if base is None:
            has_baseline = (ds, m, p) in baseline.get("declared", set())
            why.append(f"seed {sd}: baseline not done" if has_baseline else "no baseline cell in this suite")
            short.append(why[-1])
            continue
        ra, wa = _load_ranks(col["ranks_file"][i], p, col["cell_id"][i])
        rb, wb = _load_ranks(base[0], p, base[1])
        if ra is None or rb is None:
            why += [f"seed {sd}: {who} {w}" for who, w in (("this run's", wa), ("baseline", wb)) if w]
            short += [f"seed {sd}: {who} {_short_reason(w)}" for who, w in (("this run's", wa), ("baseline", wb)) if w]
            continue
        pairs.append((ra, rb))
        seeds.append(sd)
    row["delta_missing"], row["delta_why"] = "; ".join(dict.fromkeys(why)), "; ".join(dict.fromkeys(short))
    if not pairs:
        return
    try:
        r = stats.delta_stats(pairs, n_boot, seed)
    except ValueError as e:
        row["delta_missing"] = row["delta_why"] = "; ".join(why + [str(e)])
        return
    row.update({"delta_rsum": r.delta, "ci_low": r.low, "ci_high": r.high, "delta_seeds": r.n, "delta_se": r.se,
                "delta_df": r.df, "seed_sd_delta": r.seed_sd, "query_se_delta": r.query_se, "p_value": r.p_value,
                "p_improve": r.p_improve,
                "per_seed_deltas": json.dumps({str(s): round(d, 4) for s, d in zip(seeds, r.per_seed)})})


def summarize(df: pd.DataFrame, suite=None, n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Long summary: one row per (dataset, matcher, strategy, protocol), published rows appended.

    Per metric ``<k>_mean``/``<k>_std`` (sample sd, NaN with one seed); ``rsum_ci_low/high``: the 95%
    t-interval of the mean RSUM over seeds (figures); ΔRSUM against the same matcher's baseline from
    :mod:`bench.harness.stats` (``DELTA_COLUMNS``), ``holm_5pct`` within each (dataset, matcher, protocol).
    """
    keys = ["dataset", "matcher", "strategy", "protocol"]
    done_mask = (df["state"] == "done").to_numpy()
    extra = [k for k in EXTRA_METRICS if k in df]
    values = {k: df[k].to_numpy(dtype=float) for k in TABLE_METRICS + extra + [f"cost_{c}" for c in COST_KEYS]}
    # done baseline runs by (dataset, matcher, protocol, seed) -> (ranks file, cell id), for the paired deltas
    baseline_ranks = {}
    for ds, m, p, sd, sn, ok, rf, cid in zip(df["dataset"], df["matcher"], df["protocol"], df["seed"],
                                             df["strategy_name"], done_mask, df["ranks_file"], df["cell_id"]):
        if sn == "baseline":
            baseline_ranks.setdefault("declared", set()).add((ds, m, p))
            if ok:
                baseline_ranks.setdefault((ds, m, p, sd), (rf, cid))
    col = {k: df[k].to_numpy() for k in ("strategy_name", "scenario", "state", "seed", "ranks_file", "cell_id")}
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
        if "unverified" in df:  # done, but the data it was made from could not be found to compare
            unverified = sum(1 for i in done_idx if isinstance(df["unverified"].iat[i], str))
            if unverified:
                row["states"] = ", ".join(x for x in (row["states"], f"{unverified} unverified") if x)
        if "code" in df:
            row["code_versions"] = "; ".join(dict.fromkeys(
                _code_label(df["commit"].iat[i], df["code"].iat[i]) for i in done_idx))
        for k in TABLE_METRICS + extra:
            vals = values[k][done_idx]
            vals = vals[~np.isnan(vals)]
            row[f"{k}_mean"] = vals.mean() if len(vals) else math.nan
            row[f"{k}_std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
            if k == "rsum":
                _, row["rsum_ci_low"], row["rsum_ci_high"] = stats.mean_interval(vals)
            if k == ECCV_SIZE_KEY:
                row["eccv_n"] = len(vals)  # seeds whose result holds the ECCV / CxC metrics
        row.update(table_text.summary_columns(df.iloc[done_idx]))
        for c in COST_KEYS:
            vals = values[f"cost_{c}"][done_idx]
            row[f"cost_{c}"] = np.nanmean(vals) if len(vals) and not np.isnan(vals).all() else math.nan
        row.update({c: math.nan for c in DELTA_COLUMNS})
        row.update({"delta_seeds": 0, "holm_5pct": False, "per_seed_deltas": "", "delta_missing": "", "delta_why": ""})
        if row["strategy_name"] != "baseline":
            _paired_delta(row, key, idx, col, baseline_ranks, n_boot, seed)
        out.append(row)
    summary = pd.DataFrame(out)
    if len(summary):
        for _, g in summary[summary["strategy_name"] != "baseline"].groupby(["dataset", "matcher", "protocol"],
                                                                            sort=False):
            summary.loc[g.index, "holm_5pct"] = stats.holm(g["p_value"].to_numpy(dtype=float))
    if suite is not None:
        pub = published_rows(_as_suite(suite))
        if len(pub):
            summary = pd.concat([pub, summary], ignore_index=True)
    return summary


# ----------------------------------------------------------------------------- tables

PROTOCOL_TITLES = {name: p.long_title for name, p in PROTOCOLS.items()}  # bench.protocols names them
BLOCK_HEADER = ["matcher", "strategy", "n"] + [HEADER[k] for k in TABLE_METRICS] + ["ΔRSUM [95% CI]", "P(> base)"]


def _code_label(commit, code) -> str:
    """``commit <10 hex> / training code <12 hex>`` of one result (``not recorded`` for older results)."""
    commit = commit if isinstance(commit, str) and commit else None
    code = code if isinstance(code, str) and code else None
    return (f"commit {commit[:10] if commit else '?'} / training code {code[:12]}" if code
            else "training code not recorded (a result written before the store kept it)")


def code_note(df: pd.DataFrame) -> str:
    """The code versions a table pools, counted by training code (commits that changed no training code make one
    version, as they do for ``mixed-code``): one sentence for one version, else every row with its version."""
    done = df[df["state"] == "done"].drop_duplicates("cell_id") if len(df) else df
    if not len(done) or "code" not in done:
        return ""
    labels = [_code_label(c, f) for c, f in zip(done["commit"], done["code"])]
    codes = list(dict.fromkeys(f if isinstance(f, str) and f else None for f in done["code"]))
    if len(codes) == 1:
        if codes[0] is None or len(set(labels)) == 1:
            return f"Code of every result in this table: {labels[0]}."
        commits = list(dict.fromkeys(c[:10] if isinstance(c, str) and c else "?" for c in done["commit"]))
        return (f"Code of every result in this table: training code {codes[0][:12]} (commits {', '.join(commits)}: "
                "they differ outside the training code).")
    per_row = "; ".join(f"{d} / {m} / {s} / seed {sd}: {lab}" for d, m, s, sd, lab in
                        zip(done["dataset"], done["matcher"], done["strategy"], done["seed"], labels))
    return (f"This table pools results of {len(codes)} training-code versions (--pool-mixed-code): {per_row}.")


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt_delta(r) -> str:
    if r["published"] or r.get("strategy_name") == "baseline":
        return "–"
    if not _isnan(r.get("delta_rsum")):
        d = stats.DeltaStats(delta=r["delta_rsum"], low=r["ci_low"], high=r["ci_high"], n=int(r["delta_seeds"]))
        return stats.fmt_delta(d, bool(r.get("holm_5pct")))
    why = r.get("delta_why") or ""
    return f"– ({why})" if why else "–"


def _fmt_p(r) -> str:
    if r["published"] or r.get("strategy_name") == "baseline" or _isnan(r.get("p_improve")):
        return "–"
    return f"{r['p_improve']:.2f}" if int(r.get("delta_seeds", 0)) >= 2 else "–"


def _own_values(r) -> dict:
    """``{header: (mean, sd, seeds)}`` of an own summary row's metric columns (what the LaTeX bold compares)."""
    return {HEADER[k]: (float(r[f"{k}_mean"]), float(r[f"{k}_std"]), int(r["n_done"])) for k in TABLE_METRICS}


def protocol_tables(summary: pd.DataFrame, sources: list[str] | None = None) -> list[dict]:
    """One block per (dataset, protocol), as papers print them: ``{"dataset", "protocol", "title", "data",
    "header", "rows", "values", "metric_columns", "verdict", "seeds", "notes"}``; rows: matcher, strategy, n,
    6 recalls, RSUM, ΔRSUM, P(> base). COCO 5K is followed by its ECCV Caption / CxC block where the
    results hold those metrics (:func:`eccv_block`).

    ``data`` is the data line (:func:`bench.harness.table_text.data_line`: scale, synthetic or real, data
    root, test sizes). Published rows show ``pub. [k]`` (their sources appended to ``sources``, k = position
    + 1) only when the block's results are real data at full scale; elsewhere they are left out and a note
    says why. ``verdict`` says in words what the block's intervals say
    (:func:`bench.harness.stats.verdict_line`), ``seeds`` the "seeds needed" sentence
    (:func:`bench.harness.stats.seeds_line`), ``notes`` the reasons, with paths, of every ΔRSUM that is missing
    or rests on fewer seeds than were done, and one line each for small test folds and saturated recalls."""
    sources = [] if sources is None else sources
    blocks = []
    for (ds, p), g in summary.groupby(["dataset", "protocol"], sort=False):
        data = table_text.block_data(g, p)
        rows, notes, values = [], [], []
        for _, r in g.iterrows():
            if r["published"]:
                if not data.real_full_scale:  # another dataset's numbers: never beside these
                    continue
                if r["source"] not in sources:
                    sources.append(r["source"])
                n = f"pub. [{sources.index(r['source']) + 1}]"
                n_seeds = None
                values.append(None)
            else:
                n = f"{int(r['n_done'])}/{int(r['n_declared'])}"
                if r.get("states"):
                    n += f" ({r['states']})"
                n_seeds = int(r["n_done"])
                values.append(_own_values(r))
            rows.append([r["matcher"], r["strategy"], n]
                        + [stats.fmt_mean_std(r[f"{k}_mean"], r[f"{k}_std"], n_seeds) for k in TABLE_METRICS]
                        + [_fmt_delta(r), _fmt_p(r)])
            if not r["published"] and r.get("delta_missing"):
                notes.append(f"ΔRSUM of {r['matcher']} / {r['strategy']}: {r['delta_missing']}.")
        mine = g[~g["published"].astype(bool)]
        own = mine[mine["strategy_name"] != "baseline"]
        if recon := strategies.reconstruction_note(own["strategy_name"].dropna().unique()):
            notes.append(recon)
        if g["published"].astype(bool).any() and (note := table_text.published_note(data)):
            notes.append(note)
        notes += table_text.size_notes(data, mine, {k: HEADER[k] for k in RECALLS})
        sd = stats.pooled_sd(own["seed_sd_delta"].to_numpy(dtype=float), own["delta_seeds"].to_numpy(dtype=int))
        declared = int(mine["n_declared"].max()) if len(mine) else 0
        seeds = stats.seeds_line(sd, declared) if len(own) else ""
        verdict = stats.verdict_line([
            {"label": r["strategy"], "delta": float(r["delta_rsum"]) if not _isnan(r.get("delta_rsum")) else math.nan,
             "n": int(r.get("delta_seeds") or 0),
             "significant": bool(r.get("holm_5pct")), "p_improve": r.get("p_improve")}
            for _, r in own.iterrows()])
        tag = table_text.scale_and_kind(data)
        blocks.append({"dataset": ds, "protocol": p, "title": f"{ds} · {PROTOCOL_TITLES.get(p, p)}"
                       + (f" · {tag}" if tag else ""),
                       "data": table_text.data_line(data), "header": list(BLOCK_HEADER), "rows": rows,
                       "values": values, "metric_columns": list(range(3, 3 + len(TABLE_METRICS))),
                       "verdict": verdict, "seeds": seeds, "notes": notes})
        if p == eccv.PROTOCOL and (extra := eccv_block(ds, mine, data)):
            blocks.append(extra)
    return blocks


ECCV_HEADER = ["matcher", "strategy", "n"] + [eccv.HEADER[k] for k in ECCV_KEYS]


def eccv_block(ds: str, mine: pd.DataFrame, data) -> dict | None:
    """The ECCV Caption / CxC block of a COCO 5K table (None when no result holds them): mean ± sd over the
    seeds whose result has them (``n`` = those / done), with a note for results without them and for a split
    smaller than the 5,000 images the annotations cover."""
    key = f"{ECCV_KEYS[0]}_mean"
    if key not in mine or not mine[key].notna().any():
        return None
    rows, values, notes, sizes = [], [], [], set()
    for _, r in mine.iterrows():
        k = int(r.get("eccv_n") or 0)
        done = int(r["n_done"])
        rows.append([r["matcher"], r["strategy"], f"{k}/{done}"]
                    + [stats.fmt_mean_std(r[f"{m}_mean"], r[f"{m}_std"], k) for m in ECCV_KEYS])
        values.append({eccv.HEADER[m]: (float(r[f"{m}_mean"]), float(r[f"{m}_std"]), k) for m in ECCV_KEYS})
        if k < done:
            notes.append(f"{r['matcher']} / {r['strategy']}: {done - k} of {done} done results hold no ECCV Caption / "
                         "CxC metrics (made before they were computed, or with eval.eccv=false); `python -m bench "
                         "evaluate <run>/best.pt --data-root DATA --dataset coco_precomp --protocol coco_5k` "
                         "computes them for any checkpoint.")
        if k and not _isnan(r.get(f"{ECCV_SIZE_KEY}_mean")):
            sizes.add(int(r[f"{ECCV_SIZE_KEY}_mean"]))
    small = sorted(n for n in sizes if n < eccv.SPLIT_IMAGES)
    if small:
        notes.append(f"On the first {'/'.join(f'{n:,}' for n in small)} of the {eccv.SPLIT_IMAGES:,} images of the "
                     "COCO 5K test split (this data reuses their ids): only positives among them count; not "
                     "comparable with published ECCV Caption / CxC values.")
    notes.append("ECCV Caption (Chun et al., ECCV 2022): mAP@R, R-Precision (R-P) and R@1 on machine- and "
                 "human-verified positives; CxC (Parekh et al., EACL 2021): Recall@K with the added positives; "
                 "annotations of the eccv-caption package, percent; bench/eccv.py.")
    return {"dataset": ds, "protocol": eccv.PROTOCOL, "kind": "eccv",
            "title": f"{ds} · {PROTOCOL_TITLES[eccv.PROTOCOL]}: ECCV Caption and CxC"
                     + (f" · {tag}" if (tag := table_text.scale_and_kind(data)) else ""),
            "data": table_text.data_line(data), "header": list(ECCV_HEADER), "rows": rows, "values": values,
            "metric_columns": list(range(3, len(ECCV_HEADER))), "verdict": "", "seeds": "", "notes": notes}


def table_note(n_boot: int) -> str:
    """What every number of a table is (printed under the Markdown blocks and in each LaTeX caption)."""
    return ("n = seeds done/declared. Recalls and RSUM: mean ± sample sd (ddof = 1) over the seeds done; "
            "with one seed that seed's value alone. ΔRSUM: mean over seeds of the paired difference "
            "strategy − the same matcher's baseline (same seed, same test queries), with a 95% interval covering "
            "seed-to-seed and test-set variance: Δ ± t(S−1) · √(sd(Δ_s)²/S + V_c), S = paired seeds, Δ_s the "
            "per-seed ΔRSUM, V_c the test-set variance common to the seeds from an image-cluster bootstrap (an "
            f"image with its captions; {n_boot} resamples); docs/verdicts.md. "
            "'n=1: no interval': one seed pair, the seed variance is unknown. †: ΔRSUM ≠ 0 survives a "
            "Holm–Bonferroni correction at 5% across the strategies compared with the same baseline in the block. "
            "P(> base): share of seed pairs in which the strategy's RSUM beats the baseline's (ties ½), shown from "
            "2 paired seeds; per-seed ΔRSUM in the CSV. Seeds needed: two-sided paired t-test at 5% with 80% power "
            "from the pooled sd of the paired per-seed ΔRSUM of the block. 'published' rows from "
            "results/reference/published.csv.")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>$^~|#])")


def md_text(text) -> str:
    """A user's label as Markdown shows it: one line, its Markdown characters escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def to_markdown(header, rows, label_columns: int = 0) -> str:
    """A Markdown table; the first ``label_columns`` cells of each row are user labels (:func:`md_text`)."""
    esc = [[md_text(c) if j < label_columns else str(c).replace("|", "\\|") for j, c in enumerate(row)]
           for row in rows]
    esc = [[str(c).replace("|", "\\|") for c in header]] + esc
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines) + "\n"


def to_latex(block: dict, suite_name: str, note: str = "") -> str:
    """One block as a LaTeX ``table*`` (:func:`bench.harness.latex.table`): a short caption (suite, title, data
    line, what the numbers are), ``\\label{tab:<suite>-<dataset>-<protocol>}``, the best mean per column in
    bold (ties by the interval), and under the tabular the block's verdict, notes and ``note``."""
    kind = "-eccv" if block.get("kind") == "eccv" else ""
    caption = (f"{suite_name}: {block['title']}." + (f" Data: {block['data']}." if block.get("data") else "")
               + " Mean ± sd over seeds" + ("; ΔRSUM: paired, 95% interval over seeds and test images"
                                             if "ΔRSUM [95% CI]" in block["header"] else "")
               + "; bold: best mean per column and the rows whose 95% interval overlaps it.")
    body = " ".join(x for x in [block.get("verdict"), block.get("seeds"), *block.get("notes", []), note] if x)
    return latex.table(block, caption, latex.label(suite_name, block["dataset"], block["protocol"] + kind), body)


def write_tables(df: pd.DataFrame, suite, out_dir: str | Path = TABLES_DIR, n_boot: int = stats.N_BOOT,
                 summary: pd.DataFrame | None = None) -> dict:
    """Write ``<out_dir>/<suite>.{md,tex,csv}`` (+ ``<suite>_cells.csv``, the per-cell rows).

    The Markdown and LaTeX files hold one table per (dataset, protocol); the CSV is the long summary
    (ΔRSUM, interval, p-value, Holm, P(> base), per-seed ΔRSUM as JSON ``{seed: Δ}``)."""
    suite = _as_suite(suite)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(df, suite, n_boot=n_boot) if summary is None else summary
    sources: list[str] = []
    blocks = protocol_tables(summary, sources)
    note = table_note(n_boot)
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
    if code := code_note(df):
        note += f" {code}"
    paths = {"md": out_dir / f"{suite.name}.md", "tex": out_dir / f"{suite.name}.tex",
             "csv": out_dir / f"{suite.name}.csv", "cells_csv": out_dir / f"{suite.name}_cells.csv"}
    refs = "".join(f"[{i + 1}] {src}\n" for i, src in enumerate(sources))
    md = [f"# {rehearsal_title(suite)}Suite `{suite.name}`: {md_text(suite.spec.get('description', ''))}\n"]
    tex = [latex.PREAMBLE + "\n"]
    tex_note = rehearsal_title(suite) + note + "".join(f" [{i + 1}] {src}." for i, src in enumerate(sources))
    for b in blocks:
        extra = "".join(f"\n{line}\n" for line in [b["verdict"], b["seeds"], *b["notes"]] if line)
        data = f"*Data: {md_text(b['data'])}*\n\n" if b.get("data") else ""
        md.append(f"### {md_text(b['title'])}\n\n{data}" + to_markdown(b["header"], b["rows"], label_columns=2)
                  + extra)
        tex.append(to_latex(b, suite.name, tex_note))
    # every file whole or not at all (a full disk leaves the previous file, never a 0-byte one)
    atomic_write_bytes(paths["md"], ("\n".join(md) + "\n" + note + "\n\n" + refs).encode(), fault="collect.write")
    atomic_write_bytes(paths["tex"], "\n".join(tex).encode(), fault="collect.write")
    atomic_write_bytes(paths["csv"], summary.to_csv(index=False).encode(), fault="collect.write")
    atomic_write_bytes(paths["cells_csv"], df.drop(columns=["dev_curve"], errors="ignore").to_csv(index=False).encode(),
                       fault="collect.write")
    return paths


def rehearsal_title(suite: Suite) -> str:
    """What starts every title of a rehearsal's table (``bench.harness.rehearsal``): ``REHEARSAL (…): `` ('' for a
    real table)."""
    from bench.harness.rehearsal import plan_of, table_name

    plan = plan_of(suite.spec)
    if plan is None:
        return ""
    return (f"REHEARSAL of table `{table_name(suite.spec)}` ({plan.steps} step(s) per cell, at most {plan.eval_images} "
            "test images per split: its numbers mean nothing, see its log): ")
