"""``python -m bench sweep SUITE --executor slurm --cluster PROFILE --dry-run``: what a SLURM sweep would
submit, submitting nothing and needing no cluster.

Per job array (:func:`bench.harness.sweep.plan_arrays`: one per dependency stage, resource shape and parent
cells) it prints its job name, the whole sbatch script submitit writes for it (:func:`bench.harness.slurm.
sbatch_script`, made by submitit's own script writer without a cluster: ``#SBATCH`` options, the profile's
setup lines and the command the job runs), the caps applied, the cells whose jobs it waits for (``afterok``: an
OAS student waits for its own baseline only), its share of the sweep's GPUs (``max_concurrent_gpus``), and its
cells with the time each asks for and the estimate it comes from (``bench.harness.estimate``: done cells in the
store, else the GPU rates), warning where a cell's own ``resources.time_min`` is below the estimate; then the
GPU-hours requested and estimated, per array and in total, naming the card and date of the rates.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness.cells import describe, expand, topological_order
from bench.harness.config import Suite
from bench.harness.estimate import cell_estimates, hours_of, load_gpu_rates, time_request, wall_minutes
from bench.harness.slurm import load_profile, sbatch_script
from bench.harness.store import DEFAULT_ROOT
from bench.harness.sweep import JOBS_DIR, cell_states, plan_arrays, select_cells


def dry_run(suite: Suite, root: str | Path = DEFAULT_ROOT, cluster: str | None = None, force: bool = False,
            retry_failed: bool = False, jobs_folder: str | Path | None = None,
            rates_path: str | Path | None = None) -> str:
    """What ``sweep(..., executor="slurm")`` would submit, submitting nothing (module docstring)."""
    root = Path(root)
    profile = load_profile(cluster or "local")
    cells = topological_order(expand(suite))
    states = cell_states(cells, root, query_slurm=False)
    todo = select_cells(cells, states, force=force, retry_failed=retry_failed)
    estimates = cell_estimates(todo, root, rates_path)
    plans = plan_arrays(todo, profile, hours_of(estimates))
    folder = Path(jobs_folder or root / JOBS_DIR)
    rates = load_gpu_rates(rates_path)
    cap = profile.get("max_concurrent_gpus")
    lines = [f"dry run: suite {suite.name}, {len(todo)} of {len(cells)} cell(s) to run, cluster profile "
             f"{profile['name']} ({profile['path']}): {len(plans)} job array(s); nothing is submitted"]
    array_of: dict[str, int] = {}
    totals = {"requested": 0.0, "estimated": 0.0, "unknown": 0}
    warnings = 0
    for number, plan in enumerate(plans, 1):
        deps = [f"<job of cell {p} (array {array_of[p]})>" for p in plan.parents if p in array_of]
        for c in plan.cells:
            array_of[c.id] = number
        share = f"; {plan.parallelism} task(s) at once" if plan.parallelism else ""
        lines += ["", f"array {number} {plan.job_name()} (stage {plan.stage}): {len(plan.cells)} cell(s), "
                  f"{plan.request.resources.describe()}{share}"
                  + (f"; after its parent cell(s) {', '.join(plan.parents)} only (afterok)" if plan.parents else "")]
        lines += [f"  cap: {cap_line}" for cap_line in plan.caps]
        script = sbatch_script(folder, profile, plan.request, len(plan.cells), deps or None, plan.job_name(),
                               plan.parallelism)
        lines += ["  " + line if line else "" for line in script.splitlines()]
        requested = plan.request.resources.time_min
        array_req, array_est = 0.0, 0.0
        for c in plan.cells:
            hours, basis = estimates[c.id].hours, estimates[c.id].basis
            wall = wall_minutes(c, hours)
            _, why = time_request(c, hours, profile.get("max_time_min"))
            shown = f"no estimate ({basis})" if wall is None else f"estimate {wall:.0f} min ({basis})"
            warn = ""
            own = c.resources.time_min if c.resources else None
            if wall is not None and own is not None and own < wall:
                warn = f"  WARNING: its resources.time_min {own} min is below the estimate"
                warnings += 1
            lines.append(f"  {c.id}  {describe(c):<48} requested {requested} min ({why}), {shown}{warn}")
            array_req += (requested or 0) / 60 * plan.gpus
            if hours is None:
                totals["unknown"] += 1
            else:
                array_est += hours
        lines.append(f"  GPU-hours: {array_req:.4g} requested, {array_est:.4g} estimated")
        totals["requested"] += array_req
        totals["estimated"] += array_est
    card = f" (GPU rates of {rates.card}, {rates.date}; {rates.path})" if rates is not None else ""
    lines += ["", f"total: {totals['requested']:.4g} GPU-hours requested, {totals['estimated']:.4g} GPU-hours "
              f"estimated{card}" + (f", {totals['unknown']} cell(s) without an estimate" if totals["unknown"] else "")
              + (f"; at most {cap} GPUs at once (max_concurrent_gpus)" if cap else "")]
    if warnings:
        lines.append(f"{warnings} cell(s) request less time than estimated: a cut cell resumes from its "
                     "checkpoint, but costs a requeue and queue time (raise time_min in the suite's resources)")
    return "\n".join(lines)
