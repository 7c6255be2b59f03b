"""Unit tests of flambe_compat.builtins.field and .tokenizer (process outputs, vocabularies)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from flambe_compat import LoadError
from flambe_compat.builtins.field import BoWField, EmbeddingsInformation, LabelField, TextField
from flambe_compat.builtins.nlp.language_modeling import LMField
from flambe_compat.builtins.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    LabelTokenizer,
    NGramsTokenizer,
    NLTKWordTokenizer,
    WordTokenizer,
)
from flambe_compat.state import State

SENTENCES = ["The cat sat", "the dog ran", "a cat and a dog"]


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def _fake_nltk(monkeypatch: pytest.MonkeyPatch, punkt: bool = True, stopwords: bool = True) -> None:
    """An `nltk` whose word_tokenize splits off a final '?' (enough to tell it from split())."""

    def word_tokenize(text: str) -> list[str]:
        if not punkt:
            raise LookupError("Resource punkt not found.")
        return text.replace("?", " ?").split()

    def words(language: str) -> list[str]:
        if not stopwords:
            raise LookupError("Resource stopwords not found.")
        return ["how", "are"]

    def ngrams(tokens: list[str], n: int) -> Any:
        return zip(*(tokens[i:] for i in range(n)), strict=False)

    nltk = types.SimpleNamespace(
        tokenize=types.SimpleNamespace(word_tokenize=word_tokenize),
        corpus=types.SimpleNamespace(stopwords=types.SimpleNamespace(words=words)),
        ngrams=ngrams,
    )
    monkeypatch.setitem(sys.modules, "nltk", nltk)


def test_text_field_setup_and_process() -> None:
    field = TextField(lower=True, sos_token="<s>", eos_token="</s>")
    field.setup(SENTENCES, None, [["nested", ("tuple",)], {"key": "dict"}])
    assert field.vocab_list[:8] == ["<pad>", "<unk>", "<s>", "</s>", "the", "cat", "sat", "dog"]
    assert field.vocab_list[-3:] == ["nested", "tuple", "dict"]
    assert field.vocab_size == len(field.vocab)
    assert field.process("The bird sat").tolist() == [2, 4, 1, 6, 3]
    assert [t.tolist() for t in field.process(["cat", "dog"])] == [[2, 5, 3], [2, 7, 3]]
    processed = field.process({"a": "cat", "b": ("dog",)})
    assert processed["a"].tolist() == [2, 5, 3] and processed["b"][0].tolist() == [2, 7, 3]
    field.setup(["more words"])  # setup again extends, keeping every index
    assert field.vocab["the"] == 4 and field.vocab["words"] == len(field.vocab) - 1


def test_text_field_truncates_from_either_end() -> None:
    vocabulary = ["<pad>", "<unk>", "a", "b", "c", "d"]
    assert TextField(vocabulary=vocabulary, max_seq_len=2).process("a b c d").tolist() == [2, 3]
    end = TextField(vocabulary=vocabulary, max_seq_len=2, truncate_end=True)
    assert end.process("a b c d").tolist() == [4, 5]


def test_text_field_vocabulary_file_and_specials(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("<pad>\n<unk>\nhello\n", encoding="utf-8")
    field = TextField(vocabulary=str(path), additional_special_tokens=["<mask>"])
    field.setup([])
    assert list(field.vocab) == ["<pad>", "<unk>", "hello", "<mask>"]
    assert field.process("hello <mask> you").tolist() == [2, 3, 1]
    with pytest.raises(ValueError, match="out-of-vocabulary"):
        TextField(unk_token=None, vocabulary=["a"]).process("b")


def test_text_field_takes_every_release_arguments() -> None:
    legacy = TextField(embeddings="glove.txt", setup_all_embeddings=True, drop_unknown=True)
    assert legacy.embeddings_info == EmbeddingsInformation(
        "glove.txt", "glove", False, build_vocab_from_embeddings=True, drop_unknown=True
    )
    from_dict = TextField(embeddings_info={"embeddings": "w2v.bin", "embeddings_binary": True})
    assert from_dict.embeddings_info == EmbeddingsInformation("w2v.bin", embeddings_binary=True)
    factory = TextField.from_embeddings("vectors", setup_all_embeddings=True, lower=True)
    assert factory.lower and factory.embeddings_info is not None
    assert factory.embeddings_info.build_vocab_from_embeddings
    with pytest.raises(ValueError, match="simultaneously"):
        TextField(embeddings="a", embeddings_info=EmbeddingsInformation("b"))
    for field in (legacy, TextField(model=object())):
        with pytest.raises(LoadError, match=r"not ported.*'gensim'"):
            field.setup(SENTENCES)


def test_text_field_state_round_trip() -> None:
    field = TextField()
    field.setup(SENTENCES)
    state = field.get_state()
    assert list(state) == ["vocab"]
    fresh = TextField()
    fresh.load_state(State(state), strict=True)
    assert fresh.vocab == field.vocab
    assert torch.equal(fresh.process("the cat ran"), field.process("the cat ran"))


def test_lm_field() -> None:
    field = LMField(eos_token="</s>")
    field.setup(["a b"])
    source, target = field.process("a b a")
    assert source.tolist() == [3, 4, 3] and target.tolist() == [4, 3, 2]


def test_label_field_counts_and_one_hot(tmp_path: Path) -> None:
    field = LabelField(multilabel_sep=",")
    field.setup(["pos", "neg,pos"], None)
    assert field.vocab_list == ["pos", "neg"] and field.vocab_size == 2
    assert field.process("neg").tolist() == 1
    assert field.process("neg,pos").tolist() == [1, 0]
    assert field.label_count.tolist() == [2.0, 1.0]
    assert torch.allclose(field.label_freq, torch.tensor([2 / 3, 1 / 3]))
    assert torch.allclose(field.label_inv_freq, torch.tensor([1.5, 3.0]))
    with pytest.raises(ValueError, match="out-of-vocabulary label x"):
        field.process("x")
    path = tmp_path / "labels.txt"
    path.write_text("a\nb\nc\n", encoding="utf-8")
    given = LabelField(one_hot=True, labels=str(path))
    given.setup(["b", "b"])
    assert given.label_count_dict == {"a": 0, "b": 2, "c": 0}
    assert given.process("c").tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="not provided in label list"):
        given.setup(["d"])
    state = field.get_state()
    assert sorted(state) == ["label_count_dict", "vocab"]


def test_bow_field() -> None:
    field = BoWField(tokenizer=WordTokenizer(), lower=True, min_freq=2)
    field.setup(SENTENCES)
    assert list(field.vocab) == ["<unk>", "the", "cat", "dog", "a"]
    assert field.full_vocab["sat"] == 1 and field.vocab_size == 5
    # "sat" was seen (filtered out by min_freq): ignored; "bird" never was: unknown
    assert field.process("The cat sat bird the").tolist() == [1.0, 2.0, 1.0, 0.0, 0.0]
    scaled = BoWField(tokenizer=WordTokenizer(), min_freq=1, normalize=True, scale_factor=2.0)
    scaled.setup(["x y"])
    assert scaled.process("x x y").tolist() == pytest.approx([0.0, 4 / 3, 2 / 3])
    with pytest.raises(ValueError, match="scale_factor"):
        BoWField(tokenizer=WordTokenizer(), scale_factor=2.0)
    assert sorted(field.get_state()) == ["full_vocab", "vocab"]


def test_bow_field_default_tokenizer_needs_nltk(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "nltk")
    with pytest.raises(LoadError, match="NGramsTokenizer needs the optional package 'nltk'"):
        BoWField()


def test_simple_tokenizers() -> None:
    assert WordTokenizer()(" a  b\tc ") == ["a", "b", "c"]
    assert CharTokenizer()("a b") == ["a", " ", "b"]
    assert LabelTokenizer()("x|y") == ["x|y"]
    assert LabelTokenizer("|")("x|y") == ["x", "y"]


def test_nltk_tokenizers_without_nltk(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "nltk")
    for cls in (NLTKWordTokenizer, NGramsTokenizer):
        with pytest.raises(LoadError, match=f"{cls.__name__} needs the optional package 'nltk'"):
            cls()


def test_nltk_tokenizers_with_nltk(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nltk(monkeypatch)
    assert NLTKWordTokenizer()("hi how are you?") == ["hi", "how", "are", "you", "?"]
    assert NGramsTokenizer(ngrams=2)("hi how are you?") == ["hi how", "how are", "are you", "you ?"]
    both = NGramsTokenizer(ngrams=[1, 2])("a b")
    assert both == ["a", "b", "a b"]
    no_stop = NGramsTokenizer(exclude_stopwords=True)
    assert no_stop("hi how are you?") == ["hi", "you", "?"]
    assert NGramsTokenizer(exclude_stopwords=True, stop_words=["hi"])("hi you") == ["you"]


def test_nltk_data_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nltk(monkeypatch, punkt=False)
    with pytest.raises(LoadError, match="'punkt'"):
        NLTKWordTokenizer()
    _fake_nltk(monkeypatch, stopwords=False)
    with pytest.raises(LoadError, match="'stopwords'"):
        NGramsTokenizer(exclude_stopwords=True)


def test_bpe_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "fastBPE")
    with pytest.raises(LoadError, match="BPETokenizer needs the optional package 'fastBPE'"):
        BPETokenizer("codes")

    class _BPE:
        def __init__(self, codes: str) -> None:
            self.codes = codes

        def apply(self, texts: list[str]) -> list[str]:
            return [text.replace("ing", "@@ ing") for text in texts]

    monkeypatch.setitem(sys.modules, "fastBPE", types.SimpleNamespace(fastBPE=_BPE))
    tokenizer = BPETokenizer("codes")
    assert tokenizer.codes_path == "codes"
    assert tokenizer("walking fast") == ["walk@@", "ing", "fast"]
