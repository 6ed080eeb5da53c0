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
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench.metrics import METRIC_KEYS
from bench.spec import Cell, Wandb

log = logging.getLogger(__name__)

METRIC_COLUMNS = list(METRIC_KEYS)  # the columns of a run's metrics table (bench.metrics names them)
DEFAULT_PROJECT = "itm-coop-bench"  # + "-<suite>": where a suite's runs go when neither it nor WANDB_PROJECT says


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def rehearsal_project(project: str) -> str:
    """The W&B project of a rehearsal's runs: ``<project>-rehearsal`` (``bench.harness.rehearsal.SUFFIX``)."""
    from bench.harness.rehearsal import SUFFIX

    return project if project.endswith(SUFFIX) else project + SUFFIX


#: The run folder's record of its W&B run: ``{"run_id", "generation"}`` (a resume continues that run).
WANDB_RUN_FILE = "wandb-run.json"
_OFFLINE_DIR = re.compile(r"offline-run-(\d{8}_\d{6})-(.+)$")


def project_of(suite: str | None, wb: Wandb | dict | None = None) -> str:
    """The W&B project of a suite's runs: ``WANDB_PROJECT``, else the suite's ``wandb.project``, else
    ``itm-coop-bench-<suite>`` (one project per suite)."""
    given = wb.get("project") if isinstance(wb, dict) else (wb.project if wb is not None else None)
    return os.environ.get("WANDB_PROJECT") or given or f"{DEFAULT_PROJECT}-{suite or 'cells'}"


def row_group(cell: Cell) -> str:
    """The W&B group of a cell: its table row (suite, dataset, matcher, strategy label), so W&B averages the
    row's seeds."""
    return f"{cell.suite}/{cell.dataset_label or cell.dataset.name}/{cell.matcher_label or cell.matcher.name}/" \
           f"{cell.strategy.label}"


def data_kind(cell: Cell) -> str:
    """``synthetic`` or ``real``: what the cell's data root holds (``bench.provenance.data_description``, the one
    reader of the embedded generator's marker, as the result records it)."""
    from bench.provenance import data_description

    return str(data_description(cell.dataset.data_root)["kind"])


def run_tags(cell: Cell) -> list[str]:
    """Tags of a cell's run: suite, scale, data kind, code version, matcher, dataset, scenario."""
    from bench.provenance import git_info

    commit = (git_info().get("commit") or "none")[:10]
    tags = [f"suite:{cell.suite}", f"scale:{cell.scale}", f"data:{data_kind(cell)}", f"code:{commit}",
            cell.matcher.name, cell.dataset_label or cell.dataset.name, cell.strategy.scenario or "none"]
    return [t[:64] for t in tags]  # W&B's limit


def run_identity(cell: Cell, run_dir: str | Path) -> tuple[str, int, bool]:
    """(run id, generation, resumed) of the cell's W&B run in ``run_dir``: ``<cell id>-<generation>``. A run
    folder holding a checkpoint to resume from (``last.pt``) continues the run its ``wandb-run.json`` names;
    otherwise a new generation starts (one more than this folder's or the cell's final folder's: a forced
    re-run trains in a staging folder beside it) and is recorded."""
    from bench.run_folder import write_json

    run_dir = Path(run_dir)
    mine = _read_json(run_dir / WANDB_RUN_FILE)
    resumable = any((run_dir / name).exists() for name in ("last.pt", "last.prev.pt"))
    if mine and resumable:
        return str(mine["run_id"]), int(mine["generation"]), True
    final = _read_json(run_dir.parent / str(cell.id) / WANDB_RUN_FILE) if cell.id else None
    generation = 1 + max(int((mine or {}).get("generation", 0)), int((final or {}).get("generation", 0)))
    run_id = f"{cell.id or 'cell'}-{generation}"
    write_json(run_dir / WANDB_RUN_FILE, {"run_id": run_id, "generation": generation})
    return run_id, generation, False


def _read_json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) and "run_id" in out and "generation" in out else None


def _offline_folders(run_dir: Path, run_id: str) -> list[Path]:
    """The offline W&B folders of ``run_id`` under ``run_dir/wandb``, oldest first."""
    found = [p for p in (run_dir / "wandb").glob(f"offline-run-*-{run_id}") if p.is_dir()]
    return sorted(found, key=lambda p: _OFFLINE_DIR.match(p.name).group(1) if _OFFLINE_DIR.match(p.name) else "")


