"""Values a user (or a colleague's file) gives that reach a shell, a parser or a loss: docs/bad-inputs.md,
"Values that reach a shell, a parser or a loss" (U entries). Each refusal is one ``error:`` line, exit
code 2, before anything is submitted or trained; what was allowed before and is fine stays allowed."""

from __future__ import annotations

import math
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import strategies
from bench import spec
from bench.__main__ import main
from bench.harness.cells import expand
from bench.harness.config import ConfigError, load_suite
from bench.harness.slurm import ProfileError, Resources, job_request, load_profile, make_executor
from bench.spec import Cell
from bench.train import run_cell
from strategies.base import Strategy

# Names this round added are imported where they are used, so that on the code before it every test
# fails for its own reason (not all of them at collection).

REPO = Path(__file__).resolve().parents[1]
from tests.test_slurm_resources import README_DRY_RUN  # noqa: E402 - the README's dry run, held verbatim there


def refused(capsys, *args, lines: int = 1) -> str:
    """``python -m bench ARGS`` in this process: exit 2 and one ``error:`` line (no traceback; a problem of
    several cells: one line per cell)."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2, err
    assert err.startswith("error: ") and len(err.splitlines()) == lines, err
    return err


def profile(tmp_path: Path, text: str | None = None, **keys) -> Path:
    path = tmp_path / "prof.yaml"
    path.write_text(text if text is not None else yaml.safe_dump({"partition": "gpu", **keys}))
    return path


def dry_run(*extra) -> list:
    return ["sweep", "demo", "--executor", "slurm", "--dry-run", *extra]


# ----------------------------------------------------------------------------- values reaching the sbatch script

CONTROL = [
    ("partition", "debug\ntouch X #"),
    ("account", "acct\rtouch X"),
    ("qos", "normal\x00"),
    ("constraint", "a100\n#SBATCH --time=0"),
    ("setup", ["source .venv/bin/activate\ntouch X"]),
    ("additional", {"mail-user": "me@x\ntouch X"}),
    ("additional", {"comment\ntouch X": "c"}),
]


@pytest.mark.parametrize("key,value", CONTROL, ids=[f"{k}={v!r}" for k, v in CONTROL])
def test_a_control_character_in_a_profile_value_is_refused(capsys, tmp_path, key, value):
    path = profile(tmp_path, **{key: value})
    msg = refused(capsys, *dry_run("--cluster", path, "--root", tmp_path / "runs"))
    assert str(path) in msg and "control character" in msg and "sbatch script" in msg
    assert not (tmp_path / "runs").exists() and not (tmp_path / "X").exists()


def test_a_control_character_in_a_suite_partition_is_refused_before_submission(capsys, tiny_data, tmp_path):
    bad = 'resources.default.partition="debug\\ntouch X #"'  # YAML's \n: a newline in the value
    for extra in (["--dry-run"], []):  # the dry run, and a real sweep before anything is submitted
        msg = refused(capsys, "sweep", "demo", bad, f"datasets.0.data_root={tiny_data}", "seeds=[0]",
                      "--executor", "slurm", "--cluster", "local", "--root", tmp_path / "runs", *extra, lines=4)
        for line in msg.splitlines():  # each cell named, as a cell asking for more GPUs than a node has
            assert "resources.partition: 'debug\\ntouch X #' holds the control character '\\n'" in line
    assert not (tmp_path / "runs").exists()


def test_every_value_reaching_an_sbatch_script_is_checked_where_the_request_is_built(tmp_path):
    """Whatever its source: a profile given as a dict (never loaded), a cell's resources, the job folder."""
    from bench.harness.slurm import ScriptValueError, sbatch_script

    good = {"partition": "gpu", "setup": [], "additional": {}}
    with pytest.raises(ScriptValueError, match=r"cluster profile .*: partition: 'gpu\\n' holds the control"):
        make_executor("slurm", tmp_path / "jobs", {**good, "partition": "gpu\n"}, check=False)
    with pytest.raises(ScriptValueError, match=r"setup\[0\]: 'echo\\rx' holds"):
        sbatch_script(tmp_path / "jobs", {**good, "setup": ["echo\rx"]})
    with pytest.raises(ScriptValueError, match=r"the job log folder .*holds the control character"):
        sbatch_script(tmp_path / "jo\nbs", good)
    with pytest.raises(ScriptValueError, match=r"resources.partition: 'a\\x00b'"):
        job_request(Resources(partition="a\x00b"), good)
    with pytest.raises(ScriptValueError, match=r"resources.partition: 'a\\nb'"):
        job_request(spec.Resources(partition="a\nb"), good)  # a typed cell's resources (spec.Resources) alike
    with pytest.raises(ProfileError, match=r"'time' is sbatch's --time"):
        sbatch_script(tmp_path / "jobs", {**good, "additional": {"time": 5}})
    with pytest.raises(ProfileError, match=r"'qos --time=0' is not an sbatch option name"):
        sbatch_script(tmp_path / "jobs", {**good, "additional": {"qos --time=0": 1}})
    # what quoting makes safe stays allowed, and is quoted in the script
    script = sbatch_script(tmp_path / "jobs", {**good, "account": "$(touch X); rm -rf ~"})
    assert "#SBATCH --account='$(touch X); rm -rf ~'" in script


