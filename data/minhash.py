"""MinHash signatures, exact-text keys and LSH band keys for a whole batch of texts.

    sk = sketch(texts, num_perm=128, ngram=5, shingle="word", seed=0)
    sk.signatures      # (n, 128) uint32 MinHash signatures
    sk.exact_keys      # (n, 2) uint64: equal rows <=> equal normalised text (128-bit hash)
    b, r = optimal_bands(0.8, 128)            # (9, 13): the same search as datasketch's MinHashLSH
    keys = band_keys(sk.signatures, b, r)     # (n, b) uint64, one bucket key per band
    estimated_jaccard(sig_a, sig_b)           # share of equal signature slots

Normalisation: text is lowercased (ASCII A-Z on the fly; texts with other characters first
through pyarrow's Unicode `utf8_lower`) and split into words on ASCII whitespace and control
bytes (<= 0x20). Punctuation stays inside its word, so "x+1" and "x-1" stay different words
(stripping it would make different math problems identical). Two texts are exact duplicates
when their word sequences are equal: case and whitespace differences are ignored. Word
shingles are `ngram` consecutive words; char shingles are `ngram` consecutive UTF-8 bytes of
the lowercased text with whitespace runs collapsed to one space. A text shorter than one
shingle is one shingle of all it has, so an empty text is one fixed shingle and empty texts
match each other. Nulls read as "".

Hashes (fixed: data.decontam saves word n-gram hashes): a word is hashed 8 bytes at a time
(its length folded into the first 8; words over 64 bytes through xxh3), a shingle is a
polynomial in its `ngram` word hashes (rolled along the text), mixed with the seed by
splitmix64; its top 32 bits x go through num_perm permutations pi_i(x) = a_i * x mod 2^32
with odd a_i, a bijection of the 32-bit space (datasketch 2's default "affine32" adds + b_i;
x is already well mixed, so that term buys no accuracy -- a test checks the estimate's spread
against sqrt(J(1-J)/P)).

Speed: the per-byte, per-word and per-shingle loops are numba kernels (compiled on first use
and cached on disk beside this file, so `import data.minhash` stays light), one pass over the
bytes for the words and one fused pass over the words for shingles and their minimum under
every permutation; nothing runs in Python per text. Texts go a few MB at a time, on `threads`
threads (the kernels release the GIL).
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_TEXT_CHUNK_BYTES = 4 << 20   # texts are sketched this many bytes at a time
_U = np.uint64
_GOLD = _U(0x9E3779B97F4A7C15)
_BASE = _U(0x2545F4914F6CDD1D)    # odd
_MIX1, _MIX2 = _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
_WORD_FINAL = _U(0xD6E8FEB86659FD93)
_ONES, _LOW7, _HIGH = _U(0x0101010101010101), _U(0x7F7F7F7F7F7F7F7F), _U(0x8080808080808080)
_GATHER = _U(0x0102040810204080)  # (bits at 8j) * _GATHER >> 56: those bits as one byte
_DEBRUIJN = _U(0x03F79D71B4CB0A89)
_CTZ = np.zeros(64, dtype=np.int64)  # count trailing zeros of x = 1 << i, by (x * _DEBRUIJN) >> 58
_CTZ[(np.left_shift(_U(1), np.arange(64, dtype=np.uint64)) * _DEBRUIJN) >> _U(58)] = np.arange(64)
_KERNELS: list[str] = []          # module functions that _compile swaps for their numba builds
_compile_lock = threading.Lock()


@dataclass
class Sketch:
    """Per-text results of `sketch`: None where that part was not asked for."""

    lengths: np.ndarray                  # characters per text
    exact_keys: np.ndarray | None        # (n, 2) uint64
    signatures: np.ndarray | None        # (n, num_perm) uint32


class _Scratch(threading.local):
    """Arrays reused from chunk to chunk, one set per thread (fresh pages cost more than the
    kernels that fill them)."""

    def get(self, name: str, size: int, dtype: Any) -> np.ndarray:
        have = self.__dict__.get(name)
        if have is None or len(have) < size:
            have = self.__dict__[name] = np.empty(size + size // 4, dtype=dtype)
        return have[:size]


def _kernel(fn: Any) -> Any:
    """Mark a function as a numba kernel (plain Python until `_compile` runs)."""
    _KERNELS.append(fn.__name__)
    return fn


def _compile() -> None:
    """Swap every kernel for numba.njit of it, once; machine code is cached beside this file."""
    with _compile_lock:
        if not _KERNELS:
            return
        import numba

        for name in _KERNELS:
            globals()[name] = numba.njit(cache=True, nogil=True)(globals()[name])
        _KERNELS.clear()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array."""
    x ^= x >> 30
    x *= _MIX1
    x ^= x >> 27
    x *= _MIX2
    x ^= x >> 31
    return x