class WandbTracker:
    """One W&B run for one cell, continued across resumes: id ``<cell id>-<generation>`` with ``resume="allow"``
    (:func:`run_identity`), name ``<dataset>/<matcher>/<strategy label>/s<seed>``, group = the table row
    (:func:`row_group`, W&B averages its seeds), job_type = the strategy label, tags = :func:`run_tags`, config =
    the whole cell, project = :func:`project_of` the suite.

    Offline, W&B starts a new folder at each ``wandb.init`` even with the same id: a resumed cell's run first
    replays the history of the part before (read back from the latest earlier folder of the id, up to the step
    the cell resumed from), so the newest folder holds the whole run; :func:`offline_runs` lists only that
    one per id for ``wandb sync``."""

    def __init__(self, cell: Cell, run_dir: str | Path, project: str | None = None, mode: str | None = None,
                 dir: str | Path | None = None):
        self.cell = cell
        self.run = None
        self.last_step = -1
        self._warned = False
        self._replay: list[dict] | None = None
        try:
            import wandb

            from bench.harness.cells import describe

            mode = mode or wandb_mode()
            where = Path(dir or run_dir)
            self.run_id, self.generation, self.resumed = run_identity(cell, run_dir)
            earlier = _offline_folders(where, self.run_id) if mode == "offline" and self.resumed else []
            if earlier:
                self._replay = read_offline_run(earlier[-1])["history"]
                time.sleep(max(0.0, 1.05 - (time.time() - earlier[-1].stat().st_mtime)))  # a new folder name
            wb = cell.wandb
            project = project or project_of(cell.suite, wb)
            rehearsal = cell.rehearsal is not None  # never among a table's real runs: a project of its own
            self.run = wandb.init(
                project=rehearsal_project(project) if rehearsal else project,
                entity=os.environ.get("WANDB_ENTITY") or (wb and wb.entity),
                id=self.run_id, resume="allow", group=row_group(cell), job_type=cell.strategy.label[:64],
                tags=run_tags(cell) + (["REHEARSAL"] if rehearsal else []),
                name=("REHEARSAL " if rehearsal else "") + describe(cell), config=cell.to_dict(), dir=str(where),
                mode=mode,
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

    def _replay_before(self, step: int | None) -> None:
        """Log the earlier part's history rows before ``step`` (once, before this part's first row)."""
        rows, self._replay = self._replay or [], None
        for row in rows:
            at = row.get("_step")
            if at is None or (step is not None and at >= step):
                continue
            values = {k: v for k, v in row.items() if k != "_step" and isinstance(v, int | float | str | bool)}
            if values:
                self.run.log(values, step=int(at))
                self.last_step = max(self.last_step, int(at))

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            if self._replay is not None:
                self._replay_before(step)
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
            if self._replay is not None:
                self._replay_before(None)
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
    """Every offline run under ``root`` (for ``wandb sync``), oldest name first: per W&B run id in one folder, the
    newest offline folder only (a resumed cell's, which replayed the parts before it)."""
    newest: dict[tuple[Path, str], Path] = {}
    for f in sorted(Path(root).rglob("offline-run-*/run-*.wandb")):
        m = _OFFLINE_DIR.match(f.parent.name)
        key = (f.parent.parent, m.group(2) if m else f.parent.name)
        if key not in newest or (m and newest[key].name < f.parent.name):
            newest[key] = f.parent
    return sorted(newest.values())


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
    own = summary[~summary["published"].astype(bool)] if len(summary) else summary
    if not len(own) or not (own["n_done"].fillna(0) > 0).any():  # never replace a summary by an empty one
        warnings.warn(f"W&B suite summary of {suite.name} not written: no cell of it is done", RuntimeWarning,
                      stacklevel=2)
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
        project = project_of(suite.name, wb)
        run = wandb.init(project=rehearsal_project(project) if suite.spec.get("rehearsal") else project,
                         entity=os.environ.get("WANDB_ENTITY") or wb.get("entity"), group=suite.name,
                         job_type="suite-summary", name=f"{suite.name}: summary",
                         tags=["suite-summary", *(["REHEARSAL"] if suite.spec.get("rehearsal") else [])],
                         config={"suite": suite.name, "description": suite.spec.get("description", ""),
                                 "interval": "95% t-interval over seed pairs, seed + image-cluster query variance "
                                             "(bench.harness.stats)", "n_boot": n_boot},
                         dir=str(out), mode=mode, reinit="finish_previous")
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
