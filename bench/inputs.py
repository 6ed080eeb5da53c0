"""Every input a cell will read, checked before anything is submitted or trained.

``show``, ``sweep --dry-run`` and every ``sweep``/``run`` call :func:`check_cells` on the cells they
would run and refuse them (one line per cause, exit 2) when it finds a problem, so that a full-scale
cell never fails after a GPU was allocated. What is checked, per cell (``bench.data.layout`` says
which files a cell reads):

- the data root: given (a dataset, the suite or ``DATA``) and a folder;
- region matchers: every split the cell reads (train, dev, its protocols' test splits): the three
  files present, the features a float ``[N, R, D]`` array (the ``.npy`` header, memory-mapped, no
  data read) with the training split's ``D``, five caption lines per image; the vocabulary present,
  readable, and built from this dataset's captions (:data:`FOREIGN_VOCAB_SHARE`);
- pixel matchers: the Karpathy caption file present and readable with images in every split read,
  the image folder present and (a sample of) the listed images in it;
- local pretrained folders (``bench.weights``): given where the scale needs them (a full-scale CLIP
  or BERT cell), present, of the kind asked, of the architecture the cell names, with weights,
  tokenizer and processor files.

The functions are pure (they read files, never write) and take ``bench.spec.Cell`` values as the
harness makes them (unresolved: a cell without a data root is named as such). Each input is checked
once per call however many cells read it; :func:`check_cells` returns one :class:`Finding` per cause
with the cells it affects, :func:`report_lines` the lines a command prints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench import spec
from bench.data import layout
from bench.spec import Cell

#: A vocabulary built from a dataset's captions (any frequency threshold, the SCAN release's, the
#: embedded dataset's) holds words of its training captions only, up to the few seen only in dev/test;
#: one whose words are missing from the training captions more often than this is another text's
#: vocabulary (another dataset's): its ids, size and coverage would not be this dataset's.
FOREIGN_VOCAB_SHARE = 0.10
#: Images of a Karpathy split whose files are looked for (evenly spaced; the reader checks every one
#: when it opens the split).
IMAGE_SAMPLE = 1000
DATA_FIX = ("point data_root at the folder holding <dataset>/ and vocab/ (the SCAN precomp release, or "
            "python -m bench.data.synth writes one)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: the key a user sets, its value, what is wrong and the fix."""

    key: str
    value: str
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.key}: {self.value}: {self.what}; {self.fix}"


@dataclass(frozen=True)
class Finding:
    """A problem and every cell it affects (in the order given)."""

    problem: Problem
    cells: tuple[Cell, ...]


def check_cells(cells: Iterable[Cell]) -> list[Finding]:
    """The problems with the inputs of ``cells`` (as the harness expands them), one finding per cause."""
    memo: dict = {}
    found: dict[Problem, list[Cell]] = {}
    for cell in cells:
        for problem in cell_problems(cell, memo):
            found.setdefault(problem, []).append(cell)
    return [Finding(p, tuple(cs)) for p, cs in found.items()]


def report_lines(findings: list[Finding], name: Callable[[Cell], str], shown: int = 3) -> list[str]:
    """One line per finding: the problem and the cells it affects (their count and the first ``shown``)."""
    out = []
    for f in findings:
        names = [name(c) for c in f.cells]
        more = ", …" if len(names) > shown else ""
        out.append(f"{f.problem.line()} ({len(names)} cell(s): {', '.join(names[:shown])}{more})")
    return out


def cell_problems(cell: Cell, memo: dict | None = None) -> list[Problem]:
    """The problems with the inputs of one (unresolved) cell; ``memo`` shares checks between cells."""
    memo = {} if memo is None else memo
    problems = _weights_problems(cell, memo)
    if cell.dataset.data_root is None:
        return [Problem("data_root", "not given", f"dataset {cell.dataset.name} has no data root (the trainer would "
                        "read its built-in default under the dataset's real name)",
                        "set data_root on the dataset or the suite, or an override data_root=DIR, or the DATA "
                        "environment variable"), *problems]
    resolved = spec.resolve(cell)
    root = _once(memo, ("root", resolved.dataset.data_root), _root_problems, resolved.dataset.data_root)
    if root:
        return root + problems
    from bench.registry_facts import matcher_attr  # no torch for a check of paths

    if matcher_attr(cell.matcher.name, "input_kind") == "pixels":
        return _karpathy_problems(resolved, memo) + problems
    return _precomp_problems(resolved, memo) + problems


def _once(memo: dict, key, fn, *args) -> list[Problem]:
    if key not in memo:
        memo[key] = fn(*args)
    return memo[key]


def _from_env(root: str) -> str:
    """``root``, saying when it came from $DATA (compared after ``~``/``$VARS`` expansion)."""
    from bench.values import expand_path

    return f"{root} (from the DATA environment variable)" if expand_path(os.environ.get("DATA")) == root else root


