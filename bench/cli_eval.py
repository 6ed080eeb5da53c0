"""``python -m bench evaluate`` and ``python -m bench export``: checkpoints in and out of the suite.

    evaluate CHECKPOINT [CHECKPOINT2 …] --data-root DIR --dataset f30k_precomp|coco_precomp
             [--protocol f30k_1k|coco_1k|coco_5k …] [--out result.json] [--batch-size N] [--device D]
             [--no-eccv]
    export RUN_DIR --format official OUT

``evaluate`` reads this suite's ``best.pt`` or an official checkpoint (``models.official``), scores the
test split exactly as a training cell's final evaluation does (same batches, same tiles), prints
R@1/5/10 both ways, RSUM, medr and meanr per protocol (COCO 1K fold by fold and averaged; COCO 5K also
ECCV Caption and CxC, :mod:`bench.eccv`, unless ``--no-eccv``) and, with
``--out``, writes a result JSON (``metrics`` as in a cell's ``result.json``) and the per-query ranks
next to it (``<out stem>.ranks.npz``, the keys of a cell's ``ranks.npz``). Several checkpoints are an
evaluation-time ensemble: their score matrices are averaged (SGRAF = SGR + SAF).
The vocabulary is the data root's ``vocab/``, as for training.

``export`` writes a run's ``best.pt`` in the layout of the official program of its matcher, which the
reference ``evalrank`` can read (and ``evaluate`` reads back bit for bit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# torch, numpy and tqdm are imported inside the functions: registering the subcommands must not
# slow down every other `python -m bench` command.


class EvaluateError(ValueError):
    """A bad ``evaluate``/``export`` argument: names the value and the fix."""


def _device(name: str):
    """The torch device ``--device`` names (``auto``: CUDA when there is one); EvaluateError naming the fix."""
    from bench.distributed import torch_device

    try:
        return torch_device(name, "--device")
    except ValueError as e:
        raise EvaluateError(str(e)) from None


def _positive_int(text: str) -> int:
    """argparse type of a count: a whole number >= 1 (argparse prints the message, exit code 2)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (images or captions encoded at once), got {value}")
    return value


#: A run folder's files that are not models: what to evaluate instead.
RESUME_FILES = ("last.pt", "last.prev.pt")


def _data_for(matcher_name: str, dataset: str, data_root: str, vocab_root: str | None, protocols: list[str],
              batch_size: int):
    """The trainer's view of the data for ``matcher_name`` (same vocabulary and sizes as a training cell)."""
    import models
    from bench import spec
    from bench.data.open import open_data

    cell = spec.resolve(spec.Cell(dataset=spec.Dataset(dataset, data_root=data_root, vocab_root=vocab_root),
                                  matcher=spec.MatcherSpec(matcher_name), strategy=spec.StrategySpec("baseline"),
                                  eval=spec.Eval(protocols=protocols, batch_size=batch_size)))
    return cell, open_data(cell, models.input_kind(matcher_name))


