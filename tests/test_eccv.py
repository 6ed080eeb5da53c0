"""ECCV Caption and CxC on COCO 5K (bench/eccv.py) against the eccv-caption package's own computation, the
ids a split must carry, the embedded data's ids, and what adding the metric set leaves unchanged (cell ids,
completeness of older results)."""

import contextlib
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import eccv, metrics
from bench.data.precomp import PrecompSplit

ALL = ("eccv_r1", "eccv_map_at_r", "eccv_rprecision", "cxc_recalls")


@pytest.fixture(scope="module")
def ann():
    return eccv.annotations()


@pytest.fixture(scope="module")
def full_ids(ann):
    return eccv.SplitIds(ann.image_ids, ann.caption_ids.reshape(-1), "the package's order")


def _package():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from eccv_caption import Metrics

        return Metrics()


def _package_scores(i2t, t2i, ids) -> dict:
    """``Metrics.compute_all_metrics`` of the same ranked lists, as COCO ids, in percent under our names."""
    d_i2t = {int(ids.image_ids[q]): [int(ids.caption_ids[c]) for c in row] for q, row in enumerate(i2t)}
    d_t2i = {int(ids.caption_ids[q]): [int(ids.image_ids[i]) for i in row] for q, row in enumerate(t2i)}
    with contextlib.redirect_stderr(io.StringIO()):  # the package's progress bars
        ref = _package().compute_all_metrics(d_i2t, d_t2i, target_metrics=ALL, Ks=(1, 5, 10))
    return {f"{name}_{d}": 100.0 * float(v[d]) for name, v in ref.items() for d in ("i2t", "t2i")}


def _random_lists(rng, n_queries, n_items, k=eccv.TOP_K, chunk=500):
    """[n_queries, k] distinct random items per query (vectorised: the k smallest of random keys)."""
    out = np.empty((n_queries, k), dtype=np.int64)
    for a in range(0, n_queries, chunk):
        keys = rng.random((min(chunk, n_queries - a), n_items), dtype=np.float32)
        out[a:a + chunk] = np.argpartition(keys, k, axis=1)[:, :k]
    return out


@pytest.fixture(scope="module")
def random_lists():
    """Random ranked lists of the whole split: (i2t [5000, 50] captions, t2i [25000, 50] images)."""
    rng = np.random.default_rng(1)
    return _random_lists(rng, 5000, 25000), _random_lists(rng, 25000, 5000)


def _lists(rng, base, positives, keep=1.0, first=False):
    """A copy of the ranked lists ``base`` with each query's positives (each kept with probability ``keep``)
    put on top (``first``) or at random places among the random items."""
    out = base.copy()
    k = out.shape[1]
    for q, pos in positives.items():
        pos = list(pos)[:k] if first else [p for p in pos if rng.random() < keep]
        if not pos:
            continue
        row = [x for x in out[q] if x not in set(pos)][: k - len(pos)]
        if first:
            row = pos + row
        else:
            for p in pos:
                row.insert(int(rng.integers(0, len(row) + 1)), p)
        out[q] = row[:k]
    return out


def _positions(ann, ids, name):
    """{query row: [item rows]} of metric set ``name`` on the whole split (positives outside it dropped)."""
    img = {int(x): i for i, x in enumerate(ids.image_ids)}
    cap = {int(x): i for i, x in enumerate(ids.caption_ids)}
    i2t = {img[q]: [cap[c] for c in cs if c in cap] for q, cs in ann.positives[name]["i2t"].items()}
    t2i = {cap[q]: [img[i] for i in ims if i in img] for q, ims in ann.positives[name]["t2i"].items()}
    return i2t, t2i


def test_the_package_lists_the_5k_split_in_karpathys_test_order(ann):
    assert ann.image_ids.shape == (5000,) and ann.caption_ids.shape == (5000, 5)
    assert int(ann.image_ids[0]) == 391895  # COCO_val2014_000000391895, the first image of Karpathy's test split
    assert len(set(ann.image_ids.tolist())) == 5000 and len(set(ann.caption_ids.reshape(-1).tolist())) == 25000


