"""Figures of a suite (matplotlib, Agg), PNG and PDF under ``results/figures/<suite>/``.

Every interval drawn is the 95% Student-t interval of the mean over seeds from
:func:`bench.harness.stats.mean_interval` (no interval with one seed: the point alone, hollow).

- ``rsum_by_strategy``: RSUM per matcher, one point per strategy (mean over seeds) with its 95%
  interval of the mean, one panel per protocol; the axis spans the data, it is not a bar's baseline.
- ``rsum_vs_cost``: RSUM against the training cost of the cell (GPU hours, else CPU hours, else
  train wall-clock hours): DBL should sit at the cost of the strategy it is compared with.
- ``dev_curves``: dev RSUM per epoch, one line per strategy (mean over seeds, band = 95% interval of
  the mean), one panel per matcher.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.harness import stats  # noqa: E402
from bench.harness.store import REPO_ROOT  # noqa: E402

FIGURES_DIR = REPO_ROOT / "results" / "figures"


def _save(fig, out: Path, stem: str) -> list[Path]:
    fig.tight_layout()
    import io

    from bench.atomic import atomic_write_bytes

    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    try:
        for path, kwargs in ((paths[0], {"dpi": 130}), (paths[1], {})):  # whole or not at all (a full disk)
            buf = io.BytesIO()
            fig.savefig(buf, format=path.suffix[1:], **kwargs)
            atomic_write_bytes(path, buf.getvalue(), fault="collect.write")
    finally:
        plt.close(fig)
    return paths


def _strategy_colors(labels) -> dict:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {s: cmap(i % cmap.N) for i, s in enumerate(labels)}


CI_LABEL = "error bars: 95% interval of the mean over seeds (hollow: one seed, no interval)"


def _ci_err(r) -> tuple[float, float]:
    """(below, above) the mean of a summary row's 95% interval of the mean RSUM; 0 without one."""
    lo, hi, mean = r.get("rsum_ci_low", math.nan), r.get("rsum_ci_high", math.nan), r["rsum_mean"]
    if any(v is None or math.isnan(v) for v in (lo, hi, mean)):
        return 0.0, 0.0
    return mean - lo, hi - mean


def _has_ci(r) -> bool:
    return not (math.isnan(r.get("rsum_ci_low", math.nan)) or math.isnan(r.get("rsum_ci_high", math.nan)))


def rsum_by_strategy(summary: pd.DataFrame, out: Path, title: str) -> list[Path]:
    s = summary[~summary["published"].astype(bool)]
    protocols = list(dict.fromkeys(s["protocol"]))
    strategies = list(dict.fromkeys(s["strategy"]))
    colors = _strategy_colors(strategies)
    fig, axes = plt.subplots(1, len(protocols), figsize=(max(5, 1.2 + 0.5 * len(strategies)
                                                         * s["matcher"].nunique()) * len(protocols) ** 0.5
                                                         + 2, 4.4), squeeze=False)
    for ax, p in zip(axes[0], protocols):
        sp = s[s["protocol"] == p]
        matchers = list(dict.fromkeys(sp["matcher"]))
        width = 0.8 / max(1, len(strategies))
        for j, st in enumerate(strategies):
            for mi, m in enumerate(matchers):
                rows = sp[(sp["matcher"] == m) & (sp["strategy"] == st)]
                if not len(rows) or math.isnan(rows.iloc[0]["rsum_mean"]):
                    continue
                r = rows.iloc[0]
                x = mi + (j - (len(strategies) - 1) / 2) * width
                below, above = _ci_err(r)
                ax.errorbar([x], [r["rsum_mean"]], yerr=[[below], [above]], fmt="o", capsize=4, markersize=7,
                            color=colors[st], markerfacecolor=colors[st] if _has_ci(r) else "white",
                            label=st if mi == 0 else None)
        ax.set_xticks(np.arange(len(matchers)), matchers)
        ax.set_xlim(-0.6, len(matchers) - 0.4)
        ax.set_ylabel("RSUM (test), mean over seeds")
        ax.set_title(f"{p}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\n{CI_LABEL}", fontsize=10)
    return _save(fig, out, "rsum_by_strategy")


