"""Local pretrained folders with the published architectures and random weights, generated offline.

    python -m bench.data.weights --out DIR [--kind clip|bert|all] [--seed S]

writes, deterministically from the seed, what ``hf download`` writes for the weights the full-scale
cells start from (``bench.weights.KINDS``), so that ``from_pretrained(DIR, local_files_only=True)``
and the project's own loading (``models.build("clip", pretrained_path=…)``, ``models.build(
"vse_infty_bert", bert_path=…)``) read them exactly as they read a real snapshot:

    DIR/clip-vit-base-patch32/   config.json (CLIPConfig's defaults: ViT-B/32, 151,277,313 parameters),
                                 model.safetensors, a CLIP byte-level BPE tokenizer of 49,408 ids
                                 (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
                                 special_tokens_map.json), preprocessor_config.json (224 px, OpenAI's
                                 mean and std)
    DIR/bert-base-uncased/       config.json (BertConfig's defaults: BERT-base, the pre-training heads
                                 as the published checkpoint), model.safetensors, a WordPiece tokenizer
                                 of 30,522 ids laid out as bert-base-uncased's ([PAD] 0, [UNK] 100,
                                 [CLS] 101, [SEP] 102, [MASK] 103; vocab.txt, tokenizer.json, …)

Both tokenizers read every caption of the embedded dataset without an unknown token, each of its words
(``bench.data.synth.world_words``) one token (BERT splits "'s" as bert-base-uncased does), any other
ASCII text by pieces; the rest of their ids are filler strings. The weights are
PyTorch's initialisation after ``torch.manual_seed(seed)``: a dress rehearsal of the full-scale cells
(sizes, memory, time, loading), never a result. A folder already generated with the same kind, seed
and generator version (``.generated.json``, beside the model files as the Hub's ``.cache/`` is) is
left as it is; another folder in the way is an error unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import string
import sys
import time
from pathlib import Path

from bench.values import path_arg
from bench.weights import KINDS

GENERATOR_VERSION = 1
MARKER = ".generated.json"
CLIP_VOCAB_SIZE = 49_408  # OpenAI's CLIP BPE: 256 bytes, 256 bytes + </w>, 48,894 merges, 2 special tokens
BERT_VOCAB_SIZE = 30_522  # bert-base-uncased's WordPiece vocabulary


class WeightsError(ValueError):
    """A folder cannot be written (another folder in the way)."""


def _letter_strings(min_len: int = 2):
    """'aa', 'ab', …, 'zz', 'aaa', …: filler tokens, in a fixed order."""
    for n in itertools.count(min_len):
        for letters in itertools.product(string.ascii_lowercase, repeat=n):
            yield "".join(letters)


# ----------------------------------------------------------------------------------------------- CLIP


def clip_tokenizer_files(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a CLIP byte-level BPE of exactly :data:`CLIP_VOCAB_SIZE` ids: the 512 byte
    symbols, the merges that make each of ``words`` one token, filler merges of letter strings (each
    joins two tokens already there), then ``<|startoftext|>`` 49406 and ``<|endoftext|>`` 49407 (OpenAI's ids)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    from models.clip import BOS_TOKEN, EOS_TOKEN, learn_bpe_merges

    backend = CLIPTokenizer().backend_tokenizer
    pieces = sorted({piece for word in words
                     for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(word))})
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for token in [*alphabet, *(c + "</w>" for c in alphabet)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    target = CLIP_VOCAB_SIZE - 2

    def add(a: str, b: str) -> None:
        if a in vocab and b in vocab and a + b not in vocab and len(vocab) < target:
            merges.append((a, b))
            vocab[a + b] = len(vocab)

    for a, b in learn_bpe_merges(pieces):
        add(a, b)
    for s in _letter_strings():
        if len(vocab) >= target:
            break
        add(s[:-1], s[-1])
        add(s[:-1], s[-1] + "</w>")
    vocab[BOS_TOKEN], vocab[EOS_TOKEN] = len(vocab), len(vocab) + 1
    return vocab, merges


def write_clip(folder: Path, seed: int, words: list[str]) -> None:
    """A CLIP ViT-B/32 folder (CLIPConfig's defaults) with random weights: model, tokenizer, image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    from models.clip import BOS_TOKEN, EOS_TOKEN

    vocab, merges = clip_tokenizer_files(words)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, unk_token=EOS_TOKEN, bos_token=BOS_TOKEN,
                              eos_token=EOS_TOKEN, pad_token=EOS_TOKEN, model_max_length=77)
    config = CLIPConfig()
    text = config.text_config
    assert (len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id) == \
        (text.vocab_size, text.bos_token_id, text.eos_token_id), "tokenizer ids differ from CLIPConfig's"
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    size = config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- BERT


