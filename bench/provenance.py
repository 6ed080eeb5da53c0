"""Where and with what a result was made: the code (git commit, source fingerprint), the packages, the
device, the data (a cheap content fingerprint of every input a cell reads: ``bench.data.layout``) and the local pretrained
weights (each folder's path and content fingerprint, ``bench.weights``).

Read by the trainer (a checkpoint records the code and data it was made with; a resume across a
change is refused) and by the result store (a result's provenance; a result is trusted only for the
data it was made from). Imports nothing of either.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench import spec
from bench.weights import describe_identity

#: The repository's root (the code whose commit and fingerprint are recorded).
REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "wandb", "numpy", "pandas", "submitit")


def git_info(repo: Path = REPO_ROOT) -> dict:
    """Commit and dirty flag of the code (read-only git commands); None where git is unavailable."""
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=20, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


@functools.lru_cache(maxsize=1)
def source_fingerprint(repo: Path = REPO_ROOT) -> str:
    """sha1 over the Python sources that make a training run's numbers, as this process first read them
    (paths and bytes): ``bench/`` (trainer, data, metrics, protocols, evaluation; not the harness, the
    command line or the benchmarks), ``models/`` and ``strategies/``. What a resumed run must share with
    the run that wrote its checkpoint: committed or not, a change of that code changes it; a commit
    touching only docs, tests or the harness (tables, figures, scheduling) does not."""
    skip = {"bench/harness", "bench/benchmarks", "bench/__main__.py", "bench/cli_eval.py"}
    h = hashlib.sha1()
    for pkg in ("bench", "models", "strategies"):
        for p in sorted((repo / pkg).rglob("*.py")):
            rel = p.relative_to(repo).as_posix()
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            h.update(f"{rel}|".encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    except Exception:  # torch missing or a broken CUDA setup: provenance must not fail
        pass
    return f"cpu: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def data_fingerprint(roots, edge_bytes: int = 4096, samples: int = 8, max_files: int = 10_000) -> str | None:
    """sha1 over every data file's relative path, size, first/last ``edge_bytes`` bytes and ``samples``
    blocks spread evenly between them; None when no file exists.

    Cheap on purpose (never reads whole files: COCO features are 33 GB): it detects replaced,
    truncated or regenerated files, not a change confined to the unsampled bytes of an unchanged-size
    file. It reads content, not mtimes, so a copy of the same data (another disk, ``cp`` without ``-p``)
    keeps its fingerprint and its results.
    """
    roots = [Path(r) for r in roots if r]
    h = hashlib.sha1()
    n = 0
    for root in roots:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file())
        else:
            continue
        for p in files:
            n += 1
            if n > max_files:
                break
            size = p.stat().st_size
            rel = p.name if p == root else str(p.relative_to(root))
            h.update(f"{rel}|{size}|".encode())
            offsets = [0] + [size * k // (samples + 1) for k in range(1, samples + 1)] + [size - edge_bytes]
            with open(p, "rb") as f:
                for off in sorted({max(0, o) for o in offsets}):
                    f.seek(off)
                    h.update(f.read(edge_bytes))
    return h.hexdigest() if n else None


def cell_inputs(cell: spec.Cell):
    """Every input ``cell`` reads (``bench.data.layout.cell_inputs``, the one definition, with the trainer's
    defaults of the paths)."""
    from bench.data.layout import cell_inputs as inputs
    from bench.registry_facts import matcher_attr

    return inputs(cell.replace(dataset=spec.resolve_dataset(cell.dataset)), matcher_attr(cell.matcher.name, "input_kind"))


def cell_data_files(cell: spec.Cell) -> list[Path]:
    """The files and folders a cell's training and evaluation read: a region matcher's precomp folder
    ``<data_root>/<dataset>/`` and vocabulary; a pixel matcher's Karpathy caption file and the images it lists
    for the cell's splits."""
    inputs = cell_inputs(cell)
    return [*inputs.files, *(inputs.image_root / name for name in inputs.images)]


