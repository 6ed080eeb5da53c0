"""Checkpoints of the official implementations, read into (and written from) this suite's matchers.

    model = models.from_official("runs/f30k_butd_region_bigru/model_best.pth")   # -> Matcher
    model = models.from_official(path, vocab_size=len(vocab))                     # fit a vocabulary

The official training scripts save ``torch.save({"model": ..., "opt": argparse.Namespace, "epoch",
"best_rsum", "Eiters"})``. What ``"model"`` holds tells the program apart:

=====================  ===========================================================  ===============
program                ``"model"``                                                   our matcher
=====================  ===========================================================  ===============
VSE∞ (BiGRU branch)    ``[img_enc, txt_enc]``; ``txt_enc`` has ``embed``/``rnn``      ``vse_infty``
VSE∞ (BERT branch)     ``[img_enc, txt_enc]``; ``txt_enc`` has ``bert.*``             ``vse_infty_bert``
SGRAF                  ``[img_enc, txt_enc, sim_enc]``; ``sim_enc`` has              ``sgr`` / ``saf``
                       ``SGR_module.*`` or ``SAF_module.*``
DBL                    one flat dict ``module.{img_enc,txt_enc,sim_enc}.*`` (the     ``xattn``
                       ``nn.DataParallel`` wrapper), ``sim_enc.sim_tran_w``
=====================  ===========================================================  ===============

The ``opt`` namespace is cross-checked (``precomp_enc_type``, ``module_name``, ``no_simnorm``, the
normalisation flags) and the sizes (embedding, word, similarity, regions, GRU layers) are read from the
weights themselves. Differences handled in the mapping:

* VSE∞'s image MLP builds a BatchNorm after its last layer that its forward never applies
  (``img_enc.mlp.bns.1``): dropped on reading, written back as an identity BatchNorm on export.
* VSE∞ adds a ``<mask>`` word to the vocabulary before building its embedding (one row more than the
  vocabulary file). When a vocabulary size is given, a checkpoint embedding with one row more than our
  model's is cut to our size (the ``<mask>`` row is only used by training-time augmentation) and one
  with one row fewer gets a zero ``<mask>`` row; any other difference is :class:`OfficialCheckpointError`
  naming both sizes.
* BERT: the pooler (loaded by the reference, unused) and the ``position_ids`` buffer of older
  ``transformers`` versions are dropped.

Safe loading: every file is read by ``bench.checkpoint.read``, the project's one checkpoint reader:
``weights_only=True`` inside ``torch.serialization.safe_globals`` listing exactly the few classes these
checkpoints contain (``argparse.Namespace``, which ``weights_only`` alone refuses, and the numpy
scalar/dtype that a numpy ``best_rsum`` pickles to). The allow-list is scoped to the one load, so
nothing in the process's global torch state changes. A file naming any other global is refused with
the name it asked for, unread.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

import models
from models.base import Matcher

SUPPORTED = ("VSE∞ BiGRU and BERT (woodfrog/vse_infty: model_best.pth), SGRAF's SGR and SAF (Paranioar/SGRAF: "
             "model_best.pth.tar), DBL's matcher (Paranioar/DBL: model*_best.pth.tar), and this suite's best.pt")
OUR_FORMAT = "itm-coop-bench/1"


class OfficialCheckpointError(ValueError):
    """A checkpoint that cannot be read or mapped; the message names the file, what was found and the fix."""


# --------------------------------------------------------------------------- safe reading


def read(path: str | Path) -> dict:
    """The unpickled checkpoint at ``path`` (CPU tensors), read by the project's one checkpoint reader
    (``bench.checkpoint.read``: ``weights_only=True`` with a short allow-list)."""
    from bench.checkpoint import CheckpointError
    from bench.checkpoint import read as read_checkpoint

    path = Path(path)
    if path.is_dir():
        raise OfficialCheckpointError(f"checkpoint {path} is a folder: give the checkpoint file in it (a run's "
                                      f"{path / 'best.pt'}, or an official model_best.pth / model_best.pth.tar)")
    if not path.is_file():
        raise OfficialCheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise OfficialCheckpointError(f"checkpoint {path} is empty (0 bytes); download or copy it again")
    try:
        obj = read_checkpoint(path)
    except CheckpointError as e:
        raise OfficialCheckpointError(str(e)) from e
    if not isinstance(obj, dict):
        raise OfficialCheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict with 'model' "
                                      f"and 'opt'; supported: {SUPPORTED}")
    return obj


# --------------------------------------------------------------------------- detection


def _strip(prefix: str, state: Mapping) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _opt_dict(ckpt: dict) -> dict:
    opt = ckpt.get("opt")
    if isinstance(opt, argparse.Namespace):
        return vars(opt)
    return dict(opt) if isinstance(opt, Mapping) else {}


def detect(ckpt: dict, path: str | Path = "<checkpoint>") -> str:
    """The program that wrote ``ckpt``: ``"ours"``, ``"vse_infty"``, ``"vse_infty_bert"``, ``"sgr"``,
    ``"saf"`` or ``"xattn"`` (DBL); :class:`OfficialCheckpointError` describing the file otherwise."""
    if ckpt.get("format") == OUR_FORMAT and "weights" in ckpt:
        return "ours"
    model, opt = ckpt.get("model"), _opt_dict(ckpt)
    if isinstance(model, (list, tuple)) and all(isinstance(s, Mapping) for s in model):
        if len(model) == 2 and "fc.weight" in model[0]:
            if opt.get("precomp_enc_type", "basic") != "basic":
                raise OfficialCheckpointError(
                    f"checkpoint {path}: a VSE∞ model with precomp_enc_type={opt['precomp_enc_type']!r} (a CNN "
                    "backbone on raw images); only region features (precomp_enc_type='basic') are supported")
            if any(k.startswith("bert.") for k in model[1]):
                return "vse_infty_bert"
            if "embed.weight" in model[1] and any(k.startswith("rnn.") for k in model[1]):
                return "vse_infty"
        if len(model) == 3:
            sim = model[2]
            if any(k.startswith("SGR_module.") for k in sim):
                return "sgr"
            if any(k.startswith("SAF_module.") for k in sim):
                return "saf"
    if isinstance(model, Mapping):
        flat = _strip("module.", model) or dict(model)
        if "sim_enc.sim_tran_w.weight" in flat and "txt_enc.embed.weight" in flat:
            return "xattn"
    if isinstance(model, (list, tuple)):
        found = f"'model' = a list of {len(model)} state dicts with keys " + "; ".join(
            ", ".join(sorted(s)[:4]) + ("…" if len(s) > 4 else "") for s in model if isinstance(s, Mapping))
    elif isinstance(model, Mapping):
        found = "'model' = one state dict with keys " + ", ".join(sorted(model)[:6]) + ("…" if len(model) > 6 else "")
    else:
        found = "top-level keys " + ", ".join(sorted(map(str, ckpt))[:8])
    raise OfficialCheckpointError(f"checkpoint {path}: unknown program ({found}); supported: {SUPPORTED}")


# --------------------------------------------------------------------------- name maps

_GPO = (("gpool.", "gpo."),)
_VSE_IMG = (("mlp.layers.0.", "mlp.fc1."), ("mlp.layers.1.", "mlp.fc2."), ("mlp.bns.0.", "mlp.bn."), *_GPO)
_VSE_TXT_GRU = _GPO
_SGRAF_TXT = (("cap_rnn.", "rnn."),)
_SGRAF_SIM = (
    ("v_global_w.embedding_local.", "img_pool.local_proj."), ("v_global_w.embedding_global.", "img_pool.global_proj."),
    ("v_global_w.embedding_common.0.", "img_pool.weight_proj."),
    ("t_global_w.embedding_local.", "txt_pool.local_proj."), ("t_global_w.embedding_global.", "txt_pool.global_proj."),
    ("t_global_w.embedding_common.0.", "txt_pool.weight_proj."),
    ("sim_tranloc_w.", "sim_local."), ("sim_tranglo_w.", "sim_global."), ("sim_eval_w.", "sim_eval."),
    ("SGR_module.", "sgr."), ("SAF_module.attn_sim_w.", "saf.attn."), ("SAF_module.bn.", "saf.bn."),
)
_SGR_STEP = ((".graph_query_w.", ".query."), (".graph_key_w.", ".key."), (".sim_graph_w.", ".update."))
_DBL_SIM = (("sim_tran_w.", "sim_tran."), ("sim_eval_w.", "sim_eval."))
_VSE_UNUSED = "mlp.bns.1."  # the BatchNorm VSE∞ builds after its last MLP layer and never applies
_BERT_UNUSED = ("bert.pooler.", "bert.embeddings.position_ids")


def _rename(state: Mapping, rules, inverse: bool = False, replace_inside: bool = False) -> dict:
    out = {}
    for k, v in state.items():
        for a, b in rules:
            a, b = (b, a) if inverse else (a, b)
            if k.startswith(a) or (replace_inside and a in k):
                k = k.replace(a, b, 1)
                if not replace_inside:
                    break
        out[k] = v
    return out


def _prefixed(prefix: str, state: Mapping) -> dict:
    return {prefix + k: v for k, v in state.items()}


def to_ours(program: str, ckpt: dict) -> dict:
    """The checkpoint's weights as a state dict of our matcher ``program`` (before embedding fitting)."""
    m = ckpt["model"]
    if program in ("vse_infty", "vse_infty_bert"):
        img = {k: v for k, v in _rename(m[0], _VSE_IMG).items() if not k.startswith(_VSE_UNUSED)}
        txt = _rename(m[1], _VSE_TXT_GRU)
        if program == "vse_infty_bert":
            txt = {k: v for k, v in txt.items() if not k.startswith(_BERT_UNUSED)}
        return {**_prefixed("img_enc.", img), **_prefixed("txt_enc.", txt)}
    if program in ("sgr", "saf"):
        sim = _rename(_rename(m[2], _SGRAF_SIM), _SGR_STEP, replace_inside=True)
        return {**_prefixed("img_enc.", m[0]), **_prefixed("txt_enc.", _rename(m[1], _SGRAF_TXT)), **sim}
    if program == "xattn":
        flat = _strip("module.", m) or dict(m)
        img, txt, sim = (_strip(p, flat) for p in ("img_enc.", "txt_enc.", "sim_enc."))
        return {**_prefixed("img_enc.", img), **_prefixed("txt_enc.", _rename(txt, _SGRAF_TXT)),
                **_rename(sim, _DBL_SIM)}
    raise OfficialCheckpointError(f"no mapping for program {program!r}")


