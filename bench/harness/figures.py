"""Figures of a suite (matplotlib, Agg), PNG and PDF under ``results/figures/<suite>/`` (``<dataset>/`` below it
when the suite has several datasets).

- ``delta_rsum_<protocol>``, the headline, one per table: a forest plot of the paired ΔRSUM of every strategy
  against the same matcher's baseline with the 95% interval the table's verdict uses
  (:func:`bench.harness.stats.delta_stats`: seed-to-seed and test-set variance; ``†``: it survives Holm),
  and beside it the published gain (published RSUM of the strategy − of the baseline) where
  ``results/reference/published.csv`` has both, shown only where the table shows published rows (real data
  at full scale).
- ``rsum_by_strategy``: the RSUM level per matcher and strategy, mean over seeds with the 95% t-interval of
  the mean (:func:`bench.harness.stats.mean_interval`; unpaired, so wider than the paired ΔRSUM's: the
  verdict is the forest plot's), one panel per protocol.
- ``rsum_vs_cost``: RSUM against the training cost of the cell (GPU hours, else CPU hours, else train
  wall-clock): DBL should sit at the cost of the strategy it is compared with.
- ``dev_curves``: dev RSUM per epoch, one panel per matcher: every seed a thin line, the mean over seeds
  bold; a band (95% interval of the mean) only from ``BAND_MIN_SEEDS`` seeds on, clipped to RSUM's range
  [0, 600], and the axis kept within that range.

Every title names the suite, the dataset, the protocol by its human name (:mod:`bench.protocols`) and the
data (scale, synthetic or real, data root, test size: :mod:`bench.harness.table_text`); legends sit outside
the axes and figures are saved with a tight bounding box, so no text is cut or covers the data.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench.harness import stats, table_text  # noqa: E402
from bench.harness.store import REPO_ROOT  # noqa: E402
from bench.protocols import get_protocol  # noqa: E402

FIGURES_DIR = REPO_ROOT / "results" / "figures"
RSUM_RANGE = (0.0, 600.0)  # six recalls in percent
BAND_MIN_SEEDS = 5  # below this, a t-interval over seeds spans most of the axis: the seeds are drawn instead
CHARS_PER_INCH = 13  # title characters per inch of figure width at 9 pt
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = "osD^vP*X"


def _save(fig, out: Path, stem: str) -> list[Path]:
    import io

    from bench.atomic import atomic_write_bytes

    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    try:
        for path, kwargs in ((paths[0], {"dpi": 130}), (paths[1], {})):  # whole or not at all (a full disk)
            buf = io.BytesIO()
            fig.savefig(buf, format=path.suffix[1:], bbox_inches="tight", pad_inches=0.15, **kwargs)
            atomic_write_bytes(path, buf.getvalue(), fault="collect.write")
    finally:
        plt.close(fig)
    return paths


def _wrap(width_in: float, *lines: str) -> str:
    """``lines`` wrapped to a figure ``width_in`` inches wide (9-pt text)."""
    return "\n".join(textwrap.fill(line, int(width_in * CHARS_PER_INCH)) for line in lines if line)


def _legend_below(fig, handles, ncol: int) -> None:
    """The legend under the axes, outside them, with room kept for it (never over the data)."""
    rows = -(-len(handles) // ncol)
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, (0.12 + 0.2 * rows) / fig.get_figheight(), 1, 1))


def _strategy_colors(labels) -> dict:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {s: cmap(i % cmap.N) for i, s in enumerate(labels)}


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _about(summary: pd.DataFrame, dataset, protocol: str) -> tuple[str, str, table_text.BlockData]:
    """(``<dataset> · <protocol title> · <scale>, <kind> data``, the data line, the block's data) of one block."""
    d = table_text.block_data(summary[(summary["dataset"] == dataset) & (summary["protocol"] == protocol)], protocol)
    tag = table_text.scale_and_kind(d)
    return (f"{dataset} · {get_protocol(protocol).title}" + (f" · {tag}" if tag else ""),
            table_text.data_line(d), d)


# ----------------------------------------------------------------------------- ΔRSUM (the headline)


def published_gain(block: pd.DataFrame, matcher: str, label: str, name: str) -> float | None:
    """Published RSUM of the strategy (a published row named by its label or strategy name) minus the
    published baseline's, for ``matcher`` in this block; None unless both are published."""
    pub = block[block["published"].astype(bool) & (block["matcher"] == matcher)]
    rsum = {str(s).removeprefix("published: "): v for s, v in zip(pub["strategy"], pub["rsum_mean"])}
    base = rsum.get("baseline")
    mine = rsum.get(label, rsum.get(name))
    if base is None or mine is None or label == "baseline":
        return None
    return float(mine) - float(base)


def delta_forest(summary: pd.DataFrame, suite: str, dataset, protocol: str):
    """The forest plot of one table (a matplotlib figure; :func:`make_figures` saves it)."""
    block = summary[(summary["dataset"] == dataset) & (summary["protocol"] == protocol)]
    own = block[~block["published"].astype(bool) & (block["strategy_name"] != "baseline")]
    title, data, d = _about(summary, dataset, protocol)
    show_published = d.real_full_scale
    rows = list(own.itertuples(index=False))
    fig, ax = plt.subplots(figsize=(8.0, 2.6 + 0.42 * max(1, len(rows))))
    labels, any_pub, any_single = [], False, False
    for y, r in enumerate(rows):
        y = len(rows) - 1 - y
        labels.append((y, f"{r.matcher} · {r.strategy}"))
        if y < len(rows) - 1 and r.matcher != rows[len(rows) - 2 - y].matcher:  # a rule between matchers
            ax.axhline(y + 0.5, color="lightgray", lw=0.8)
        delta = getattr(r, "delta_rsum", math.nan)
        if _isnan(delta):
            why = getattr(r, "delta_why", "") or "not computed"
            ax.text(0, y, f"– ({why})", va="center", ha="center", fontsize=8, color="dimgray")
            continue
        has_ci = not _isnan(getattr(r, "ci_low", math.nan))
        any_single |= not has_ci
        err = [[delta - r.ci_low], [r.ci_high - delta]] if has_ci else None
        ax.errorbar([delta], [y], xerr=err, fmt="o", color="tab:blue", capsize=4, markersize=7,
                    markerfacecolor="tab:blue" if has_ci else "white", zorder=3)
        dstats = stats.DeltaStats(delta=delta, low=r.ci_low, high=r.ci_high, n=int(r.delta_seeds))
        ax.annotate(stats.fmt_delta(dstats, bool(r.holm_5pct)), xy=(1.02, y), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8)
        gain = published_gain(block, r.matcher, r.strategy, r.strategy_name) if show_published else None
        if gain is not None:
            any_pub = True
            ax.plot([gain], [y - 0.22], "D", color="dimgray", markersize=6, zorder=3)
    ax.axvline(0, color="black", lw=1, zorder=1)
    ax.set_yticks([y for y, _ in labels], [t for _, t in labels])
    ax.set_ylim(-0.7, max(0, len(rows) - 1) + 0.7)
    ax.set_xlabel("ΔRSUM against the same matcher's baseline (paired: same seed, same test queries)")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", color="tab:blue", ls="-", label="ours: mean ΔRSUM, 95% interval")]
    if any_single:
        handles.append(plt.Line2D([], [], marker="o", color="tab:blue", markerfacecolor="white", ls="",
                                  label="one seed pair: no interval"))
    if any_pub:
        handles.append(plt.Line2D([], [], marker="D", color="dimgray", ls="", label="published gain"))
    if not rows:
        ax.text(0.5, 0.5, "no strategy besides the baseline", transform=ax.transAxes, ha="center")
    ax.set_title(_wrap(fig.get_figwidth(), f"suite {suite}: ΔRSUM vs baseline · {title}",
                       f"Data: {data}" if data else "",
                       "Bars: the 95% interval of the table's verdict (seeds and test images, docs/verdicts.md); "
                       "†: significant after Holm–Bonferroni."), fontsize=9, loc="left")
    _legend_below(fig, handles, len(handles))
    return fig


# ----------------------------------------------------------------------------- RSUM level and cost


CI_LABEL = "error bars: 95% interval of the mean over seeds, unpaired (hollow: one seed, no interval)"


def _ci_err(r) -> tuple[float, float]:
    """(below, above) the mean of a summary row's 95% interval of the mean RSUM; 0 without one."""
    lo, hi, mean = r.get("rsum_ci_low", math.nan), r.get("rsum_ci_high", math.nan), r["rsum_mean"]
    if any(v is None or math.isnan(v) for v in (lo, hi, mean)):
        return 0.0, 0.0
    return mean - lo, hi - mean


def _has_ci(r) -> bool:
    return not (math.isnan(r.get("rsum_ci_low", math.nan)) or math.isnan(r.get("rsum_ci_high", math.nan)))


def rsum_by_strategy(summary: pd.DataFrame, suite: str, dataset):
    s = summary[~summary["published"].astype(bool)]
    protocols = list(dict.fromkeys(s["protocol"]))
    strategies = list(dict.fromkeys(s["strategy"]))
    colors = _strategy_colors(strategies)
    width_each = max(4.5, 1.2 + 0.5 * len(strategies) * s["matcher"].nunique())
    fig, axes = plt.subplots(1, len(protocols), figsize=(width_each * len(protocols), 5.2), squeeze=False)
    lines = []
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
                            color=colors[st], markerfacecolor=colors[st] if _has_ci(r) else "white")
        ax.set_xticks(np.arange(len(matchers)), matchers)
        ax.set_xlim(-0.6, len(matchers) - 0.4)
        ax.set_ylabel("test RSUM, mean over seeds")
        title, data, _ = _about(summary, dataset, p)
        ax.set_title(_wrap(width_each, title), fontsize=9)
        lines.append(f"{get_protocol(p).title}: {data}" if data else "")
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[st], label=st) for st in strategies]
    fig.suptitle(_wrap(fig.get_figwidth(), f"suite {suite}: test RSUM by strategy", *dict.fromkeys(lines),
                       CI_LABEL + "; the verdict rests on the paired ΔRSUM (delta_rsum_*.png)"), fontsize=9)
    _legend_below(fig, handles, min(len(handles), 4))
    return fig


