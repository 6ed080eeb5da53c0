"""Word tokenisation and the SCAN vocabulary (``{dataset}_vocab.json``).

Region matchers (VSE∞, SGRAF) read captions as vocabulary ids::

    ids = [<start>] + [word2idx.get(w, <unk>) for w in tokenize(caption)] + [<end>]

with the special ids ``<pad>=0, <start>=1, <end>=2, <unk>=3``. Matchers trained with caption-token
augmentation (VSE∞ always, ``xattn`` with ``caption_aug``) also have a ``<mask>`` word, appended
in memory after the file's words by :meth:`Vocabulary.with_mask` (F30K: 8,481 + 1 ids); the
vocabulary files on disk never change. The reference code tokenises with
``nltk.tokenize.word_tokenize(caption.lower())``; :func:`tokenize` reproduces its rules (sentence
split, then the Penn-Treebank/NLTK word rules) with regular expressions of the engine NLTK itself
uses (``regex``), so that nothing has to be downloaded. tests/test_data_vocab.py checks the word
rules against the installed NLTK on thousands of generated captions; the sentence split (NLTK's
Punkt model, a download) is not compared.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import regex  # NLTK's own engine since 3.10: the same Unicode classes (\w, \s) as word_tokenize

from bench.data.errors import DataError
from bench.values import shown

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
MASK = "<mask>"  # the augmentation's mask word; never on disk, appended by Vocabulary.with_mask

# ----------------------------------------------------------------------------------------------
# Tokeniser: word_tokenize = sentence split (Punkt) + NLTK's improved Treebank word rules.

# A period closes a sentence when it ends a whitespace-delimited chunk, unless the chunk is an
# abbreviation, an initial ("j."), a number or contains another period ("u.s.").
_SENT_END = regex.compile(r"""(?<=[.?!])["')\]}»”’]*(\s+)""")  # closing quotes/brackets stay with the sentence
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc e.g i.e no co inc ltd mt ft approx dept est".split()
)

