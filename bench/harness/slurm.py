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
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit
import yaml

from bench import yamlsafe
from bench.provenance import REPO_ROOT
from bench.values import binary_file, shown

PROFILE_DIR = REPO_ROOT / "slurm" / "profiles"
EXECUTOR_KINDS = ("slurm", "local", "debug")

# profile key -> (accepted types, meaning, least value or None). A profile says where jobs go and what the
# cluster allows; what a job needs (GPUs, CPUs, memory, time) is the cell's ``resources`` (see :class:`Resources`).
# Every value is checked at load (:func:`load_profile`): its type, its range, and, for every value that reaches
# the sbatch script, no control character (:func:`check_script_value`).
PROFILE_KEYS: dict[str, tuple[tuple[type, ...], str, float | None]] = {
    "description": ((str,), "free text", None),
    "partition": ((str,), "sbatch --partition", None),
    "account": ((str,), "sbatch --account", None),
    "qos": ((str,), "sbatch --qos", None),
    "constraint": ((str,), "sbatch --constraint", None),
    "nodes": ((int,), "nodes per job", 1),
    "tasks_per_node": ((int,), "tasks (ranks) per node", 1),
    "array_parallelism": ((int,), "array tasks running at once", 1),
    "max_concurrent_gpus": ((int,), "GPUs one sweep may hold at once, all its arrays together", 1),
    "wckey": ((str,), "sbatch --wckey (none is sent without it)", None),
    "setup": ((list,), "shell lines run before the job", None),
    "additional": ((dict,), "further sbatch options {option: value}", None),
    # caps: 0 would not mean "nothing" to SLURM but "no limit" (--time=0) or "the whole node" (--mem=0)
    "max_time_min": ((int,), "cap on a job's wall time in minutes (e.g. the partition's MaxTime)", 1),
    "max_mem_gb": ((int, float), "cap on a job's memory per node in GB", 1),
    "max_cpus_per_task": ((int,), "cap on a job's CPUs per task", 1),
    "max_gpus_per_node": ((int,), "GPUs a node has: a cell asking for more cannot run here", 0),
}
# Values of these keys are written into the sbatch script as they are (setup lines) or as #SBATCH options.
SCRIPT_KEYS = ("partition", "account", "qos", "constraint", "setup", "additional", "wckey")
_CAP_FIX = "set {need} in the suite's resources (e.g. bench/recipes/resources/gpu.yaml); the profile caps it with {cap}"
# sbatch options the harness writes itself, from a cell's resources, from the profile's own keys or from submitit:
# an ``additional:`` entry naming one (or an abbreviation of one, which sbatch would read as it) would override
# them behind the caps and the dry run's summary. option -> how to set it instead.
RESERVED_OPTIONS: dict[str, str] = {
    **dict.fromkeys(("time", "time-min"), _CAP_FIX.format(need="time_min", cap="max_time_min")),
    **dict.fromkeys(("mem", "mem-per-cpu", "mem-per-gpu"), _CAP_FIX.format(need="mem_gb", cap="max_mem_gb")),
    **dict.fromkeys(("cpus-per-task", "cpus-per-gpu"), _CAP_FIX.format(need="cpus", cap="max_cpus_per_task")),
    **dict.fromkeys(("gpus", "gpus-per-node", "gpus-per-task", "gpus-per-socket", "gres"),
                    _CAP_FIX.format(need="gpus", cap="max_gpus_per_node")),
    "nodes": "use the profile's key nodes",
    **dict.fromkeys(("ntasks", "ntasks-per-node"), "use the profile's key tasks_per_node"),
    "partition": "use the profile's key partition (a cell may ask for its own in resources.partition)",
    "account": "use the profile's key account", "qos": "use the profile's key qos",
    "constraint": "use the profile's key constraint",
    "array": "use the profile's key array_parallelism (the sweep makes one array per stage and resource shape)",
    **dict.fromkeys(("job-name", "output", "error", "signal", "dependency", "kill-on-invalid-dep", "open-mode",
                     "wckey"), "the sweep and submitit write it (job logs, requeue signal, afterok dependencies)"),
}
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# Keys that used to be in profiles but are a cell's needs: where they live now, and the profile's cap.
NEED_KEYS = {"time_min": ("time_min", "max_time_min"), "mem_gb": ("mem_gb", "max_mem_gb"),
             "cpus_per_task": ("cpus", "max_cpus_per_task"), "gpus_per_node": ("gpus", "max_gpus_per_node")}