def _cost_axis(summary: pd.DataFrame) -> tuple[str, str]:
    for col, label in [("cost_gpu_hours", "training cost (GPU hours)"), ("cost_cpu_hours", "training cost (CPU hours)")]:
        if col in summary and (summary[col].fillna(0) > 0).any():
            return col, label
    return "cost_train_wall_s", "training wall-clock (s)"


def rsum_vs_cost(summary: pd.DataFrame, suite: str, dataset):
    s = summary[~summary["published"].astype(bool)]
    protocol = list(dict.fromkeys(s["protocol"]))[0] if len(s) else None
    s = s[s["protocol"] == protocol]
    col, xlabel = _cost_axis(s)
    strategies = list(dict.fromkeys(s["strategy"]))
    colors = _strategy_colors(strategies)
    markers = dict(zip(dict.fromkeys(s["matcher"]), MARKERS))
    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    for _, r in s.iterrows():
        below, above = _ci_err(r)
        ax.errorbar(r.get(col, math.nan), r["rsum_mean"], yerr=[[below], [above]],
                    fmt=markers.get(r["matcher"], "o"), color=colors[r["strategy"]], capsize=3, markersize=7,
                    markerfacecolor=colors[r["strategy"]] if _has_ci(r) else "white")
    handles = [plt.Line2D([], [], lw=6, color=colors[st], label=st) for st in strategies]
    handles += [plt.Line2D([], [], marker=mk, ls="", color="gray", label=m) for m, mk in markers.items()]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"test RSUM ({get_protocol(protocol).title if protocol else '?'}), mean over seeds")
    title, data, _ = _about(summary, dataset, protocol) if protocol else ("", "", None)
    ax.set_title(_wrap(fig.get_figwidth(), f"suite {suite}: accuracy vs training cost · {title}",
                       f"Data: {data}" if data else "", CI_LABEL), fontsize=9, loc="left")
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- dev curves