def from_ours(name: str, state: Mapping) -> object:
    """Our matcher ``name``'s state dict in the official ``"model"`` layout (the inverse of :func:`to_ours`)."""
    img, txt, rest = _strip("img_enc.", state), _strip("txt_enc.", state), {
        k: v for k, v in state.items() if not k.startswith(("img_enc.", "txt_enc."))}
    if name in ("vse_infty", "vse_infty_bert"):
        img = _rename(img, _VSE_IMG, inverse=True)
        hidden = img["mlp.layers.1.weight"].shape[0]
        img.update({f"{_VSE_UNUSED}weight": torch.ones(hidden), f"{_VSE_UNUSED}bias": torch.zeros(hidden),
                    f"{_VSE_UNUSED}running_mean": torch.zeros(hidden), f"{_VSE_UNUSED}running_var": torch.ones(hidden),
                    f"{_VSE_UNUSED}num_batches_tracked": torch.tensor(0)})
        return [img, _rename(txt, _VSE_TXT_GRU, inverse=True)]
    if name in ("sgr", "saf"):
        sim = _rename(_rename(rest, _SGR_STEP, inverse=True, replace_inside=True), _SGRAF_SIM, inverse=True)
        return [img, _rename(txt, _SGRAF_TXT, inverse=True), sim]
    if name == "xattn":
        flat = {**_prefixed("img_enc.", img), **_prefixed("txt_enc.", _rename(txt, _SGRAF_TXT, inverse=True)),
                **_prefixed("sim_enc.", _rename(rest, _DBL_SIM, inverse=True))}
        return _prefixed("module.", flat)  # DBL's test script loads into nn.DataParallel
    raise OfficialCheckpointError(
        f"matcher {name!r} has no official checkpoint layout; exportable: {', '.join(EXPORTABLE)}")