def images_fingerprint(root: Path, names, samples: int = 64, edge_bytes: int = 4096) -> str:
    """sha1 over every image's path (relative to ``root``) and size, and the first and last ``edge_bytes`` bytes of
    ``samples`` of them spread evenly: a regenerated, replaced or truncated image set changes it (an image file's
    size follows its content), at a stat per image (COCO's 123,287 images in about a second)."""
    names = list(names)
    h = hashlib.sha1()
    for name in names:
        try:
            size = (root / name).stat().st_size
        except OSError:
            size = "missing"
        h.update(f"{name}|{size}\n".encode())
    for name in names[:: max(1, len(names) // samples)][:samples]:
        with contextlib.suppress(OSError), open(root / name, "rb") as f:
            h.update(f.read(edge_bytes))
            f.seek(max(0, (root / name).stat().st_size - edge_bytes))
            h.update(f.read(edge_bytes))
    return h.hexdigest()


def cell_fingerprint(cell: spec.Cell, cache: dict | None = None) -> str | None:
    """The content fingerprint of every input ``cell`` reads (:func:`cell_inputs`): :func:`data_fingerprint` of
    its files and folders, with :func:`images_fingerprint` of a pixel matcher's images (``cache``: one dict per
    pass over a suite). A region cell's is as it was before images counted (its results stay verified)."""
    inputs = cell_inputs(cell)
    key = (tuple(str(p) for p in inputs.files), str(inputs.image_root), inputs.images)
    if cache is not None and key in cache:
        return cache[key]
    fp = data_fingerprint(inputs.files)
    if fp is not None and inputs.images:
        fp = hashlib.sha1(f"{fp}|images:{images_fingerprint(inputs.image_root, inputs.images)}".encode()).hexdigest()
    if cache is not None:
        cache[key] = fp
    return fp


#: The marker of the embedded data: ``MANIFEST.json`` at the data root, written by ``bench.data.synth``.
SYNTH_MANIFEST, SYNTH_GENERATOR = "MANIFEST.json", "bench.data.synth"


def data_description(data_root: str | Path | None) -> dict:
    """What kind of data a result was made from, as its tables say it: ``kind`` ``synthetic`` when the data
    root holds the embedded generator's ``MANIFEST.json`` (``"generator": "bench.data.synth"``; with its
    ``preset``, ``seed`` and ``version``), else ``real``; ``root``: the data root's folder name."""
    import json

    root = Path(data_root or spec.DEFAULT_DATA_ROOT)
    out: dict = {"kind": "real", "root": root.resolve().name or str(root)}
    try:
        manifest = json.loads((root / SYNTH_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return out
    if isinstance(manifest, dict) and manifest.get("generator") == SYNTH_GENERATOR:
        out.update(kind="synthetic", generator={k: manifest.get(k) for k in ("preset", "seed", "version")})
    return out


def provenance(cell: spec.Cell | None = None, wall_time_s: float | None = None, fingerprint=None) -> dict:
    """Where and with what a result was made: code, packages, machine, data, seed, wall time."""
    return {
        "git": git_info(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "device": device_name(),
        "source_fingerprint": source_fingerprint(),  # the training code (what decides a result, README)
        "data_fingerprint": fingerprint if fingerprint is not None or cell is None else cell_fingerprint(cell),
        # local pretrained folders: path and content
        "weights": describe_identity(cell.matcher.name, cell.matcher.arguments) if cell is not None else {},
        "data": data_description(cell.dataset.data_root if cell is not None else None),  # synthetic or real
        "seed": cell.seed if cell is not None else None,
        "wall_time_s": wall_time_s,
        "argv": list(sys.argv),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def result_record(cell: spec.Cell, body: dict, wall_time_s: float | None, fingerprint=None) -> dict:
    """What ``result.json`` holds: the trainer's result (less a ``signal`` that stopped the final test), the
    cell (its plain form) and its id, and the provenance (with the code changes a resume was allowed across)."""
    result = {k: v for k, v in body.items() if k != "signal"}
    result.update({"cell_id": cell.id, "cell": cell.to_dict(),
                   "provenance": provenance(cell, wall_time_s=wall_time_s, fingerprint=fingerprint)})
    if body.get("code_changes"):  # resumed across a code change (--allow-code-change): both commits
        result["provenance"]["code_changes"] = body["code_changes"]
    return result