def read_run_config(run_dir: Path):
    """The cell a run folder's ``config.yaml`` records (a ``spec.Cell``; None when there is none), read by the
    bounded YAML loader; EvaluateError naming the file when it is not YAML or not a cell (a user edited or
    truncated it)."""
    import yaml

    from bench import spec, yamlsafe
    from bench.values import shown

    cfg = Path(run_dir) / "config.yaml"
    if not cfg.is_file():
        return None
    fix = "restore it from the run (a cell's config.yaml is written by the sweep) or give another run folder"
    try:
        raw = yamlsafe.load(yamlsafe.read_bytes(cfg).decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise EvaluateError(f"{cfg}: not valid YAML ({' '.join(str(e).split())}); {fix}") from None
    if not isinstance(raw, dict):
        raise EvaluateError(f"{cfg}: expected a cell (a mapping with dataset, matcher, strategy …), got "
                            f"{type(raw).__name__} {shown(raw)}; {fix}")
    try:
        return spec.Cell.from_dict(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise EvaluateError(f"{cfg}: expected a cell (a mapping with dataset, matcher, strategy …): "
                            f"{' '.join(str(e).split())}; {fix}") from None


def unfinished_run(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` (a run folder's ``best.pt``) is not a cell's result, or None: its folder holds a
    cell's ``config.yaml`` but no ``done`` marker, so it is the best so far of a run that trains now (its
    lock is held), was stopped or failed; or it has a ``done`` marker but is not the model its result was
    evaluated from (:func:`_foreign_checkpoint`). ``evaluate`` and ``export`` refuse it alike."""
    from bench.harness.store import DONE_FILE, RUNNING_FILE, folder_lock, lock_is_held

    run_dir = Path(checkpoint).resolve().parent
    if not (run_dir / "config.yaml").is_file():
        return None
    if (run_dir / DONE_FILE).exists():
        return _foreign_checkpoint(Path(checkpoint), run_dir)
    if (run_dir / RUNNING_FILE).exists() and lock_is_held(folder_lock(run_dir)):
        state = "is training now (its lock is held)"
    else:
        state = "is not a finished run (no `done` marker)"
    return (f"{run_dir} {state}: its {Path(checkpoint).name} is the best so far, not the cell's result; finish the "
            "cell first (python -m bench sweep SUITE)")


def _foreign_checkpoint(checkpoint: Path, run_dir: Path) -> str | None:
    """Why a finished run's ``best.pt`` is not the model of its result (another run's file copied over: its
    ``result.json`` records the sha256 of the ``best.pt`` it was evaluated from), or None."""
    import json

    from bench.atomic import result_checkpoint_problem

    if checkpoint.name != "best.pt":
        return None
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        return None  # no readable result: the checks of the checkpoint itself still apply
    problem = result_checkpoint_problem(checkpoint, result if isinstance(result, dict) else None)
    return problem and f"{problem}; a sweep retrains the cell, or give the run folder the file belongs to"


def load_for_data(path: str | Path, dataset: str, data_root: str, vocab_root: str | None, protocols: list[str],
                  batch_size: int | None, bert_path: str | None = None):
    """``(model, info, data, batch_size)``: the checkpoint at ``path`` fitted to the data's vocabulary."""
    from models import official

    path = Path(path)
    ckpt = official.read(path)
    program = official.detect(ckpt, path)
    name = ckpt["matcher"]["name"] if program == "ours" else program
    if batch_size is None:
        recorded = read_run_config(path.parent) if program == "ours" else None
        batch_size = (recorded and recorded.eval.batch_size) or 128
    cell, data = _data_for(name, dataset, data_root, vocab_root, protocols, batch_size)
    weights = ckpt["weights"] if program == "ours" else official.to_ours(program, ckpt)
    check_fits_data(path, weights, data)
    model, info = official.load(path, vocab_size=data.build_kwargs.get("vocab_size"), bert_path=bert_path,
                                data_kwargs=data.build_kwargs)
    if program == "ours":  # a vocabulary of the same size (checked by the load) with other words or order
        from bench.data.vocab import other_vocabulary

        if why := other_vocabulary(path, ckpt.get("vocab_fingerprint"), data.vocab):
            raise EvaluateError(why)
    return model, info, data, batch_size


def check_fits_data(path: Path, weights: dict, data) -> None:
    """The data's region features have the width (and, for a matcher with a fixed region count, the count)
    the checkpoint was trained on: EvaluateError naming both, instead of a state-dict size mismatch."""
    fc = weights.get("img_enc.fc.weight")
    if fc is None or data.kind != "regions":
        return
    split = next(iter(data.test_splits.values()), data.train)
    have, want = int(data.build_kwargs["img_dim"]), int(fc.shape[1])
    if have != want:
        raise EvaluateError(f"{path}: the data's features are {have}-d ({split.path}), the checkpoint's {want}-d: "
                            "evaluate it on the data it was trained on (features of the same extractor)")
    pool = weights.get("img_pool.local_proj.1.weight")  # SGRAF: a BatchNorm over the regions
    if pool is not None and int(pool.shape[0]) != int(data.build_kwargs["num_regions"]):
        raise EvaluateError(f"{path}: the data has {data.build_kwargs['num_regions']} regions per image "
                            f"({split.path}), the checkpoint was trained on {int(pool.shape[0])}: evaluate it on "
                            "the data it was trained on")


def _bar(iterable, desc: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())


def score_checkpoint(model, data, split, batch_size: int, device, name: str):
    """The score matrix [n_images, n_captions] of ``model`` on ``split`` (the trainer's evaluation path)."""
    from bench.evaluate import encode_all, score_matrix

    imgs, caps = data.eval_batches(split, batch_size)
    n_img = -(-split.n_images // batch_size)
    n_cap = -(-split.n_captions // batch_size)
    img_enc, cap_enc = encode_all(model, _bar(imgs, f"{name}: images", n_img), _bar(caps, f"{name}: captions", n_cap),
                                  device=device)
    return score_matrix(model, img_enc, cap_enc, device=device)


def evaluate_checkpoints(paths: list[str], dataset: str, data_root: str, protocols: list[str] | None = None,
                         vocab_root: str | None = None, batch_size: int | None = None, device: str = "auto",
                         bert_path: str | None = None, precision: str = "fp32",
                         compile: bool = False, eccv: bool = True) -> tuple[dict, dict]:
    """``(result, ranks)``: metrics per protocol of the checkpoint (or the score-averaged ensemble), scored in
    ``precision`` (fp32 | tf32 | bf16, ``bench.precision``) with the pairwise tiles compiled when ``compile``;
    ``coco_5k`` also ECCV Caption and CxC (:mod:`bench.eccv`) unless ``eccv`` is False (the split's COCO ids
    are checked before any scoring)."""
    import numpy as np

    from bench import eccv as eccv_metrics
    from bench.data.precomp import DATASETS
    from bench.precision import RunMode, prepare_model
    from bench.protocols import PROTOCOLS, evaluate_protocol, protocols_for
    from bench.provenance import data_description

    if dataset not in DATASETS:
        raise EvaluateError(f"--dataset {dataset!r} is not a precomp dataset; use one of {sorted(DATASETS)}")
    for path in paths:
        if why := unfinished_run(Path(path)):
            raise EvaluateError(why)
        if Path(path).name in RESUME_FILES:
            raise EvaluateError(f"{path} is a resume checkpoint (branches, optimisers, RNG state), not the model a "
                                f"cell reports; evaluate {Path(path).with_name('best.pt')}")
    if batch_size is not None and batch_size < 1:
        raise EvaluateError(f"--batch-size {batch_size}: must be >= 1")
    names = list(protocols or [p.name for p in protocols_for(dataset)])
    for n in names:
        if n not in PROTOCOLS:
            raise EvaluateError(f"--protocol {n!r} is unknown; valid: {', '.join(PROTOCOLS)}")
        if PROTOCOLS[n].dataset != dataset:
            raise EvaluateError(f"--protocol {n} evaluates {PROTOCOLS[n].dataset}, not --dataset {dataset}; "
                                f"protocols of {dataset}: {', '.join(p.name for p in protocols_for(dataset))}")
    dev = _device(device)  # before any checkpoint or data is read
    try:
        mode = RunMode(precision, compile, dev.type)
    except ValueError as e:
        raise EvaluateError(str(e).replace("schedule.precision", "--precision").replace("schedule.compile",
                                                                                         "--compile")) from e
    by_split: dict[str, list[str]] = {}
    for n in names:
        by_split.setdefault(PROTOCOLS[n].split, []).append(n)
    sims: dict = {}
    infos = []
    coco_ids = None
    for path in paths:
        model, info, data, bs = load_for_data(path, dataset, data_root, vocab_root, names, batch_size, bert_path)
        if eccv and eccv_metrics.PROTOCOL in names and coco_ids is None:  # before any scoring
            coco_ids = eccv_metrics.split_ids(data.test_splits[eccv_metrics.protocol_split()], data_root)
        prepare_model(model.to(dev), mode)
        info["eval_batch_size"] = bs
        infos.append(info)
        for split_name in by_split:
            with mode.autocast():
                s = score_checkpoint(model, data, data.test_splits[split_name], bs, dev, Path(path).name)
            if split_name in sims and sims[split_name].shape != s.shape:
                raise EvaluateError(f"{path} scores a {tuple(s.shape)} matrix, the others {tuple(sims[split_name].shape)}")
            sims[split_name] = s if split_name not in sims else sims[split_name] + s
        del model
    metrics, folds, ranks = {}, {}, {}
    for split_name, protos in by_split.items():
        S = sims[split_name] / len(paths) if len(paths) > 1 else sims[split_name]
        for n in protos:
            m, r_i2t, r_t2i = evaluate_protocol(PROTOCOLS[n], S, return_ranks=True)
            if "folds" in m:
                folds[n] = m["folds"]
            metrics[n] = {k: v for k, v in m.items() if k != "folds"}
            ranks[f"{n}/i2t"], ranks[f"{n}/t2i"] = np.asarray(r_i2t), np.asarray(r_t2i)
            if n == eccv_metrics.PROTOCOL and coco_ids is not None:
                metrics[n].update(eccv_metrics.coco_metrics(S, coco_ids))
    result = {"status": "done", "metrics": metrics, "folds": folds, "dataset": dataset, "data_root": str(data_root),
              "data": data_description(data_root), "protocols": names, "checkpoints": infos,
              "ensemble": len(paths) > 1, "source": " + ".join(i["source"] for i in infos), "mode": mode.record()}
    if coco_ids is not None:
        result["eccv_caption_ids"] = coco_ids.caption_source
    return result, ranks


#: The printed headers of ``bench.metrics.REPORT_KEYS``, in their order.
COLUMN_LABELS = ("i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "RSUM", "i2t medr", "meanr", "t2i medr", "meanr")


def _columns() -> tuple:
    from bench.metrics import REPORT_KEYS

    return tuple(zip(REPORT_KEYS, COLUMN_LABELS, strict=True))


def format_table(result: dict) -> str:
    """The printed table: one row per protocol (and per COCO 1K fold, then their average); then the ECCV
    Caption and CxC metrics of COCO 5K where computed."""
    from bench.eccv import HEADER as ECCV_HEADER
    from bench.metrics import ECCV_KEYS, ECCV_SIZE_KEY

    head = f"{'protocol':<14}" + "".join(f"{h:>10}" for _, h in _columns())
    lines = [head, "-" * len(head)]

    def row(label, m):
        return f"{label:<14}" + "".join(f"{m[k]:>10.1f}" for k, _ in _columns())

    for n, m in result["metrics"].items():
        for i, f in enumerate(result["folds"].get(n, [])):
            lines.append(row(f"{n} fold {i + 1}", f))
        lines.append(row(f"{n} mean" if n in result["folds"] else n, m))
    for n, m in result["metrics"].items():
        if ECCV_SIZE_KEY in m:
            lines.append(f"{n}: ECCV Caption and CxC on {int(m[ECCV_SIZE_KEY])} images "
                         f"(caption ids: {result.get('eccv_caption_ids', '?')})")
            lines += [f"  {ECCV_HEADER[k]:<16}{m[k]:>8.1f}" for k in ECCV_KEYS]
    return "\n".join(lines)


def write_result(result: dict, ranks: dict, out: str | Path) -> tuple[Path, Path]:
    import io

    import numpy as np

    from bench.atomic import atomic_write_bytes

    out = Path(out)
    ranks_path = out.with_name(out.stem + ".ranks.npz")
    buf = io.BytesIO()
    np.savez_compressed(buf, **ranks)
    existed = ranks_path.exists()
    atomic_write_bytes(ranks_path, buf.getvalue())
    try:
        atomic_write_bytes(out, (json.dumps({**result, "ranks_file": ranks_path.name}, indent=2, default=str)
                                 + "\n").encode())
    except BaseException:
        if not existed:  # no ranks file left beside a result that was not written
            ranks_path.unlink(missing_ok=True)
        raise
    return out, ranks_path


def check_out_path(out: str | Path) -> None:
    """``--out`` names a file that can be written: EvaluateError for a folder, or a file where a folder of
    the path belongs (checked before any scoring), or an existing file that ``evaluate`` did not write."""
    out = Path(out)
    if out.is_dir():
        raise EvaluateError(f"--out {out} is a folder: give the result file's path, e.g. --out {out / 'result.json'} "
                            "(the ranks are written beside it, as result.ranks.npz)")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise EvaluateError(f"--out {out}: {blocking} is a file, not a folder; give a path in a folder")
    refuse_foreign_file("--out", out, "a result JSON of python -m bench evaluate", _is_evaluate_result)
    ranks = out.with_name(out.stem + ".ranks.npz")
    refuse_foreign_file(f"--out {out}: its ranks file", ranks, "a ranks archive (.npz)", zipfile_of)


def refuse_foreign_file(option: str, path: Path, own: str, is_own) -> None:
    """An output path a user names replaces only an earlier output of the same kind (``is_own(path)``): a
    mistyped path onto a data file, a caption file or a colleague's result would lose it. EvaluateError."""
    if path.is_file() and not is_own(path):
        raise EvaluateError(f"{option} {path} exists and is not {own}: it would be replaced, and nothing replaces a "
                            "file this command did not write; give a new path, or move the file away first")


def zipfile_of(path: Path, member: str | None = None) -> bool:
    """``path`` is a zip archive (``.npz``; a torch checkpoint: one holding ``*/data.pkl``)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return member is None or any(n.endswith(member) for n in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_evaluate_result(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "metrics" in data and "checkpoints" in data


def _check_export_path(out: Path) -> None:
    """``export``'s OUT: a file path whose folders can hold it, never a folder or a file export did not write."""
    if not str(out) or out.is_dir():
        raise EvaluateError(f"{str(out) or repr('')} is a folder: give the exported file's path, e.g. "
                            f"{out / 'model_best.pth'}")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise EvaluateError(f"{out}: {blocking} is a file, not a folder; give a path in a folder")
    refuse_foreign_file("export OUT", out, "a torch checkpoint (an earlier export)",
                        lambda p: zipfile_of(p, "data.pkl"))


def cmd_evaluate(args) -> None:
    from bench.harness.store import run_folder_holding

    if args.out and (held := run_folder_holding(args.out)):
        print(f"error: --out {args.out} is inside the run folder {held} of the result store, where it would "
              "replace the cell's own files: write it elsewhere (e.g. --out eval/result.json)", file=sys.stderr)
        sys.exit(2)
    if args.out:
        check_out_path(args.out)
    # EvaluateError, OfficialCheckpointError, DataError: one `error:` line, exit 2 (bench.__main__.main)
    result, ranks = evaluate_checkpoints(args.checkpoints, args.dataset, args.data_root, args.protocol,
                                         vocab_root=args.vocab_root, batch_size=args.batch_size,
                                         device=args.device, bert_path=args.bert_path,
                                         precision=args.precision, compile=args.compile, eccv=not args.no_eccv)
    what = "ensemble of " + " + ".join(i["source"] for i in result["checkpoints"]) if result["ensemble"] \
        else result["checkpoints"][0]["source"]
    from bench.precision import variant_label

    print(f"{what}{variant_label(args.precision, args.compile)} on {args.dataset} ({args.data_root})")
    print(format_table(result))
    if args.out:
        out, ranks_path = write_result(result, ranks, args.out)
        print(f"result: {out}; ranks: {ranks_path}")


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "official") -> Path:
    """Write the run's ``best.pt`` as the official program's checkpoint ``out``."""
    from bench import checkpoint as ckpt
    from bench.data.precomp import vocab_path
    from bench.data.vocab import MASK, load_vocab
    from bench.spec import Dataset, default_vocab_root
    from models import official

    if fmt != "official":
        raise EvaluateError(f"--format {fmt!r} is not supported; use --format official")
    run_dir = Path(run_dir)
    best = run_dir / "best.pt"
    if run_dir.is_file():
        raise EvaluateError(f"{run_dir} is a file; give the run folder holding it ({run_dir.parent})")
    if best.is_file() and (why := unfinished_run(best)):
        raise EvaluateError(why)
    if not best.is_file():
        raise EvaluateError(f"{run_dir} has no best.pt: give a finished run folder (results/runs/<suite>/<cell-id>)")
    _check_export_path(Path(out))
    state = ckpt.load(best)
    name = state["matcher"]["name"]
    if name not in official.EXPORTABLE:
        raise EvaluateError(f"{best}: matcher {name!r} has no official checkpoint layout; exportable: "
                            f"{', '.join(official.EXPORTABLE)}")
    recorded = read_run_config(run_dir)
    ds = recorded.dataset if recorded is not None else Dataset("f30k_precomp")
    words = state.get("vocab_size")
    vocab_root = ds.vocab_root or (default_vocab_root(ds.data_root) if ds.data_root else None)
    if vocab_root and Path(vocab_path(vocab_root, ds.name)).is_file():
        vocab = load_vocab(vocab_path(vocab_root, ds.name))
        words = len([w for w in vocab.word2idx if w != MASK])  # the file's words: the reference adds <mask>
    model, _ = official.load(best, data_kwargs=_sizes_from_weights(name, state["weights"]))
    return official.export(model, name, out, dataset=ds.name, vocab_size=int(words or 0),
                           epoch=int(state.get("epoch", 0)), best_rsum=float((state.get("dev") or {}).get("rsum", 0.0)))


def _sizes_from_weights(name: str, weights: dict) -> dict:
    """Data-given constructor sizes recovered from trained weights (so export needs no data folder)."""
    fc = weights["img_enc.fc.weight"]
    sizes = {"img_dim": int(fc.shape[1])}
    if "txt_enc.embed.weight" in weights:
        sizes["vocab_size"] = int(weights["txt_enc.embed.weight"].shape[0])
    if "img_pool.local_proj.1.weight" in weights:
        sizes["num_regions"] = int(weights["img_pool.local_proj.1.weight"].shape[0])
    return sizes


def cmd_export(args) -> None:
    from bench.harness.store import run_folder_holding

    if held := run_folder_holding(args.out):
        print(f"error: {args.out} is inside the run folder {held} of the result store, where it would replace "
              "the cell's own files: write the exported checkpoint elsewhere (e.g. export/model_best.pth.tar)",
              file=sys.stderr)
        sys.exit(2)
    out = export_run(args.run_dir, args.out, args.format)  # a user error: one `error:` line (bench.__main__)
    print(f"wrote {out} (official layout)")


def add_subparsers(sub) -> None:
    from bench.precision import PRECISIONS
    from bench.values import path_arg

    """Register ``evaluate`` and ``export`` on the ``python -m bench`` subparsers."""
    p = sub.add_parser("evaluate", help="Recall@K of a checkpoint (ours or official), or an ensemble of several")
    p.add_argument("checkpoints", nargs="+", help="best.pt of a run, or an official model_best.pth(.tar)")
    p.add_argument("--data-root", type=path_arg, required=True, help="folder with <dataset>/ and vocab/, as for training")
    p.add_argument("--dataset", required=True, choices=["f30k_precomp", "coco_precomp"])
    p.add_argument("--protocol", action="extend", nargs="+", default=None,
                   help="f30k_1k | coco_1k | coco_5k, one or more (default: the dataset's)")
    p.add_argument("--vocab-root", type=path_arg, default=None, help="vocabulary folder (default DATA_ROOT/vocab)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="encoding batch size (default: the run's eval batch size, else 128)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="fp32 (default); tf32: TF32 matmuls on CUDA (fp32 elsewhere); bf16: bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile the pairwise matchers' tile scoring")
    p.add_argument("--no-eccv", action="store_true",
                   help="coco_5k without ECCV Caption and CxC (they need the split's COCO ids, bench.eccv)")
    p.add_argument("--bert-path", type=path_arg, default=None, help="VSE∞ BERT: a local bert-base-uncased folder (tokenizer)")
    p.add_argument("--out", type=path_arg, default=None, help="write the result JSON here (ranks next to it)")
    p.set_defaults(fn=cmd_evaluate)
    p = sub.add_parser("export", help="a run's best checkpoint in the official layout")
    p.add_argument("run_dir", type=path_arg, help="a finished run folder (results/runs/<suite>/<cell-id>)")
    p.add_argument("out", type=path_arg, help="the checkpoint file to write")
    p.add_argument("--format", default="official", choices=["official"])
    p.set_defaults(fn=cmd_export)
