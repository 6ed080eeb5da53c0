"""``python -m bench sweep SUITE --executor slurm --cluster PROFILE --dry-run``: what a SLURM sweep would
submit, submitting nothing and needing no cluster.

Per job array (:func:`bench.harness.sweep.plan_arrays`: one per dependency stage and resource shape) it
prints the whole sbatch script submitit writes for it (:func:`bench.harness.slurm.sbatch_script`, made by
submitit's own script writer, without a cluster or the SLURM client: ``#SBATCH`` options, setup lines and
the command the job runs), the profile's caps applied, its ``afterok`` parents, and its cells with
their requested time and the estimate from measurement beside it (``bench.harness.show``: done cells
in the store, else ``make bench-gpu``'s rates), warning where the request is below the estimate.
"""

from __future__ import annotations

from pathlib import Path

from bench.harness.cells import describe, expand, topological_order
from bench.harness.config import Suite
from bench.harness.show import estimate, load_gpu_rates, planned_steps, recorded_step_times, wall_minutes
from bench.harness.slurm import load_profile, sbatch_script
from bench.harness.store import DEFAULT_ROOT
from bench.harness.sweep import JOBS_DIR, cell_states, plan_arrays, select_cells


def dry_run(suite: Suite, root: str | Path = DEFAULT_ROOT, cluster: str | None = None, force: bool = False,
            retry_failed: bool = False, jobs_folder: str | Path | None = None,
            rates_path: str | Path | None = None) -> str:
    """What ``sweep(..., executor="slurm")`` would submit, submitting nothing: per array the whole sbatch
    script submitit writes for it (made by submitit itself), the profile's caps, and its cells with
    the time estimate from measurement (``bench.harness.show``) beside the requested time."""
    root = Path(root)
    profile = load_profile(cluster or "local")
    cells = topological_order(expand(suite))
    states = cell_states(cells, root, query_slurm=False)
    todo = select_cells(cells, states, force=force, retry_failed=retry_failed)
    plans = plan_arrays(todo, profile)
    folder = Path(jobs_folder or root / JOBS_DIR)
    records, rates, cache = recorded_step_times(root), load_gpu_rates(rates_path), {}
    lines = [f"dry run: suite {suite.name}, {len(todo)} of {len(cells)} cell(s) to run, cluster profile "
             f"{profile['name']} ({profile['path']}): {len(plans)} job array(s); nothing is submitted"]
    array_of = {}
    warnings = 0
    for number, plan in enumerate(plans, 1):
        parents = sorted({array_of[d] for c in plan.cells for d in c.depends_on or [] if d in array_of})
        deps = [f"<jobs of array {k}>" for k in parents]
        for c in plan.cells:
            array_of[c.id] = number
        lines.append("")
        lines.append(f"array {number} (stage {plan.stage}): {len(plan.cells)} cell(s), "
                     f"{plan.request.resources.describe()}"
                     + (f"; after array(s) {', '.join(map(str, parents))} (afterok)" if parents else ""))
        lines += [f"  cap: {cap}" for cap in plan.caps]
        script = sbatch_script(folder, profile, plan.request, len(plan.cells), deps or None)
        lines += ["  " + line if line else "" for line in script.splitlines()]
        requested = plan.request.resources.time_min
        for c in plan.cells:
            hours, basis = estimate(c, records, planned_steps(c, cache), rates)
            wall = wall_minutes(c, hours)
            shown = "no estimate" if wall is None else f"estimate {wall:.0f} min ({basis})"
            warn = ""
            if wall is not None and requested is not None and requested < wall:
                warn = f"  WARNING: requested {requested} min is below the estimate"
                warnings += 1
            lines.append(f"  {c.id}  {describe(c):<48} requested {requested} min, {shown}{warn}")
    if warnings:
        lines.append(f"\n{warnings} cell(s) request less time than estimated: a cut cell resumes from its "
                     "checkpoint, but costs a requeue and queue time (raise time_min in the suite's resources)")
    return "\n".join(lines)
