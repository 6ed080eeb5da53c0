"""Weights & Biases tracking: one W&B run per cell, offline unless the user has set up W&B.

The trainer only calls ``tracker.log(metrics, step=...)``; the harness creates the tracker
(``wandb.init``) and calls ``finish(result)``, which writes the final test metrics to the run
summary plus a ``wandb.Table`` of them. Tracking is best-effort: any W&B error (init, log, finish)
is reported once as a ``RuntimeWarning`` and training goes on.

Mode: ``WANDB_MODE`` when set (online / offline / disabled), else online when ``WANDB_API_KEY`` is
set, else offline. Offline runs land in ``<run_dir>/wandb/offline-run-*/run-*.wandb``;
``make sync`` uploads them with ``wandb sync`` (:func:`offline_runs` lists them), and
:func:`read_offline_run` reads one back without network (``python -m wandb leet inspect``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from bench.metrics import METRIC_KEYS
from bench.spec import Cell, Wandb

log = logging.getLogger(__name__)

METRIC_COLUMNS = list(METRIC_KEYS)  # the columns of a run's metrics table (bench.metrics names them)
DEFAULT_PROJECT = Wandb().project  # bench.spec.Wandb: where a run goes when nothing says


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def rehearsal_project(project: str) -> str:
    """The W&B project of a rehearsal's runs: ``<project>-rehearsal`` (``bench.harness.rehearsal.SUFFIX``)."""
    from bench.harness.rehearsal import SUFFIX

    return project if project.endswith(SUFFIX) else project + SUFFIX


class WandbTracker:
    """One W&B run for one cell: project from the suite (or ``WANDB_PROJECT``), group = suite,
    job_type = strategy, tags = [matcher, dataset, scenario], config = the whole cell."""

    def __init__(self, cell: Cell, run_dir: str | Path, project: str | None = None, mode: str | None = None,
                 dir: str | Path | None = None):
        self.cell = cell
        self.run = None
        self.last_step = -1
        self._warned = False
        try:
            import wandb

            from bench.harness.cells import describe

            wb = cell.wandb
            project = project or os.environ.get("WANDB_PROJECT") or (wb and wb.project) or DEFAULT_PROJECT
            rehearsal = cell.rehearsal is not None  # never among a table's real runs: a project of its own
            self.run = wandb.init(
                project=rehearsal_project(project) if rehearsal else project,
                entity=os.environ.get("WANDB_ENTITY") or (wb and wb.entity),
                group=cell.suite, job_type=cell.strategy.name,
                tags=[cell.matcher.name, cell.dataset_label or cell.dataset.name, cell.strategy.scenario or "none",
                      *(["REHEARSAL"] if rehearsal else [])],
                name=("REHEARSAL " if rehearsal else "") + describe(cell), config=cell.to_dict(),
                dir=str(dir or run_dir), mode=mode or wandb_mode(),
                reinit="finish_previous",
            )
        except Exception as e:  # noqa: BLE001 - tracking must never stop training
            self._warn("init", e)

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_path(self) -> Path | None:
        """The offline run folder (``.../offline-run-*``), when there is one."""
        try:
            return Path(self.run.settings.sync_dir) if self.run is not None else None
        except Exception:  # noqa: BLE001
            return None

    def _warn(self, what: str, e: BaseException) -> None:
        if not self._warned:
            self._warned = True
            msg = f"W&B {what} failed, training continues without (complete) tracking: {type(e).__name__}: {e}"
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
            if step is not None:
                self.last_step = max(self.last_step, int(step))
        except Exception as e:  # noqa: BLE001
            self._warn("log", e)

    def finish(self, result: dict | None, failed: bool = False) -> None:
        """Summary: ``test/<protocol>/<metric>``, ``best_epoch``, ``cost/<key>``; a table of the metrics."""
        if self.run is None:
            return
        try:
            if result is not None:
                rows = []
                for protocol, m in result.get("metrics", {}).items():
                    for k, v in m.items():
                        self.run.summary[f"test/{protocol}/{k}"] = v
                    rows.append([protocol] + [m.get(c) for c in METRIC_COLUMNS])
                if "best_epoch" in result:
                    self.run.summary["best_epoch"] = result["best_epoch"]
                for k, v in (result.get("cost") or {}).items():
                    self.run.summary[f"cost/{k}"] = v
                if rows:
                    import wandb

                    table = wandb.Table(columns=["protocol"] + METRIC_COLUMNS, data=rows)
                    self.run.log({"test/metrics": table}, step=self.last_step + 1)
        except Exception as e:  # noqa: BLE001
            self._warn("finish", e)
        try:
            self.run.finish(exit_code=1 if failed else 0)
        except Exception as e:  # noqa: BLE001
            self._warn("finish", e)
        self.run = None


def offline_runs(root: str | Path) -> list[Path]:
    """Every offline run folder under ``root`` (for ``wandb sync``), oldest name first."""
    return sorted(p.parent for p in Path(root).rglob("offline-run-*/run-*.wandb"))


def _wandb_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    found = sorted(p.glob("run-*.wandb")) or sorted(p.rglob("offline-run-*/run-*.wandb"))
    if not found:
        raise FileNotFoundError(f"{p}: no run-*.wandb file (expected an offline run folder or a run dir)")
    return found[-1]


