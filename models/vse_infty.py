"""VSE∞ (Chen et al., "Learning the Best Pooling Strategy for Visual Semantic Embedding", CVPR 2021).

A dual encoder: image = GPO over projected region features, caption = GPO over contextual word
features, both L2-normalised; score = inner product. Two text towers:

* ``vse_infty``      — word embedding 300-d → BiGRU (hidden = embed, directions averaged).
* ``vse_infty_bert`` — BERT-base → linear 768 → embed. BERT is loaded only from a local directory:

      models.build("vse_infty_bert", bert_path="/data/models/bert-base-uncased")

  where the directory holds what ``BertModel.save_pretrained`` + ``BertTokenizerFast.save_pretrained``
  write (config.json, model.safetensors, vocab.txt/tokenizer.json), e.g. a copy of the Hugging Face
  ``bert-base-uncased`` snapshot. Without ``bert_path`` the tower is built, randomly initialised, from
  ``bert_config`` (a ``BertConfig`` or a dict); nothing is ever downloaded.

Training-time region dropping and caption-token augmentation are applied by the data loader
(``augment``); the hinge loss with its sum→max warm-up lives in the strategies/trainer.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models import register
from models.base import Matcher, l2norm
from models.gpo import GPO

# The reference's caption augmentation may hit every position, <start>/<end> included.
VSE_AUGMENT = {"region_drop": 0.2, "token_aug": True, "token_aug_ends": True}


def _lengths(batch: dict, key: str, like: torch.Tensor) -> torch.Tensor:
    if key not in batch:
        raise KeyError(f"models/vse_infty.py: batch has no {key!r} (int64 [B]); keys present: {sorted(batch)}")
    return torch.as_tensor(batch[key], device=like.device).long()


class RegionMLP(nn.Module):
    """Two-layer MLP on every region: Linear → BatchNorm1d → ReLU → Linear (the residual branch)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn = nn.BatchNorm1d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, in] → [B, N, out]
        b, n, d = x.shape
        h = torch.relu(self.bn(self.fc1(x.reshape(b * n, d))))
        return self.fc2(h).view(b, n, -1)