def _cost_axis(summary: pd.DataFrame) -> tuple[str, str]:
    for col, label in [("cost_gpu_hours", "training cost (GPU hours)"), ("cost_cpu_hours", "training cost (CPU hours)")]:
        if col in summary and (summary[col].fillna(0) > 0).any():
            return col, label
    return "cost_train_wall_s", "training wall-clock (s)"


def rsum_vs_cost(summary: pd.DataFrame, out: Path, title: str) -> list[Path]:
    s = summary[~summary["published"].astype(bool)]
    protocol = list(dict.fromkeys(s["protocol"]))[0] if len(s) else None
    s = s[s["protocol"] == protocol]
    col, xlabel = _cost_axis(s)
    strategies = list(dict.fromkeys(s["strategy"]))
    colors = _strategy_colors(strategies)
    markers = dict(zip(dict.fromkeys(s["matcher"]), "osD^vP*X"))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for _, r in s.iterrows():
        below, above = _ci_err(r)
        ax.errorbar(r.get(col, math.nan), r["rsum_mean"], yerr=[[below], [above]],
                    fmt=markers.get(r["matcher"], "o"), color=colors[r["strategy"]], capsize=3, markersize=7,
                    markerfacecolor=colors[r["strategy"]] if _has_ci(r) else "white")
    for st in strategies:
        ax.plot([], [], "-", lw=6, color=colors[st], label=st)
    for m, mk in markers.items():
        ax.plot([], [], mk, color="gray", label=m)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"RSUM ({protocol}), mean over seeds")
    ax.set_title(f"{title}: accuracy vs training cost\n{CI_LABEL}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, out, "rsum_vs_cost")


def dev_curves(df: pd.DataFrame, out: Path, title: str) -> list[Path]:
    cells = df.drop_duplicates("cell_id")
    cells = cells[cells["dev_curve"].apply(lambda c: isinstance(c, list) and len(c) > 0)]
    matchers = list(dict.fromkeys(df["matcher"]))
    strategies = list(dict.fromkeys(df["strategy"]))
    colors = _strategy_colors(strategies)
    fig, axes = plt.subplots(1, len(matchers), figsize=(5 * len(matchers), 4), squeeze=False)
    for ax, m in zip(axes[0], matchers):
        for st in strategies:
            g = cells[(cells["matcher"] == m) & (cells["strategy"] == st)]
            if not len(g):
                continue
            curves = pd.DataFrame([{"epoch": p["epoch"], "rsum": p["rsum"], "seed": seed}
                                   for seed, curve in zip(g["seed"], g["dev_curve"]) for p in curve])
            by_epoch = pd.DataFrame([(e, *stats.mean_interval(v)) for e, v in curves.groupby("epoch")["rsum"]],
                                    columns=["epoch", "mean", "low", "high"])
            ax.plot(by_epoch["epoch"], by_epoch["mean"], marker="o", markersize=3, color=colors[st], label=st)
            band = by_epoch.dropna()
            ax.fill_between(band["epoch"], band["low"], band["high"], color=colors[st], alpha=0.15)
        ax.set_title(m)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("dev RSUM")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{title}: dev RSUM during training (mean over seeds; band: 95% interval of the mean)", fontsize=10)
    return _save(fig, out, "dev_curves")


def make_figures(df: pd.DataFrame, summary: pd.DataFrame, suite_name: str,
                 out_dir: str | Path = FIGURES_DIR) -> list[Path]:
    """All figures of a suite from ``collect`` (df) and ``summarize`` (summary); returns the files."""
    out = Path(out_dir) / suite_name
    out.mkdir(parents=True, exist_ok=True)
    title = f"suite {suite_name}"
    paths = []
    for dataset in dict.fromkeys(summary["dataset"]):
        sub_out = out if summary["dataset"].nunique() == 1 else out / str(dataset)
        sub_out.mkdir(parents=True, exist_ok=True)
        s = summary[summary["dataset"] == dataset]
        if (~s["published"].astype(bool)).sum() and s["rsum_mean"].notna().any():
            paths += rsum_by_strategy(s, sub_out, f"{title} ({dataset})")
            paths += rsum_vs_cost(s, sub_out, f"{title} ({dataset})")
        d = df[df["dataset"] == dataset]
        if d["dev_curve"].apply(lambda c: isinstance(c, list) and len(c) > 0).any():
            paths += dev_curves(d, sub_out, f"{title} ({dataset})")
    return paths