def _merge(a: dict, b: dict) -> dict:
    return {q: list(dict.fromkeys(a.get(q, []) + b.get(q, []))) for q in set(a) | set(b)}


def test_a_ranking_built_from_the_package_positives_is_perfect(ann, full_ids, random_lists):
    rng = np.random.default_rng(0)
    for name, keys in (("eccv", ("eccv_map_at_r", "eccv_rprecision", "eccv_r1")), ("cxc", ("cxc_r1", "cxc_r5"))):
        pi2t, pt2i = _positions(ann, full_ids, name)
        i2t, t2i = _lists(rng, random_lists[0], pi2t, first=True), _lists(rng, random_lists[1], pt2i, first=True)
        ours = eccv.metrics_from_ranked(i2t, t2i, full_ids)
        ref = _package_scores(i2t, t2i, full_ids)
        for k in keys:
            assert ours[f"{k}_t2i"] == pytest.approx(100.0)
            # two ECCV caption positives lie outside the 5K split (never retrievable): the package counts them
            # in R as we do, so a perfect i2t ranking scores just under 100 for the queries that have them
            assert ours[f"{k}_i2t"] == pytest.approx(ref[f"{k}_i2t"], abs=1e-9) and ours[f"{k}_i2t"] > 99.8
    assert ours["eccv_images"] == 5000


def test_a_random_ranking_is_near_chance(full_ids, random_lists):
    i2t, t2i = random_lists
    ours = eccv.metrics_from_ranked(i2t, t2i, full_ids)
    assert max(ours[k] for k in metrics.ECCV_KEYS) < 1.5  # chance: ~R·K/25,000 or /5,000
    assert ours == pytest.approx({k: v for k, v in _package_scores(i2t, t2i, full_ids).items()} | {"eccv_images": 5000})


def test_every_number_equals_the_packages_own_computation_on_the_same_lists(ann, full_ids, random_lists):
    """Informative lists (half of each query's ECCV or CxC positives placed at random in its top 50)."""
    rng = np.random.default_rng(2)
    e_i2t, e_t2i = _positions(ann, full_ids, "eccv")
    c_i2t, c_t2i = _positions(ann, full_ids, "cxc")
    i2t = _lists(rng, random_lists[0], _merge(e_i2t, c_i2t), keep=0.5)
    t2i = _lists(rng, random_lists[1], _merge(e_t2i, c_t2i), keep=0.5)
    ours = eccv.metrics_from_ranked(i2t, t2i, full_ids)
    ref = _package_scores(i2t, t2i, full_ids)
    assert sorted(ref) == sorted(metrics.ECCV_KEYS)
    for k in metrics.ECCV_KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k
    assert 5 < ours["eccv_map_at_r_i2t"] < 95 and 5 < ours["cxc_r10_t2i"] < 95  # neither floor nor ceiling