# Rules applied in order; each is (pattern, replacement). Spaces are inserted around tokens and
# the result is split on whitespace.
_OPENING_QUOTES = [
    (regex.compile(r"([«“‘„]|`+)"), r" \1 "),
    (regex.compile(r'^"'), r"``"),
    (regex.compile(r"(``)"), r" \1 "),
    (regex.compile(r"""([ (\[{<])("|'')"""), r"\1 `` "),
    # a leading apostrophe that does not start a clitic ('re, 've, 'll, 'm, 't, 's, 'd, 'n)
    (regex.compile(r"(?i)(?<!\w)(')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
]
_CLOSERS = "\\])}>\"'»”’"
_PUNCTUATION = [
    (regex.compile(rf"([^.])(\.)([{_CLOSERS} ]*)\s*$"), r"\1 \2 \3 "),  # sentence-final period
    (regex.compile(r"([:,])([^\d])"), r" \1 \2"),  # , and : except inside numbers (3,000 10:30)
    (regex.compile(r"([:,])$"), r" \1 "),
    (regex.compile(r"\.{2,}"), r" \g<0> "),  # ellipsis
    (regex.compile(r"[;@#$%&]"), r" \g<0> "),
    (regex.compile("[\u2012-\u2015]"), r" \g<0> "),  # figure/en/em dashes
    (regex.compile(rf"([^.])(\.)([{_CLOSERS}]*)\s*$"), r"\1 \2\3 "),
    (regex.compile(r"[?!]"), r" \g<0> "),
    (regex.compile(r"([^'])' "), r"\1 ' "),
    (regex.compile(r"\*"), r" \g<0> "),
]
_BRACKETS = (regex.compile(r"[\]\[(){}<>]"), r" \g<0> ")
_DOUBLE_DASH = (regex.compile(r"--"), r" -- ")
_CLOSING_QUOTES = [
    (regex.compile(r"([»”’])"), r" \1 "),
    (regex.compile(r"''"), " '' "),
    (regex.compile(r'"'), " '' "),
    (regex.compile(r"\s+"), " "),
    (regex.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (regex.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
# Words written together that the Treebank splits ("cannot" -> "can not", "gonna" -> "gon na").
# NLTK compiles these with the standard library's ``re`` (its ``\b`` differs from ``regex``'s
# next to combining marks and digits such as "²"), so they do here too.
_SPLIT_WORDS = [
    re.compile(r"(?i)\b(can)(not)\b"),
    re.compile(r"(?i)\b(d)('ye)\b"),
    re.compile(r"(?i)\b(gim)(me)\b"),
    re.compile(r"(?i)\b(gon)(na)\b"),
    re.compile(r"(?i)\b(got)(ta)\b"),
    re.compile(r"(?i)\b(lem)(me)\b"),
    re.compile(r"(?i)\b(more)('n)\b"),
    re.compile(r"(?i)\b(wan)(na)(?=\s)"),
    re.compile(r"(?i) ('t)(is)\b"),
    re.compile(r"(?i) ('t)(was)\b"),
]


def _ends_sentence(chunk: str) -> bool:
    """Whether a whitespace-delimited chunk ending in . ? or ! (plus closers) ends a sentence."""
    word = chunk.rstrip("\"')]}»”’")
    if not word.endswith("."):
        return True  # ? and !
    stem = word.rstrip(".")
    if not stem or "." in stem or stem in _ABBREVIATIONS:
        return False
    return not (len(stem) == 1 and stem.isalpha()) and not stem.replace(",", "").isdigit()


def split_sentences(text: str) -> list[str]:
    """Split at ``. ? !`` followed by whitespace (Punkt-like; abbreviations/initials do not split)."""
    sentences, start = [], 0
    for m in _SENT_END.finditer(text):
        chunk = text[start : m.start(1)].split()
        if chunk and _ends_sentence(chunk[-1]):
            sentences.append(text[start : m.start(1)])
            start = m.end()
    sentences.append(text[start:])
    return [s for s in (s.strip() for s in sentences) if s]


def _word_tokenize(sentence: str) -> list[str]:
    text = sentence
    for pattern, repl in _OPENING_QUOTES + _PUNCTUATION + [_BRACKETS, _DOUBLE_DASH]:
        text = pattern.sub(repl, text)
    text = f" {text} "
    for pattern, repl in _CLOSING_QUOTES:
        text = pattern.sub(repl, text)
    for pattern in _SPLIT_WORDS:
        text = pattern.sub(r" \1 \2 ", text)
    return text.split()


# Text of plain words and at most a final period, where no rule but the final-period split fires.
_PLAIN = regex.compile(r"[a-z0-9\s]*\.?\s*")
_SPLIT_WORD_HINT = regex.compile(r"cannot|gimme|gonna|gotta|lemme|wanna")


@functools.lru_cache(maxsize=1 << 17)
def _tokenize_cached(text: str) -> tuple[str, ...]:
    text = text.lower()
    if _PLAIN.fullmatch(text) and not _SPLIT_WORD_HINT.search(text):  # fast path, same result
        words = text.split()
        if words and words[-1].endswith(".") and words[-1] != ".":
            words[-1:] = [words[-1][:-1], "."]
        return tuple(words)
    return tuple(tok for sentence in split_sentences(text) for tok in _word_tokenize(sentence))


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens, as ``nltk.tokenize.word_tokenize(text.lower())``.

    Treebank conventions: punctuation is split off (``"dog," -> "dog" ","``), clitics are separate
    tokens (``"don't" -> "do" "n't"``, ``"dog's" -> "dog" "'s"``), double quotes become `````` and
    ``''``, a period is split off only at the end of a sentence, numbers keep ``3.5``/``3,000``.
    """
    return list(_tokenize_cached(text))


# ----------------------------------------------------------------------------------------------
# Vocabulary


class Vocabulary:
    """word <-> id maps of the SCAN vocab JSON. ``<pad>=0, <start>=1, <end>=2, <unk>=3``."""

    def __init__(self, words: Iterable[str] = ()):
        self.word2idx: dict[str, int] = {}
        self.idx2word: dict[int, str] = {}
        for word in SPECIALS:
            self.add_word(word)
        for word in words:
            self.add_word(word)

    def add_word(self, word: str) -> int:
        if word not in self.word2idx:
            idx = len(self.word2idx)
            self.word2idx[word] = idx
            self.idx2word[idx] = word
        return self.word2idx[word]

    def __len__(self) -> int:
        return len(self.word2idx)

    def __contains__(self, word: object) -> bool:
        return word in self.word2idx

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.word2idx[UNK])

    @property
    def pad_id(self) -> int:
        return self.word2idx[PAD]

    @property
    def unk_id(self) -> int:
        return self.word2idx[UNK]

    def with_mask(self) -> Vocabulary:
        """A copy with ``<mask>`` appended as the last id (unchanged when it already has one)."""
        vocab = copy.copy(self)
        vocab.word2idx, vocab.idx2word = dict(self.word2idx), dict(self.idx2word)
        vocab.add_word(MASK)
        return vocab

    def fingerprint(self) -> str:
        """What identifies the vocabulary a model was trained with: sha256 (16 hex digits) of its word -> id pairs,
        ``<mask>`` left out (a trainer may add it). Two vocabularies of one size with other words or another order
        give other ids to the same caption: a checkpoint records it and its readers compare it."""
        import hashlib

        pairs = sorted((w, i) for w, i in self.word2idx.items() if w != MASK)
        return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        """[<start>] + ids of ``tokenize(text)`` (unknown words -> <unk>) + [<end>]."""
        unk = self.word2idx[UNK]
        ids = [self.word2idx.get(tok, unk) for tok in tokenize(text)]
        return [self.word2idx[START], *ids, self.word2idx[END]]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.idx2word.get(int(i), UNK) for i in ids]

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"


def build_vocab(captions: Iterable[str], min_count: int = 1) -> Vocabulary:
    """Vocabulary of the tokens occurring at least ``min_count`` times (most frequent first, ties
    alphabetical), after the four special tokens."""
    counts: Counter[str] = Counter()
    for caption, n in Counter(captions).items():
        for tok in tokenize(caption):
            counts[tok] += n
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return Vocabulary(w for w in words if w not in SPECIALS)


def save_vocab(vocab: Vocabulary, path: str | Path) -> Path:
    """Write the SCAN layout: ``{"word2idx": {...}, "idx2word": {"0": ...}, "idx": N}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "word2idx": vocab.word2idx,
        "idx2word": {str(i): w for i, w in sorted(vocab.idx2word.items())},
        "idx": len(vocab),
    }
    path.write_text(json.dumps(payload, ensure_ascii=False, indent=None) + "\n", encoding="utf-8")
    return path


def load_vocab(path: str | Path) -> Vocabulary:
    """Read a SCAN vocab JSON; :class:`DataError` (naming the file) when missing or inconsistent."""
    path = Path(path)
    fix = "use the VOCAB/{f30k,coco}_precomp_vocab.json of the SCAN release, or `python -m bench.data.synth`"
    if not path.is_file():
        raise DataError(f"vocabulary file not found: {path}; {fix}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); {fix}") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("word2idx"), dict):
        raise DataError(f"{path}: expected an object with a 'word2idx' mapping; {fix}")
    vocab = Vocabulary.__new__(Vocabulary)
    bad = next(((w, i) for w, i in payload["word2idx"].items() if not _is_id(i)), None)
    if bad is not None:
        raise DataError(f"{path}: 'word2idx' maps {shown(bad[0])} to {shown(bad[1])}, not a whole-number id; "
                        f"every word maps to an integer id; {fix}")
    vocab.word2idx = {str(w): int(i) for w, i in payload["word2idx"].items()}
    vocab.idx2word = {i: w for w, i in vocab.word2idx.items()}
    if len(vocab.idx2word) != len(vocab.word2idx) or sorted(vocab.idx2word) != list(range(len(vocab))):
        raise DataError(f"{path}: word ids must be unique and cover 0..{len(vocab) - 1}; {fix}")
    expected = {w: i for i, w in enumerate(SPECIALS)}
    wrong = {w: vocab.word2idx.get(w) for w in SPECIALS if vocab.word2idx.get(w) != expected[w]}
    if wrong:
        raise DataError(f"{path}: special tokens must be {expected}, found {wrong}; {fix}")
    idx2word = payload.get("idx2word")
    if idx2word is not None and not isinstance(idx2word, dict):
        raise DataError(f"{path}: 'idx2word' is {type(idx2word).__name__}, not an object of id -> word; {fix}")
    bad_key = next((i for i in (idx2word or {}) if not _is_id(i)), None)
    if bad_key is not None:
        raise DataError(f"{path}: 'idx2word' has the key {shown(bad_key)}, not a whole-number id (keys are ids "
                        f"written as strings, \"0\", \"1\", …); {fix}")
    if any(vocab.idx2word.get(int(i)) != w for i, w in (idx2word or {}).items()):
        raise DataError(f"{path}: 'idx2word' disagrees with 'word2idx'; {fix}")
    return vocab


def _is_id(value) -> bool:
    """An id of the vocab JSON: an int (not bool), or a string of decimal digits (JSON object keys)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and value.strip().isdecimal())


# ----------------------------------------------------------------------------------------------
# Coverage: how much of the captions a vocabulary knows

# A vocabulary built from the captions it is used with (the SCAN release's, ``build_vocab``, the
# embedded dataset's) leaves only rare words unknown, a few percent of the tokens at most: above
# UNK_WARN_SHARE the suite warns. Above UNK_STOP_SHARE most of every caption is the one shared
# <unk> id, so captions can hardly be told apart and a table would measure the vocabulary, not the
# strategies; no vocabulary of these captions comes near it, a mismatched one does (another
# dataset's, other casing or tokenisation), so the run stops before training.
UNK_WARN_SHARE = 0.05
UNK_STOP_SHARE = 0.5
COVERAGE_SAMPLE = 1000  # captions, evenly spaced over the split: milliseconds even on COCO


def unk_share(vocab: Vocabulary, captions: list[str], sample: int = COVERAGE_SAMPLE) -> tuple[float, int, Counter]:
    """(share of the word tokens that map to <unk>, tokens counted, Counter of the unknown words)
    over up to ``sample`` captions evenly spaced over ``captions``."""
    picked = captions[:: max(1, len(captions) // max(1, sample))][:sample]
    unknown: Counter[str] = Counter()
    total = 0
    for caption in picked:
        tokens = tokenize(caption)
        total += len(tokens)
        unknown.update(t for t in tokens if t not in vocab.word2idx)
    return (sum(unknown.values()) / total if total else 0.0), total, unknown


def check_coverage(vocab: Vocabulary, captions: list[str], vocab_file: str | Path, captions_file: str | Path,
                   sample: int = COVERAGE_SAMPLE) -> float:
    """The <unk> share of ``captions`` under ``vocab``: a warning above :data:`UNK_WARN_SHARE`,
    :class:`DataError` above :data:`UNK_STOP_SHARE` (both name the files, the share and the most
    frequent unknown words)."""
    share, total, unknown = unk_share(vocab, captions, sample)
    if share <= UNK_WARN_SHARE:
        return share
    words = ", ".join(repr(w) for w, _ in unknown.most_common(5))
    what = (f"{vocab_file}: {share:.1%} of the {total} word tokens in {min(len(captions), sample)} captions of "
            f"{captions_file} are not in the vocabulary and read as {UNK} (most frequent: {words})")
    fix = ("use the vocabulary built from these captions (the SCAN release's VOCAB/<dataset>_vocab.json, or "
           "bench.data.build_vocab on the training captions)")
    if share > UNK_STOP_SHARE:
        raise DataError(f"{what}; above {UNK_STOP_SHARE:.0%} the text side is mostly one id and the results "
                        f"would measure the vocabulary: {fix}")
    warnings.warn(f"{what}; a matching vocabulary leaves under {UNK_WARN_SHARE:.0%} unknown: {fix}", stacklevel=2)
    return share


def other_vocabulary(path, trained: str | None, vocab: Vocabulary | None) -> str | None:
    """Why the checkpoint at ``path``, trained with the vocabulary of fingerprint ``trained``
    (:meth:`Vocabulary.fingerprint`, recorded in this suite's ``best.pt``), does not fit ``vocab`` though of the same
    size (other words, or another order: each caption would reach the model as other ids), or None (the same, or a
    checkpoint that does not record it)."""
    if trained is None or vocab is None or trained == (have := vocab.fingerprint()):
        return None
    return (f"checkpoint {path} was trained with another vocabulary than the data's (vocabulary fingerprint {trained} "
            f"≠ {have}: other words or another order of {len(vocab)} ids, so every caption would reach the model as "
            "other word ids): use the vocab/ folder of the data it was trained on")