def test_the_dry_run_shows_the_whole_script_submitit_writes(capsys, tmp_path, tiny_data):
    from bench.harness.slurm import sbatch_script

    path = profile(tmp_path, setup=["module load cuda", "source .venv/bin/activate"], additional={"requeue": True})
    assert main([str(a) for a in dry_run("--cluster", path, "--root", tmp_path / "runs", f"datasets.0.data_root={tiny_data}",
                                         f"datasets.0.vocab_root={tiny_data}/vocab")]) is None
    out = capsys.readouterr().out
    for line in ("  #!/bin/bash", "  #SBATCH --partition=gpu", "  #SBATCH --requeue", "  # setup",
                 "  module load cuda", "  source .venv/bin/activate", "  # command",
                 "  export SUBMITIT_EXECUTOR=slurm"):
        assert line in out.splitlines(), line
    assert "srun --unbuffered" in out and "-m submitit.core._submit" in out
    assert not (tmp_path / "runs").exists()
    if shutil.which("srun"):  # the script is submitit's own, made from the executor's very parameters
        executor = make_executor("slurm", tmp_path / "jobs", path, check=False, resources=Resources(cpus=2))
        inner = executor._executor
        assert sbatch_script(tmp_path / "jobs", path, Resources(cpus=2)) == inner._make_submission_file_text(
            inner._submitit_command_str, uid="x")


def _path_without_slurm(tmp_path: Path) -> str:
    """A PATH holding git (provenance) but no SLURM client command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git",):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    assert not any(shutil.which(c, path=str(bin_dir)) for c in ("srun", "sbatch", "sinfo"))
    return str(bin_dir)


@pytest.mark.slow  # the session's generated CLIP and BERT folders (~15 s once)
def test_the_readme_dry_run_needs_no_slurm_client(tmp_path, rehearsal_data, published_weights):
    assert README_DRY_RUN in (REPO / "README.md").read_text()
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "slurm").symlink_to(REPO / "slurm")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scan").symlink_to(rehearsal_data)  # the README's folders: published-shape data, weights
    (tmp_path / "models").mkdir()
    for folder in published_weights.values():
        (tmp_path / "models" / folder.name).symlink_to(folder)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=_path_without_slurm(tmp_path))
    out = subprocess.run([shutil.which("bash"), "-c", README_DRY_RUN], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stdout.count("\narray ") == 3 and out.stdout.count("  # command") == 3
    assert not (tmp_path / "results").exists()


def test_no_slurm_here_is_one_line(capsys, monkeypatch, tiny_data, tmp_path):
    """--executor slurm --cluster local with SLURM_CONF unset (or no client at all): one line, not a traceback."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    args = ["sweep", "demo", f"datasets.0.data_root={tiny_data}", f"datasets.0.vocab_root={tiny_data}/vocab",
            "seeds=[0]", "--executor", "slurm",
            "--cluster", "local", "--root", tmp_path / "runs"]
    for path in (os.environ["PATH"], _path_without_slurm(tmp_path)):
        monkeypatch.setenv("PATH", path)
        assert refused(capsys, *args).startswith("error: cannot submit to SLURM: ")
    assert not any((tmp_path / "runs").rglob("*.pt"))


# ----------------------------------------------------------------------------- cluster profiles: types and ranges