FINISHED_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
}


class ProfileError(ValueError):
    """A cluster profile that cannot be used (unknown name, bad key or value)."""


class ResourceError(ValueError):
    """A cell asks for what the cluster profile cannot give: more than it allows where no cap can apply
    (e.g. GPUs), or a value no sbatch script can hold."""


class ScriptValueError(ResourceError):
    """A value that would be written into an sbatch script holds a control character."""


class SlurmUnavailable(RuntimeError):
    """No SLURM cluster answers here (client not installed, no configuration, controller down)."""


def check_script_value(value: object, where: str) -> None:
    """Refuse a value bound for an sbatch script (an ``#SBATCH`` option, a setup line, a path in the
    command) that holds a control character: bash runs what follows a newline (or CR) as a command of
    its own, and sbatch stops reading ``#SBATCH`` lines at the first line that is not one (the time
    limit, the signal that saves ``last.pt``… would be lost); NUL ends the value early. Quoting (which
    makes ``$(…)`` and ``;`` safe inside an option) cannot make a line break safe in a line-based script.
    ScriptValueError naming ``where``, the value (cut short) and the character."""
    text = str(value)
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise ScriptValueError(f"{where}: {shown(text)} holds the control character {bad!r} (U+{ord(bad):04X}), "
                               "which would break the sbatch script (a line break starts a new shell command "
                               "and ends the #SBATCH options); write the value on one line without it")


def check_additional(additional: dict, where: str) -> None:
    """``additional:`` sbatch options: each key an option name the harness does not set itself
    (:data:`RESERVED_OPTIONS`, also as an abbreviation), each value a plain one (str, number or ``true``
    for a flag) without control characters. ScriptValueError/ProfileError naming the key and the fix."""
    for key, value in additional.items():
        if not isinstance(key, str) or not _OPTION_NAME.fullmatch(key):
            check_script_value(key, f"{where}: key")
            raise ProfileError(f"{where}: {shown(key)} is not an sbatch option name (letters, digits, '-' or '_', "
                               "without the leading dashes, e.g. mail-type)")
        option = key.replace("_", "-").lower()
        hit = next((o for o in RESERVED_OPTIONS if o == option or o.startswith(option)), None)
        if hit is not None:
            what = f"'{key}' is sbatch's --{hit}" + ("" if hit == option else f" (sbatch reads --{key} as --{hit})")
            raise ProfileError(f"{where}: {what}, which the sweep sets itself: an entry here would override it "
                               f"behind the caps and the dry run's summary; remove it from additional and "
                               f"{RESERVED_OPTIONS[hit]}")
        if value is None or value is False or isinstance(value, (list, dict)) or \
                (isinstance(value, float) and not math.isfinite(value)):
            raise ProfileError(f"{where}: '{key}': {shown(value)} is not an sbatch option value; give a string or "
                               "a number, true for a flag, or remove the key to leave the option out")
        check_script_value(value, f"{where}: '{key}'")


