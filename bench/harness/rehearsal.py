"""A dress rehearsal of a paper table: its suite made into a rehearsal (``rehearsal:``), and the inputs it reads.

``python -m bench sweep SUITE --rehearse`` (``make rehearse-<table>``) runs every distinct full-scale
configuration of a table for a few steps: each cell as the table runs it (published model sizes, recipes,
precision, per-cell resources, the SLURM path with its arrays and dependencies), cut as
``bench.spec.Rehearsal`` says (steps, epochs, evaluated images, a batch where memory forces one). A suite
with a ``rehearsal:`` key (the flag adds it with its defaults; ``rehearsal.steps=1`` … tune it) is made into
its rehearsal by :func:`rehearsal_spec`, when it is loaded:

- its name becomes ``<name>-rehearsal`` (:data:`SUFFIX`): its own folder in the store, its own W&B project and
  group, its own table files; its cells carry the rehearsal, which enters their ids (never a real cell's) and
  their ``result.json`` (never pooled into a real table);
- one seed (the first): seeds change only the random state;
- data: where the suite, the command line and ``$DATA`` give no data root, the generated data of the published
  shapes (``python -m bench.data.synth --preset rehearsal``) in :data:`REHEARSAL_DATA`;
- weights: each kind of pretrained folder its matchers read that the user does not give, generated with the
  published architectures and random weights (``python -m bench.data.weights``) in :data:`REHEARSAL_WEIGHTS`.

:func:`generate_inputs` writes the generated data and weights a rehearsal reads (a sweep calls it before the
plan-time checks); what was measured is written and read back by ``bench.harness.rehearsal_log``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from bench.provenance import REPO_ROOT
from bench.spec import Rehearsal

SUFFIX = "-rehearsal"
#: Where a rehearsal's runs go unless ``--root`` says otherwise (checkpoints of published-size models: never
#: committed), and its tables and logs (committed).
REHEARSAL_DIR = REPO_ROOT / "results" / "rehearsal"
REHEARSAL_ROOT = REHEARSAL_DIR / "runs"
#: The generated inputs of a rehearsal that is given none (``python -m bench.data.synth --preset rehearsal``,
#: ``python -m bench.data.weights``).
REHEARSAL_DATA = REPO_ROOT / "data" / "synth-rehearsal"
REHEARSAL_WEIGHTS = REPO_ROOT / "data" / "rehearsal-weights"
REHEARSAL_PRESET, REHEARSAL_SEED = "rehearsal", 0


def is_rehearsal(spec: dict) -> bool:
    return spec.get("rehearsal") is not None


def table_name(spec: dict) -> str:
    """The table a (rehearsal) suite is: its name without :data:`SUFFIX`."""
    name = spec["name"]
    return name[: -len(SUFFIX)] if is_rehearsal(spec) and name.endswith(SUFFIX) else name


def rehearsal_spec(spec: dict) -> dict:
    """A validated suite with a ``rehearsal:`` key made into its rehearsal (module docstring)."""
    spec = copy.deepcopy(spec)
    if not spec["name"].endswith(SUFFIX):
        spec["name"] += SUFFIX
    spec["seeds"] = spec["seeds"][:1]
    spec["reference"] = []  # published rows never stand beside a rehearsal's numbers
    wandb = spec.get("wandb") or {}
    if wandb.get("project") and not wandb["project"].endswith(SUFFIX):
        wandb["project"] += SUFFIX
    given = [ds.get("data_root") for ds in spec["datasets"]] + [spec.get("data_root"), os.environ.get("DATA")]
    if not any(given):
        spec["data_root"] = str(REHEARSAL_DATA)
    weights = spec.setdefault("weights", {})
    for kind in needed_weights(spec):
        if not weights.get(kind):
            weights[kind] = str(generated_weights_folder(kind))
    spec["generated"] = generated_inputs(spec)
    return spec


def needed_weights(spec: dict) -> list[str]:
    """The kinds of local pretrained folders the suite's matchers read (``bench.weights.weights_args``)."""
    from bench.weights import weights_args

    kinds = {kind for m in spec["matchers"] for kind in weights_args(m["name"]).values()}
    return sorted(kinds)


def generated_weights_folder(kind: str) -> Path:
    from bench.weights import KINDS

    return REHEARSAL_WEIGHTS / KINDS[kind].folder


def generated_inputs(spec: dict) -> dict[str, str]:
    """{"data" | weights kind: folder} of the generated inputs the rehearsal reads (what the user did not give)."""
    out = {}
    if spec.get("data_root") == str(REHEARSAL_DATA):
        out["data"] = str(REHEARSAL_DATA)
    for kind, folder in (spec.get("weights") or {}).items():
        if folder == str(generated_weights_folder(kind)):
            out[kind] = folder
    return out


def generate_inputs(spec: dict, log=print) -> None:
    """Write the generated data and weights a rehearsal reads (each kept when already there: the generators
    skip an output they wrote with the same preset/kind and seed)."""
    generated = spec.get("generated") or {}
    if "data" in generated:
        from bench.data.synth import generate

        log(f"rehearsal data: {generate(generated['data'], REHEARSAL_PRESET, seed=REHEARSAL_SEED)} (python -m "
            f"bench.data.synth --preset {REHEARSAL_PRESET}: the published shapes, few images)")
    kinds = [k for k in generated if k != "data"]
    if kinds:
        from bench.data.weights import generate as generate_weights

        for kind in kinds:
            folder = generate_weights(REHEARSAL_WEIGHTS, kind, seed=REHEARSAL_SEED)[kind]
            log(f"rehearsal weights: {folder} (python -m bench.data.weights: the published architecture, "
                "random weights)")


def plan_of(spec: dict) -> Rehearsal | None:
    """The rehearsal's cuts (``bench.spec.Rehearsal``) of a suite, None for a real suite."""
    return Rehearsal.from_dict(spec["rehearsal"]) if is_rehearsal(spec) else None