def test_a_prefix_of_the_split_equals_the_package_on_its_own_positives(ann):
    """The embedded data's case: the first n images; the package's functions on the positives inside them."""
    from eccv_caption import _metrics

    n = 40
    ids = eccv.SplitIds(ann.image_ids[:n], ann.caption_ids[:n].reshape(-1), "the package's order")
    sims = torch.randn(n, 5 * n, generator=torch.Generator().manual_seed(3))
    sims[torch.arange(5 * n) // 5, torch.arange(5 * n)] += 1.5  # better than chance
    ours = eccv.coco_metrics(sims, ids)
    i2t, t2i = eccv.ranked_lists(sims)
    imgs, caps = set(ids.image_ids.tolist()), set(ids.caption_ids.tolist())
    outside_i, outside_c = set(ann.image_ids.tolist()), set(ann.caption_ids.reshape(-1).tolist())
    for name, wanted in (("eccv", ("map_at_r", "rprecision", "r1")), ("cxc", ("r1", "r5", "r10"))):
        for d, ranked, q_ids, i_ids, keep_q, here, universe in (
                ("i2t", i2t, ids.image_ids, ids.caption_ids, imgs, caps, outside_c),
                ("t2i", t2i, ids.caption_ids, ids.image_ids, caps, imgs, outside_i)):
            target = {int(q): [int(i_ids[j]) for j in row] for q, row in zip(q_ids, ranked)}
            gts = {q: [x for x in v if x in here or x not in universe] for q, v in ann.positives[name][d].items()
                   if q in keep_q}
            gts = {q: v for q, v in gts.items() if v}
            with contextlib.redirect_stderr(io.StringIO()):
                if name == "eccv":
                    ref = _metrics.compute_eccv_metrics(target, gts)
                    ref = {w: ref[f"eccv_{w}"] for w in wanted}
                else:
                    ref = {w: _metrics.compute_r_at_k(target, gts, K=int(w[1:])) for w in wanted}
            for w in wanted:
                assert ours[f"{name}_{w}_{d}"] == pytest.approx(100 * ref[w], abs=1e-9), (name, w, d)
    assert ours["eccv_images"] == n


def test_ranked_lists_are_the_top_k_and_break_ties_at_random():
    sims = torch.randn(60, 300, generator=torch.Generator().manual_seed(4))
    i2t, t2i = eccv.ranked_lists(sims, k=12, block=7)
    assert np.array_equal(i2t, torch.argsort(sims, dim=1, descending=True)[:, :12].numpy())
    assert np.array_equal(t2i, torch.argsort(sims, dim=0, descending=True)[:12].T.numpy())
    # a collapsed model (every score equal) is not ranked by index (an image's captions are adjacent): at chance
    flat_i2t, flat_t2i = eccv.ranked_lists(torch.zeros(60, 300), k=10)
    own = (flat_i2t // 5) == np.arange(60)[:, None]
    assert own.mean() < 0.05 and (flat_t2i == (np.arange(300) // 5)[:, None]).mean() < 0.05


def _write_split(root, ids, capids=None, synthetic=False):
    """A COCO testall split at ``root``; ``synthetic``: marked as the embedded generator's data (its MANIFEST)."""
    folder = root / "coco_precomp"
    folder.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    np.save(folder / "testall_ims.npy", np.zeros((n, 2, 3), np.float32))
    (folder / "testall_caps.txt").write_text("a caption\n" * (5 * n))
    (folder / "testall_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    if capids is not None:
        (folder / "testall_capids.txt").write_text("".join(f"{c}\n" for c in capids))
    if synthetic:
        (root / "MANIFEST.json").write_text(json.dumps({"generator": "bench.data.synth", "preset": "t", "seed": 0}))
    return PrecompSplit(root, "coco_precomp", "testall")


def _one_line(fn, *args):
    with pytest.raises(eccv.EccvError) as e:
        fn(*args)
    msg = str(e.value)
    assert "\n" not in msg and "eval.eccv=false" in msg, msg
    return msg


def test_a_split_whose_ids_disagree_with_the_package_is_refused_in_one_line(ann, tmp_path):
    first = [int(x) for x in ann.image_ids[:10]]
    caps = ann.caption_ids[:10].reshape(-1)
    ok = tmp_path / "ok"
    assert eccv.split_ids(_write_split(ok, first, synthetic=True), ok).n_images == 10  # a prefix: the embedded data
    assert eccv.precomp_ids(ok).caption_source == eccv.PACKAGE_ORDER
    swapped = [first[1], first[0], *first[2:]]
    msg = _one_line(eccv.split_ids, _write_split(tmp_path / "swap", swapped, caps.tolist()), tmp_path / "swap")
    assert f"image 0 has id {first[1]}" in msg and "same images, another order" in msg and "testall_ids.txt" in msg
    assert "same images, another order" in _one_line(eccv.precomp_ids, tmp_path / "swap")
    other = [21000000 + i for i in range(10)]
    assert "not an image of that split" in _one_line(eccv.split_ids, _write_split(tmp_path / "other", other),
                                                     tmp_path / "other")
    assert "missing" in _one_line(eccv.precomp_ids, tmp_path / "nothing")
    _write_split(tmp_path / "text", ["COCO_1"] * 10)
    assert "'COCO_1': not a COCO id" in _one_line(eccv.precomp_ids, tmp_path / "text")
    # caption ids beside them (VSE∞'s testall_capids.txt): used when each belongs to its row's image
    split = _write_split(tmp_path / "caps", first, capids=caps.tolist())
    assert eccv.split_ids(split, tmp_path / "caps").caption_source.endswith("testall_capids.txt")
    bad = caps.copy()
    bad[[0, 7]] = bad[[7, 0]]  # a caption of image 1 on image 0's line
    msg = _one_line(eccv.split_ids, _write_split(tmp_path / "badcaps", first, capids=bad.tolist()), tmp_path / "badcaps")
    assert "line 1: caption id" in msg and f"not to image {first[0]}" in msg
    _write_split(tmp_path / "short", first, capids=caps[:-1].tolist())
    msg = _one_line(eccv.precomp_ids, tmp_path / "short")
    assert "49 caption ids for 10 images; expected 50" in msg


def test_real_data_without_caption_ids_is_refused_not_assumed(ann, tmp_path):
    """Real data (no generator's MANIFEST) without testall_capids.txt: the order of each image's caption lines is
    not assumed; one line names the missing file and both fixes. The generator's data takes the package's order."""
    first = [int(x) for x in ann.image_ids[:10]]
    real = tmp_path / "scan"
    split = _write_split(real, first)
    for fn, args in ((eccv.split_ids, (split, real)), (eccv.precomp_ids, (real,))):
        msg = _one_line(fn, *args)
        assert msg.startswith(f"{real / 'coco_precomp' / 'testall_capids.txt'}: missing: ")
        assert "VSE∞'s COCO precomp download ships testall_capids.txt" in msg and "eval.eccv=false" in msg
    (real / "MANIFEST.json").write_text(json.dumps({"generator": "another tool"}))  # not the generator's: real
    assert "testall_capids.txt: missing" in _one_line(eccv.precomp_ids, real)
    synth = tmp_path / "synth"
    assert eccv.split_ids(_write_split(synth, first, synthetic=True), synth).caption_source == eccv.PACKAGE_ORDER


def test_the_embedded_coco_test_split_carries_the_packages_ids(tiny_data, ann, tmp_path):
    from dataclasses import replace

    from bench.data.synth import PRESETS, generate

    split = PrecompSplit(tiny_data, "coco_precomp", "testall")
    assert [int(i) for i in split.image_ids] == ann.image_ids[:split.n_images].tolist()
    first_fold = PrecompSplit(tiny_data, "coco_precomp", "test")
    assert [int(i) for i in first_fold.image_ids] == ann.image_ids[:first_fold.n_images].tolist()
    train = PrecompSplit(tiny_data, "coco_precomp", "train")
    assert not set(int(i) for i in train.image_ids) & set(ann.image_ids.tolist())
    with_pixels = generate(tmp_path / "coco-pixels", preset=replace(PRESETS["tiny"], pixels=("coco_precomp",)), seed=0)
    karpathy = json.loads((with_pixels / "karpathy" / "dataset_coco.json").read_text())["images"]
    test = [e["cocoid"] for e in karpathy if e["split"] == "test"]  # CLIP-style cells read it as testall
    assert test == ann.image_ids[:len(test)].tolist() and len(test) == split.n_images
    manifest = json.loads((tiny_data / "MANIFEST.json").read_text())
    assert manifest["kind"] == "synthetic" and manifest["generator"] == "bench.data.synth"


def test_an_older_generators_folder_is_rewritten_in_place(tmp_path, ann):
    from bench.data.synth import PRESETS, Preset, generate

    small = Preset(regions=4, dim=8, f30k={"train": 20, "dev": 10, "test": 10}, coco_train=20, coco_dev=10,
                   coco_fold=4)
    assert "tiny" in PRESETS
    out = generate(tmp_path / "d", small, seed=1)
    manifest = json.loads((out / "MANIFEST.json").read_text())
    manifest["version"] -= 1  # as written by the generator before COCO test ids were the real split's
    (out / "MANIFEST.json").write_text(json.dumps(manifest))
    (out / "coco_precomp" / "testall_ids.txt").write_text("".join(f"{20300000 + i}\n" for i in range(20)))
    generate(out, small, seed=1)
    assert eccv.precomp_ids(out).n_images == 20


def test_data_kind_is_read_from_the_generators_manifest(tiny_data, tmp_path):
    from bench.provenance import data_description

    assert data_description(tiny_data) == {"kind": "synthetic", "root": tiny_data.name,
                                           "generator": {"preset": "tiny", "seed": 0, "version": 2}}
    real = tmp_path / "scan_data"
    shutil.copytree(tiny_data / "coco_precomp", real / "coco_precomp")
    assert data_description(real) == {"kind": "real", "root": "scan_data"}
    (real / "MANIFEST.json").write_text("{not json")
    assert data_description(real)["kind"] == "real"


def test_the_metric_set_at_its_default_leaves_every_cell_id_and_older_result_as_it_was(tmp_path):
    import dataclasses

    from bench.harness.cells import expand
    from bench.harness.config import ConfigError, load_suite
    from bench.harness.store import run_dir_for, run_status, write_json_atomic
    from bench.spec import ADDED_EVAL_DEFAULTS, ADDED_SCHEDULE_DEFAULTS, cell_id, result_key

    overrides = ["scale=smoke", "data_root=/nonexistent/eccv-data"]
    cells = expand(load_suite("oss", overrides))
    coco = next(c for c in cells if "coco_5k" in c.eval.protocols)
    # one mechanism for keys added after results existed: the spec's `added` fact, as the schedule's
    assert ADDED_EVAL_DEFAULTS == {"eccv": True} and set(ADDED_SCHEDULE_DEFAULTS) == {"precision", "compile"}
    assert "eccv" not in result_key(coco)["eval"] and coco.eval.eccv is True
    on = coco.replace(eval=dataclasses.replace(coco.eval, eccv=True))
    off = coco.replace(eval=dataclasses.replace(coco.eval, eccv=False))
    assert cell_id(on) == cell_id(coco) != cell_id(off) and result_key(off)["eval"]["eccv"] is False
    # the same through the suite: written at its default, the ids are the suite's; turned off, others
    assert [c.id for c in expand(load_suite("oss", [*overrides, "eval.eccv=true"]))] == [c.id for c in cells]
    off_cells = expand(load_suite("oss", [*overrides, "eval.eccv=false"]))
    assert all(c.eval.eccv is False for c in off_cells) and not {c.id for c in off_cells} & {c.id for c in cells}
    with pytest.raises(ConfigError, match=r"eval\.eccv: expected bool, got str 'no'"):
        load_suite("oss", [*overrides, "eval.eccv='no'"])
    # a result written before the metric set (Recall@K of every protocol, no ECCV / CxC): complete, done
    d = run_dir_for(coco, tmp_path)
    d.mkdir(parents=True)
    m = {k: 1.0 for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")}
    write_json_atomic(d / "result.json", {"cell_id": coco.id, "metrics": {"coco_1k": m, "coco_5k": m}})
    (d / "done").touch()
    assert run_status(coco, d)["state"] == "done"


def test_a_sweep_or_a_cell_on_a_coco_split_with_other_ids_stops_before_training(tiny_data, tmp_path, capsys):
    """The check runs before any cell trains (sweep, run) and again when a cell opens its data (bench.train)."""
    from bench.__main__ import main
    from bench.train import run_cell

    data = Path(shutil.copytree(tiny_data, tmp_path / "data"))
    ids_file = data / "coco_precomp" / "testall_ids.txt"
    ids = ids_file.read_text().split("\n")
    ids[0], ids[1] = ids[1], ids[0]
    ids_file.write_text("\n".join(ids))
    _refused_before_training(main, _coco_suite(tmp_path, data), tmp_path, capsys,
                             [f"{ids_file}: image 0 has id", "same images, another order", "eval.eccv=false"])
    with pytest.raises(eccv.EccvError, match="testall_ids.txt: image 0 has id"):
        run_cell(_coco_cell(data), tmp_path / "alone")
    assert not (tmp_path / "alone" / "last.pt").exists()


def _coco_suite(tmp_path, data):
    import yaml

    suite = tmp_path / "ec.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "ec", "scale": "smoke", "seeds": [0], "strategies": [{"name": "baseline"}],
        "datasets": [{"name": "coco_precomp", "label": "coco", "data_root": str(data)}],
        "matchers": [{"name": "vse_infty", "overrides": {"embed_size": 16, "word_dim": 8}}],
        "scales": {"smoke": {"schedule": {"default": {"epochs": 1, "batch_size": 16, "lr": 1e-3,
                                                         "max_steps_per_epoch": 1}}}},
        "eval": {"dev_images": 10}}))
    return suite


def _coco_cell(data):
    from bench.spec import Cell

    return Cell.from_dict({
        "id": "eccvcell", "seed": 0, "dataset": {"name": "coco_precomp", "data_root": str(data)},
        "matcher": {"name": "vse_infty", "embed_size": 16, "word_dim": 8}, "strategy": {"name": "baseline"},
        "schedule": {"epochs": 1, "batch_size": 16, "max_steps_per_epoch": 1}, "eval": {"dev_images": 10}})


def _refused_before_training(main, suite, tmp_path, capsys, says):
    """``sweep`` and ``run`` on ``suite`` stop with one line (exit 2) holding each of ``says``, before any folder."""
    root = tmp_path / "runs"
    for command in ("sweep", "run"):
        args = [command, str(suite), "--root", str(root)] + (["--cell", ""] if command == "run" else [])
        with pytest.raises(SystemExit) as info:
            main(args)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
        assert all(s in err for s in says), err
        assert not root.exists()
    return err


def test_real_coco_data_without_caption_ids_stops_before_training(tiny_data, tmp_path, capsys, ann):
    """The embedded data without its generator's MANIFEST reads as real data: without testall_capids.txt the
    sweep, the run and the trainer refuse before training (one line: the file and both fixes); the file, or
    eval.eccv=false, lets the cells start."""
    from dataclasses import replace

    from bench.__main__ import check_eccv_ids, main
    from bench.data.synth import PRESETS, generate
    from bench.harness.cells import expand
    from bench.harness.config import load_suite
    from bench.spec import MatcherSpec
    from bench.train import run_cell

    data = Path(shutil.copytree(tiny_data, tmp_path / "real"))
    (data / "MANIFEST.json").unlink()
    capids = data / "coco_precomp" / "testall_capids.txt"
    suite = _coco_suite(tmp_path, data)
    err = _refused_before_training(main, suite, tmp_path, capsys,
                                   [f"{capids}: missing", "VSE∞'s COCO precomp download ships testall_capids.txt",
                                    "eval.eccv=false"])
    assert err.startswith(f"error: {capids}: missing: ")
    with pytest.raises(eccv.EccvError, match="testall_capids.txt: missing"):
        run_cell(_coco_cell(data), tmp_path / "alone")
    assert not (tmp_path / "alone" / "last.pt").exists()
    pixel_data = generate(tmp_path / "pixels", preset=replace(PRESETS["tiny"], pixels=("coco_precomp",)), seed=0)
    (pixel_data / "MANIFEST.json").unlink()  # real data: the Karpathy JSON's test split follows the same rule
    pixels = _coco_cell(pixel_data).replace(matcher=MatcherSpec("clip"))
    with pytest.raises(eccv.EccvError, match=r"karpathy/testall_capids\.txt: missing: .*dataset_coco\.json \(split test\)"):
        eccv.check_cell(pixels, "pixels")
    check_eccv_ids(expand(load_suite(str(suite), ["eval.eccv=false"])))  # fix 2: without the metric set
    n = len([x for x in (data / "coco_precomp" / "testall_ids.txt").read_text().split() if x])
    capids.write_text("".join(f"{c}\n" for c in ann.caption_ids[:n].reshape(-1)))  # fix 1: the caption ids
    check_eccv_ids(expand(load_suite(str(suite))))
    assert eccv.precomp_ids(data).caption_source == str(capids)
