"""Launching on SLURM (or locally) with submitit, configured by cluster profiles.

A *profile* (``slurm/profiles/<name>.yaml``) holds the cluster side of a launch: partition, account,
QoS, GPUs/CPUs/memory per job, wall time, array parallelism and extra sbatch options. See
``slurm/README.md``.

SLURM client commands and submitit read the cluster's address from ``SLURM_CONF`` (for the local test
cluster: ``eval "$(slurm/testcluster up)"``), so it must be in the environment of this process.

Without SLURM accounting (the default test cluster), ``sacct`` fails and submitit reports job states as
UNKNOWN; results still arrive. The source of truth is then the result file submitit writes (and, for
benchmark cells, the cell's ``done`` marker); :func:`slurm_states` reads ``squeue``, which keeps
finished jobs for ``MinJobAge`` seconds, and falls back to ``sacct`` where accounting exists.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit
import yaml

from bench.provenance import REPO_ROOT

PROFILE_DIR = REPO_ROOT / "slurm" / "profiles"
EXECUTOR_KINDS = ("slurm", "local", "debug")

# profile key -> (accepted types, meaning). A profile says where jobs go and what the cluster allows;
# what a job needs (GPUs, CPUs, memory, time) is the cell's ``resources`` (see :class:`Resources`).
PROFILE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "description": ((str,), "free text"),
    "partition": ((str,), "sbatch --partition"),
    "account": ((str,), "sbatch --account"),
    "qos": ((str,), "sbatch --qos"),
    "constraint": ((str,), "sbatch --constraint"),
    "nodes": ((int,), "nodes per job"),
    "tasks_per_node": ((int,), "tasks (ranks) per node"),
    "array_parallelism": ((int,), "array tasks running at once"),
    "max_concurrent_gpus": ((int,), "GPUs one sweep may hold at once, all its arrays together"),
    "wckey": ((str,), "sbatch --wckey (none is sent without it)"),
    "setup": ((list,), "shell lines run before the job"),
    "additional": ((dict,), "further sbatch options {option: value}"),
    "max_time_min": ((int,), "cap on a job's wall time in minutes (e.g. the partition's MaxTime)"),
    "max_mem_gb": ((int, float), "cap on a job's memory per node in GB"),
    "max_cpus_per_task": ((int,), "cap on a job's CPUs per task"),
    "max_gpus_per_node": ((int,), "GPUs a node has: a cell asking for more cannot run here"),
}
# Keys that used to be in profiles but are a cell's needs: where they live now, and the profile's cap.
NEED_KEYS = {"time_min": ("time_min", "max_time_min"), "mem_gb": ("mem_gb", "max_mem_gb"),
             "cpus_per_task": ("cpus", "max_cpus_per_task"), "gpus_per_node": ("gpus", "max_gpus_per_node")}
FINISHED_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
}


class ProfileError(ValueError):
    """A cluster profile that cannot be used (unknown name, bad key or value)."""


# ---------------------------------------------------------------------------------------------- profiles
def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> dict:
    """Load and check a cluster profile: a name in ``slurm/profiles/`` or a path to a YAML file.

    Returns a dict with every key of ``PROFILE_KEYS`` (None where unset), plus ``name`` and ``path``.
    """
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml"))
    path = Path(text) if is_path else PROFILE_DIR / f"{text}.yaml"
    if not path.is_file():
        if is_path:
            raise ProfileError(f"cluster profile file {path} does not exist")
        close = difflib.get_close_matches(text, available_profiles(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ProfileError(
            f"unknown cluster profile '{text}'{hint}; known: {', '.join(available_profiles()) or 'none'} "
            f"(in {PROFILE_DIR}); or pass a path to a YAML file"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {e}") from e
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys to values, got {type(raw).__name__}")

    profile: dict[str, Any] = dict.fromkeys(PROFILE_KEYS)
    for key, value in raw.items():
        if key in NEED_KEYS:
            need, cap = NEED_KEYS[key]
            raise ProfileError(
                f"{path}: '{key}' is what a job needs, not where it goes: set '{need}' in the suite's resources "
                f"(e.g. bench/recipes/resources/gpu.yaml); a profile may cap it with '{cap}'"
            )
        if key not in PROFILE_KEYS:
            close = difflib.get_close_matches(str(key), PROFILE_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ProfileError(f"{path}: unknown key '{key}' ({hint}known keys: {', '.join(PROFILE_KEYS)})")
        types, meaning = PROFILE_KEYS[key]
        bad_bool = isinstance(value, bool) and bool not in types
        if value is not None and (bad_bool or not isinstance(value, types)):
            expected = " or ".join(t.__name__ for t in types)
            raise ProfileError(f"{path}: '{key}' ({meaning}) must be {expected}, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ProfileError(f"{path}: '{key}' ({meaning}) must be >= 0, got {value!r}")
        profile[key] = value
    if profile["setup"] is not None and not all(isinstance(line, str) for line in profile["setup"]):
        raise ProfileError(f"{path}: 'setup' must be a list of shell lines (strings)")
    profile["name"] = path.stem
    profile["path"] = str(path)
    return profile


# ---------------------------------------------------------------------------------------------- requests
class ResourceError(ValueError):
    """A cell asks for more than the cluster profile allows, where no cap can apply (e.g. GPUs)."""


@dataclass(frozen=True)
class Resources:
    """What one job needs: GPUs per node, CPUs per task, memory per node (GB), wall time (minutes), and
    optionally its own partition. None: not asked for (the cluster's default). A cell's ``resources``
    (suite/recipe ``resources``, e.g. ``bench/recipes/resources/gpu.yaml``) are the one source."""

    gpus: int | None = None
    cpus: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    partition: str | None = None

    @classmethod
    def of(cls, source: Resources | dict | None) -> Resources:
        """From a cell (its ``resources``: a ``bench.spec.Resources``), a resources mapping, or None (nothing
        asked for)."""
        if source is None or isinstance(source, Resources):
            return source or cls()
        if hasattr(source, "to_dict"):  # the typed cell's resources (bench.spec.Resources)
            source = source.to_dict()
        res = (source["resources"] if "resources" in source else source) or {}
        return cls(gpus=res.get("gpus"), cpus=res.get("cpus"), mem_gb=res.get("mem_gb"),
                   time_min=res.get("time_min"), partition=res.get("partition"))

    def describe(self) -> str:
        parts = [f"{self.gpus or 0} GPU(s)", f"{self.cpus} CPU(s)" if self.cpus else None,
                 f"{self.mem_gb:g} GB" if self.mem_gb else None, f"{self.time_min} min" if self.time_min else None,
                 f"partition {self.partition}" if self.partition else None]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class JobRequest:
    """What a job asks SLURM for: a cell's :class:`Resources` after the profile's caps (``caps``: one
    printed line per value the profile lowered)."""

    resources: Resources
    caps: tuple[str, ...] = ()


def job_request(resources: Resources | dict | None, profile: dict | None) -> JobRequest:
    """``resources`` capped by ``profile`` (``max_time_min``, ``max_mem_gb``, ``max_cpus_per_task``; each
    cap applied is described in ``caps``). More GPUs than ``max_gpus_per_node`` cannot be capped: that
    raises :class:`ResourceError`."""
    res = Resources.of(resources)
    profile = profile or {}
    name = profile.get("name") or "the profile"
    max_gpus = profile.get("max_gpus_per_node")
    if max_gpus is not None and (res.gpus or 0) > max_gpus:
        raise ResourceError(
            f"asks for {res.gpus} GPU(s) per node but cluster profile {name} allows {max_gpus} "
            f"(max_gpus_per_node in {profile.get('path', name)}): lower the cell's resources.gpus or use a "
            "profile whose nodes have more GPUs"
        )
    caps, capped = [], {}
    for field, key, unit in (("time_min", "max_time_min", "min"), ("mem_gb", "max_mem_gb", "GB"),
                             ("cpus", "max_cpus_per_task", "CPU(s)")):
        limit, value = profile.get(key), getattr(res, field)
        if limit is not None and value is not None and value > limit:
            capped[field] = limit
            note = " (a cut cell resumes from its checkpoint when requeued)" if field == "time_min" else ""
            caps.append(f"{field} {value:g} {unit} capped to {limit:g} by {key} of profile {name}{note}")
    return JobRequest(replace(res, **capped), tuple(caps))


# ---------------------------------------------------------------------------------------------- executors
def make_executor(
    kind: str, folder: str | Path, profile: str | Path | dict | None = None, check: bool = True,
    resources: Resources | dict | JobRequest | None = None, job_name: str | None = None,
    array_parallelism: int | None = None,
) -> submitit.AutoExecutor:
    """A submitit executor of ``kind`` ("slurm" | "local" | "debug") logging to ``folder``: where its
    jobs go from ``profile`` (a name, a path or a dict from :func:`load_profile`), what they ask for
    from ``resources`` (a cell, its resources, :class:`Resources` or a :class:`JobRequest`), capped by
    the profile (:func:`job_request`). ``job_name``: the jobs' name (a sweep's ``<suite>:<stage>:<shape>``;
    submitit's own default is "submitit"); ``array_parallelism``: this array's share of the sweep's GPUs (at most
    the profile's ``array_parallelism``). A ``--wckey`` is sent only where the profile sets ``wckey``.

    The cluster is always named explicitly: ``AutoExecutor`` alone picks SLURM whenever ``srun`` is
    installed, even with no cluster running. With ``check`` a "slurm" executor first makes sure the
    controller answers (clear error otherwise). Note: ``DebugExecutor`` runs jobs in this process and
    opens pdb when one raises.
    """
    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"executor kind must be one of {EXECUTOR_KINDS}, got {kind!r}")
    if kind == "slurm" and check:
        ok, reason = cluster_reachable()
        if not ok:
            raise RuntimeError(f"cannot submit to SLURM: {reason}")
    if profile is None:
        profile = dict.fromkeys(PROFILE_KEYS)
    elif not isinstance(profile, dict):
        profile = load_profile(profile)
    request = resources if isinstance(resources, JobRequest) else job_request(resources, profile)
    res = request.resources

    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    params: dict[str, Any] = {
        "timeout_min": res.time_min,
        "mem_gb": res.mem_gb,
        "cpus_per_task": res.cpus,
        "gpus_per_node": res.gpus or None,  # 0 = do not ask for GPUs
        "tasks_per_node": profile.get("tasks_per_node"),
        "nodes": profile.get("nodes"),
    }
    if kind == "slurm":
        params.update(
            slurm_partition=res.partition or profile.get("partition"),
            slurm_account=profile.get("account"),
            slurm_qos=profile.get("qos"),
            slurm_constraint=profile.get("constraint"),
            slurm_array_parallelism=min((v for v in (profile.get("array_parallelism"), array_parallelism)
                                         if v is not None), default=None),
            slurm_job_name=job_name,
            # Jobs unpickle their function by module name: make this checkout importable in the job.
            slurm_setup=[f'export PYTHONPATH="{REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"', *(profile.get("setup") or [])],
            slurm_additional_parameters=dict(profile.get("additional") or {}) or None,
        )
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    if kind == "slurm":  # submitit writes --wckey=submitit unless told otherwise: only the profile's, if any
        executor._executor.parameters["wckey"] = profile.get("wckey")
    return executor


def sbatch_header(executor: submitit.AutoExecutor, n_tasks: int = 1,
                  dependency_job_ids: Sequence[str] | None = None) -> str:
    """The ``#SBATCH`` lines submitit writes for an array of ``n_tasks`` jobs of this (SLURM) executor,
    made by submitit's own script writer (the folder's ``%j`` shows where the job id goes)."""
    from submitit.slurm.slurm import _make_sbatch_string

    inner = executor._executor
    params = dict(inner.parameters)
    if dependency_job_ids:
        params["additional_parameters"] = {**(params.get("additional_parameters") or {}),
                                           **_dependency(dependency_job_ids)}
    if n_tasks > 1:
        params["map_count"] = n_tasks
    text = _make_sbatch_string(command="true", folder=inner.folder, **params)
    return "\n".join(line for line in text.splitlines() if line.startswith("#SBATCH"))


def _dependency(job_ids: Sequence[str]) -> dict[str, str]:
    # A parent that fails would leave the array PENDING (DependencyNeverSatisfied) forever: cancel it.
    return {"dependency": "afterok:" + ":".join(str(j) for j in job_ids), "kill_on_invalid_dep": "yes"}


def submit_array(
    executor: submitit.AutoExecutor,
    fn: Callable | None,
    items: Iterable[Any],
    dependency_job_ids: Sequence[str] | None = None,
) -> list[submitit.Job]:
    """Submit ``fn(item)`` for every item as one job array (``fn=None``: each item is a callable, e.g. a
    checkpointable ``CellJob``). With ``dependency_job_ids`` the array starts only after all of those
    jobs succeeded (``--dependency=afterok:<id>:<id>…``; SLURM only). Returns the jobs in item order.
    """
    items = list(items)
    if not items:
        return []
    if dependency_job_ids and executor.cluster != "slurm":
        raise ValueError(
            f"job dependencies need SLURM, executor is {executor.cluster!r}: wait for the parent jobs "
            "(job.result()) before submitting instead"
        )
    slurm_params = executor._executor.parameters if executor.cluster == "slurm" else {}
    previous_additional = slurm_params.get("additional_parameters")
    if dependency_job_ids:
        additional = {**(previous_additional or {}), **_dependency(dependency_job_ids)}
        executor.update_parameters(slurm_additional_parameters=additional)
    try:
        with executor.batch():
            jobs = [executor.submit(item) if fn is None else executor.submit(fn, item) for item in items]
    finally:
        if dependency_job_ids:  # the dependency belongs to this array only
            slurm_params["additional_parameters"] = previous_additional
    return jobs


# ---------------------------------------------------------------------------------------------- cluster state
def _run(cmd: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())


def cluster_reachable(timeout_s: float = 10.0) -> tuple[bool, str]:
    """(True, description) when the SLURM controller answers ``sinfo``, else (False, why and the fix)."""
    if shutil.which("sinfo") is None:
        return False, "SLURM client commands (sinfo, sbatch) are not installed"
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():
        return False, f"SLURM_CONF={conf} does not exist (is the cluster up? slurm/testcluster up)"
    if not conf and not Path("/etc/slurm/slurm.conf").is_file():
        return False, (
            "SLURM_CONF is not set and /etc/slurm/slurm.conf does not exist; for the local test cluster: "
            'eval "$(slurm/testcluster up)"'
        )
    try:
        proc = _run(["sinfo", "-h", "-o", "%P %a %D %T"], timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"sinfo did not answer within {timeout_s:.0f}s (SLURM_CONF={conf})"
    if proc.returncode != 0:
        return False, f"sinfo failed (SLURM_CONF={conf}): {proc.stderr.strip() or proc.stdout.strip()}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return True, f"controller answers (SLURM_CONF={conf}): " + "; ".join(lines)


def slurm_states(job_ids: Iterable[str], timeout_s: float = 20.0) -> dict[str, str]:
    """SLURM state of each job id ("123" or array task "123_4"): PENDING, RUNNING, COMPLETED, FAILED…

    Reads ``squeue`` (finished jobs stay visible for MinJobAge), then ``sacct`` for the rest where
    accounting exists; ids neither knows are "UNKNOWN" (they left the queue: check the result files).
    """
    wanted = [str(j) for j in job_ids]
    states: dict[str, str] = {}
    if not wanted:
        return states
    fmt = ["-h", "-r", "-t", "all", "-o", "%i|%A|%T"]
    proc = _run(["squeue", *fmt, "-j", ",".join(wanted)], timeout_s)
    outputs = [proc.stdout] if proc.returncode == 0 else []
    if proc.returncode != 0:
        if "Invalid job id" not in proc.stderr:
            raise RuntimeError(f"squeue failed: {proc.stderr.strip()} (SLURM_CONF={os.environ.get('SLURM_CONF')})")
        # Some id is no longer known: ask one by one.
        outputs = [_run(["squeue", *fmt, "-j", j], timeout_s).stdout for j in wanted]
    for line in "\n".join(outputs).splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            array_id, job_id, state = parts
            for key in (array_id, job_id):
                if key in wanted:
                    states[key] = state
    missing = [j for j in wanted if j not in states]
    if missing:
        try:
            acct = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)], timeout_s)
        except (subprocess.TimeoutExpired, FileNotFoundError):
            acct = None
        if acct is not None and acct.returncode == 0:
            for line in acct.stdout.splitlines():
                parts = line.strip().split("|")
                if len(parts) == 2 and parts[0] in missing:
                    states[parts[0]] = parts[1].split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return {j: states.get(j, "UNKNOWN") for j in wanted}


class JobLostError(RuntimeError):
    """A job left the SLURM queue without writing its result (cancelled, killed, node failure)."""


def wait_for_jobs(
    jobs: Sequence[submitit.Job], timeout_s: float | None = None, poll_s: float = 1.0, grace_s: float = 10.0,
    raise_lost: bool = True,
) -> list[str]:
    """Wait until every job wrote its result file (success or failure; then ``job.result()`` returns at
    once). Unlike ``job.result()`` this does not hang when states are UNKNOWN (no accounting): a SLURM
    job that finished without a result file for ``grace_s`` raises :class:`JobLostError` naming its log
    (``raise_lost=False``: it is dropped and the others are still waited for). Returns the lost job ids.
    """
    start = time.monotonic()
    pending = list(jobs)
    gone_since: dict[str, float] = {}
    lost: list[str] = []
    while pending:
        pending = [job for job in pending if not job.paths.result_pickle.exists()]
        slurm_jobs = [job for job in pending if isinstance(job, submitit.SlurmJob)]
        if slurm_jobs:
            states = slurm_states([job.job_id for job in slurm_jobs])
            now = time.monotonic()
            for job in slurm_jobs:
                state = states[job.job_id]
                if state in FINISHED_STATES or state == "UNKNOWN":
                    first = gone_since.setdefault(job.job_id, now)
                    if now - first > grace_s and not job.paths.result_pickle.exists():
                        if raise_lost:
                            raise JobLostError(
                                f"job {job.job_id} ended ({state}) without a result; log: {job.paths.stderr}"
                            )
                        lost.append(job.job_id)
                else:
                    gone_since.pop(job.job_id, None)
        pending = [job for job in pending if job.job_id not in lost and not job.done()]
        if not pending:
            return lost
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            ids = ", ".join(job.job_id for job in pending)
            raise TimeoutError(f"jobs not finished after {timeout_s:.0f}s: {ids}")
        time.sleep(poll_s)
    return lost