def _curves(g: pd.DataFrame) -> pd.DataFrame:
    """Long form (epoch, rsum, seed) of the dev curves of cells ``g``."""
    return pd.DataFrame([{"epoch": p["epoch"], "rsum": p["rsum"], "seed": seed}
                         for seed, curve in zip(g["seed"], g["dev_curve"]) for p in curve],
                        columns=["epoch", "rsum", "seed"])


def dev_curves(df: pd.DataFrame, suite: str, dataset, about: str = "", source: str = ""):
    cells = df.drop_duplicates("cell_id")
    cells = cells[cells["dev_curve"].apply(lambda c: isinstance(c, list) and len(c) > 0)]
    matchers = list(dict.fromkeys(df["matcher"]))
    strategies = list(dict.fromkeys(df["strategy"]))
    colors = _strategy_colors(strategies)
    fig, axes = plt.subplots(1, len(matchers), figsize=(max(8.0, 5.5 * len(matchers)), 4.6), squeeze=False)
    seen = []
    for ax, m in zip(axes[0], matchers):
        lo, hi = math.inf, -math.inf
        for k, st in enumerate(strategies):
            curves = _curves(cells[(cells["matcher"] == m) & (cells["strategy"] == st)])
            if not len(curves):
                continue
            style = {"color": colors[st], "ls": LINESTYLES[k % len(LINESTYLES)]}
            for _, one in curves.groupby("seed"):
                ax.plot(one["epoch"], one["rsum"], lw=0.8, alpha=0.45, **style)
            by_epoch = pd.DataFrame([(e, *stats.mean_interval(v), len(v)) for e, v in curves.groupby("epoch")["rsum"]],
                                    columns=["epoch", "mean", "low", "high", "n"])
            ax.plot(by_epoch["epoch"], by_epoch["mean"], lw=2.2, marker=MARKERS[k % len(MARKERS)], markersize=4,
                    **style)
            band = by_epoch[(by_epoch["n"] >= BAND_MIN_SEEDS) & by_epoch["low"].notna()]
            if len(band):
                ax.fill_between(band["epoch"], band["low"].clip(*RSUM_RANGE), band["high"].clip(*RSUM_RANGE),
                                color=colors[st], alpha=0.15)
            lo, hi = min(lo, curves["rsum"].min()), max(hi, curves["rsum"].max())
            if st not in seen:
                seen.append(st)
        if math.isfinite(lo):
            pad = max(5.0, 0.05 * (hi - lo))
            ax.set_ylim(max(RSUM_RANGE[0], lo - pad), min(RSUM_RANGE[1], hi + pad))
        ax.set_title(m, fontsize=10)
        ax.set_xlabel("epoch")
        epochs = sorted(_curves(cells[cells["matcher"] == m])["epoch"].unique())
        if 0 < len(epochs) <= 16:
            ax.set_xticks(epochs)
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel("dev RSUM")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[st], ls=LINESTYLES[strategies.index(st) % len(LINESTYLES)], lw=2.2,
                          marker=MARKERS[strategies.index(st) % len(MARKERS)], markersize=4, label=f"{st} (mean)")
               for st in seen]
    handles.append(plt.Line2D([], [], color="gray", lw=0.8, alpha=0.6, label="one seed"))
    fig.suptitle(_wrap(fig.get_figwidth(), f"suite {suite}: dev RSUM during training · {dataset}"
                       + (f" · {about}" if about else ""), f"Data: {source} · dev split" if source else "",
                       f"Thin lines: each seed; bold: the mean over seeds; a band (95% interval of the mean, within "
                       f"[0, 600]) from {BAND_MIN_SEEDS} seeds on."), fontsize=9)
    _legend_below(fig, handles, min(len(handles), 5))
    return fig