CAPS = [("max_time_min", 0, ">= 1"), ("max_mem_gb", 0, ">= 1"), ("max_cpus_per_task", 0, ">= 1"),
        ("max_mem_gb", 0.5, ">= 1"), ("nodes", 0, ">= 1"), ("tasks_per_node", 0, ">= 1"),
        ("array_parallelism", 0, ">= 1"), ("max_gpus_per_node", -1, ">= 0"), ("max_mem_gb", math.nan, "finite"),
        ("partition", "", "is empty")]


@pytest.mark.parametrize("key,value,says", CAPS, ids=[f"{k}={v}" for k, v, _ in CAPS])
def test_a_profile_value_out_of_range_is_refused(capsys, tmp_path, key, value, says):
    path = profile(tmp_path, **{key: value})
    msg = refused(capsys, *dry_run("--cluster", path, "--root", tmp_path / "runs"))
    assert f"{path}: '{key}'" in msg and says in msg


RESERVED = [("time", "time_min in the suite's resources"), ("mem", "mem_gb"), ("cpus_per_task", "cpus"),
            ("cpus-per-task", "cpus"), ("gpus", "gpus"), ("gres", "gpus"), ("mem-per-cpu", "mem_gb"),
            ("nodes", "profile's key nodes"), ("ntasks", "tasks_per_node"), ("partition", "partition"),
            ("job-name", "the sweep and submitit write it"), ("output", "write it"), ("error", "write it"),
            ("signal", "write it"), ("array", "array_parallelism"), ("dependency", "write it"),
            ("ti", "time_min")]


@pytest.mark.parametrize("key,fix", RESERVED, ids=[k for k, _ in RESERVED])
def test_additional_cannot_set_what_the_sweep_sets(capsys, tmp_path, key, fix):
    path = profile(tmp_path, additional={key: 5}, max_time_min=60)
    msg = refused(capsys, *dry_run("--cluster", path, "--root", tmp_path / "runs"))
    assert f"{path}: additional: '{key}' is sbatch's --" in msg and "which the sweep sets itself" in msg
    assert "remove it from additional" in msg and fix in msg


@pytest.mark.parametrize("value", [False, None, [1, 2], {"a": 1}])
def test_additional_values_that_sbatch_cannot_read_are_refused(capsys, tmp_path, value):
    path = profile(tmp_path, additional={"mail-type": value})
    msg = refused(capsys, *dry_run("--cluster", path, "--root", tmp_path / "runs"))
    assert "'mail-type'" in msg and "is not an sbatch option value" in msg


def test_what_profiles_may_say_still_loads(tmp_path):
    assert load_profile("example-gpu")["additional"] == {"requeue": True}
    assert load_profile("local")["max_mem_gb"] == 1
    ok = load_profile(profile(tmp_path, additional={"hold": True, "mail-type": "END", "exclusive": True,
                                                    "comment": "a b; $(c)"}, max_gpus_per_node=0))
    assert ok["additional"]["hold"] is True and ok["max_gpus_per_node"] == 0


def test_a_profile_folder_is_named_as_a_folder(capsys):
    msg = refused(capsys, *dry_run("--cluster", REPO / "slurm" / "profiles"))
    assert "slurm/profiles is a folder, not a profile file" in msg and "example-gpu.yaml" in msg


# ----------------------------------------------------------------------------- YAML aliases

def bomb(levels: int = 8, width: int = 10, key: str = "description") -> str:
    lines = ["a0: &a0 lol"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\n{key}: *a{levels}\n"


def _limited_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2 * 1024 ** 3, 2 * 1024 ** 3))


def test_a_yaml_alias_bomb_in_a_suite_is_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + bomb())
    assert path.stat().st_size < 700  # a 10**8-item description in a few hundred bytes
    out = subprocess.run([sys.executable, "-m", "bench", "show", str(path)], cwd=REPO, capture_output=True,
                         text=True, timeout=120, preexec_fn=_limited_memory, env=dict(os.environ, PYTHONPATH=str(REPO)))
    err = out.stderr.strip()
    assert out.returncode == 2 and len(err.splitlines()) == 1, err[-2000:]
    assert err.startswith(f"error: {path}: not valid YAML: its aliases (*name) expand to more than 100,000 values")


