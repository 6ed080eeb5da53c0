"""Local pretrained weight folders (CLIP's, BERT's): where a user gets one, what identifies it, and
whether it holds the architecture a cell names.

A matcher that reads such a folder says which constructor argument takes it and of which kind, in its
class attribute ``weights_args`` (``clip``: ``{"pretrained_path": "clip"}``, ``vse_infty_bert``:
``{"bert_path": "bert"}``). A suite gives the folders once per kind, ``weights: {clip: DIR, bert: DIR}``
(on the command line ``weights.clip=DIR weights.bert=DIR``); :data:`KINDS` says where each kind is
published and how to fetch it on a machine with internet (:func:`fetch_command`).

What identifies a folder is its content, not its path (:func:`folder_fingerprint`): sha256 over the
files ``from_pretrained`` reads (config, the weights file it picks, tokenizer and processor files), each
file hashed once per version (path, size, modification time) in a process. A cell's result key holds
the fingerprint in place of the path (``bench.spec.weights_identity``): moving the folder keeps the
cell's id, other weights give another id, so a table never pools cells trained from different weights.

:func:`folder_problems` checks a folder from its small files only (config.json, tokenizer and processor
files, the safetensors header), never loading the weights: present, of the kind asked (a CLIP model in
the BERT folder is named), of the architecture the cell names (``architecture`` of the matcher class),
complete (a truncated safetensors file, a tokenizer with more ids than the embedding has rows).

Imports neither torch nor the spec (``bench.spec`` imports it: a matcher is given by its name and its
arguments, ``MatcherSpec.name`` and ``.arguments``); transformers' configuration classes are imported only
to read a folder's config with transformers' own defaults.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import struct
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WeightsKind:
    """One kind of pretrained folder: the published weights, the files a folder needs, the suite key."""

    name: str  # the key under a suite's `weights:` ("clip", "bert")
    repo: str  # the published weights on the Hugging Face Hub
    folder: str  # a suggested local folder name
    model_type: str  # config.json's "model_type"
    tokenizer: tuple[tuple[str, ...], ...]  # any one of these file sets holds the tokenizer
    processor: tuple[str, ...] = ()  # further files the matcher reads (an image processor)
    what: str = ""

    @property
    def key(self) -> str:
        return f"weights.{self.name}"


KINDS: dict[str, WeightsKind] = {
    "clip": WeightsKind("clip", "openai/clip-vit-base-patch32", "clip-vit-base-patch32", "clip",
                        tokenizer=(("tokenizer.json",), ("vocab.json", "merges.txt")),
                        processor=("preprocessor_config.json",), what="CLIP ViT-B/32"),
    "bert": WeightsKind("bert", "google-bert/bert-base-uncased", "bert-base-uncased", "bert",
                        tokenizer=(("tokenizer.json",), ("vocab.txt",)), what="BERT-base (uncased)"),
}
#: The weights files ``from_pretrained`` reads, in its order of preference (a sharded model: its index).
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
#: The small files of a folder that decide what ``from_pretrained`` builds (besides the weights).
SMALL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "preprocessor_config.json")


def fetch_command(kind: str, folder: str | os.PathLike | None = None) -> str:
    """The command that fetches a kind's published weights into ``folder`` on a machine with internet
    (``hf``, the Hugging Face Hub's command line; ``pip install huggingface_hub``)."""
    k = KINDS[kind]
    dest = shlex.quote(str(folder if folder is not None else Path("models") / k.folder))
    return (f'hf download {k.repo} --local-dir {dest} --include "*.json" --include "*.txt" '
            '--include "*.safetensors"')


def weights_args(matcher: str) -> dict[str, str]:
    """{constructor argument: kind} of the local folders matcher ``matcher`` reads (its ``weights_args``)."""
    return dict(_weights_args(matcher))


@functools.cache
def _weights_args(matcher: str) -> tuple[tuple[str, str], ...]:
    """Read once per matcher (every cell id asks)."""
    from bench.registry_facts import matcher_attr  # the matcher's class attribute, read without torch

    try:
        return tuple((matcher_attr(matcher, "weights_args", {}) or {}).items())
    except KeyError:  # an unknown matcher: the suite's validation names it
        return ()


# ----------------------------------------------------------------------------------------------- identity


def identity_files(folder: str | os.PathLike) -> list[Path]:
    """The files of ``folder`` that decide the model ``from_pretrained`` builds: its small files and the
    weights it picks (the first of :data:`WEIGHTS_FILES` present; a sharded model's index and shards).
    Other files (other frameworks' weights, a README, the Hub's cache folder) do not count."""
    folder = Path(folder)
    files = [folder / name for name in SMALL_FILES if (folder / name).is_file()]
    chosen = next((name for name in WEIGHTS_FILES if (folder / name).is_file()), None)
    if chosen is not None:
        files.append(folder / chosen)
        if chosen.endswith(".index.json"):
            files += [folder / shard for shard in sorted(set(_shards(folder / chosen))) if (folder / shard).is_file()]
    return files


def _shards(index: Path) -> list[str]:
    try:
        return [str(v) for v in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key only: a new version of the file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def folder_fingerprint(folder: str | os.PathLike) -> str | None:
    """sha256 over the name, size and sha256 of each of :func:`identity_files` (None when the folder holds
    none: it is missing, or not a model folder). The same content anywhere has the same fingerprint."""
    files = identity_files(folder) if Path(folder).is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{_file_sha256(str(p.resolve()), st.st_size, st.st_mtime_ns)}\n".encode())
    return h.hexdigest()


def identity(name: str, arguments: dict) -> dict[str, str]:
    """{argument: content fingerprint} of the local weight folders matcher ``name`` built with ``arguments``
    reads; empty for a matcher given none. A folder that holds no model files is known by its absolute path
    (such a cell is refused before it runs, ``bench.inputs``)."""
    return {arg: folder_fingerprint(path) or f"no model files in {_absolute(path)}"
            for arg, path in folders(name, arguments).items()}


def unreadable_folders(name: str, arguments: dict) -> dict[str, str]:
    """{argument: absolute folder} of the local weight folders matcher ``name`` is given that hold no model files
    (gone, moved, emptied): a cell reading one cannot be identified (its id holds the folder's content)."""
    return {arg: _absolute(path) for arg, path in folders(name, arguments).items() if folder_fingerprint(path) is None}


def folders(name: str, arguments: dict) -> dict[str, str]:
    """{argument: folder} of the local weight folders matcher ``name`` is given in ``arguments``."""
    return {arg: arguments[arg] for arg in weights_args(name) if arguments.get(arg) is not None}


def describe_identity(name: str, arguments: dict) -> dict[str, dict]:
    """``{argument: {"path", "fingerprint"}}``: what a result records of its weights (provenance)."""
    given = folders(name, arguments)
    return {arg: {"path": _absolute(given[arg]), "fingerprint": fp} for arg, fp in identity(name, arguments).items()}


def _absolute(path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


# ----------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class FolderProblem:
    """What is wrong with a weights folder, and the fix."""

    what: str
    fix: str


def folder_problems(folder: str | os.PathLike, kind: str, architecture: dict | None = None) -> list[FolderProblem]:
    """What keeps ``folder`` from loading as a ``kind`` model of ``architecture`` (``{"vision_config.patch_size":
    32, …}``: config fields and the values the cell names; None: any). Reads the small files and the
    safetensors header only. The first problem found per part (folder, config, weights, tokenizer,
    processor); empty when the folder will load."""
    k = KINDS[kind]
    fetch = f"fetch it on a machine with internet: {fetch_command(kind)}, then copy the folder here"
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        return [FolderProblem(f"{what} (a local {k.what} folder is needed; nothing is downloaded)", fetch)]
    config, problem = _read_config(folder, k)
    problems = [problem] if problem else []
    if config is not None and architecture:
        problems += _architecture_problems(config, architecture, k)
    problems += _weights_problems(folder, fetch)
    problems += _tokenizer_problems(folder, k, config)
    problems += _processor_problems(folder, k, config)
    return problems


def _read_config(folder: Path, k: WeightsKind):
    """(transformers' configuration of the folder or None, a problem or None)."""
    path = folder / "config.json"
    fix = f"give the folder of {k.repo} as `hf download` writes it ({fetch_command(k.name)})"
    if not path.is_file():
        return None, FolderProblem("has no config.json", fix)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, FolderProblem(f"config.json is not valid JSON ({e})", fix)
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != k.model_type:
        return None, FolderProblem(
            f"holds a {model_type!r} model (config.json model_type), not {k.model_type!r} ({k.what})",
            f"point {k.key} at a {k.what} folder ({fetch_command(k.name)})")
    import transformers

    cls = {"clip": transformers.CLIPConfig, "bert": transformers.BertConfig}[k.model_type]
    try:
        return cls.from_pretrained(str(folder), local_files_only=True), None
    except (OSError, ValueError, TypeError) as e:
        return None, FolderProblem(f"config.json does not load as a {cls.__name__} ({e})", fix)


def _config_value(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def _architecture_problems(config, architecture: dict, k: WeightsKind) -> list[FolderProblem]:
    wrong = {key: (_config_value(config, key), want) for key, want in architecture.items()
             if _config_value(config, key) != want}
    if not wrong:
        return []
    shown = ", ".join(f"{key} {have} (the cell names {want})" for key, (have, want) in wrong.items())
    return [FolderProblem(f"holds another architecture than the cell names: {shown}",
                          f"point {k.key} at a folder of the architecture the cell names ({k.what}: "
                          f"{fetch_command(k.name)}), or name the folder's architecture in the cell")]


def _weights_problems(folder: Path, fetch: str) -> list[FolderProblem]:
    present = [name for name in WEIGHTS_FILES if (folder / name).is_file()]
    if not present:
        return [FolderProblem(f"has no weights file ({' or '.join(WEIGHTS_FILES[::2])})", fetch)]
    if present[0] == "model.safetensors":
        problem = safetensors_problem(folder / "model.safetensors")
        if problem:
            return [FolderProblem(problem, f"the file is damaged or cut short: fetch it again ({fetch})")]
    return []


def safetensors_problem(path: Path) -> str | None:
    """Why a ``.safetensors`` file is not whole (its header does not parse, or its tensors end elsewhere
    than the file does: a cut download), else None. Reads the header only."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path.name}: a header of {n} bytes in a file of {size} bytes"
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
        return f"{path.name}: no safetensors header ({type(e).__name__})"
    ends = [v["data_offsets"][1] for key, v in header.items() if key != "__metadata__" and isinstance(v, dict)]
    if not ends:
        return f"{path.name}: holds no tensors"
    if 8 + n + max(ends) != size:
        return f"{path.name}: {size} bytes, but its tensors end at byte {8 + n + max(ends)}"
    return None


def tokenizer_size(folder: Path) -> int | None:
    """Ids of the tokenizer in ``folder`` (its vocabulary and added tokens), from its files; None if unknown."""
    try:
        if (folder / "tokenizer.json").is_file():
            tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
            ids = set((tok.get("model") or {}).get("vocab", {}).values()) if isinstance(
                (tok.get("model") or {}).get("vocab"), dict) else set()
            ids |= {t.get("id") for t in tok.get("added_tokens") or []}
            return max(ids) + 1 if ids else None
        if (folder / "vocab.txt").is_file():
            return sum(1 for _ in open(folder / "vocab.txt", encoding="utf-8"))
        if (folder / "vocab.json").is_file():
            return max(json.loads((folder / "vocab.json").read_text(encoding="utf-8")).values()) + 1
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return None


def _tokenizer_problems(folder: Path, k: WeightsKind, config) -> list[FolderProblem]:
    if not any(all((folder / f).is_file() for f in files) for files in k.tokenizer):
        options = " or ".join(" + ".join(files) for files in k.tokenizer)
        return [FolderProblem(f"has no tokenizer ({options})",
                              f"copy the tokenizer files of {k.repo} into the folder ({fetch_command(k.name)})")]
    text = getattr(config, "text_config", config) if config is not None else None
    n, rows = tokenizer_size(folder), getattr(text, "vocab_size", None)
    if n is not None and rows is not None and n > rows:
        return [FolderProblem(f"its tokenizer has {n} ids but the model's token embedding has {rows} rows "
                              "(the tokenizer of another model?)",
                              f"use the tokenizer files that came with these weights ({k.repo})")]
    return []


def _processor_problems(folder: Path, k: WeightsKind, config) -> list[FolderProblem]:
    for name in k.processor:
        path = folder / name
        if not path.is_file():
            return [FolderProblem(f"has no {name} (the image processor)",
                                  f"copy {name} of {k.repo} into the folder ({fetch_command(k.name)})")]
        try:
            crop = json.loads(path.read_text(encoding="utf-8")).get("crop_size")
        except (OSError, ValueError, AttributeError) as e:
            return [FolderProblem(f"{name} is not valid JSON ({e})", f"copy {name} of {k.repo} again")]
        side = crop.get("height") if isinstance(crop, dict) else crop
        size = getattr(getattr(config, "vision_config", None), "image_size", None)
        if side is not None and size is not None and side != size:
            return [FolderProblem(f"{name} crops images to {side} px but the model takes {size} px",
                                  f"use the {name} that came with these weights ({k.repo})")]
    return []