def _seed_word(seed: int, salt: int) -> np.uint64:
    return _mix(np.array([(seed * 0x632BE59BD9B4E019 + salt) % (1 << 64)], dtype=np.uint64))[0]


def text_buffer(texts: Any) -> tuple[np.ndarray, np.ndarray]:
    """(bytes, offsets) of the UTF-8 texts as they are: text i is bytes[off[i]:off[i+1]]."""
    import pyarrow as pa

    if isinstance(texts, pa.ChunkedArray):
        arr = texts.combine_chunks()
    elif isinstance(texts, pa.Array):
        arr = texts
    else:
        values = texts.array if hasattr(texts, "array") else list(texts)
        try:
            arr = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise TypeError(f"texts must be strings (or None): {e}") from None
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
    if arr.type == pa.null():
        arr = arr.cast(pa.large_string())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        raise TypeError(f"texts must be strings (or None), got Arrow type {arr.type}")
    return _buffers(arr.cast(pa.large_string()).fill_null(""))


def _buffers(arr: Any) -> tuple[np.ndarray, np.ndarray]:
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return data[off[0]: off[-1]], off - off[0]


def _unicode_lower(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """(lowercased bytes, their offsets, characters per text) by pyarrow's `utf8_lower`, which
    may change byte lengths."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chars = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])[offsets]
    arr = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets),
                                           pa.py_buffer(data))
    low, low_off = _buffers(pc.utf8_lower(arr))
    return low, low_off, np.diff(chars)


def _chunks(offsets: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Runs [d0, d1) of consecutive items whose offsets span about `size` (at least one item)."""
    n = len(offsets) - 1
    cuts = np.searchsorted(offsets, np.arange(offsets[0], offsets[-1], size), side="right") - 1
    cuts = np.unique(np.concatenate([[0], np.clip(cuts, 0, n), [n]]))
    return [(int(a), int(b)) for a, b in itertools.pairwise(cuts) if b > a]


def word_hashes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every whitespace-separated word of text i = data[off[i]:off[i+1]] (words
    never run across texts), and per-text word offsets."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) and (offsets[0] < 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any()):
        raise ValueError(f"offsets must rise from 0 to at most len(data) = {len(data)}; pass "
                         "the (data, offsets) of text_buffer")
    return _word_hashes(data, offsets, False, _Scratch())


def _word_hashes(data: np.ndarray, offsets: np.ndarray, lower: bool,
                 scratch: _Scratch) -> tuple[np.ndarray, np.ndarray]:
    """word_hashes into `scratch`; lower: data is ASCII, lowercase A-Z on the way."""
    _compile()
    m = len(data)
    padded = scratch.get("padded", m + 80, np.uint8)
    padded[:m] = data
    padded[m:] = 0
    eight = np.ndarray((m + 72,), dtype="<u8", buffer=padded, strides=(1,))  # unaligned loads
    size = m // 2 + len(offsets)
    starts, ends = scratch.get("starts", size, np.int64), scratch.get("ends", size, np.int64)
    n_words = _word_spans(eight, m, offsets, starts, ends)
    starts, ends = starts[:n_words], ends[:n_words]
    tok = scratch.get("tok", n_words, np.uint64)
    long_words = _span_hashes(eight, starts, ends, lower, tok)
    if len(long_words):
        import xxhash

        for w in long_words:
            word = data[starts[w]: ends[w]].tobytes()
            tok[w] = xxhash.xxh3_64_intdigest(word.lower() if lower else word)
    return tok, np.searchsorted(starts, offsets)


@_kernel
def _word_spans(eight, m, offsets, starts, ends):
    """Number of words; their starts and ends go to the arrays given. From bit masks of 64
    bytes at a time (word bytes: > 32; text starts, where words are cut), walked with
    count-trailing-zeros: no branch per byte."""
    text_start = np.zeros((m >> 6) + 1, np.uint64)        # blocks cover positions 0..m
    for o in offsets[:-1]:
        text_start[o >> 6] |= _U(1) << _U(o & 63)
    n_s, n_e, carry = 0, 0, _U(0)
    for k in range(len(text_start)):
        word = _U(0)
        for j in range(8):  # high bit of each byte > 32 (any byte >= 128), gathered to 8 bits
            v = eight[64 * k + 8 * j]
            high = ((((v & _LOW7) + _U(0x5F) * _ONES) | v) & _HIGH) >> _U(7)
            word |= ((high * _GATHER) >> _U(56)) << _U(8 * j)
        if k == len(text_start) - 1:
            word &= (_U(1) << _U(m & 63)) - _U(1)
        before = (word << _U(1)) | carry                   # bit i: byte i-1 is a word byte
        carry = word >> _U(63)
        begin = word & (~before | text_start[k])
        finish = before & (~word | text_start[k])
        while begin:
            starts[n_s] = 64 * k + _CTZ[((begin & (~begin + _U(1))) * _DEBRUIJN) >> _U(58)]
            n_s += 1
            begin &= begin - _U(1)
        while finish:
            ends[n_e] = 64 * k + _CTZ[((finish & (~finish + _U(1))) * _DEBRUIJN) >> _U(58)]
            n_e += 1
            finish &= finish - _U(1)
    return n_s


@_kernel
def _span_hashes(eight, starts, ends, lower, tok):
    """tok[w]: hash of word w, 8 bytes at a time with its length folded into the first 8;
    returns the numbers of the words over 64 bytes (hashed by the caller)."""
    long_words = np.empty(len(starts), np.int64)
    n_long = 0
    for w in range(len(starts)):
        s, size = starts[w], ends[w] - starts[w]
        h = _word_part(eight[s], min(size, 8), lower) ^ (_U(size) * _GOLD)
        if size > 8:              # then fold in each further 8 bytes, up to 64
            for j in range(8, min(size, 64), 8):
                part = _word_part(eight[s + j], min(size - j, 8), lower)
                h = ((h ^ (h >> _U(29))) * _MIX1) ^ part
            if size > 64:
                long_words[n_long] = w
                n_long += 1
        h ^= h >> _U(32)
        tok[w] = h * _WORD_FINAL
    return long_words[:n_long].copy()


@_kernel
def _word_part(v, size, lower):
    """The low `size` (1..8) bytes of v, with ASCII A-Z lowercased if lower (ASCII bytes only)."""
    v &= ~_U(0) >> _U((64 - 8 * size) & 63)
    if lower:
        v |= ((v + _U(0x3F) * _ONES) & ~(v + _U(0x25) * _ONES) & _HIGH) >> _U(2)
    return v


@_kernel
def _mix1(x):
    x ^= x >> _U(30)
    x *= _MIX1
    x ^= x >> _U(27)
    x *= _MIX2
    return x ^ (x >> _U(31))


@_kernel
def _exact_keys(tok, tok_off, keys):
    """keys (n, 2): sum of tok[k] * B^(k - first) for two bases B, mixed with the word count."""
    for t in range(len(tok_off) - 1):
        a, b, pa, pb = _U(0), _U(0), _U(1), _U(1)
        for k in range(tok_off[t], tok_off[t + 1]):
            a += tok[k] * pa
            b += tok[k] * pb
            pa *= _BASE
            pb *= _GOLD
        size = _U(tok_off[t + 1] - tok_off[t])
        keys[t, 0] = _mix1(a ^ _mix1(size + _GOLD))
        keys[t, 1] = _mix1(b ^ _mix1(size + _GOLD + _U(1)))


@_kernel
def _signatures(tok, tok_off, ngram, seed_word, mult, sig):
    """sig (n, P) uint32: per text, the minimum over its shingles x of mult * x mod 2^32, where x
    is the top half of the mixed shingle hash (Horner over `ngram` tokens, rolled along). Four
    shingles go through the permutations together: one pass over the row per four."""
    n, p = len(tok_off) - 1, len(mult)
    row = np.empty(p, np.uint32)
    four = np.empty(4, np.uint32)
    lead = _U(1)                      # GOLD^(ngram-1): the weight of the token rolling out
    for _ in range(ngram - 1):
        lead *= _GOLD
    for t in range(n):
        row[:] = np.uint32(0xFFFFFFFF)
        s, e = tok_off[t], tok_off[t + 1]
        acc = _U(0)
        for j in range(ngram):        # the first shingle, or all of a shorter text (0-padded)
            acc *= _GOLD
            if s + j < e:
                acc += tok[s + j]
        i, held = s + ngram, 0
        while True:
            four[held] = np.uint32(_mix1(acc ^ seed_word) >> _U(32))
            held += 1
            if held == 4:
                x0, x1, x2, x3 = four[0], four[1], four[2], four[3]
                for k in range(p):
                    m = mult[k]
                    row[k] = min(row[k], min(min(np.uint32(m * x0), np.uint32(m * x1)),
                                             min(np.uint32(m * x2), np.uint32(m * x3))))
                held = 0
            if i >= e:
                break
            acc = (acc - tok[i - ngram] * lead) * _GOLD + tok[i]
            i += 1
        for q in range(held):
            x = four[q]
            for k in range(p):
                row[k] = min(row[k], np.uint32(mult[k] * x))
        sig[t] = row


def char_hashes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every byte (whitespace runs collapsed to one space), and per-text offsets."""
    space = data <= 32
    drop = np.zeros(len(data), dtype=bool)
    drop[1:] = space[1:] & space[:-1]
    drop[offsets[:-1][offsets[:-1] < len(data)]] = False  # a text's first byte is always kept
    kept = np.where(space, 32, data)[~drop]
    table = _mix(np.arange(256, dtype=np.uint64) + _GOLD)
    counts = np.concatenate([[0], np.cumsum(~drop)])
    return table[kept], counts[offsets]


def ngram_hashes(tok: np.ndarray, tok_off: np.ndarray, ngram: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every run of `ngram` tokens inside a text, and per-text offsets. A text
    with fewer tokens gets one hash of all its tokens (its whole text), so every text has one.
    The same hashes as the shingles of `sketch` (whose top 32 bits it permutes)."""
    lens = np.diff(tok_off)
    full = lens >= ngram
    counts = np.where(full, lens - ngram + 1, 1)
    sh_off = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty(sh_off[-1], dtype=np.uint64)
    if full.any():
        width = len(tok) - ngram + 1
        acc = tok[:width].copy()
        for j in range(1, ngram):  # Horner over the window: sum of tok[i+j] * G^(ngram-1-j)
            acc *= _GOLD
            acc += tok[j: width + j]
        valid = np.ones(width, dtype=bool)
        for k in range(1, ngram):  # windows starting k tokens before a text's end cross it
            e = tok_off[1:] - k
            valid[e[(e >= 0) & (e < width)]] = False
        in_full = np.ones(len(out), dtype=bool)
        in_full[sh_off[:-1][~full]] = False
        out[in_full] = acc[valid]
    if not full.all():
        start, n_tok = tok_off[:-1][~full], lens[~full]
        acc = np.zeros(len(start), dtype=np.uint64)
        for j in range(ngram):  # the same Horner over the text's tokens, padded with zeros
            acc *= _GOLD
            if len(tok):
                acc += np.where(j < n_tok, tok[np.minimum(start + j, len(tok) - 1)], 0)
        out[sh_off[:-1][~full]] = acc
    out ^= _seed_word(seed, 1)
    return _mix(out), sh_off


def permutations(num_perm: int, seed: int) -> np.ndarray:
    """The odd multipliers a_i of pi_i(x) = a_i * x mod 2^32, shape (num_perm,)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 1 << 32, num_perm, dtype=np.uint64) | 1).astype(np.uint32)


def _sketch_chunk(data: np.ndarray, off: np.ndarray, out: Sketch, scratch: _Scratch,
                  mult: np.ndarray, ngram: int, shingle: str, seed: int) -> None:
    """Fill `out` (views of the result's rows for these texts)."""
    ascii_only = not len(data) or data.max() < 128
    if ascii_only:
        out.lengths[:] = np.diff(off)
    else:
        data, off, out.lengths[:] = _unicode_lower(data, off)
    if out.exact_keys is not None or shingle == "word":
        tok, tok_off = _word_hashes(data, off, ascii_only, scratch)
        if out.exact_keys is not None:
            _exact_keys(tok, tok_off, out.exact_keys)
    if out.signatures is not None:
        if shingle == "char":
            if ascii_only:
                data = data | (((data - np.uint8(65)) < 26).view(np.uint8) << 5)
            tok, tok_off = char_hashes(data, off)
        _signatures(tok, tok_off, ngram, _seed_word(seed, 1), mult, out.signatures)


def sketch(texts: Any, *, num_perm: int = 128, ngram: int = 5,
           shingle: Literal["word", "char"] = "word", seed: int = 0,
           exact: bool = True, near: bool = True, threads: int = 1) -> Sketch:
    """Exact keys and/or MinHash signatures of `texts`, a few MB of text at a time (on `threads`
    threads: the kernels release the GIL, and the result does not depend on it)."""
    _compile()
    data, off = text_buffer(texts)
    n = len(off) - 1
    result = Sketch(lengths=np.empty(n, np.int64),
                    exact_keys=np.empty((n, 2), np.uint64) if exact else None,
                    signatures=np.empty((n, num_perm), np.uint32) if near else None)
    mult, scratch = permutations(num_perm, seed), _Scratch()

    def run(a: int, b: int) -> None:
        rows = Sketch(*(None if x is None else x[a:b] for x in
                        (result.lengths, result.exact_keys, result.signatures)))
        _sketch_chunk(data[off[a]: off[b]], off[a: b + 1] - off[a], rows, scratch, mult,
                      ngram, shingle, seed)

    jobs = _chunks(off, _TEXT_CHUNK_BYTES)
    if threads > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda job: run(*job), jobs))
    else:
        for job in jobs:
            run(*job)
    return result


def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimising the equal-weighted false-positive and
    false-negative areas under the LSH S-curve around `threshold` (datasketch's rule)."""
    best, best_err = (1, 1), np.inf
    lo, hi = np.linspace(0.0, threshold, 1001), np.linspace(threshold, 1.0, 1001)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - lo**r) ** b, lo)
            fn = np.trapezoid((1 - hi**r) ** b, hi)
            err = 0.5 * fp + 0.5 * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 bucket key per band: a hash of that band's `rows` signature values."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    _compile()
    keys = np.empty((len(sig), bands), dtype=np.uint64)
    _band_keys(np.ascontiguousarray(sig), rows, keys)
    return keys


@_kernel
def _band_keys(sig, rows, keys):
    """keys[i, b]: Horner over band b's signature values, plus b (the same values in two bands
    are different buckets), mixed."""
    for i in range(keys.shape[0]):
        for b in range(keys.shape[1]):
            h = _U(0)
            for j in range(b * rows, (b + 1) * rows):
                h = h * _GOLD + _U(sig[i, j])
            keys[i, b] = _mix1(h + _U(b))


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal slots between signatures (row-wise for 2-D inputs)."""
    return (np.asarray(a) == np.asarray(b)).mean(axis=-1)