# --------------------------------------------------------------------------- sizes from the weights


def _count(state: Mapping, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def build_kwargs(program: str, state: dict, opt: dict) -> dict:
    """Constructor arguments of our matcher reproducing the checkpoint's sizes."""
    fc = state["img_enc.fc.weight"]
    kw: dict = {"img_dim": int(fc.shape[1]), "embed_size": int(fc.shape[0])}
    if program == "vse_infty_bert":
        return kw
    emb = state["txt_enc.embed.weight"]
    kw.update(vocab_size=int(emb.shape[0]), word_dim=int(emb.shape[1]))
    if program == "vse_infty":
        kw["num_layers"] = _count(state, r"txt_enc\.rnn\.weight_ih_l(\d+)$")
        return kw
    kw["sim_dim"] = int(state["sim_eval.weight"].shape[1])
    if program in ("sgr", "saf"):
        kw["module"] = program.upper()
        kw["num_regions"] = int(state["img_pool.local_proj.1.weight"].shape[0])
        if program == "sgr":
            kw["sgr_step"] = _count(state, r"sgr\.(\d+)\.")
    else:
        kw["sim_norm"] = not bool(opt.get("no_simnorm", False))
    return kw


def _bert_config(state: dict) -> dict:
    word = state["txt_enc.bert.embeddings.word_embeddings.weight"]
    hidden = int(word.shape[1])
    return {"vocab_size": int(word.shape[0]), "hidden_size": hidden, "num_attention_heads": max(1, hidden // 64),
            "num_hidden_layers": _count(state, r"txt_enc\.bert\.encoder\.layer\.(\d+)\."),
            "intermediate_size": int(state["txt_enc.bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_position_embeddings": int(state["txt_enc.bert.embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state["txt_enc.bert.embeddings.token_type_embeddings.weight"].shape[0])}


def _check_opt(program: str, opt: dict, path) -> None:
    for flag in ("no_imgnorm", "no_txtnorm"):
        if opt.get(flag):
            raise OfficialCheckpointError(
                f"checkpoint {path}: trained with --{flag} (unnormalised embeddings); our {program} matcher "
                "always L2-normalises, so its scores would differ. Retrain without the flag.")
    if program in ("sgr", "saf") and opt.get("module_name", program.upper()) != program.upper():
        raise OfficialCheckpointError(
            f"checkpoint {path}: its weights hold the {program.upper()} module but opt.module_name is "
            f"{opt['module_name']!r}; the file is inconsistent")


def fit_embedding(state: dict, rows: int, path, key: str = "txt_enc.embed.weight") -> dict:
    """Fit the checkpoint's word embedding to a model with ``rows`` rows (±1 for ``<mask>``)."""
    if key not in state:
        return state
    emb = state[key]
    have = int(emb.shape[0])
    if have == rows:
        return state
    if have == rows + 1:  # the checkpoint has the <mask> row our model lacks
        return {**state, key: emb[:rows].clone()}
    if have + 1 == rows:  # our model has a <mask> row the checkpoint lacks
        return {**state, key: torch.cat([emb, emb.new_zeros(1, emb.shape[1])])}
    raise OfficialCheckpointError(
        f"checkpoint {path} has a word embedding of {have} rows but the vocabulary gives a model with {rows} "
        f"(vocabulary size ±1 for <mask> must equal the checkpoint's {have}): the vocabulary under the data root "
        "is not the one the checkpoint was trained with; use the checkpoint's vocab/ (e.g. the SCAN "
        "f30k_precomp_vocab.json / coco_precomp_vocab.json)")


# --------------------------------------------------------------------------- the entry points


def load(path: str | Path, vocab_size: int | None = None, bert_path: str | None = None,
         data_kwargs: dict | None = None) -> tuple[Matcher, dict]:
    """``(model, info)`` for any supported checkpoint (ours or official), in eval mode on CPU.

    ``info``: ``{"program", "matcher" (name + constructor args), "source", "path", "epoch", "best_rsum"}``.
    ``vocab_size``: the size of the vocabulary the captions are encoded with (fits the embedding, see the
    module docstring). ``data_kwargs``: sizes from the data (``bench.data.open.Data.build_kwargs``), used for
    this suite's checkpoints exactly as the trainer does.
    """
    path = Path(path)
    ckpt = read(path)
    program = detect(ckpt, path)
    if program == "ours":
        return _load_ours(path, ckpt, vocab_size, data_kwargs or {})
    opt = _opt_dict(ckpt)
    _check_opt(program, opt, path)
    state = to_ours(program, ckpt)
    kwargs = build_kwargs(program, state, opt)
    if program == "vse_infty_bert" and bert_path is None:
        kwargs["bert_config"] = _bert_config(state)  # a tower of the checkpoint's sizes; its weights loaded below
    elif program == "vse_infty_bert":
        kwargs["bert_path"] = bert_path
    name = program  # the programs are named after our matchers
    build_args = {k: v for k, v in kwargs.items() if k != "module"}
    if vocab_size is not None and "vocab_size" in build_args:
        build_args["vocab_size"] = int(vocab_size)  # the embedding is fitted to the built model below
    model = models.build(name, **build_args)
    rows = model.txt_enc.embed.weight.shape[0] if hasattr(model.txt_enc, "embed") else None
    if rows is not None:
        state = fit_embedding(state, rows, path)
    _load_state(model, state, path, program)
    model.eval()
    info = {"program": program, "matcher": {"name": name, **{k: v for k, v in build_args.items()
                                                            if k != "bert_config"}},
            "source": f"official {PROGRAM_NAMES[program]} checkpoint {path.name}", "path": str(path),
            "epoch": ckpt.get("epoch"), "best_rsum": _plain(ckpt.get("best_rsum"))}
    return model, info


PROGRAM_NAMES = {"vse_infty": "VSE∞ BiGRU", "vse_infty_bert": "VSE∞ BERT", "sgr": "SGRAF SGR",
                 "saf": "SGRAF SAF", "xattn": "DBL matcher", "ours": "this suite's"}
#: Our matchers with an official checkpoint layout (``export`` writes them): the official programs above.
EXPORTABLE = tuple(name for name in PROGRAM_NAMES if name != "ours")


def _plain(x):
    return float(x) if isinstance(x, (np.floating, np.integer, float, int)) else x


def _load_state(model: Matcher, state: dict, path, program: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        details = "; ".join(filter(None, [
            f"missing {', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}" if missing else "",
            f"unexpected {', '.join(unexpected[:5])}{'…' if len(unexpected) > 5 else ''}" if unexpected else "",
            f"shape mismatch {'; '.join(shapes[:3])}" if shapes else ""]))
        raise OfficialCheckpointError(
            f"checkpoint {path} ({PROGRAM_NAMES[program]}) does not fit our {type(model).__name__}: {details}")
    model.load_state_dict(state)


def _load_ours(path: Path, ckpt: dict, vocab_size: int | None, data_kwargs: dict) -> tuple[Matcher, dict]:
    from bench.checkpoint import CheckpointError, verify

    if path.with_name(path.name + ".sha256").is_file():  # in its run folder: the recorded digest must match
        try:
            verify(path)
        except CheckpointError as e:
            raise OfficialCheckpointError(str(e)) from e
    matcher = dict(ckpt["matcher"])
    name = matcher.pop("name")
    trained_vocab = ckpt.get("vocab_size")
    data_kwargs = dict(data_kwargs)
    given = vocab_size if vocab_size is not None else data_kwargs.get("vocab_size")
    if trained_vocab is not None and given is not None and abs(int(given) - int(trained_vocab)) > 1:
        raise OfficialCheckpointError(
            f"checkpoint {path} was trained with a vocabulary of {trained_vocab} ids but the data's vocabulary "
            f"has {given} (±1 for <mask>): use the vocab/ folder of the data it was trained on")
    if trained_vocab is not None:
        data_kwargs["vocab_size"] = trained_vocab  # the embedding it was trained with (<mask> row included)
    elif given is not None:
        data_kwargs["vocab_size"] = given
    accepted = models.constructor_args(name)
    kwargs = {k: v for k, v in data_kwargs.items() if accepted is None or k in accepted}
    model = models.build(name, **{**kwargs, **matcher})
    try:
        model.load_state_dict(ckpt["weights"])
    except RuntimeError as e:
        raise OfficialCheckpointError(f"checkpoint {path} does not fit matcher {name} {matcher}: {e}") from e
    model.eval()
    info = {"program": "ours", "matcher": {"name": name, **matcher}, "path": str(path),
            "source": f"this suite's checkpoint {path}", "epoch": ckpt.get("epoch"),
            "best_rsum": _plain((ckpt.get("dev") or {}).get("rsum")), "vocab_size": trained_vocab}
    return model, info


def from_official(path: str | Path, vocab_size: int | None = None, bert_path: str | None = None) -> Matcher:
    """Our matcher holding the weights of the official checkpoint (or this suite's ``best.pt``) at ``path``.

    Built with the checkpoint's own sizes; ``vocab_size`` fits its word embedding to a vocabulary (see the
    module docstring); ``bert_path`` gives a VSE∞ BERT model its tokenizer (a local bert-base-uncased folder).
    """
    return load(path, vocab_size=vocab_size, bert_path=bert_path)[0]


def official_opt(name: str, model: Matcher, dataset: str, vocab_size: int) -> argparse.Namespace:
    """The ``opt`` namespace the official program would have saved for ``model``: every attribute its model
    constructor, data loader and ``evalrank`` read, under its argument names (training-only values: defaults)."""
    fc = model.img_enc.fc.weight
    opt = {"data_name": dataset, "vocab_path": "./vocab/", "img_dim": int(fc.shape[1]),
           "embed_size": int(fc.shape[0]), "no_imgnorm": False, "no_txtnorm": False, "margin": 0.2,
           "max_violation": True, "grad_clip": 2.0, "batch_size": 128, "num_layers": 1, "data_path": "./data/",
           "workers": 4, "learning_rate": 2e-4, "model_name": "./runs/exported/checkpoint",
           "logger_name": "./runs/exported/log"}
    if hasattr(model.txt_enc, "embed"):
        opt["word_dim"] = int(model.txt_enc.embed.weight.shape[1])
        opt["vocab_size"] = int(model.txt_enc.embed.weight.shape[0])
    if name in ("vse_infty", "vse_infty_bert"):
        opt.update(precomp_enc_type="basic", backbone_source="detector", backbone_path="", optim="adam",
                   learning_rate=5e-4, input_scale_factor=1.0, backbone_lr_factor=0.01, vse_mean_warmup_epochs=1)
        if name == "vse_infty":
            opt["num_layers"] = model.txt_enc.rnn.num_layers
            opt["vocab_size"] = int(vocab_size) + 1  # the reference adds <mask> to the vocabulary file's words
    else:
        opt.update(sim_dim=int(model.sim_eval.weight.shape[1]), bi_gru=True)
        if name in ("sgr", "saf"):
            opt.update(module_name=name.upper(), sgr_step=len(model.sgr) if name == "sgr" else 3)
        else:
            opt.update(no_simnorm=not model.sim_norm, save_path="./runs/exported/")
    return argparse.Namespace(**opt)


def export(model: Matcher, name: str, out: str | Path, dataset: str, vocab_size: int, epoch: int = 0,
           best_rsum: float = 0.0) -> Path:
    """Write ``model`` (our matcher ``name``) as the official program's checkpoint file ``out``.

    VSE∞'s layout gets its ``<mask>`` row (zeros) when our embedding has exactly the vocabulary's rows.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if name == "vse_infty" and state["txt_enc.embed.weight"].shape[0] == vocab_size:
        emb = state["txt_enc.embed.weight"]
        state["txt_enc.embed.weight"] = torch.cat([emb, emb.new_zeros(1, emb.shape[1])])
    layout = from_ours(name, state)
    opt = official_opt(name, model, dataset, vocab_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": int(epoch) + 1, "model": layout, "best_rsum": float(best_rsum), "opt": opt, "Eiters": 0},
               out)
    return out


def describe(path: str | Path) -> str:
    """What the checkpoint at ``path`` is, for tables: e.g. ``official VSE∞ BiGRU checkpoint model_best.pth``."""
    path = Path(path)
    program = detect(read(path), path)
    if program == "ours":
        return f"this suite's checkpoint {path}"
    return f"official {PROGRAM_NAMES[program]} checkpoint {path.name}"