def _root_problems(root: str) -> list[Problem]:
    """A data root that is not a folder; one left unexpanded names its variables that are not set."""
    from bench.values import unset_variables

    if Path(root).is_dir():
        return []
    unset = unset_variables(root) if not Path(root).exists() else []
    what = "is not a folder" if Path(root).exists() else "does not exist" + (
        f" (the variable(s) {', '.join(unset)} are not set; ~ and $VARS are expanded)" if unset else "")
    return [Problem("data_root", _from_env(root), what, DATA_FIX)]


# ----------------------------------------------------------------------------------------------- regions


def _precomp_problems(cell: Cell, memo: dict) -> list[Problem]:
    ds = cell.dataset
    problems = []
    shapes = {}
    for split in layout.splits_read(cell):
        key = ("split", ds.data_root, ds.name, split, ds.captions_per_image)
        found = _once(memo, key, _split_problems, ds.data_root, ds.name, split, ds.captions_per_image)
        problems += found
        if not found:
            shapes[split] = layout.split_shape(ds.data_root, ds.name, split)
    train = shapes.get("train")
    for split, shape in shapes.items():
        if train is not None and shape.dim != train.dim:
            ims = layout.split_files(ds.data_root, ds.name, split)["ims"]
            problems.append(Problem("data_root", str(ims), f"features of size {shape.dim} per region, but the "
                                    f"training split's are {train.dim}",
                                    "extract every split with the same feature extractor"))
    problems += _once(memo, ("vocab", ds.vocab_root, ds.data_root, ds.name), _vocab_problems, cell)
    return problems


def _split_problems(root: str, dataset: str, split: str, cpi: int) -> list[Problem]:
    files = layout.split_files(root, dataset, split)
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        return [Problem("data_root", str(p), f"missing (split {split} of {dataset})", DATA_FIX) for p in missing]
    try:
        shape = layout.split_shape(root, dataset, split)
    except ValueError as e:
        return [Problem("data_root", str(files["ims"]), str(e), "re-download or regenerate the file")]
    if shape.ndim != 3 or "float" not in shape.dtype:
        return [Problem("data_root", str(files["ims"]), f"an array of {shape.dtype} {shape.ndim}-d, not float "
                        "region features [N_images, R, D]", "re-extract the features (float32, one [R, D] block per "
                        "image)")]
    if shape.images == 0:
        return [Problem("data_root", str(files["ims"]), "the split is empty (0 images)", "re-download or regenerate it")]
    if shape.captions != cpi * shape.images:
        return [Problem("data_root", str(files["caps"]), f"{shape.captions} captions for {shape.images} images; "
                        f"expected {cpi} consecutive captions per image",
                        "use the caption file of the same split (the two files belong to different splits or one "
                        "is truncated)")]
    return []


_WORD = re.compile(rb"[a-z]+")


def caption_words(path: str | Path) -> set[str]:
    """The runs of letters in a caption file, lower-cased (a cheap stand-in for its tokens)."""
    return {w.decode() for w in _WORD.findall(Path(path).read_bytes().lower())}


def _vocab_problems(cell: Cell) -> list[Problem]:
    from bench.data.errors import DataError
    from bench.data.vocab import SPECIALS, load_vocab

    path = layout.vocab_file(cell)
    fix = ("use the vocabulary built from this dataset's captions (the SCAN release's "
           f"VOCAB/{cell.dataset.name}_vocab.json; python -m bench.data.synth writes one with its data)")
    if not path.is_file():
        return [Problem("vocab_root", str(path), "missing", fix)]
    try:
        vocab = load_vocab(path)
    except DataError as e:
        return [Problem("vocab_root", str(path), str(e).split("; ")[0].replace(f"{path}: ", ""), fix)]
    captions = layout.split_files(cell.dataset.data_root, cell.dataset.name, "train")["caps"]
    if not captions.is_file():
        return []  # named with the split
    words = [w for w in vocab.word2idx if w not in SPECIALS and w.isascii() and w.isalpha()]
    seen = caption_words(captions)
    unused = [w for w in words if w not in seen]
    if words and len(unused) / len(words) > FOREIGN_VOCAB_SHARE:
        return [Problem("vocab_root", str(path), f"{len(unused)} of its {len(words)} words "
                        f"({len(unused) / len(words):.0%}) never occur in {captions}, e.g. "
                        f"{', '.join(repr(w) for w in unused[:3])}: the vocabulary of other captions "
                        "(another dataset's?)", fix)]
    return []


# ----------------------------------------------------------------------------------------------- pixels


def _karpathy_problems(cell: Cell, memo: dict) -> list[Problem]:
    json_path, images = layout.karpathy_json(cell.dataset), layout.image_root(cell.dataset)
    splits = tuple(layout.karpathy_split(s) for s in layout.splits_read(cell))
    return _once(memo, ("karpathy", str(json_path), str(images), splits), _karpathy_file_problems,
                 json_path, images, splits)


