"""flambe's word tokenizers: `WordTokenizer` (whitespace) and the NLTK-based ones.

`NLTKWordTokenizer` and `NGramsTokenizer` need the optional `nltk` package and its
`punkt` data (and `stopwords` for `exclude_stopwords` without a list); without them,
building one is a `LoadError` that names what to install. Unlike flambe, nothing is
downloaded while a checkpoint loads.

Release differences: 0.4.6's `WordTokenizer` used NLTK's `word_tokenize` (0.4.3 and
0.4.11 on split on whitespace, as this one does), and 0.4.3's `NGramsTokenizer` split on
whitespace where later releases used `word_tokenize`.

>>> WordTokenizer()("Hello, world  again")
['Hello,', 'world', 'again']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...errors import LoadError
from .._optional import require
from .tokenizer import Tokenizer


class WordTokenizer(Tokenizer):
    """Split on whitespace."""

    def tokenize(self, example: str) -> list[str]:
        """The whitespace-separated words of `example`."""
        return example.split()


def _nltk_word_tokenize(user: str) -> Callable[[str], list[str]]:
    nltk = require("nltk", user)
    tokenize: Callable[[str], list[str]] = nltk.tokenize.word_tokenize
    try:
        tokenize("probe")
    except LookupError:
        raise LoadError(
            f"{user} needs NLTK's 'punkt' tokenizer data, which is not installed; "
            "run python -m nltk.downloader punkt punkt_tab"
        ) from None
    return tokenize


class NLTKWordTokenizer(Tokenizer):
    """NLTK's `word_tokenize`."""

    def __init__(self, **kwargs: Any) -> None:
        self._word_tokenize = _nltk_word_tokenize(type(self).__name__)

    def tokenize(self, example: str) -> list[str]:
        """The NLTK word tokens of `example`."""
        return self._word_tokenize(example)


class NGramsTokenizer(Tokenizer):
    """All n-grams (for each n in `ngrams`) of NLTK's word tokens, joined by spaces."""

    def __init__(
        self,
        ngrams: int | Sequence[int] = 1,
        exclude_stopwords: bool = False,
        stop_words: Sequence[str] | None = None,
    ) -> None:
        self.ngrams = ngrams
        self.exclude_stopwords = exclude_stopwords
        user = type(self).__name__
        self._word_tokenize = _nltk_word_tokenize(user)
        self._ngrams = require("nltk", user).ngrams
        if exclude_stopwords:
            if stop_words is None:
                try:
                    stop_words = require("nltk", user).corpus.stopwords.words("english")
                except LookupError:
                    raise LoadError(
                        f"{user} needs NLTK's 'stopwords' data, which is not installed; "
                        "run python -m nltk.downloader stopwords"
                    ) from None
            self.stop_words = stop_words

    def _tokenize(self, example: str, n: int) -> list[str]:
        grams = self._ngrams(self._word_tokenize(example), n)
        return [" ".join(gram) if len(gram) > 1 else gram[0] for gram in grams]

    def tokenize(self, example: str) -> list[str]:
        """The n-grams of `example`, for each requested n in order."""
        if self.exclude_stopwords and self.stop_words:
            words = self._word_tokenize(example)
            example = " ".join(word for word in words if word not in self.stop_words)
        if isinstance(self.ngrams, int):
            return self._tokenize(example, self.ngrams)
        return [gram for n in self.ngrams for gram in self._tokenize(example, n)]