def bert_vocab(words: list[str]) -> list[str]:
    """:data:`BERT_VOCAB_SIZE` WordPiece entries in bert-base-uncased's layout: [PAD], [unused0-98], [UNK],
    [CLS], [SEP], [MASK], [unused99-993], the printable ASCII characters and their ``##`` pieces, ``words``,
    then filler letter strings."""
    out = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
           *(f"[unused{i}]" for i in range(99, 994))]
    chars = [c for c in string.printable if not c.isspace()]
    out += chars + [f"##{c}" for c in chars]
    seen = set(out)
    out += [w for w in dict.fromkeys(w.lower() for w in words) if w not in seen]
    seen = set(out)
    filler = (s for s in _letter_strings() if s not in seen)
    out += list(itertools.islice(filler, BERT_VOCAB_SIZE - len(out)))
    return out


def write_bert(folder: Path, seed: int, words: list[str]) -> None:
    """A BERT-base (uncased) folder (BertConfig's defaults) with random weights and a WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizerFast

    vocab = bert_vocab(words)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, model_max_length=512)
    config = BertConfig()
    assert (len(tokenizer), tokenizer.pad_token_id, tokenizer.unk_token_id) == (config.vocab_size, config.pad_token_id,
                                                                                 100), "tokenizer ids differ"
    torch.manual_seed(seed)
    BertForPreTraining(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "vocab.txt").write_text("".join(f"{w}\n" for w in vocab), encoding="utf-8")


# ----------------------------------------------------------------------------------------------- folders

WRITERS = {"clip": write_clip, "bert": write_bert}


def generate(out: str | Path, kind: str = "all", seed: int = 0, overwrite: bool = False) -> dict[str, Path]:
    """Write the folders of ``kind`` (``clip``, ``bert`` or ``all``) under ``out``; {kind: folder}. A folder
    holding the same generation is kept; any other existing folder raises :class:`WeightsError` unless
    ``overwrite``. Each folder is written beside its place and moved in when complete."""
    from bench.data.synth import world_words

    kinds = list(KINDS) if kind == "all" else [kind]
    words = world_words()
    done = {}
    for k in kinds:
        folder = Path(out) / KINDS[k].folder
        marker = {"generator": "bench.data.weights", "version": GENERATOR_VERSION, "kind": k, "seed": seed,
                  "repo_shape": KINDS[k].repo}
        if _same(folder, marker) and not overwrite:
            done[k] = folder
            continue
        if folder.exists() and not overwrite:
            raise WeightsError(f"{folder} exists and is not a folder this generator wrote with kind {k}, seed "
                               f"{seed}: choose another --out or pass --overwrite")
        tmp = folder.parent / f".{folder.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        WRITERS[k](tmp, seed, words)
        (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        done[k] = folder
    return done


def _same(folder: Path, marker: dict) -> bool:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")) == marker
    except (OSError, ValueError):
        return False


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=path_arg, required=True, help="folder to write the weight folders into")
    parser.add_argument("--kind", default="all", choices=[*KINDS, "all"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace existing folders")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        folders = generate(args.out, args.kind, args.seed, args.overwrite)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, folder in folders.items():
        print(f"{folder}: {KINDS[k].what} shape, random weights (seed {args.seed}), {_size(folder) / 1e6:.0f} MB; "
              f"use it with weights.{k}={folder}")
    print(f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