def _karpathy_file_problems(json_path: Path, images: Path, splits: tuple[str, ...]) -> list[Problem]:
    import json

    from bench.data.karpathy import SPLIT_ALIASES

    fix = ("put Karpathy's caption file there (dataset_flickr30k.json / dataset_coco.json, named as "
           f"{', '.join(f'{k}: {v}' for k, v in layout.KARPATHY_JSON.items())}) or set the dataset's "
           "karpathy_json; python -m bench.data.synth --preset rehearsal writes both with their images")
    if not json_path.is_file():
        return [Problem("data_root", str(json_path), "missing (the captions of a pixel matcher: a SCAN precomp "
                        "folder has none)", fix)]
    try:
        entries = json.loads(json_path.read_text(encoding="utf-8"))["images"]
        listed = {s: [str(Path(e.get("filepath", "")) / e["filename"]) for e in entries
                      if e.get("split") in SPLIT_ALIASES.get(s, (s,))] for s in splits}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return [Problem("data_root", str(json_path), f"not Karpathy's JSON {{'images': [{{'filename', 'split', "
                        f"'sentences'}}]}} ({type(e).__name__}: {e})", fix)]
    empty = [s for s, names in listed.items() if not names]
    if empty:
        return [Problem("data_root", str(json_path), f"no images in split(s) {', '.join(empty)}", fix)]
    image_fix = "point image_root (default <data_root>/images) at the folder holding the listed images"
    if not images.is_dir():
        return [Problem("data_root", str(images), "the image folder does not exist", image_fix)]
    missing, looked = [], 0
    for names in listed.values():
        step = max(1, len(names) // IMAGE_SAMPLE)
        for name in names[::step][:IMAGE_SAMPLE]:
            looked += 1
            if not (images / name).is_file():
                missing.append(name)
    if missing:
        return [Problem("data_root", str(images), f"{len(missing)} of {looked} images looked for are missing, "
                        f"first: {', '.join(missing[:3])} (listed in {json_path})", image_fix)]
    return []


# ----------------------------------------------------------------------------------------------- weights


def _weights_problems(cell: Cell, memo: dict) -> list[Problem]:
    from bench.weights import KINDS, fetch_command, folder_problems, weights_args

    out = []
    overrides = cell.matcher.overrides
    for arg, kind in weights_args(cell.matcher.name).items():
        k = KINDS[kind]
        path = overrides.get(arg)
        if path is None:
            if cell.scale == "full":
                out.append(Problem(k.key, "not given", f"a full-scale {cell.matcher.name} cell starts from "
                                   f"local pretrained weights ({k.what}; nothing is downloaded)",
                                   f"fetch them on a machine with internet ({fetch_command(kind)}), copy the "
                                   f"folder here and add the override {k.key}=models/{k.folder}"))
            continue
        import models  # a folder is given: its architecture is the matcher's to say

        architecture = models.matcher_attribute(cell.matcher.name, "architecture")(**overrides)
        key = ("weights", str(path), kind, tuple(sorted(architecture.items())))
        found = _once(memo, key, folder_problems, path, kind, architecture)
        out += [Problem(k.key, str(path), p.what, p.fix) for p in found]
    return out


# ----------------------------------------------------------------------------------------------- sizes


def data_build_kwargs(cell: Cell) -> dict:
    """What the trainer passes a matcher from the data (``bench.data.open.Data.build_kwargs``), read from
    the headers: vocabulary size (with the ``<mask>`` row where the cell has one), region shape, words."""
    import json

    import models
    from bench.data.vocab import MASK, load_vocab

    resolved = spec.resolve(cell)
    if models.input_kind(cell.matcher.name) == "pixels":
        from bench.weights import weights_args

        if any(cell.matcher.overrides.get(arg) for arg in weights_args(cell.matcher.name)):
            return {}  # a pretrained folder brings its own tokenizer: the captions' words are not read
        entries = json.loads(layout.karpathy_json(resolved.dataset).read_text(encoding="utf-8"))["images"]
        from bench.data.karpathy import SPLIT_ALIASES

        words = {w for e in entries if e.get("split") in SPLIT_ALIASES["train"]
                 for s in e["sentences"][:resolved.dataset.captions_per_image] for w in s["raw"].lower().split()}
        return {"vocab_words": sorted(words)}
    vocab = load_vocab(layout.vocab_file(resolved))
    words = [vocab.idx2word[i] for i in range(4, len(vocab)) if vocab.idx2word[i] != MASK]
    mask = resolved.schedule.caption_aug or models.matcher_attribute(cell.matcher.name, "mask_word", False)
    shape = layout.split_shape(resolved.dataset.data_root, resolved.dataset.name, "train")
    return {"vocab_size": len(vocab) + int(bool(mask)), "img_dim": shape.dim, "num_regions": shape.regions,
            "vocab_words": words}


def parameter_count(cell: Cell, memo: dict | None = None) -> int:
    """Parameters of the matcher the cell trains (built on the meta device: no weights read or allocated);
    ``memo`` shares the count of one matcher built with the same arguments between calls."""
    import models

    kwargs = spec.matcher_kwargs(spec.resolve(cell), data_build_kwargs(cell))
    key = spec.canonical_json([cell.matcher.name, kwargs])
    memo = {} if memo is None else memo
    if key not in memo:
        memo[key] = models.parameter_count(cell.matcher.name, **kwargs)
    return memo[key]