# ---------------------------------------------------------------------------------------------- profiles
def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> dict:
    """Load and check a cluster profile: a name in ``slurm/profiles/`` or a path to a YAML file.

    Every key has a declared type and range (:data:`PROFILE_KEYS`); values that reach the sbatch script
    hold no control character; ``additional:`` names no option the sweep sets itself. Returns a dict with
    every key of ``PROFILE_KEYS`` (None where unset), plus ``name`` and ``path``.
    """
    path = _profile_path(name_or_path)
    data = yamlsafe.read_bytes(path)
    if problem := binary_file(data, "cluster profile (YAML)"):
        raise ProfileError(f"{path}: {problem}")
    try:
        raw = yamlsafe.load(data.decode("utf-8"))
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    except UnicodeDecodeError as e:
        raise ProfileError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); re-save the file as UTF-8") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys to values, got {type(raw).__name__}")

    profile: dict[str, Any] = dict.fromkeys(PROFILE_KEYS)
    for key, value in raw.items():
        profile[key] = _profile_value(path, key, value)
    profile["name"] = path.stem
    profile["path"] = str(path)
    return profile


def _profile_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml"))
    path = Path(text) if is_path else PROFILE_DIR / f"{text}.yaml"
    if path.is_dir():
        inside = ", ".join(sorted(str(p) for p in path.glob("*.yaml"))[:6]) or "no .yaml file"
        raise ProfileError(f"cluster profile {path} is a folder, not a profile file; give one of its files "
                           f"({inside}) or a profile name ({', '.join(available_profiles()) or 'none'})")
    if not path.is_file():
        if is_path:
            raise ProfileError(f"cluster profile file {path} does not exist")
        close = difflib.get_close_matches(text, available_profiles(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ProfileError(
            f"unknown cluster profile '{text}'{hint}; known: {', '.join(available_profiles()) or 'none'} "
            f"(in {PROFILE_DIR}); or pass a path to a YAML file"
        )
    return path


def _profile_value(path: Path, key: Any, value: Any) -> Any:
    """One profile entry checked against :data:`PROFILE_KEYS` (type, range, sbatch-script safety)."""
    if key in NEED_KEYS:
        need, cap = NEED_KEYS[key]
        raise ProfileError(
            f"{path}: '{key}' is what a job needs, not where it goes: set '{need}' in the suite's resources "
            f"(e.g. bench/recipes/resources/gpu.yaml); a profile may cap it with '{cap}'"
        )
    if key not in PROFILE_KEYS:
        close = difflib.get_close_matches(str(key), PROFILE_KEYS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ProfileError(f"{path}: unknown key {shown(key)} ({hint}known keys: {', '.join(PROFILE_KEYS)})")
    if value is None:
        return None
    types, meaning, least = PROFILE_KEYS[key]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise ProfileError(f"{path}: '{key}' ({meaning}) must be {expected}, got {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProfileError(f"{path}: '{key}' ({meaning}) must be a finite number, got {shown(value)}")
    if least is not None and value < least:
        why = " (SLURM reads 0 as no limit or the whole node)" if key.startswith("max_") and least == 1 else ""
        fix = "for no cap" if key.startswith("max_") else "for the cluster's default"
        raise ProfileError(f"{path}: '{key}' ({meaning}) must be >= {least}, got {shown(value)}{why}; "
                           f"leave the key out (or null) {fix}")
    if isinstance(value, str) and key in SCRIPT_KEYS and not value.strip():
        raise ProfileError(f"{path}: '{key}' ({meaning}) is empty; give a value or leave the key out")
    if key in SCRIPT_KEYS and isinstance(value, str):
        _as_profile_error(check_script_value, value, f"{path}: '{key}'")
    if key == "setup":
        for i, line in enumerate(value):
            if not isinstance(line, str):
                raise ProfileError(f"{path}: 'setup' must be a list of shell lines (strings), item {i} is "
                                   f"{type(line).__name__} {shown(line)}")
            _as_profile_error(check_script_value, line, f"{path}: setup[{i}]")
    if key == "additional":
        _as_profile_error(check_additional, value, f"{path}: additional")
    return value


def _as_profile_error(check: Callable, value: Any, where: str) -> None:
    try:
        check(value, where)
    except ScriptValueError as e:
        raise ProfileError(str(e)) from None


# ---------------------------------------------------------------------------------------------- requests
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
    raises :class:`ResourceError`; so does a ``resources.partition`` no sbatch script can hold
    (:class:`ScriptValueError`)."""
    res = Resources.of(resources)
    profile = profile or {}
    name = profile.get("name") or "the profile"
    if res.partition is not None:  # a suite's value bound for the sbatch script, checked before any submission
        check_script_value(res.partition, "resources.partition")
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
    the profile (:func:`job_request`); ``job_name`` and ``array_parallelism`` as :func:`executor_parameters`.

    The cluster is always named explicitly: ``AutoExecutor`` alone picks SLURM whenever ``srun`` is
    installed, even with no cluster running. With ``check`` a "slurm" executor first makes sure the
    controller answers (:class:`SlurmUnavailable` otherwise). Note: ``DebugExecutor`` runs jobs in this
    process and opens pdb when one raises.
    """
    if kind not in EXECUTOR_KINDS:
        raise ValueError(f"executor kind must be one of {EXECUTOR_KINDS}, got {kind!r}")
    params = executor_parameters(kind, folder, profile, resources, job_name, array_parallelism)  # checked first
    if kind == "slurm" and check:
        ok, reason = cluster_reachable()
        if not ok:
            raise SlurmUnavailable(f"cannot submit to SLURM: {reason}")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=kind)
    executor.update_parameters(**params)
    if kind == "slurm":
        _only_the_profiles_wckey(executor._executor.parameters, profile)
    return executor


def _only_the_profiles_wckey(parameters: dict, profile: str | Path | dict | None) -> None:
    """submitit writes ``--wckey=submitit`` unless told otherwise: the profile's ``wckey``, else none."""
    if profile is not None and not isinstance(profile, dict):
        profile = load_profile(profile)
    parameters["wckey"] = (profile or {}).get("wckey")


def executor_parameters(kind: str, folder: str | Path, profile: str | Path | dict | None = None,
                        resources: Resources | dict | JobRequest | None = None, job_name: str | None = None,
                        array_parallelism: int | None = None) -> dict[str, Any]:
    """The submitit parameters (``AutoExecutor.update_parameters`` names) of a job of ``kind``: the request
    (:func:`job_request`) placed by the profile. For SLURM every value that reaches the sbatch script,
    whatever its source (profile, the cell's ``resources.partition``, the job folder, this checkout's
    path, the job name), is checked by :func:`check_script_value` here, before any script is written.
    ``job_name``: the jobs' name (a sweep's ``<suite>:<stage>:<shape>``; submitit's default is "submitit");
    ``array_parallelism``: this array's share of the sweep's GPUs (at most the profile's
    ``array_parallelism``)."""
    if profile is None:
        profile = dict.fromkeys(PROFILE_KEYS)
    elif not isinstance(profile, dict):
        profile = load_profile(profile)
    request = resources if isinstance(resources, JobRequest) else job_request(resources, profile)
    res = request.resources
    params: dict[str, Any] = {
        "timeout_min": res.time_min,
        "mem_gb": res.mem_gb,
        "cpus_per_task": res.cpus,
        "gpus_per_node": res.gpus or None,  # 0 = do not ask for GPUs
        "tasks_per_node": profile.get("tasks_per_node"),
        "nodes": profile.get("nodes"),
    }
    if kind == "slurm":
        where = f"cluster profile {profile.get('path') or profile.get('name') or '(given as a dict)'}"
        for path, what in ((folder, "the job log folder (under --root)"), (REPO_ROOT, "this checkout's path"),
                           (sys.executable, "the Python interpreter's path")):
            check_script_value(path, what)
        additional = dict(profile.get("additional") or {})
        check_additional(additional, f"{where}: additional")
        setup = [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
                 *(profile.get("setup") or [])]
        for i, line in enumerate(profile.get("setup") or []):
            check_script_value(line, f"{where}: setup[{i}]")
        placed = {"partition": res.partition or profile.get("partition"), "account": profile.get("account"),
                  "qos": profile.get("qos"), "constraint": profile.get("constraint")}
        for key, value in placed.items():
            if value is not None:
                source = "the cell's resources.partition" if key == "partition" and res.partition else where
                check_script_value(value, f"{source}: {key}")
        if job_name is not None:
            check_script_value(job_name, "the job name (<suite>:<stage>:<shape>)")
        params.update(
            **{f"slurm_{k}": v for k, v in placed.items()},
            slurm_array_parallelism=min((v for v in (profile.get("array_parallelism"), array_parallelism)
                                         if v is not None), default=None),
            slurm_job_name=job_name,
            # Jobs unpickle their function by module name: make this checkout importable in the job.
            slurm_setup=setup,
            slurm_additional_parameters=additional or None,
        )
    return {k: v for k, v in params.items() if v is not None}


LOCAL_TIME_MIN = 24 * 60  # a local job of a cell that names no time limit


def local_job_parameters(resources: Resources | None) -> dict[str, Any]:
    """The submitit parameters of one cell's job on this machine (``--executor local``): its ``resources.time_min``.
    submitit's LocalExecutor by default signals a job after 90 s (a 2-minute limit; the job is "requeued" three
    times, then fails: every full-scale cell failed). It also sets ``CUDA_VISIBLE_DEVICES`` to nothing, so the
    job is given this process's own value (:func:`local_job_environment`)."""
    return {"timeout_min": Resources.of(resources).time_min or LOCAL_TIME_MIN}


def local_job_environment() -> dict[str, str | None]:
    """What a local job sets before it trains (``CellJob(environment=…)``): the GPUs this process sees, as its
    ``CUDA_VISIBLE_DEVICES`` names them (None: unset, every GPU). Not through submitit's ``visible_gpus``, which
    takes indices only (a UUID list is valid), nor its ``setup`` lines, which put a shell between the sweep and
    the job's controller (a stopped sweep signals the controller by its pid)."""
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}


class _ScriptWriter(submitit.SlurmExecutor):
    """submitit's SLURM executor used only to write sbatch scripts (the dry run): it submits nothing, so it
    does not need ``srun`` on this machine, which ``SlurmExecutor`` checks when it is made."""

    @classmethod
    def affinity(cls) -> int:
        return 1

    def _internal_process_submissions(self, delayed_submissions):  # noqa: ANN001 - submitit's signature
        raise RuntimeError("a dry-run script writer submits nothing")


def sbatch_script(folder: str | Path, profile: str | Path | dict | None,
                  resources: Resources | dict | JobRequest | None = None, n_tasks: int = 1,
                  dependency_job_ids: Sequence[str] | None = None, job_name: str | None = None,
                  array_parallelism: int | None = None) -> str:
    """The whole sbatch script submitit writes for an array of ``n_tasks`` jobs (``#SBATCH`` options, the
    setup lines, the command), by submitit's own script writer from the same parameters as
    :func:`make_executor`, without a cluster (the folder's ``%A_%a`` shows where the job ids go)."""
    params = executor_parameters("slurm", folder, profile, resources, job_name, array_parallelism)
    writer = _ScriptWriter(folder)
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    own = {k[len("slurm_"):]: v for k, v in params.items() if k.startswith("slurm_")}
    writer._internal_update_parameters(**writer._convert_parameters(generic), **own)
    _only_the_profiles_wckey(writer.parameters, profile)
    if dependency_job_ids:
        writer.parameters["additional_parameters"] = {**(writer.parameters.get("additional_parameters") or {}),
                                                      **_dependency(dependency_job_ids)}
    if n_tasks > 1:
        writer.parameters["map_count"] = n_tasks
    return writer._make_submission_file_text(writer._submitit_command_str, uid="dry-run")


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


def _log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a job log, indented, for an error message ("" when there is none)."""
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n  | {line}" for line in tail)


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
                                f"{_log_tail(job.paths.stderr)}"
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
