"""Official checkpoint layouts (VSE∞ BiGRU, SGRAF SGR/SAF, DBL's matcher) read into our matchers.

Each test writes a checkpoint file the way the official training script saves it — key names and
nesting of its modules, ``opt`` an ``argparse.Namespace``, a numpy ``best_rsum``, the legacy
(pre-zip) torch format of old torch versions — from one of our models' weights, then checks that
``models.from_official`` gives a model whose scores on the tiny embedded data equal our model's.
"""

import argparse
import re

import numpy as np
import pytest
import torch

import models
from bench.data.precomp import PrecompSplit, iter_caption_batches, iter_image_batches, vocab_path
from bench.data.vocab import load_vocab
from bench.evaluate import encode_all, score_matrix
from models import official
from models.official import OfficialCheckpointError

SMALL = {"embed_size": 32, "word_dim": 16}


def _data(tiny_data):
    vocab = load_vocab(vocab_path(tiny_data / "vocab", "f30k_precomp"))
    split = PrecompSplit(tiny_data, "f30k_precomp", "test")
    return vocab, split


def _scores(model, vocab, split):
    img, cap = encode_all(model, iter_image_batches(split, 64), iter_caption_batches(split, vocab, 64))
    return score_matrix(model, img, cap)


def _randomised(model):
    """Non-default BatchNorm statistics too, so a dropped or misplaced buffer changes the scores."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
    return model.eval()


# The official modules' parameter names (read from the reference programs), as (official, ours) prefixes.
def _rename(state, pairs, prefix=""):
    out = {}
    for key, value in state.items():
        for ours, theirs in pairs:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        out[key] = value
    return {k[len(prefix):] if prefix and k.startswith(prefix) else k: v for k, v in out.items()}


def _vse_image_layout(sd):
    img = _rename({k: v for k, v in sd.items() if k.startswith("img_enc.")},
                  [("img_enc.mlp.fc1.", "img_enc.mlp.layers.0."), ("img_enc.mlp.fc2.", "img_enc.mlp.layers.1."),
                   ("img_enc.mlp.bn.", "img_enc.mlp.bns.0."), ("img_enc.gpo.", "img_enc.gpool.")], "img_enc.")
    hidden = img["mlp.layers.1.bias"].shape[0]  # the BatchNorm after the last MLP layer, never applied
    img.update({"mlp.bns.1.weight": torch.rand(hidden), "mlp.bns.1.bias": torch.rand(hidden),
                "mlp.bns.1.running_mean": torch.rand(hidden), "mlp.bns.1.running_var": torch.rand(hidden),
                "mlp.bns.1.num_batches_tracked": torch.tensor(7)})
    return img


def _vse_text_layout(sd):
    return _rename({k: v for k, v in sd.items() if k.startswith("txt_enc.")}, [("txt_enc.gpo.", "txt_enc.gpool.")],
                   "txt_enc.")


def _vse_layout(model):
    sd = model.state_dict()
    return [_vse_image_layout(sd), _vse_text_layout(sd)]


def _sgraf_layout(model, module):
    sd = model.state_dict()
    img = _rename({k: v for k, v in sd.items() if k.startswith("img_enc.")}, [], "img_enc.")
    txt = _rename({k: v for k, v in sd.items() if k.startswith("txt_enc.")}, [("txt_enc.rnn.", "txt_enc.cap_rnn.")],
                  "txt_enc.")
    pairs = [("img_pool.local_proj.", "v_global_w.embedding_local."),
             ("img_pool.global_proj.", "v_global_w.embedding_global."),
             ("img_pool.weight_proj.", "v_global_w.embedding_common.0."),
             ("txt_pool.local_proj.", "t_global_w.embedding_local."),
             ("txt_pool.global_proj.", "t_global_w.embedding_global."),
             ("txt_pool.weight_proj.", "t_global_w.embedding_common.0."),
             ("sim_local.", "sim_tranloc_w."), ("sim_global.", "sim_tranglo_w."), ("sim_eval.", "sim_eval_w."),
             ("saf.attn.", "SAF_module.attn_sim_w."), ("saf.bn.", "SAF_module.bn.")]
    sim = _rename({k: v for k, v in sd.items() if not k.startswith(("img_enc.", "txt_enc."))}, pairs)
    renamed = {}
    for key, value in sim.items():
        m = re.match(r"sgr\.(\d+)\.(query|key|update)\.(.*)", key)
        if m:
            part = {"query": "graph_query_w", "key": "graph_key_w", "update": "sim_graph_w"}[m.group(2)]
            key = f"SGR_module.{m.group(1)}.{part}.{m.group(3)}"
        renamed[key] = value
    return [img, txt, renamed]


def _dbl_layout(model):
    sd = model.state_dict()
    flat = _rename(sd, [("txt_enc.rnn.", "txt_enc.cap_rnn."), ("sim_tran.", "sim_enc.sim_tran_w."),
                        ("sim_eval.", "sim_enc.sim_eval_w.")])
    return {f"module.{k}": v for k, v in flat.items()}  # saved through nn.DataParallel


def _save(path, model_entry, **opt):
    """As the official scripts do, in the legacy format of the torch versions they ran on."""
    torch.save({"epoch": 12, "model": model_entry, "best_rsum": np.float64(432.1),
                "opt": argparse.Namespace(data_name="f30k_precomp", vocab_path="./vocab/", margin=0.2, **opt),
                "Eiters": 3000}, path, _use_new_zipfile_serialization=False)
    return path


def _build(name, vocab, split, **kw):
    torch.manual_seed(0)
    kwargs = {"vocab_size": len(vocab), "img_dim": split.region_shape[1], **SMALL, **kw}
    if name in ("sgr", "saf"):
        kwargs.update(num_regions=split.region_shape[0], sim_dim=16)
    if name == "xattn":
        kwargs.update(sim_dim=16)
    return _randomised(models.build(name, **kwargs))


def test_vse_infty_bigru_official_checkpoint_scores_equal_ours(tiny_data, tmp_path):
    vocab, split = _data(tiny_data)
    ours = _build("vse_infty", vocab, split)
    layout = _vse_layout(ours)
    rows = layout[1]["embed.weight"].shape[0]
    if rows == len(vocab):  # the reference appends the <mask> word: one embedding row more than the file
        layout[1]["embed.weight"] = torch.cat([layout[1]["embed.weight"], torch.randn(1, SMALL["word_dim"])])
    path = _save(tmp_path / "model_best.pth", layout, precomp_enc_type="basic", vse_mean_warmup_epochs=1,
                 embed_size=32, word_dim=16, vocab_size=len(vocab) + 1, no_imgnorm=False, no_txtnorm=False)
    loaded = models.from_official(path, vocab_size=ours.txt_enc.embed.weight.shape[0])
    assert type(loaded) is type(ours)
    assert torch.equal(_scores(loaded, vocab, split), _scores(ours, vocab, split))
    # without a vocabulary: the checkpoint's own sizes (its <mask> row included)
    assert models.from_official(path).txt_enc.embed.weight.shape[0] == len(vocab) + 1


@pytest.mark.parametrize("module", ["SGR", "SAF"])
def test_sgraf_official_checkpoints_score_equal_ours(tiny_data, tmp_path, module):
    vocab, split = _data(tiny_data)
    ours = _build(module.lower(), vocab, split, sgr_step=2) if module == "SGR" else _build("saf", vocab, split)
    path = _save(tmp_path / "model_best.pth.tar", _sgraf_layout(ours, module), module_name=module, sgr_step=2,
                 sim_dim=16, embed_size=32, word_dim=16, bi_gru=True, no_imgnorm=False, no_txtnorm=False)
    loaded = models.from_official(path, vocab_size=len(vocab))
    assert loaded.module == module and (module == "SAF" or len(loaded.sgr) == 2)
    assert torch.equal(_scores(loaded, vocab, split), _scores(ours, vocab, split))


@pytest.mark.parametrize("no_simnorm", [False, True])
def test_dbl_official_checkpoint_scores_equal_ours(tiny_data, tmp_path, no_simnorm):
    vocab, split = _data(tiny_data)
    ours = _build("xattn", vocab, split, sim_norm=not no_simnorm)
    path = _save(tmp_path / "model0_best.pth.tar", _dbl_layout(ours), no_simnorm=no_simnorm, num_branch=2,
                 sim_dim=16, embed_size=32, word_dim=16, bi_gru=True, no_imgnorm=False, no_txtnorm=False)
    loaded = models.from_official(path, vocab_size=len(vocab))
    assert loaded.sim_norm is (not no_simnorm)
    assert torch.equal(_scores(loaded, vocab, split), _scores(ours, vocab, split))


def test_bad_checkpoints_give_clear_errors(tiny_data, tmp_path):
    vocab, split = _data(tiny_data)
    ours = _build("saf", vocab, split)
    good = _save(tmp_path / "good.pth.tar", _sgraf_layout(ours, "SAF"), module_name="SAF")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(OfficialCheckpointError, match=r"truncated\.pth\.tar .*truncated or not a torch checkpoint"):
        models.from_official(truncated)
    unknown = _save(tmp_path / "unknown.pth", [{"conv.weight": torch.zeros(2)}, {"head.bias": torch.zeros(1)}])
    with pytest.raises(OfficialCheckpointError, match=r"unknown program .*conv\.weight.*supported: VSE∞ BiGRU"):
        models.from_official(unknown)
    with pytest.raises(OfficialCheckpointError, match=rf"{len(vocab)} rows but the vocabulary gives a model with "
                                                      rf"{len(vocab) + 5}"):
        models.from_official(good, vocab_size=len(vocab) + 5)
    hostile = tmp_path / "hostile.pth"
    torch.save({"model": [], "opt": _Payload()}, hostile)
    with pytest.raises(OfficialCheckpointError, match=r"asks to unpickle .*_mark_ran.*Only load files you trust"):
        models.from_official(hostile)
    assert not RAN


RAN = []


def _mark_ran():
    RAN.append(True)


class _Payload:
    """Would run ``_mark_ran`` when unpickled by a full (unsafe) unpickler."""

    def __reduce__(self):
        return (_mark_ran, ())


def test_vse_infty_bert_official_checkpoint_maps_onto_ours(tiny_data, tmp_path):
    """VSE∞'s BERT branch: ``bert.*`` (its pooler and position_ids included), ``linear``, ``gpool``."""
    from models.vse_infty import word_tokenizer

    vocab, split = _data(tiny_data)
    words = [vocab.idx2word[i] for i in range(4, len(vocab))]
    torch.manual_seed(0)
    ours = models.build("vse_infty_bert", img_dim=split.region_shape[1], embed_size=32, vocab_words=words,
                        bert_config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
                                     "intermediate_size": 96, "max_position_embeddings": 48})
    ours = _randomised(ours)
    img, txt = _vse_layout_bert(ours)
    path = _save(tmp_path / "model_best.pth", [img, txt], precomp_enc_type="basic", embed_size=32)
    loaded, info = official.load(path)
    assert info["program"] == "vse_infty_bert" and loaded.txt_enc.bert.config.num_hidden_layers == 2
    loaded._tokenizer = word_tokenizer(words)  # a real release takes its tokenizer from --bert-path
    assert torch.equal(_scores(loaded, vocab, split), _scores(ours, vocab, split))


def _vse_layout_bert(model):
    sd = model.state_dict()
    txt = _vse_text_layout(sd)
    hidden = txt["linear.weight"].shape[1]
    txt.update({"bert.pooler.dense.weight": torch.randn(hidden, hidden), "bert.pooler.dense.bias": torch.zeros(hidden),
                "bert.embeddings.position_ids": torch.arange(48)[None]})
    return _vse_image_layout(sd), txt
