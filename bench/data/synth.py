"""The embedded dataset: synthetic scenes written in the real SCAN-precomp and Karpathy layouts.

    python -m bench.data.synth --preset demo --out data/synth-demo --seed 0

Scene model (one latent world shared by every split and both datasets):

* A scene has a *theme* (park, street, kitchen, ...) and 2-4 *objects*. Each object has a
  category (drawn from the theme's categories with probability 0.85, else from all; themes share
  categories, so different images share objects: hard negatives), a colour, a size and a cell of
  a 3x3 grid (its position).
* Region features [R, D]: every object covers a few regions; region = Pᵀ(w ⊙ code) + σ·ε, where
  code is the one-hot (category, colour, size, cell) code of the object, w random per-region view
  weights (a region sees its object partly), P a fixed random projection (the "detector", the same
  for all splits and datasets) and ε ~ N(0, I). The remaining regions are background (the
  theme's code) and clutter (codes never mentioned in captions). Regions are shuffled.
* Captions (5 per image) describe a random subset of the objects with varied templates (attributes
  sometimes omitted, relations from the grid cells, counts, the place): "a small red ball next to
  a dog", "two cats in the room", "there's a blue car to the left of a bus.".
* Pixels (both datasets): the objects drawn with PIL on the theme's background, one shape per category
  (outlined or filled), at ``image_size``² pixels; a Karpathy caption file per dataset.

Everything is a deterministic function of the seed: image i of split s of dataset d uses
``np.random.default_rng([seed, d, s, i])``; the COCO ``test`` split is the first fold of ``testall``. The
images of a dataset outside a preset's ``pixels`` (COCO in ``tiny``, ``demo``, ``f30k``, whose files predate COCO's
images) are drawn after everything else from streams of their own (:func:`write_late_pixels`), so every earlier
file keeps every byte.

Ids: COCO ``testall`` (and ``test``) image i carries the i-th image id of the real COCO 5K test split
(``bench.eccv.coco_test_image_ids``, from the eccv-caption package), as do the Karpathy JSON's test images
(``cocoid``), so the ECCV Caption / CxC path runs end to end on this data; other images carry
``<dataset code>·10⁷ + <split code>·10⁶ + i``. ``MANIFEST.json`` at the root says ``"kind": "synthetic"``:
what a result records as its data kind (``bench.provenance.data_description``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.data.errors import DataError
from bench.data.layout import KARPATHY_JSON, karpathy_split
from bench.data.vocab import build_vocab, save_vocab, tokenize
from bench.eccv import SPLIT_IMAGES, coco_test_image_ids
from bench.values import path_arg

GENERATOR_VERSION = 2  # 2: COCO test ids are the real COCO 5K test split's (ECCV / CxC)
CAPTIONS_PER_IMAGE = 5
N_FOLDS = 5


@dataclass(frozen=True)
class Preset:
    """Sizes of a generated dataset (images per split; COCO ``testall`` = 5 folds of ``coco_fold``)."""

    regions: int
    dim: int
    f30k: dict = field(default_factory=dict)  # {"train": n, "dev": n, "test": n}
    coco_train: int = 0
    coco_dev: int = 0
    coco_fold: int = 0
    image_size: int = 64
    noise: float = 1.0  # σ of the per-region Gaussian noise
    style: float = 1.5  # σ of a per-image offset shared by all its regions (does not average out)
    caption_error: float = 0.05  # probability that a mentioned colour is wrong (annotation noise)
    # datasets whose images are drawn from each scene's own stream as it is written; the others' are drawn after
    # everything else (write_late_pixels): every dataset gets images and a Karpathy caption file
    pixels: tuple = ("f30k_precomp",)


#: Preset fields added after datasets existed: at their default they stay out of MANIFEST.json, so a
#: dataset generated before is recognised (not regenerated).
ADDED_PRESET_DEFAULTS = {"pixels": ("f30k_precomp",)}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(regions=12, dim=64, f30k={"train": 100, "dev": 30, "test": 30},
                   coco_train=100, coco_dev=30, coco_fold=10),
    "demo": Preset(regions=36, dim=256, f30k={"train": 1500, "dev": 200, "test": 200},
                   coco_train=1500, coco_dev=200, coco_fold=200),
    "f30k": Preset(regions=36, dim=2048, f30k={"train": 2000, "dev": 1014, "test": 1000},
                   coco_train=200, coco_dev=200, coco_fold=100),
    # The published shapes with few images (a dress rehearsal of the full-scale cells): BUTD's 36 x 2048
    # regions, both datasets with images at CLIP's 224 px and a Karpathy file each (COCO: the 5 folds of
    # testall as Karpathy's test split); training splits of two published batches (2 x 128).
    "rehearsal": Preset(regions=36, dim=2048, f30k={"train": 256, "dev": 64, "test": 64},
                        coco_train=256, coco_dev=64, coco_fold=64, image_size=224,
                        pixels=("f30k_precomp", "coco_precomp")),
}

# ----------------------------------------------------------------------------------------------
# The world: categories (singular, plural), colours, sizes, themes.

CATEGORIES = [
    ("dog", "dogs"), ("ball", "balls"), ("tree", "trees"), ("bird", "birds"), ("kite", "kites"),
    ("car", "cars"), ("bike", "bikes"), ("bus", "buses"), ("house", "houses"), ("sign", "signs"),
    ("cup", "cups"), ("bowl", "bowls"), ("apple", "apples"), ("table", "tables"), ("boat", "boats"),
    ("umbrella", "umbrellas"), ("horse", "horses"), ("cow", "cows"), ("chair", "chairs"),
    ("cat", "cats"), ("lamp", "lamps"), ("book", "books"),
]
CATEGORY_ID = {name: i for i, (name, _) in enumerate(CATEGORIES)}
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
    "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (250, 250, 250), "black": (20, 20, 20),
}
COLOUR_NAMES = list(COLOURS)
SIZE_WORDS = (("small", "little"), ("large", "big"))
THEMES = [  # (place, categories, background RGB)
    ("park", ("dog", "ball", "tree", "bird", "kite", "bike"), (170, 205, 150)),
    ("street", ("car", "bike", "bus", "house", "sign", "dog"), (170, 170, 175)),
    ("kitchen", ("cup", "bowl", "apple", "table", "cat", "lamp"), (215, 195, 165)),
    ("beach", ("boat", "umbrella", "ball", "bird", "dog", "kite"), (225, 210, 160)),
    ("farm", ("horse", "cow", "tree", "house", "dog", "bird"), (185, 190, 130)),
    ("room", ("chair", "cat", "lamp", "book", "table", "cup"), (190, 175, 200)),
]
N_CLUTTER = 12
SHAPES = ("circle", "square", "triangle", "down_triangle", "diamond", "plus", "cross", "hbar", "vbar",
          "star", "hexagon")
CELL_SIDE = {0: "top left", 1: "top", 2: "top right", 3: "left", 4: "middle", 5: "right",
             6: "bottom left", 7: "bottom", 8: "bottom right"}
COUNT_WORDS = {2: "two", 3: "three", 4: "four"}

# the code layout: [category | colour | size | cell | theme | clutter]
_CODE_SIZES = (len(CATEGORIES), len(COLOURS), 2, 9, len(THEMES), N_CLUTTER)
_CODE_OFFSETS = np.cumsum((0,) + _CODE_SIZES)[:-1]
CODE_DIM = int(sum(_CODE_SIZES))


@dataclass
class Scene:
    theme: int
    objects: list  # (category, colour, size, cell) tuples


def sample_scene(rng: np.random.Generator) -> Scene:
    theme = int(rng.integers(len(THEMES)))
    n_objects = int(rng.integers(2, 5))
    cells = rng.choice(9, size=n_objects, replace=False)
    objects = []
    for cell in cells:
        if rng.random() < 0.85:
            category = CATEGORY_ID[THEMES[theme][1][rng.integers(len(THEMES[theme][1]))]]
        else:
            category = int(rng.integers(len(CATEGORIES)))
        objects.append((category, int(rng.integers(len(COLOURS))), int(rng.integers(2)), int(cell)))
    return Scene(theme, objects)


# ----------------------------------------------------------------------------------------------
# Region features


def projection(seed: int, dim: int) -> np.ndarray:
    """The fixed "detector" P [CODE_DIM, dim], N(0, 1) entries (same for all splits/datasets)."""
    return np.random.default_rng([seed, 7919]).standard_normal((CODE_DIM, dim)).astype(np.float32)


def region_features(scene: Scene, rng: np.random.Generator, proj: np.ndarray, regions: int,
                    noise: float, style: float) -> np.ndarray:
    """[regions, dim] float32: object regions, background (theme) and clutter regions, shuffled.

    Region r = Σ_k w[r, k] · P[code[r, k]] + noise·ε_r + style·η (η shared by the image's regions);
    each region has at most one active code per group [category, colour, size, cell, theme, clutter].
    """
    n_background = max(2, regions // 4)
    n_object_slots = regions - n_background
    code = np.zeros((regions, 6), dtype=np.int64)  # active code (row of P) per group
    weight = np.zeros((regions, 6), dtype=np.float32)  # its weight (0 = group absent)
    # object regions, round robin over the objects, each with random view weights
    objects = np.asarray(scene.objects)[np.arange(n_object_slots) % len(scene.objects)]
    code[:n_object_slots, :4] = _CODE_OFFSETS[:4] + objects
    weight[:n_object_slots, :4] = rng.uniform((0.7, 0.4, 0.3, 0.3), (1.3, 1.0, 0.8, 0.8), size=(n_object_slots, 4))
    code[:, 4] = _CODE_OFFSETS[4] + scene.theme
    weight[:n_object_slots, 4] = 0.2
    # background: alternately the theme and a clutter code never named in captions
    background = np.arange(n_object_slots, regions)
    theme_slots, clutter_slots = background[background % 2 == 0], background[background % 2 == 1]
    weight[theme_slots, 4] = rng.uniform(0.6, 1.0, size=len(theme_slots))
    code[clutter_slots, 5] = _CODE_OFFSETS[5] + rng.integers(N_CLUTTER, size=len(clutter_slots))
    weight[clutter_slots, 5] = rng.uniform(0.6, 1.2, size=len(clutter_slots))
    feats = noise * rng.standard_normal((regions, proj.shape[1]), dtype=np.float32)
    feats += style * rng.standard_normal(proj.shape[1], dtype=np.float32)
    for k in range(6):  # a gather instead of a matmul: fast and bitwise reproducible on any BLAS
        feats += weight[:, k : k + 1] * proj[code[:, k]]
    return feats[rng.permutation(regions)]


# ----------------------------------------------------------------------------------------------
# Captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: tuple, rng: np.random.Generator, error: float) -> str:
    category, colour, size, _ = obj
    words = []
    if rng.random() < 0.35:
        words.append(SIZE_WORDS[size][rng.integers(2)])
    if rng.random() < 0.75:
        if rng.random() < error:
            colour = (colour + 1 + int(rng.integers(len(COLOURS) - 1))) % len(COLOURS)
        words.append(COLOUR_NAMES[colour])
    words.append(CATEGORIES[category][0])
    return f"{_article(words[0])} {' '.join(words)}"


def _relation(a: tuple, b: tuple, rng: np.random.Generator) -> str:
    (ra, ca), (rb, cb) = divmod(a[3], 3), divmod(b[3], 3)
    options = []
    if ca < cb:
        options.append("to the left of")
    if ca > cb:
        options.append("to the right of")
    if ra < rb:
        options.append("above")
    if ra > rb:
        options.append("below")
    if abs(ra - rb) <= 1 and abs(ca - cb) <= 1:
        options.append("next to")
    return options[rng.integers(len(options))] if options else "near"


def caption(scene: Scene, rng: np.random.Generator, error: float = 0.0) -> str:
    """One caption describing a random subset of the scene's objects (see the module docstring)."""
    objs = [scene.objects[i] for i in rng.permutation(len(scene.objects))]
    place = THEMES[scene.theme][0]
    counts: dict[int, int] = {}
    for obj in scene.objects:
        counts[obj[0]] = counts.get(obj[0], 0) + 1
    repeated = [c for c, n in counts.items() if n >= 2]
    kind = rng.choice(["one", "two", "two", "three", "count", "place"])
    if kind == "count" and repeated:
        category = repeated[rng.integers(len(repeated))]
        text = f"{COUNT_WORDS[counts[category]]} {CATEGORIES[category][1]}"
        colours = {o[1] for o in scene.objects if o[0] == category}
        if len(colours) == 1 and rng.random() < 0.5:
            text = f"{COUNT_WORDS[counts[category]]} {COLOUR_NAMES[colours.pop()]} {CATEGORIES[category][1]}"
        if rng.random() < 0.5:
            text += f" in the {place}"
    elif kind == "three" and len(objs) >= 3:
        a, b, c = (_noun_phrase(o, rng, error) for o in objs[:3])
        text = f"{a}, {b} and {c}" if rng.random() < 0.5 else f"{a} with {b} and {c} in the {place}"
    elif kind in ("two", "three", "place"):
        a, b = _noun_phrase(objs[0], rng, error), _noun_phrase(objs[1], rng, error)
        rel = _relation(objs[0], objs[1], rng)
        text = [f"{a} {rel} {b}", f"{a} is {rel} {b}", f"{a} and {b}", f"there's {a} {rel} {b}",
                f"a {place} scene with {a} and {b}"][rng.integers(5) if kind != "place" else 4]
    else:
        a = _noun_phrase(objs[0], rng, error)
        text = [a, f"{a} in the {place}", f"there is {a} on the {CELL_SIDE[objs[0][3]]}",
                f"a picture of {a}"][rng.integers(4)]
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.5:
        text += "."
    return text


def world_words(n_scenes: int = 4000, seed: int = 0) -> list[str]:
    """The words the captions of this world use (tokenised, lower case), from ``n_scenes`` sampled scenes
    (5 captions each): what a tokenizer must know to read the embedded data without unknown tokens."""
    rng = np.random.default_rng([seed, 104729])
    return sorted({t for _ in range(n_scenes) for scene in [sample_scene(rng)]
                   for _ in range(CAPTIONS_PER_IMAGE) for t in tokenize(caption(scene, rng, 0.05))})


# ----------------------------------------------------------------------------------------------
# Pixels


def render(scene: Scene, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw the objects (category -> shape, filled for even ids, outlined for odd) on the theme colour."""
    im = Image.new("RGB", (size, size), THEMES[scene.theme][2])
    draw = ImageDraw.Draw(im)
    for category, colour, big, cell in scene.objects:
        row, col = divmod(cell, 3)
        cx = (col + 0.5 + rng.uniform(-0.12, 0.12)) * size / 3
        cy = (row + 0.5 + rng.uniform(-0.12, 0.12)) * size / 3
        r = size * (0.15 if big else 0.09)
        shape, filled = SHAPES[category // 2], category % 2 == 0
        rgb, width = COLOURS[COLOUR_NAMES[colour]], max(1, size // 32)
        kw = {"fill": rgb} if filled else {"outline": rgb, "width": width}
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            draw.ellipse(box, **kw)
        elif shape == "square":
            draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), **kw)
        elif shape in ("hbar", "vbar"):
            w, h = (r, 0.4 * r) if shape == "hbar" else (0.4 * r, r)
            draw.rectangle((cx - w, cy - h, cx + w, cy + h), **kw)
        elif shape in ("plus", "cross"):
            angle = 0 if shape == "plus" else math.pi / 4
            for k in range(2):
                a = angle + k * math.pi / 2
                dx, dy = r * math.cos(a), r * math.sin(a)
                draw.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=rgb, width=max(2, int(r / 3)) if filled
                          else max(1, int(r / 6)))
        else:
            n, start, radii = {"triangle": (3, -90, (1,)), "down_triangle": (3, 90, (1,)),
                               "diamond": (4, 0, (1,)), "hexagon": (6, 0, (1,)),
                               "star": (10, -90, (1, 0.45))}[shape]
            pts = [(cx + r * radii[k % len(radii)] * math.cos(math.radians(start + 360 * k / n)),
                    cy + r * radii[k % len(radii)] * math.sin(math.radians(start + 360 * k / n)))
                   for k in range(n)]
            draw.polygon(pts, **kw)
    return im


# ----------------------------------------------------------------------------------------------
# Writing a dataset

_DATASET_CODE = {"f30k_precomp": 1, "coco_precomp": 2}
_SPLIT_CODE = {"train": 1, "dev": 2, "testall": 3, "test": 4}


def _image_rng(seed: int, dataset: str, split: str, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, _DATASET_CODE[dataset], _SPLIT_CODE[split], i])


def _image_id(dataset: str, source_split: str, i: int) -> int:
    """COCO testall (and test, its first fold): the real COCO 5K test split's ids, in its order."""
    if source_split == "testall" and i < SPLIT_IMAGES:
        return coco_test_image_ids()[i]
    return _DATASET_CODE[dataset] * 10**7 + _SPLIT_CODE[source_split] * 10**6 + i


def _write_split(folder: Path, split: str, source_split: str, dataset: str, n_images: int, preset: Preset,
                 seed: int, proj: np.ndarray, images_dir: Path | None, karpathy: list) -> list[str]:
    """Write {split}_ims.npy/_caps.txt/_ids.txt (images 0..n-1 of ``source_split``); return captions."""
    ims = np.lib.format.open_memmap(folder / f"{split}_ims.npy", mode="w+", dtype=np.float32,
                                    shape=(n_images, preset.regions, preset.dim))
    captions, ids = [], []
    for i in range(n_images):
        rng = _image_rng(seed, dataset, source_split, i)
        scene = sample_scene(rng)
        ims[i] = region_features(scene, rng, proj, preset.regions, preset.noise, preset.style)
        caps = [caption(scene, rng, preset.caption_error) for _ in range(CAPTIONS_PER_IMAGE)]
        captions.extend(caps)
        image_id = _image_id(dataset, source_split, i)
        ids.append(str(image_id))
        if images_dir is not None:
            filename = _image_name(dataset, split, i)
            render(scene, rng, preset.image_size).save(images_dir / filename, format="PNG")
            karpathy.append(_karpathy_entry(filename, len(karpathy), image_id, split, caps))
    ims.flush()
    del ims
    (folder / f"{split}_caps.txt").write_text("".join(c + "\n" for c in captions), encoding="utf-8")
    (folder / f"{split}_ids.txt").write_text("".join(i + "\n" for i in ids), encoding="utf-8")
    return captions


def _image_name(dataset: str, split: str, i: int) -> str:
    return f"{dataset.split('_')[0]}_{split}_{i:06d}.png"


def _karpathy_entry(filename: str, imgid: int, image_id: int, split: str, caps: list[str]) -> dict:
    """One image of a Karpathy caption file (``image_id``: its ``cocoid``, :func:`_image_id`; ``split``: the
    precomp split it is written from)."""
    return {"filename": filename, "imgid": imgid, "cocoid": image_id, "split": karpathy_split(split),
            "sentids": list(range(imgid * CAPTIONS_PER_IMAGE, (imgid + 1) * CAPTIONS_PER_IMAGE)),
            "sentences": [{"raw": c, "tokens": [t for t in tokenize(c) if t[0].isalnum()],
                           "imgid": imgid, "sentid": imgid * CAPTIONS_PER_IMAGE + k} for k, c in enumerate(caps)]}


def _karpathy_file(dataset: str, entries: list) -> str:
    return json.dumps({"dataset": f"synth_{dataset.split('_')[0]}", "images": entries}, sort_keys=True) + "\n"


#: The random stream of the images drawn after everything else (see :func:`write_late_pixels`).
_LATE_PIXELS_STREAM = 1


def write_late_pixels(out: Path, preset: Preset, seed: int) -> list[str]:
    """Images and a Karpathy caption file for each dataset the preset does not render as it writes it
    (``preset.pixels``: Flickr30K only in ``tiny``, ``demo`` and ``f30k``, whose files predate COCO's images):
    drawn after everything else, each image from a random stream of its own (``[seed, dataset, split, i, 1]``) of
    the scene its regions and captions were made from (the first draws of the image's stream), its captions
    read back from the precomp split. Every file written before keeps every byte. The caption file is written
    last: a dataset that has one is complete, and is left as it is. Returns the datasets written."""
    written = []
    for dataset, splits in (("coco_precomp", ("train", "dev", "testall")),):
        target = out / "karpathy" / KARPATHY_JSON[dataset]
        if dataset in preset.pixels or target.exists():
            continue
        entries: list = []
        for split in splits:
            lines = (out / dataset / f"{split}_caps.txt").read_text(encoding="utf-8").splitlines()
            for i in range(len(lines) // CAPTIONS_PER_IMAGE):
                scene = sample_scene(_image_rng(seed, dataset, split, i))
                rng = np.random.default_rng([seed, _DATASET_CODE[dataset], _SPLIT_CODE[split], i, _LATE_PIXELS_STREAM])
                filename = _image_name(dataset, split, i)
                render(scene, rng, preset.image_size).save(out / "images" / filename, format="PNG")
                caps = lines[i * CAPTIONS_PER_IMAGE:(i + 1) * CAPTIONS_PER_IMAGE]
                entries.append(_karpathy_entry(filename, len(entries), _image_id(dataset, split, i), split, caps))
        partial = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        partial.write_text(_karpathy_file(dataset, entries), encoding="utf-8")
        os.replace(partial, target)
        written.append(dataset)
    return written


def _manifest(preset_name: str, preset: Preset, seed: int) -> dict:
    return {
        "generator": "bench.data.synth",
        "kind": "synthetic",  # the marker a result's data kind is read from (bench.provenance.data_description)
        "version": GENERATOR_VERSION,
        "preset": preset_name,
        "seed": seed,
        "config": {k: v for k, v in asdict(preset).items()
                   if not (k in ADDED_PRESET_DEFAULTS and tuple(v) == ADDED_PRESET_DEFAULTS[k])},
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "sizes": {
            "f30k_precomp": dict(preset.f30k),
            "coco_precomp": {"train": preset.coco_train, "dev": preset.coco_dev, "test": preset.coco_fold,
                             "testall": N_FOLDS * preset.coco_fold},
        },
        "region_shape": [preset.regions, preset.dim],
    }


def _older_version_of(existing: dict, manifest: dict) -> bool:
    """``existing`` is this generator's output for the same preset, seed and sizes, by an older version."""
    same = all(json.dumps(existing.get(k), sort_keys=True) == json.dumps(manifest.get(k), sort_keys=True)
               for k in ("generator", "preset", "seed", "config", "sizes"))
    return same and isinstance(existing.get("version"), int) and existing["version"] < manifest["version"]


def _same(a: dict, b: dict) -> bool:
    keys = ("generator", "version", "preset", "seed", "config", "sizes")
    return all(json.dumps(a.get(k), sort_keys=True) == json.dumps(b.get(k), sort_keys=True) for k in keys)


#: What the generator writes in its --out folder (names relative to it): whatever else lies there is not its own.
_GENERATED = re.compile(r"MANIFEST\.json|images(/[^/]+\.png)?|karpathy(/dataset_\w+\.json)?|vocab(/\w+_vocab\.json)?"
                        r"|(f30k|coco)_precomp(/(train|dev|test|testall)_(ims\.npy|caps\.txt|ids\.txt|capids\.txt))?")


def not_generated(out_dir: Path) -> list[str]:
    """The paths under ``out_dir`` (relative, sorted) that no run of the generator writes: a results store, notes,
    a user's own files, which ``--overwrite`` must not delete with the dataset."""
    foreign: list[str] = []
    for rel in sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")):
        if not _GENERATED.fullmatch(rel) and not any(rel.startswith(f"{f}/") for f in foreign):
            foreign.append(rel)  # a foreign folder is named once, not file by file
    return foreign


def generate(out_dir: str | Path, preset: str | Preset = "tiny", seed: int = 0, overwrite: bool = False) -> Path:
    """Write the embedded dataset under ``out_dir`` (layout in docs/data.md) and return ``out_dir``.

    Does nothing when ``out_dir/MANIFEST.json`` already records the same preset, seed and generator
    version. A different existing dataset raises :class:`DataError` unless ``overwrite=True``.
    """
    out_dir = Path(out_dir)
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise DataError(f"unknown synth preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset_name, config = preset, PRESETS[preset]
    else:
        preset_name, config = "custom", preset
    manifest = _manifest(preset_name, config, seed)
    manifest_path = out_dir / "MANIFEST.json"
    if manifest_path.is_file() and not overwrite:
        try:
            existing = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            existing = {}
        if _same(existing, manifest):
            write_late_pixels(out_dir, config, seed)  # a dataset written before COCO had images gets them
            return out_dir
        if not _older_version_of(existing, manifest):  # an older generator's output of the same preset: rewritten
            raise DataError(f"{manifest_path} describes another dataset (preset {existing.get('preset')!r}, seed "
                            f"{existing.get('seed')!r}); pass overwrite=True (--overwrite) or choose another --out")
    if out_dir.exists() and any(out_dir.iterdir()) and not manifest_path.is_file():
        raise DataError(f"{out_dir} exists, is not empty and holds no MANIFEST.json: it is no dataset of this "
                        "generator (real data, or other files), and --overwrite replaces only the generator's own "
                        "output; choose an empty or new --out")
    if overwrite and out_dir.is_dir() and (foreign := not_generated(out_dir)):
        raise DataError(f"{out_dir} holds files the generator did not write ({', '.join(foreign[:5])}"
                        f"{f', and {len(foreign) - 5} more' if len(foreign) > 5 else ''}): --overwrite replaces the "
                        "whole folder, so it would delete them; move them away, or choose another --out")

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    proj = projection(seed, config.dim)
    vocab_sizes = {}
    (tmp / "images").mkdir(parents=True)
    (tmp / "karpathy").mkdir()
    for dataset, splits in (
        ("f30k_precomp", [(s, s, n) for s, n in config.f30k.items()]),
        ("coco_precomp", [("train", "train", config.coco_train), ("dev", "dev", config.coco_dev),
                          ("testall", "testall", N_FOLDS * config.coco_fold),
                          ("test", "testall", config.coco_fold)]),
    ):
        folder = tmp / dataset
        folder.mkdir()
        captions = []
        karpathy: list = []
        for split, source, n in splits:
            if n <= 0:
                raise DataError(f"preset {preset_name!r}: {dataset}/{split} needs at least one image, got {n}")
            duplicate = split != source  # coco test: the first fold of testall, written again
            images_dir = tmp / "images" if dataset in config.pixels and not duplicate else None
            caps = _write_split(folder, split, source, dataset, n, config, seed, proj, images_dir, karpathy)
            if not duplicate:
                captions.extend(caps)
        vocab = build_vocab(captions)
        save_vocab(vocab, tmp / "vocab" / f"{dataset}_vocab.json")
        vocab_sizes[dataset] = len(vocab)
        if dataset in config.pixels:
            (tmp / "karpathy" / KARPATHY_JSON[dataset]).write_text(_karpathy_file(dataset, karpathy), encoding="utf-8")
    write_late_pixels(tmp, config, seed)
    manifest["vocab_sizes"] = vocab_sizes
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if manifest_path.is_file() and not overwrite and _same(json.loads(manifest_path.read_text()), manifest):
        shutil.rmtree(tmp)  # another process wrote the same dataset meanwhile
        return out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _seed(text: str) -> int:
    """``--seed``: an integer in numpy's seed range [0, 2**32)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= seed < 2**32:
        raise argparse.ArgumentTypeError(f"{seed} is outside [0, 2**32) (numpy's seed range); use a seed in "
                                         f"0 … {2**32 - 1}")
    return seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data.synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--out", type=path_arg, required=True, help="output folder (DATA and VOCAB root)")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing different dataset")
    args = parser.parse_args(argv)
    if (blocker := next((p for p in [Path(args.out), *Path(args.out).parents] if p.exists() and not p.is_dir()),
                        None)) is not None:
        print(f"error: --out {args.out}: {blocker} is a file, not a folder; give --out a folder (new or made by "
              "this generator)", file=sys.stderr)
        return 2
    try:
        out = generate(args.out, args.preset, args.seed, args.overwrite)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = json.loads((out / "MANIFEST.json").read_text(encoding="utf-8"))
    print(f"{out}: preset {manifest['preset']}, seed {manifest['seed']}, regions {manifest['region_shape']}, "
          f"sizes {manifest['sizes']}, vocab {manifest['vocab_sizes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