def read_offline_run(path: str | Path, timeout: float = 120) -> dict:
    """``{"config", "summary", "history"}`` of an offline run (a ``.wandb`` file or a folder holding one).

    History rows keep the logged keys and ``_step``; W&B's own ``_runtime``/``_timestamp`` are dropped.
    W&B itself drops empty mappings from the config (a baseline's ``params: {}`` does not come back).
    """
    f = _wandb_file(path)

    def inspect(*args) -> str:
        return subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *args, str(f)],
                              capture_output=True, text=True, timeout=timeout, check=True).stdout

    summary = json.loads(inspect("--summary", "--json"))
    history = []
    for line in inspect("--json").splitlines():
        rec = json.loads(line) if line.startswith("{") else {}
        if rec.get("type") == "history":
            item = rec["history"]["item"]
            history.append({k: v for k, v in item.items() if k not in ("_runtime", "_timestamp")})
    return {"config": summary.get("config", {}),
            "summary": {k: v for k, v in summary.get("summary", {}).items() if not k.startswith("_")},
            "history": history, "state": summary.get("state"), "name": summary.get("name"),
            "project": summary.get("project"), "tags": summary.get("tags", [])}


SUITE_SUMMARY_DIR = "_summary"  # under the result store: <root>/_summary/<suite>/wandb/offline-run-*
VERDICT_COLUMNS = ["dataset", "protocol", "matcher", "strategy", "n_done", "n_declared", "rsum_mean", "rsum_std",
                   "rsum_ci_low", "rsum_ci_high", "delta_rsum", "ci_low", "ci_high", "delta_seeds", "p_value",
                   "holm_5pct", "p_improve", "per_seed_deltas", "delta_missing"]


def _plain(v):
    """A JSON-friendly scalar (numpy → Python), None for NaN."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def log_suite_summary(suite, summary, root: str | Path, n_boot: int | None = None, mode: str | None = None) -> Path | None:
    """One W&B run per suite holding its verdicts, next to the runs of its cells (same project and group).

    job_type ``suite-summary``; summary keys ``<dataset>/<protocol>/<matcher>/<strategy>/<stat>`` for
    ``rsum_mean``, ``rsum_std``, ``n_done``, ``delta_rsum``, ``ci_low``, ``ci_high``, ``p_value``,
    ``holm_5pct``, ``p_improve`` and ``per_seed_delta`` (``{seed: ΔRSUM}``); per table
    ``<dataset>/<protocol>/seeds_needed_for_delta_1`` and ``min_detectable_delta`` (at the declared
    seeds); and a ``verdicts`` table with one row per (dataset, protocol, matcher, strategy). The offline run is written under
    ``<root>/_summary/<suite>/`` (re-collecting replaces it), so ``make sync`` uploads it with the
    cells. Best-effort like :class:`WandbTracker`: a W&B error warns and returns None; mode
    ``disabled`` writes nothing.
    """
    from bench.harness import stats

    mode, n_boot = mode or wandb_mode(), stats.N_BOOT if n_boot is None else n_boot
    if mode == "disabled":
        return None
    out = Path(root) / SUITE_SUMMARY_DIR / suite.name
    run = None
    try:
        import shutil

        import wandb

        if (out / "wandb").exists():
            shutil.rmtree(out / "wandb")
        out.mkdir(parents=True, exist_ok=True)
        wb = suite.spec.get("wandb") or {}
        project = os.environ.get("WANDB_PROJECT") or wb.get("project") or DEFAULT_PROJECT
        run = wandb.init(project=rehearsal_project(project) if suite.spec.get("rehearsal") else project,
                         entity=os.environ.get("WANDB_ENTITY") or wb.get("entity"), group=suite.name,
                         job_type="suite-summary", name=f"{suite.name}: summary",
                         tags=["suite-summary", *(["REHEARSAL"] if suite.spec.get("rehearsal") else [])],
                         config={"suite": suite.name, "description": suite.spec.get("description", ""),
                                 "interval": "95% t-interval over seed pairs, seed + image-cluster query variance "
                                             "(bench.harness.stats)", "n_boot": n_boot},
                         dir=str(out), mode=mode, reinit="finish_previous")
        own = summary[~summary["published"].astype(bool)] if len(summary) else summary
        rows = []
        for _, r in own.iterrows():
            prefix = f"{r['dataset']}/{r['protocol']}/{r['matcher']}/{r['strategy']}"
            for k in ("rsum_mean", "rsum_std", "n_done", "delta_rsum", "ci_low", "ci_high", "p_value",
                      "holm_5pct", "p_improve"):
                v = _plain(r.get(k))
                if v is not None:
                    run.summary[f"{prefix}/{k}"] = v
            if r.get("per_seed_deltas"):
                run.summary[f"{prefix}/per_seed_delta"] = json.loads(r["per_seed_deltas"])
            rows.append([_plain(r.get(c)) if c in r else None for c in VERDICT_COLUMNS])
        if len(own):  # the "seeds needed" line of each table
            for (ds, p), g in own.groupby(["dataset", "protocol"], sort=False):
                g = g[g["strategy_name"] != "baseline"]
                sd = stats.pooled_sd(g["seed_sd_delta"].to_numpy(dtype=float), g["delta_seeds"].to_numpy(dtype=int))
                if sd == sd:  # not NaN: some strategy has 2 paired seeds
                    declared = int(own[(own["dataset"] == ds) & (own["protocol"] == p)]["n_declared"].max())
                    run.summary[f"{ds}/{p}/seed_sd_delta_pooled"] = sd
                    run.summary[f"{ds}/{p}/seeds_needed_for_delta_1"] = stats.seeds_needed(sd, 1.0)
                    run.summary[f"{ds}/{p}/min_detectable_delta"] = stats.min_detectable_effect(sd, declared)
        run.log({"verdicts": wandb.Table(columns=VERDICT_COLUMNS, data=rows)}, step=0)
        path = Path(run.settings.sync_dir) if mode == "offline" else out
        run.finish()
        return path
    except Exception as e:  # noqa: BLE001 - tracking must never stop a table
        msg = f"W&B suite summary failed, the tables are written without it: {type(e).__name__}: {e}"
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
        return None
