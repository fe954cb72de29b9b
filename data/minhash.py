"""MinHash signatures, exact-text keys and LSH band keys for a whole batch of texts, in numpy.

    sk = sketch(texts, num_perm=128, ngram=5, shingle="word", seed=0)
    sk.signatures      # (n, 128) uint32 MinHash signatures
    sk.exact_keys      # (n, 2) uint64: equal rows <=> equal normalised text (128-bit hash)
    b, r = optimal_bands(0.8, 128)            # (9, 13): the same search as datasketch's MinHashLSH
    keys = band_keys(sk.signatures, b, r)     # (n, b) uint64, one bucket key per band
    estimated_jaccard(sig_a, sig_b)           # share of equal signature slots

Normalisation: text is lowercased (ASCII with a byte rule; texts with other characters through
pyarrow's Unicode `utf8_lower`) and split into words on ASCII whitespace and control bytes (<=
0x20). Punctuation stays inside its word, so "x+1" and "x-1" stay different words (stripping it
would make different math problems identical). Two texts are exact duplicates when their word
sequences are equal: case and whitespace differences are ignored. Word shingles are `ngram`
consecutive words; char shingles are `ngram` consecutive UTF-8 bytes of the lowercased text with
whitespace runs collapsed to one space. A text shorter than one shingle is one shingle of all it
has, so an empty text is one fixed shingle and empty texts match each other. Nulls read as "".

Speed: nothing runs in Python per text or per shingle. Word borders come from one pass over the
byte buffer, words are hashed 8 bytes at a time (unaligned uint64 loads), shingles combine
`ngram` word hashes, and the num_perm permutations are pi_i(x) = a_i * x mod 2^32 with odd a_i,
a bijection of the 32-bit shingle-hash space (datasketch 2's default "affine32" scheme adds + b_i;
x is already a well-mixed hash, so that term buys no accuracy -- a test checks the estimate's
spread against sqrt(J(1-J)/P) -- and would cost a third more time). Each chunk of shingles is
one (P, chunk) product, reduced per text with np.minimum.reduceat; that kernel is about a third
of the time. `threads` runs chunks in parallel (numpy releases the GIL).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

_TEXT_CHUNK_BYTES = 4 << 20   # texts are tokenised this many bytes at a time
_SHINGLE_CHUNK = 4096         # shingles per (P, chunk) product: 2 MB at P=128, stays in cache
_GOLD = 0x9E3779B97F4A7C15
_BASE = 0x2545F4914F6CDD1D    # odd
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=np.uint64)  # low i bytes
_powers_cache: dict[int, np.ndarray] = {}


@dataclass
class Sketch:
    """Per-text results of `sketch`: None where that part was not asked for."""

    lengths: np.ndarray                  # characters per text
    exact_keys: np.ndarray | None        # (n, 2) uint64
    signatures: np.ndarray | None        # (n, num_perm) uint32


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array."""
    x ^= x >> 30
    x *= 0xBF58476D1CE4E5B9
    x ^= x >> 27
    x *= 0x94D049BB133111EB
    x ^= x >> 31
    return x


def _powers(base: int, n: int) -> np.ndarray:
    """base**i mod 2^64 for i < n (cached, grown on demand)."""
    have = _powers_cache.get(base)
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        have = np.full(size, base, dtype=np.uint64)
        have[0] = 1
        np.cumprod(have, out=have)
        _powers_cache[base] = have
    return have[:n]


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