# ----------------------------------------------------------------------------- all of a suite


def folder_name(label: str) -> str:
    """A dataset label as one folder name inside the suite's figures folder: a label is free text, and ``../x``
    or ``a/b`` as a path wrote figures outside ``--figures`` (``../demo`` over the README's demo figures).
    Separators become ``_`` and a name of dots alone gets a ``_`` in front; any other label is its own name."""
    name = label.replace("/", "_").replace("\\", "_").replace("\0", "_")
    return f"_{name}" if not name.strip(".") else name


def make_figures(df: pd.DataFrame, summary: pd.DataFrame, suite_name: str,
                 out_dir: str | Path = FIGURES_DIR) -> list[Path]:
    """All figures of a suite from ``collect`` (df) and ``summarize`` (summary); returns the files."""
    out = Path(out_dir) / suite_name
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset in dict.fromkeys(summary["dataset"]):
        sub_out = out if summary["dataset"].nunique() == 1 else out / folder_name(str(dataset))
        sub_out.mkdir(parents=True, exist_ok=True)
        s = summary[summary["dataset"] == dataset]
        own = s[~s["published"].astype(bool)]
        if len(own) and s["rsum_mean"].notna().any():
            for p in dict.fromkeys(own["protocol"]):
                paths += _save(delta_forest(summary, suite_name, dataset, p), sub_out, f"delta_rsum_{p}")
            paths += _save(rsum_by_strategy(s, suite_name, dataset), sub_out, "rsum_by_strategy")
            paths += _save(rsum_vs_cost(s, suite_name, dataset), sub_out, "rsum_vs_cost")
        d = df[df["dataset"] == dataset]
        if d["dev_curve"].apply(lambda c: isinstance(c, list) and len(c) > 0).any():
            block = table_text.block_data(own, own["protocol"].iloc[0]) if len(own) else None
            about, source = (table_text.scale_and_kind(block), table_text.data_source(block)) if block else ("", "")
            paths += _save(dev_curves(d, suite_name, dataset, about, source), sub_out, "dev_curves")
    return paths
