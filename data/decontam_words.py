"""Math text as words for decontamination: `words(texts) -> (word hashes, per-text offsets)`.

    normalize(["What is $42 \\times 55$?"]).to_pylist()   # ['what is   42   times 55  ']
    tok, tok_off = words(texts)                          # "times" reads as "*": 5 words
    h = sequence_hashes(tok, tok_off[:-1], lengths)      # one hash per word sequence

Normalisation, the same on both sides: lowercase; LaTeX that only formats is dropped (\\left,
\\right, \\displaystyle, \\textstyle, spacing commands \\, \\; \\: \\! \\quad \\qquad) and
\\dfrac/\\tfrac read as \\frac; ×, ·, ∗ read as *, ÷ as /, − and – as -, <= and ≤ as "le", >= and ≥
as "ge"; the operators + - * / = < > ^ are kept, each a word of its own; every other run of
characters that are not letters or digits (punctuation, $, braces, _, backslashes) becomes a
space. So "$\\dfrac{1}{2}$" and "\\frac 1 2" are both "frac 1 2", the words of "x^2+1" are
"x ^ 2 + 1", and "42 * 55" is not "42 + 55". Then the words that name an operator read as it
(ALIASES: times, cdot, ast as *; div as /; leq as le; geq as ge, on both sides, so English
"times" too), so "42 \\times 55", "42 × 55" and "42*55" are the same three words.

Bump data.decontam's _NORMALISE_VERSION when any of this changes (saved indexes then refuse to
load).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from distill.data.minhash import text_buffer, word_hashes

_SYMBOLS = {"<=": " le ", ">=": " ge ", "≤": " le ", "≥": " ge ", "×": "*", "·": "*", "∗": "*",
            "÷": "/", "−": "-", "–": "-"}   # literal replacements: cheaper than a non-ASCII class
# an operator becomes a word of its own, other runs of non-letters a space (ASCII whitespace
# stays: words split there anyway, and leaving it saves a match per space)
_WORDS = r"([-+*/=<>^])|[^\p{L}\p{N}\s+\-*/=<>^]+"
ALIASES = {"*": ("times", "cdot", "ast"), "/": ("div",), "le": ("leq", "leqslant"),
           "ge": ("geq", "geqslant")}
_G = np.uint64(0x9E3779B97F4A7C15)     # base of the word-sequence hash
_LOW_BITS = np.uint64((1 << 16) - 1)   # a table of hashes' low bits skips most non-members fast


def normalize(texts: Any) -> Any:
    """The normalised texts (a pyarrow array): see the module docstring."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(list(texts) if not isinstance(texts, (pa.Array, pd.Series)) else texts,
                   type=pa.large_string(), from_pandas=True)
    arr = pc.utf8_lower(arr.fill_null(""))
    arr = pc.replace_substring_regex(
        arr, r"\\(?:left|right|displaystyle|textstyle|q?quad)\b|\\[,;:!]", " ")
    arr = pc.replace_substring_regex(arr, r"\\[dt]frac\b", r"\\frac")
    for symbol, word in _SYMBOLS.items():
        arr = pc.replace_substring(arr, symbol, word)
    return pc.replace_substring_regex(arr, _WORDS, r" \1 ")


def words(texts: Any) -> tuple[np.ndarray, np.ndarray]:
    """(word hashes, per-text offsets) of the normalised texts, operator names as ALIASES say."""
    tok, tok_off = word_hashes(*text_buffer(normalize(texts)))
    src, dst = _alias_table()
    i, j = lookup(tok, src)
    tok[i] = dst[j]
    return tok, tok_off


def lookup(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) with values[i] == keys[j], for sorted unique `keys` much fewer than values."""
    if not len(keys) or not len(values):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    table = np.zeros(int(_LOW_BITS) + 1, dtype=bool)
    table[(keys & _LOW_BITS).astype(np.intp)] = True
    i = np.flatnonzero(table[(values & _LOW_BITS).astype(np.intp)])
    j = np.minimum(np.searchsorted(keys, values[i]), len(keys) - 1)
    same = keys[j] == values[i]
    return i[same], j[same]


def extend(acc: np.ndarray, tok: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Sequence hashes `acc` extended by one word each, tok[at] (Horner in _G): from zeros,
    extending word by word hashes a word sequence."""
    return acc * _G + tok[at]


def sequence_hashes(tok: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The hash (as `extend` builds it) of each word sequence tok[start: start + length]."""
    acc = np.zeros(len(starts), np.uint64)
    for j in range(int(lengths.max(initial=0))):
        more = j < lengths
        acc[more] = extend(acc[more], tok, starts[more] + j)
    return acc


@lru_cache(maxsize=1)
def _alias_table() -> tuple[np.ndarray, np.ndarray]:
    """(sorted hashes of the ALIASES words, the hash of the word each reads as)."""
    pairs = sorted((alias, word) for word, aliases in ALIASES.items() for alias in aliases)
    src, dst = _hashes([a for a, _ in pairs]), _hashes([w for _, w in pairs])
    order = np.argsort(src)
    return src[order], dst[order]


def _hashes(texts: list[str]) -> np.ndarray:
    import pyarrow as pa

    return word_hashes(*text_buffer(pa.array(texts, type=pa.large_string())))[0]