def lowercase(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lowercased bytes, their offsets, characters per text): a byte table when all is ASCII,
    pyarrow's Unicode `utf8_lower` otherwise (which may change byte lengths)."""
    if not len(data) or data.max() < 128:
        upper = (data - np.uint8(65)) < 26                    # A-Z, as uint8 arithmetic
        return data | (upper.view(np.uint8) << 5), offsets, np.diff(offsets)
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
    """64-bit hash of every whitespace-separated word, and per-text word offsets."""
    m = len(data)
    word = np.zeros(m + 2, dtype=np.int8)
    np.greater(data, 32, out=word[1:-1].view(np.bool_))
    bounds = np.flatnonzero(word[1:] != word[:-1])   # alternating word start, word end
    starts, ends = bounds[0::2], bounds[1::2]
    inner = np.unique(offsets[(offsets > 0) & (offsets < m)])
    glued = inner[(word[inner + 1] == 1) & (word[inner] == 1)]  # a word runs across a text border
    if len(glued):
        starts = np.sort(np.concatenate([starts, glued]), kind="stable")
        ends = np.sort(np.concatenate([ends, glued]), kind="stable")
    return span_hashes(data, starts, ends), np.searchsorted(starts, offsets)


def span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hash of each byte span data[s:e], read 8 bytes at a time (unaligned uint64 loads);
    spans over 64 bytes (rare: URLs, long formulas) go through xxhash one by one."""
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    padded[: len(data)] = data
    eight = np.ndarray((len(data) + 1,), dtype="<u8", buffer=padded, strides=(1,))
    lens = ends - starts
    h = eight[starts]
    h &= _MASKS[np.minimum(lens, 8)]
    h ^= lens.astype(np.uint64) * np.uint64(_GOLD)
    idx = np.flatnonzero(lens > 8)
    for k in range(1, 8):            # bytes 8k .. 8k+7 of the spans that have them
        if not len(idx):
            break
        part = eight[starts[idx] + 8 * k] & _MASKS[np.minimum(lens[idx] - 8 * k, 8)]
        h[idx] = _fold(h[idx]) ^ part
        idx = idx[lens[idx] > 8 * (k + 1)]
    h ^= h >> 32                    # cheap: shingle hashes get the full mixer
    h *= 0xD6E8FEB86659FD93
    if len(idx):
        import xxhash

        h[idx] = [xxhash.xxh3_64_intdigest(data[starts[i]: ends[i]].tobytes()) for i in idx]
    return h


def _fold(x: np.ndarray) -> np.ndarray:
    return (x ^ (x >> 29)) * np.uint64(0xBF58476D1CE4E5B9)


def char_hashes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every byte (whitespace runs collapsed to one space), and per-text offsets."""
    space = data <= 32
    drop = np.zeros(len(data), dtype=bool)
    drop[1:] = space[1:] & space[:-1]
    drop[offsets[:-1][offsets[:-1] < len(data)]] = False  # a text's first byte is always kept
    kept = np.where(space, 32, data)[~drop]
    table = _mix(np.arange(256, dtype=np.uint64) + np.uint64(_GOLD))
    counts = np.concatenate([[0], np.cumsum(~drop)])
    return table[kept], counts[offsets]