class RegionEncoder(nn.Module):
    """Image tower: v_n = fc(r_n) + MLP(r_n) per region, then GPO over the valid regions, then L2 norm."""

    def __init__(self, img_dim: int = 2048, embed_size: int = 1024):
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_size)
        self.mlp = RegionMLP(img_dim, embed_size // 2, embed_size)
        self.gpo = GPO(32, 32)
        # Xavier-uniform fc weight, zero bias (as published)
        bound = math.sqrt(6.0 / (img_dim + embed_size))
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward(self, regions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if regions.dim() != 3:
            raise ValueError(f"RegionEncoder: images must be [B, R, D] region features, got {tuple(regions.shape)}")
        # Trim to the longest item, as the reference collate does; BatchNorm statistics then match
        # the reference (they include the zero padding up to the batch's longest item).
        regions = regions[:, : int(lengths.max())]
        features = self.fc(regions) + self.mlp(regions)
        return l2norm(self.gpo(features, lengths))


class BiGRUTextEncoder(nn.Module):
    """Text tower: embedding (uniform ±0.1) → BiGRU (directions averaged) → GPO → L2 norm.

    Captions run as packed sequences, so padding never reaches the GRU.
    """

    def __init__(self, vocab_size: int, word_dim: int = 300, embed_size: int = 1024, num_layers: int = 1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim)
        self.rnn = nn.GRU(word_dim, embed_size, num_layers, batch_first=True, bidirectional=True)
        self.gpo = GPO(32, 32)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def forward(self, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        max_len = int(lengths.max())
        words = self.embed(captions[:, :max_len])
        if words.device.type == "cpu" and cpu_gru_path(self.rnn.hidden_size, self.rnn.input_size, lengths) == "padded":
            out = padded_bigru(self.rnn, words, lengths)  # equal outputs, without the packed GRU's zero-filled slices
        else:
            packed = pack_padded_sequence(words, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=max_len)
        out = out.view(*out.shape[:2], 2, -1).mean(dim=2)  # average the two directions
        return l2norm(self.gpo(out, lengths))


# CPU BiGRU path by shape (both give equal outputs; tests/test_speed.py). The packed GRU's backward
# zero-fills a copy of the packed input at every time step, max_len x sum(lengths) x input_size floats
# in all; the padded GRU instead computes the padding. Measured fwd + bwd on 2 CPU threads (make bench
# keeps the rows, results/perf.md): padded wins for small hidden sizes (128: a near tie within this
# machine's run-to-run noise, padded ahead in two of three runs; it is the demo's path) and for long
# batches whose zero-fill volume exceeds ~2.5e7 floats (hidden 1024, batch 128, max length 45: 1.3x);
# packed wins elsewhere (hidden >= 256 and a smaller volume: 4-22%).
PACKED_MIN_HIDDEN = 256
PACKED_MAX_ZERO_FILL = 2.5e7


def cpu_gru_path(hidden_size: int, input_size: int, lengths: torch.Tensor) -> str:
    """``"packed"`` or ``"padded"``: the faster CPU BiGRU for this batch's shape (rule above; the shape
    alone decides, so a run's numbers never depend on timing)."""
    zero_fill = int(lengths.max()) * int(lengths.sum()) * input_size
    return "packed" if hidden_size >= PACKED_MIN_HIDDEN and zero_fill <= PACKED_MAX_ZERO_FILL else "padded"


def padded_bigru(rnn: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A bidirectional batch-first GRU over padded sequences, equal to running it on the packed sequences:
    the forward direction reads each sequence from its start (padding comes after it), the backward
    direction reads it reversed within its length; outputs at padded positions are zero.

    On CPU the packed GRU's backward zero-fills a copy of the whole packed input for every time step
    (quadratic in the caption length); the padded GRU's backward is linear, so a training step is faster
    even though the padding is computed (and masked) where ``cpu_gru_path`` says so.
    """
    b, width = x.shape[:2]
    lengths = lengths.to(x.device)
    pos = torch.arange(width, device=x.device).expand(b, width)
    valid = pos < lengths[:, None]
    rev = torch.where(valid, lengths[:, None] - 1 - pos, pos)  # reverses each sequence within its length
    h0 = x.new_zeros(1, b, rnn.hidden_size)
    out = x
    for layer in range(rnn.num_layers):
        directions = []
        for suffix in ("", "_reverse"):
            weights = [getattr(rnn, f"{w}_l{layer}{suffix}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if suffix:
                inp = out.gather(1, rev[:, :, None].expand(-1, -1, out.shape[2]))
            else:
                inp = out
            # torch._VF.gru is what nn.GRU.forward calls: one direction, one layer, batch first
            y, _ = torch._VF.gru(inp, h0, weights, True, 1, 0.0, rnn.training, False, True)
            directions.append(y.gather(1, rev[:, :, None].expand(-1, -1, y.shape[2])) if suffix else y)
        out = torch.cat(directions, dim=2)
        if layer + 1 < rnn.num_layers and rnn.dropout and rnn.training:
            out = torch.nn.functional.dropout(out, rnn.dropout)
    return out * valid[:, :, None]


class _VSEInftyBase(Matcher):
    """What both VSE∞ variants share: the matcher attributes and the region (image) tower ``img_enc``."""

    dual_encoder = True
    input_kind = "regions"
    base_loss = "hinge"
    optimizer = "adamw"
    augment = VSE_AUGMENT
    weight_decay: float
    hinge_warmup_epochs = 1  # the first epoch sums the hinge over negatives, then the hardest one

    def encode_images(self, batch: dict) -> torch.Tensor:
        regions = batch["images"]
        return self.img_enc(regions, _lengths(batch, "image_lengths", regions))


@register("vse_infty")
class VSEInfty(_VSEInftyBase):
    """VSE∞ with the BiGRU text tower (BUTD regions). Defaults: the published F30K/COCO configuration."""

    # The reference BiGRU branch builds torch.optim.AdamW(params, lr) without weight_decay, i.e. torch's
    # default 1e-2; its BERT branch passes weight_decay=1e-4.
    weight_decay = 1e-2
    # The reference appends a learned <mask> row to the SCAN vocabulary (F30K: 8,481 + 1 embeddings).
    mask_word = True

    def __init__(self, vocab_size: int, img_dim: int = 2048, embed_size: int = 1024, word_dim: int = 300,
                 num_layers: int = 1):
        super().__init__()
        if vocab_size is None or vocab_size < 4:
            raise ValueError(
                f"vse_infty: vocab_size must be the size of the SCAN vocabulary (e.g. 8481 for F30K), got {vocab_size}"
            )
        self.img_enc = RegionEncoder(img_dim, embed_size)
        self.txt_enc = BiGRUTextEncoder(vocab_size, word_dim, embed_size, num_layers)

    def encode_captions(self, batch: dict) -> torch.Tensor:
        captions = batch["captions"]
        return self.txt_enc(captions, _lengths(batch, "caption_lengths", captions))

    def param_groups(self, lr: float) -> list[dict]:
        """One AdamW group at the base lr (reference BiGRU branch); weight decay: the schedule's."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}]


class BertTextEncoder(nn.Module):
    """Text tower: BERT → linear hidden→embed per token → GPO over the valid tokens → L2 norm.

    BERT is built without its pooler: the reference loads one but only uses the token states.
    """

    def __init__(self, bert: nn.Module, embed_size: int = 1024):
        super().__init__()
        self.bert = bert
        self.linear = nn.Linear(bert.config.hidden_size, embed_size)
        self.gpo = GPO(32, 32)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.long().sum(dim=1)
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return l2norm(self.gpo(self.linear(tokens), lengths))


def word_tokenizer(words: list[str]):
    """A BERT WordPiece tokenizer whose vocabulary is [PAD] [UNK] [CLS] [SEP] [MASK] + ``words`` (lower-cased).

    For a randomly initialised BERT tower on the embedded data (no pretrained directory): every
    vocabulary word is one token. Built offline, in memory.
    """
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + sorted({w.lower() for w in words} - set(specials))
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


@register("vse_infty_bert")
class VSEInftyBert(_VSEInftyBase):
    """VSE∞ with a BERT text tower; captions as BERT ids (``input_ids``/``attention_mask``) or ``raw_captions``."""

    weight_decay = 1e-4  # reference BERT branch: AdamW(..., weight_decay=1e-4)
    bert_lr_factor = 0.1
    weights_args = {"bert_path": "bert"}  # a local BERT folder (bench.weights; a suite's weights.bert)
    # The published tower is BERT-base (uncased): BertConfig's sizes a pretrained folder must have.
    BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}

    @classmethod
    def architecture(cls, bert_config=None, **_) -> dict:
        """The BertConfig sizes a pretrained folder must hold: BERT-base's, or those ``bert_config`` names."""
        named = bert_config if isinstance(bert_config, dict) else (bert_config.to_dict() if bert_config else {})
        return {k: named.get(k, v) for k, v in cls.BERT_BASE.items()}

    @classmethod
    def count_parameters(cls, **overrides) -> int:
        """Parameters on the meta device; with ``bert_path``, the BERT tower its config.json describes."""
        path = overrides.pop("bert_path", None)
        if path is not None:
            from transformers import BertConfig

            overrides["bert_config"] = BertConfig.from_pretrained(path, local_files_only=True)
        return super().count_parameters(**overrides)

    def __init__(self, bert_path: str | None = None, bert_config=None, img_dim: int = 2048,
                 embed_size: int = 1024, tokenizer=None, vocab_size: int | None = None,
                 vocab_words: list[str] | None = None):
        super().__init__()
        from transformers import BertConfig, BertModel

        del vocab_size  # accepted (and ignored) so a shared config may pass the SCAN vocab size
        if tokenizer is None and bert_path is None and vocab_words is not None:
            tokenizer = word_tokenizer(vocab_words)
        if isinstance(bert_config, dict) and "vocab_size" not in bert_config and tokenizer is not None:
            bert_config = {**bert_config, "vocab_size": len(tokenizer)}
        if bert_path is not None:
            if not os.path.isdir(bert_path):
                raise FileNotFoundError(
                    f"vse_infty_bert: bert_path={bert_path!r} is not a directory. Point it to a local copy of "
                    "bert-base-uncased (config.json, model weights, vocab.txt), e.g. one written by "
                    "BertModel.save_pretrained + BertTokenizerFast.save_pretrained."
                )
            bert = BertModel.from_pretrained(bert_path, local_files_only=True, add_pooling_layer=False)
        elif bert_config is not None:
            config = BertConfig(**bert_config) if isinstance(bert_config, dict) else bert_config
            bert = BertModel(config, add_pooling_layer=False)
        else:
            raise ValueError(
                "vse_infty_bert: give bert_path (a local bert-base-uncased directory; nothing is downloaded) "
                "or bert_config (a BertConfig or dict, for a randomly initialised tower)."
            )
        self.bert_path = bert_path
        self._tokenizer = tokenizer
        self.img_enc = RegionEncoder(img_dim, embed_size)
        self.txt_enc = BertTextEncoder(bert, embed_size)

    @property
    def tokenizer(self):
        """The BERT tokenizer: the one given, else loaded (once) from ``bert_path``."""
        if self._tokenizer is None:
            if self.bert_path is None:
                raise ValueError(
                    "vse_infty_bert: raw_captions need a tokenizer; build the model with bert_path=<local dir "
                    "with vocab.txt> or tokenizer=BertTokenizerFast(...)"
                )
            from transformers import BertTokenizerFast

            self._tokenizer = BertTokenizerFast.from_pretrained(self.bert_path, local_files_only=True)
        return self._tokenizer

    def prepare(self, batch: dict) -> dict:
        """Tokenise ``raw_captions`` into ``input_ids``/``attention_mask`` ([CLS] … [SEP]); regions unchanged.

        In training mode (and with ``augment["token_aug"]``) the words are augmented as the reference
        does for BERT: see :meth:`augment_words`.
        """
        if "raw_captions" not in batch or "input_ids" in batch:
            return batch
        tok = self.tokenizer
        max_len = min(tok.model_max_length, self.txt_enc.bert.config.max_position_embeddings)
        enc = tok(list(batch["raw_captions"]), add_special_tokens=False, truncation=True, max_length=max_len - 2)
        rows = []
        for i, ids in enumerate(enc["input_ids"]):
            if self.training and self.augment.get("token_aug"):
                ids = self.augment_words(ids, enc.word_ids(i), len(tok), tok.mask_token_id)
            rows.append([tok.cls_token_id, *ids, tok.sep_token_id])
        width = max(len(r) for r in rows)
        device = self.txt_enc.linear.weight.device
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long, device="cpu")  # built on the host
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long, device="cpu")
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, device="cpu")
            attention_mask[i, : len(r)] = 1
        return {**batch, "input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}

    @staticmethod
    def augment_words(ids: list[int], word_ids: list[int], vocab_size: int, mask_id: int,
                      p: float = 0.2) -> list[int]:
        """Reference BERT caption augmentation: each word is picked with probability ``p``; a picked word's
        word-pieces are all masked (50%), all replaced by random ids (10%) or deleted (40%)."""
        out: list[int] = []
        draws: dict[int, float] = {}
        for tid, wid in zip(ids, word_ids):
            if wid not in draws:
                draws[wid] = float(torch.rand((), device="cpu"))  # host-side, like the tokeniser
            u = draws[wid]
            if u >= p:
                out.append(tid)
            elif u < 0.5 * p:
                out.append(mask_id)
            elif u < 0.6 * p:
                out.append(int(torch.randint(vocab_size, (), device="cpu")))
            # else: deleted
        return out

    def encode_captions(self, batch: dict) -> torch.Tensor:
        if "input_ids" not in batch:
            if "raw_captions" not in batch:
                raise KeyError(
                    "vse_infty_bert: a caption batch needs 'input_ids' (+ 'attention_mask') of BERT ids or "
                    f"'raw_captions' (strings); keys present: {sorted(batch)}"
                )
            batch = self.prepare(batch)
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        if attention_mask is None:  # the reference's mask: BERT's [PAD] id is 0
            attention_mask = (input_ids != 0).long()
        return self.txt_enc(input_ids, attention_mask)

    def param_groups(self, lr: float) -> list[dict]:
        """Reference BERT branch: BERT at lr × 0.1, everything else at lr; weight decay: the schedule's
        (published: 1e-4, the class attribute ``weight_decay``)."""
        bert_ids = {id(p) for p in self.txt_enc.bert.parameters()}
        bert = [p for p in self.txt_enc.bert.parameters() if p.requires_grad]
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in bert_ids]
        return [
            {"params": rest, "lr": lr},
            {"params": bert, "lr": lr * self.bert_lr_factor},
        ]