def test_every_yaml_reader_is_bounded(capsys, tiny_data, tmp_path):
    from bench import yamlsafe

    # an override's value
    flow = "[&a0 [x,x,x,x,x,x,x,x,x,x], " + ", ".join(
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)) + "]"
    assert "expand to more than 100,000" in refused(capsys, "show", "demo", f"description={flow}")
    # a cluster profile
    prof = profile(tmp_path, text=bomb(key="description"))
    msg = refused(capsys, *dry_run("--cluster", prof, "--root", tmp_path / "runs"))
    assert f"{prof}: not valid YAML: its aliases" in msg
    # a value holding itself
    selfish = tmp_path / "self.yaml"
    selfish.write_text("name: s\ndescription: &d [*d]\n")
    assert "contains itself through an alias" in refused(capsys, "show", selfish)
    # a run folder's config.yaml (export) and python -m bench.train's config
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(bomb(key="seed"))
    with pytest.raises(yaml.YAMLError, match="expand to more than"):
        yamlsafe.load((run / "config.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "bench.train", str(run / "config.yaml"), "--run-dir",
                          str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120,
                         preexec_fn=_limited_memory, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert out.returncode != 0 and "expand to more than 100,000 values" in out.stderr
    assert not (tmp_path / "out" / "last.pt").exists()


def test_every_yaml_read_goes_through_the_bounded_loader():
    import ast

    calls = []
    for pkg in ("bench", "models", "strategies"):
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if (isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "yaml"
                        and node.attr in ("load", "safe_load", "full_load", "unsafe_load", "load_all", "safe_load_all")):
                    calls.append(str(f.relative_to(REPO)))
    assert calls == []  # bench/yamlsafe.py reads through its loader object, nobody calls yaml.*load


def test_the_bounds_leave_every_shipped_yaml_as_it_was():
    from bench import yamlsafe

    files = [*(REPO / "bench" / "suites").glob("*.yaml"), *(REPO / "bench" / "recipes").rglob("*.yaml"),
             *(REPO / "slurm" / "profiles").glob("*.yaml")]
    assert len(files) > 10
    for f in files:
        assert yamlsafe.load(f.read_text()) == yaml.safe_load(f.read_text()), f
    for cell in expand(load_suite("dbl", ["scale=full"]))[:3]:  # a full-scale config.yaml reads back the same
        text = yaml.safe_dump(cell.resolve().to_dict(), sort_keys=False)  # as bench.run_folder writes it
        assert yamlsafe.load(text) == cell.resolve().to_dict()


def test_messages_show_values_cut_short(tmp_path):
    from bench.values import shown

    huge = list(range(10 ** 6))
    assert len(shown(huge)) <= 80 and shown("a\nb") == "'a\\nb'" and shown(-0.2) == "-0.2"
    with pytest.raises(ConfigError) as info:
        load_suite("demo", ["description=[" + ", ".join(["word"] * 5000) + "]"])
    msg = str(info.value)
    assert "description: expected str, got list ['word', 'word'" in msg and len(msg) < 300, msg


# ----------------------------------------------------------------------------- strategy parameters

BAD_PARAMS = [("dml", {"alpha": -1.0}), ("kd", {"alpha": -1.0}), ("rkd", {"alpha": -0.5}), ("sp", {"alpha": -2}),
              ("darkrank", {"alpha": -1.0}), ("momentum", {"alpha": -1.0}), ("momentum", {"eps": -1e-8}),
              ("darkrank", {"order": "sideways"}), ("dml", {"symmetric": "no"}), ("dml", {"peers": 2.5}),
              ("dml", {"report": 3}), ("baseline", {"margin": -0.2}), ("baseline", {"hinge_warmup_epochs": -1}),
              ("dbl", {"scenario": "oss", "branches": 1}), ("dbl", {"scenario": "oss", "beta": math.inf}),
              ("momentum", {"m0": math.nan})]


@pytest.mark.parametrize("name,params", BAD_PARAMS, ids=[f"{n}-{p}" for n, p in BAD_PARAMS])
def test_every_strategy_parameter_is_ranged(name, params):
    from bench.values import shown

    with pytest.raises(ValueError) as info:
        strategies.build(name, **params)
    key, value = next((k, v) for k, v in params.items() if k != "scenario")
    msg = str(info.value)
    assert msg.startswith(f"{name} {key}={shown(value)}: must be ") and "(" in msg, msg


def test_every_strategy_declares_every_parameter():
    from strategies.base import Param

    for name in strategies.available():
        for klass in strategies.get(name).__mro__:
            if "__init__" in vars(klass) and issubclass(klass, Strategy):
                import inspect

                named = [p.name for p in inspect.signature(klass.__init__).parameters.values()
                         if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
                assert set(named) == set(vars(klass).get("PARAMS", {})), (name, klass)
    with pytest.raises(TypeError, match=r"parameter\(s\) weight of __init__ need .* Lonely.PARAMS"):
        class Lonely(Strategy):  # noqa: F841 - defining it is the test
            def __init__(self, weight: float = 1.0, **base):
                super().__init__(**base)
    assert Param("x", ge=0).bounds() == ">= 0" and Param("x", ge=0, le=1).bounds() == "in [0, 1]"


@pytest.mark.parametrize("strategy", ["dml", "kd", "momentum"])
def test_a_negative_alpha_is_refused_before_training(capsys, tiny_data, tmp_path, strategy):
    entry = f"strategies=[{{name: {strategy}, params: {{alpha: -1.0}}}}]"
    msg = refused(capsys, "sweep", "demo", entry, f"datasets.0.data_root={tiny_data}", "seeds=[0]",
                  "--root", tmp_path / "runs")
    assert f"strategies[0]: params: {strategy} alpha=-1.0: must be >= 0" in msg
    assert not (tmp_path / "runs").exists()
    cell = Cell.from_dict({"id": "x", "dataset": {"name": "f30k_precomp", "data_root": str(tiny_data)},  # trainer alone
                           "matcher": {"name": "vse_infty", "embed_size": 16, "word_dim": 8},
                           "strategy": {"name": strategy, "params": {"alpha": -1.0}},
                           "schedule": {"epochs": 1, "batch_size": 32}})
    with pytest.raises(ValueError, match=rf"{strategy} alpha=-1.0: must be >= 0"):
        run_cell(cell, tmp_path / "alone")
    assert not (tmp_path / "alone" / "last.pt").exists()


# ----------------------------------------------------------------------------- published reference rows

PUBLISHED = REPO / "results" / "reference" / "published.csv"


def test_the_committed_published_rows_pass():
    from bench.harness.published import read_published

    rows = read_published(PUBLISHED)
    assert len(rows) == len(PUBLISHED.read_text().strip().splitlines()) - 1


def _broken_csv(tmp_path: Path, line: int, change) -> Path:
    lines = PUBLISHED.read_text().splitlines()
    lines[line - 1] = change(lines[line - 1])
    path = tmp_path / "published.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


CSV_CASES = [
    ("a footnote mark in a recall", 3, lambda s: s.replace(",78.5,", ",78.5*,", 1),
     "column i2t_r1: '78.5*' is not a number; write it as a plain number"),
    ("an unquoted comma in a later row", 12, lambda s: s.replace('"Paranioar/SGRAF README (updated results)"',
                                                                 "Paranioar/SGRAF, README"),
     "14 fields, the header has 13"),
    ("an RSUM that is not the sum of its recalls", 2, lambda s: s.replace(",498.1,", ",500.1,"),
     "column rsum: '500.1' is not the sum of the row's six recalls (498.1"),
    ("a recall above 100", 2, lambda s: s.replace(",97.7,", ",977,"), "column i2t_r10: '977' is outside [0, 100]"),
    ("an unknown protocol", 2, lambda s: s.replace(",f30k_1k,", ",f30k_5k,"), "column protocol: 'f30k_5k'"),
]


@pytest.mark.parametrize("what,line,change,says", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_a_bad_published_row_is_one_line(capsys, monkeypatch, tmp_path, what, line, change, says):
    from bench.harness import collect
    from bench.harness.published import PublishedCSVError

    path = _broken_csv(tmp_path, line, change)
    with pytest.raises(PublishedCSVError) as info:
        collect.published_rows(load_suite("dbl", ["scale=full"]), path)
    assert str(info.value).startswith(f"{path}:{line}: ") and says in str(info.value)
    monkeypatch.setattr(collect.published_rows, "__defaults__", (path,))  # collect's own CSV, broken
    msg = refused(capsys, "collect", "dbl", "scale=full", "--root", tmp_path / "runs", "--tables", tmp_path / "t",
                  "--figures", tmp_path / "f")
    assert msg == f"error: {info.value}"
    assert not (tmp_path / "t").exists()