def shingle_hashes(tok: np.ndarray, tok_off: np.ndarray, ngram: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hash of every `ngram`-token shingle (one per text shorter than that), and offsets."""
    h, sh_off = ngram_hashes(tok, tok_off, ngram, seed)
    return (h >> 32).astype(np.uint32), sh_off


def ngram_hashes(tok: np.ndarray, tok_off: np.ndarray, ngram: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash of every run of `ngram` tokens inside a text, and per-text offsets. A text
    with fewer tokens gets one hash of all its tokens (its whole text), so every text has one."""
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
    """The odd multipliers a_i of pi_i(x) = a_i * x mod 2^32, shape (num_perm, 1)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 1 << 32, num_perm, dtype=np.uint64) | 1).astype(np.uint32)[:, None]


def minhash(h: np.ndarray, sh_off: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """(n, P) uint32 minimum of pi_i over each text's shingles (every text has at least one)."""
    n, p = len(sh_off) - 1, len(mult)
    sig = np.empty((n, p), dtype=np.uint32)
    buf = np.empty((p, _SHINGLE_CHUNK), dtype=np.uint32)
    for d0, d1 in _chunks(sh_off, _SHINGLE_CHUNK):
        s0, s1 = sh_off[d0], sh_off[d1]
        if s1 - s0 > buf.shape[1]:
            buf = np.empty((p, s1 - s0), dtype=np.uint32)
        prod = buf[:, : s1 - s0]
        np.multiply(mult, h[None, s0:s1], out=prod)
        sig[d0:d1] = np.minimum.reduceat(prod, sh_off[d0:d1] - s0, axis=1).T
    return sig


def exact_keys(tok: np.ndarray, tok_off: np.ndarray) -> np.ndarray:
    """(n, 2) uint64 hash of each text's word sequence: two polynomials over its word hashes,
    sum of tok[k] * B^(k - first), from global powers and one inverse power per text."""
    lens = np.diff(tok_off)
    nonempty = lens > 0
    first = tok_off[:-1][nonempty]
    keys = np.empty((len(lens), 2), dtype=np.uint64)
    for c, base in enumerate((_BASE, _GOLD)):
        col = np.zeros(len(lens), dtype=np.uint64)
        if nonempty.any():
            sums = np.add.reduceat(tok * _powers(base, len(tok)), first)
            col[nonempty] = sums * _powers(pow(base, -1, 1 << 64), len(tok))[first]
        keys[:, c] = _mix(col ^ _mix(lens.astype(np.uint64) + np.uint64(_GOLD + c)))
    return keys


def _sketch_chunk(data: np.ndarray, off: np.ndarray, mult: np.ndarray, ngram: int,
                  shingle: str, seed: int, exact: bool, near: bool) -> tuple:
    data, off, chars = lowercase(data, off)
    keys = sig = None
    if exact or shingle == "word":
        tok, tok_off = word_hashes(data, off)
        keys = exact_keys(tok, tok_off) if exact else None
    if near:
        if shingle == "char":
            tok, tok_off = char_hashes(data, off)
        sig = minhash(*shingle_hashes(tok, tok_off, ngram, seed), mult)
    return chars, keys, sig


def sketch(texts: Any, *, num_perm: int = 128, ngram: int = 5,
           shingle: Literal["word", "char"] = "word", seed: int = 0,
           exact: bool = True, near: bool = True, threads: int = 1) -> Sketch:
    """Exact keys and/or MinHash signatures of `texts`, a few MB of text at a time (on `threads`
    threads: numpy releases the GIL, and the result does not depend on it)."""
    data, off = text_buffer(texts)
    mult = permutations(num_perm, seed)
    jobs = [(data[off[a]: off[b]], off[a: b + 1] - off[a]) for a, b in _chunks(off, _TEXT_CHUNK_BYTES)]
    args = (mult, ngram, shingle, seed, exact, near)
    if threads > 1 and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(lambda job: _sketch_chunk(*job, *args), jobs))
    else:
        parts = [_sketch_chunk(*job, *args) for job in jobs]
    chars = [np.zeros(0, np.int64)] + [p[0] for p in parts]
    keys = [np.zeros((0, 2), np.uint64)] + [p[1] for p in parts]
    sigs = [np.zeros((0, num_perm), np.uint32)] + [p[2] for p in parts]
    return Sketch(lengths=np.concatenate(chars),
                  exact_keys=np.concatenate(keys) if exact else None,
                  signatures=np.concatenate(sigs) if near else None)


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
    block = sig[:, : bands * rows].reshape(len(sig), bands, rows)
    keys = np.zeros((len(sig), bands), dtype=np.uint64)
    for j in range(rows):
        keys *= _GOLD
        keys += block[:, :, j]
    keys += np.arange(bands, dtype=np.uint64)  # the same rows in two bands are different buckets
    return _mix(keys)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal slots between signatures (row-wise for 2-D inputs)."""
    return (np.asarray(a) == np.asarray(b)).mean(axis=-1)
