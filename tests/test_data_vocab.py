"""Tokeniser (NLTK word_tokenize rules, hand-written expectations) and the SCAN vocab JSON."""

import json

import pytest

from bench.data.errors import DataError
from bench.data.vocab import Vocabulary, build_vocab, load_vocab, save_vocab, split_sentences, tokenize

# expected outputs of nltk.tokenize.word_tokenize(text.lower()), written out by hand
TOKENIZE_CASES = [
    ("A dog runs on the grass.", ["a", "dog", "runs", "on", "the", "grass", "."]),
    ("Two men, one woman; a child!", ["two", "men", ",", "one", "woman", ";", "a", "child", "!"]),
    ("The man's dog", ["the", "man", "'s", "dog"]),
    ("They don't like it", ["they", "do", "n't", "like", "it"]),
    ("He can't swim", ["he", "ca", "n't", "swim"]),
    ("I cannot go", ["i", "can", "not", "go"]),
    ("We're here and they've left, I'll stay", ["we", "'re", "here", "and", "they", "'ve", "left", ",", "i",
                                                "'ll", "stay"]),
    ('She said "hello" to him.', ["she", "said", "``", "hello", "''", "to", "him", "."]),
    ('"Quoted" start', ["``", "quoted", "''", "start"]),
    ("A dog (brown) jumps", ["a", "dog", "(", "brown", ")", "jumps"]),
    ("It costs $3.88 at 10:30", ["it", "costs", "$", "3.88", "at", "10:30"]),
    ("3,000 people, 5 dogs", ["3,000", "people", ",", "5", "dogs"]),
    ("A man. A dog.", ["a", "man", ".", "a", "dog", "."]),
    ("Mr. Smith is here.", ["mr.", "smith", "is", "here", "."]),
    ("In the U.S. today.", ["in", "the", "u.s.", "today", "."]),
    ("Wait...", ["wait", "..."]),
    ("A well-dressed man -- smiling", ["a", "well-dressed", "man", "--", "smiling"]),
    ("The kids' toys", ["the", "kids", "'", "toys"]),
    ("Is it red?", ["is", "it", "red", "?"]),
    ("gonna wanna go", ["gon", "na", "wan", "na", "go"]),
    ("  A   BIG\tdog\n", ["a", "big", "dog"]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", TOKENIZE_CASES)
def test_tokenize_matches_treebank_rules(text, expected):
    assert tokenize(text) == expected


def test_split_sentences():
    assert split_sentences("a man. a dog? yes! mr. x j. doe") == ["a man.", "a dog?", "yes!", "mr. x j. doe"]
    # closing quotes and brackets stay with their sentence (they were once dropped)
    assert split_sentences('he said "stop!" then (left.) ok?" ') == ['he said "stop!"', "then (left.)", 'ok?"']


def test_tokenize_returns_fresh_list():
    first = tokenize("a red ball")
    first.append("x")
    assert tokenize("a red ball") == ["a", "red", "ball"]


def test_vocabulary_specials_and_encode():
    vocab = Vocabulary(["dog", "a"])
    assert [vocab.word2idx[w] for w in ("<pad>", "<start>", "<end>", "<unk>")] == [0, 1, 2, 3]
    assert len(vocab) == 6 and "dog" in vocab and "cat" not in vocab
    assert vocab.encode("A dog, a cat") == [1, 5, 4, 3, 5, 3, 2]  # "," and "cat" unknown
    assert vocab.decode([1, 4, 2]) == ["<start>", "dog", "<end>"]


def test_build_vocab_orders_by_count_and_filters():
    vocab = build_vocab(["a dog", "a cat", "A dog.", "the bird"], min_count=2)
    assert [vocab.idx2word[i] for i in range(len(vocab))] == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]
    full = build_vocab(["b a", "a"])
    assert full.word2idx["a"] == 4 and full.word2idx["b"] == 5


def test_save_load_roundtrip_scan_layout(tmp_path):
    vocab = build_vocab(["a red ball", "a dog"])
    path = save_vocab(vocab, tmp_path / "v" / "f30k_precomp_vocab.json")
    payload = json.loads(path.read_text())
    assert set(payload) == {"word2idx", "idx2word", "idx"}
    assert payload["idx"] == len(vocab) and payload["idx2word"]["0"] == "<pad>"
    loaded = load_vocab(path)
    assert loaded.word2idx == vocab.word2idx and loaded.idx2word == vocab.idx2word
    assert loaded.encode("a dog") == vocab.encode("a dog")


def _write(tmp_path, payload):
    path = tmp_path / "coco_precomp_vocab.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


@pytest.mark.parametrize("payload", [
    "{not json",
    {"idx2word": {}},
    {"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "dog": 5}},  # id 4 missing
    {"word2idx": {"<start>": 0, "<pad>": 1, "<end>": 2, "<unk>": 3}},  # specials swapped
    {"word2idx": {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3, "dog": 4},
     "idx2word": {"4": "cat"}},
])
def test_load_vocab_invalid(tmp_path, payload):
    path = _write(tmp_path, payload)
    with pytest.raises(DataError, match="coco_precomp_vocab.json"):
        load_vocab(path)


def test_load_vocab_missing(tmp_path):
    with pytest.raises(DataError, match="nope.json"):
        load_vocab(tmp_path / "nope.json")


@pytest.mark.parametrize("text", ["a dog.", "A dog .", ".", "  two dogs.  ", "a b c. ", "gonna go.", "x.",
                                  "a\tred\nball.", "3 dogs", "we cannot go."])
def test_plain_text_fast_path_agrees_with_the_rules(text):
    from bench.data.vocab import _word_tokenize

    full = [tok for sentence in split_sentences(text.lower()) for tok in _word_tokenize(sentence)]
    assert tokenize(text) == full


# ----------------------------------------------------------------------------- equivalence with NLTK

_GEN_WORDS = ["a", "man", "woman", "dog", "the", "red", "shirt", "is", "on", "street", "two", "children",
              "playing", "Mr", "St", "Dr", "u.s.", "e.g.", "etc", "J.", "A", "BIG"]
_GEN_CLITICS = ["don't", "it's", "they're", "we'll", "I'm", "can't", "won't", "cannot", "gonna", "wanna",
                "gotta", "lemme", "gimme", "dog's", "dogs'", "y'all", "o'clock", "rock'n'roll", "'tis", "'twas",
                "d'ye", "more'n", "she'd", "you've", "ISN'T", "Wasn't", "'hello", "'a"]
_GEN_HYPHENS = ["t-shirt", "black-and-white", "x-ray", "well-known", "-", "--", "---", "a-", "-b"]
_GEN_NUMBERS = ["3", "3.5", "3,000", "10:30", "1990s", "$5", "50%", "#1", "4th", "1/2", "2.", "0.5.", "1,2",
                "12:00pm"]
_GEN_PUNCT = [",", ".", "...", "..", ";", ":", "!", "?", "!?", "&", "@", "*", "(", ")", "[", "]", "{", "}", "<",
              ">", '"', "'", "`", "``", "''", "/", "\\", "|", "~", "^", "+", "=", "_"]
_GEN_UNICODE = ["café", "naïve", "über", "“quoted”", "‘single’", "—", "–", "…", "日本", "🙂", "«x»", "„low“", "ß",
                "ﬁ", "e\u0301", "\u00a0", "²", "½", "Ω", "İ", "\u2012", "\u2015"]


def _generated_captions(n, seed=0):
    """Varied captions: plain ones, and ones mixing clitics, hyphens, numbers, punctuation, quotes,
    brackets and non-ASCII text, with assorted endings and spacing."""
    import random

    rng = random.Random(seed)

    def token():
        r = rng.random()
        pool = (_GEN_WORDS if r < 0.45 else _GEN_CLITICS if r < 0.58 else _GEN_HYPHENS if r < 0.65
                else _GEN_NUMBERS if r < 0.75 else _GEN_PUNCT if r < 0.9 else _GEN_UNICODE)
        t = rng.choice(pool)
        if rng.random() < 0.12:
            t = rng.choice(_GEN_PUNCT) + t
        if rng.random() < 0.15:
            t += rng.choice(_GEN_PUNCT)
        if rng.random() < 0.1:
            t = f'"{t}"'
        return t

    out = []
    for i in range(n):
        if i % 4 == 0:  # plain captions (the tokeniser's fast path)
            text = " ".join(rng.choice(_GEN_WORDS[:13]) for _ in range(rng.randint(1, 12)))
        else:
            text = "".join(token() + rng.choice([" "] * 9 + ["", "  ", "\t"]) for _ in range(rng.randint(1, 14)))
        out.append(text.strip() + rng.choice(["", ".", " .", ". ", "!", "?", '."', ".)", "...", " "]))
    return out


def test_tokenize_equals_nltk_word_tokenize_on_generated_captions():
    # NLTK's word_tokenize = Punkt sentence split (a downloaded model) + NLTKWordTokenizer per sentence.
    # Without the download we compare the word rules: NLTK on each of our sentences (preserve_line=True
    # runs the word tokenizer on the text as given), which is exactly word_tokenize for one sentence.
    from nltk.tokenize import word_tokenize

    captions = _generated_captions(4000)
    differ = []
    multi = 0
    for caption in captions:
        sentences = split_sentences(caption.lower())
        multi += len(sentences) > 1
        want = [tok for s in sentences for tok in word_tokenize(s, preserve_line=True)]
        if tokenize(caption) != want:
            differ.append((caption, tokenize(caption), want))
    assert not differ, f"{len(differ)} of {len(captions)} captions differ, e.g. {differ[:3]}"
    assert multi > 100  # several sentences in a caption occur too
    # single sentences: the whole line through NLTK directly
    single = [c for c in captions if len(split_sentences(c.lower())) == 1]
    assert len(single) > 2000
    assert all(tokenize(c) == word_tokenize(c.lower(), preserve_line=True) for c in single)
