"""Near-duplicate detection: our MinHash (numba kernels) + LSH vs datasketch's MinHashLSH, one run.

    python bench/dedupe.py                 # 100,000 docs (datasketch timed on the first 10,000)
    python bench/dedupe.py --docs 200000 --ds-docs 20000
    python bench/dedupe.py --quick         # 1,000 docs in a few seconds: the smoke test

Data: random documents of 100-300 words drawn from a Zipf-like vocabulary, built in blocks of
--ds-docs documents. In each block about 5% of the originals get 1-3 planted copies: most with
0.5-2.5% of their words substituted, inserted or deleted, one in ten only re-cased and
re-spaced. A planted pair is (original, copy); its true Jaccard is computed exactly on the same
5-word shingles, and recall counts pairs with true Jaccard >= threshold that end in one cluster.
Precision: of all pairs of documents that share a cluster, the share that are planted relatives.

Both sides use the same shingles (lowercase, whitespace words, 5-grams), num_perm, threshold and
(bands, rows). datasketch: MinHash.update_batch + MinHashLSH query-then-insert per document and a
union-find over the hits, on block 0 only (it is slow), with its defaults and tuned (shared
permutations, xxh32); ours: `duplicate_groups` (exact + near, clusters) on all documents and on
block 0, on one thread and on --threads. Timing starts from a DataFrame column for ours and from
the same Python strings for datasketch; docs/s is given per CPU second (robust on a shared
machine) and per wall second. The ratios (ours on all docs, one thread / datasketch) come last,
the one against datasketch's defaults on the very last line.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.data.dedupe import DedupeConfig, duplicate_groups


def make_corpus(n_docs: int, block: int, seed: int) -> tuple[list[str], pd.DataFrame]:
    """Texts and planted pairs (orig, copy) as positions; copies stay inside their block."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.unique(["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(40_000)])
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    p /= p.sum()
    texts: list[str] = []
    pairs: list[tuple[int, int]] = []
    for start in range(0, n_docs, block):
        size = min(block, n_docs - start)
        docs = [list(vocab[rng.choice(len(vocab), rng.integers(100, 301), p=p)])
                for _ in range(size)]
        slots = rng.permutation(size)
        n_copies = int(size * 0.1)
        originals = rng.choice(slots[n_copies:], n_copies // 2, replace=False)
        targets = list(slots[:n_copies])
        for orig in originals:
            for _ in range(rng.integers(1, 4)):
                if not targets:
                    break
                t = targets.pop()
                docs[t] = _edit(docs[orig], rng, vocab)
                pairs.append((start + orig, start + t))
        texts += [" ".join(d) if isinstance(d, list) else d for d in docs]
    return texts, pd.DataFrame(pairs, columns=["a", "b"])


def _edit(words: list[str], rng: np.random.Generator, vocab: np.ndarray) -> str:
    if rng.random() < 0.1:  # exact after normalisation: case and spacing only
        return "  ".join(words).upper()
    w = list(words)
    for _ in range(max(1, round(rng.uniform(0.005, 0.025) * len(w)))):
        i, op = int(rng.integers(0, len(w))), rng.integers(0, 3)
        if op == 0:
            w[i] = str(rng.choice(vocab))
        elif op == 1:
            w.insert(i, str(rng.choice(vocab)))
        elif len(w) > 1:
            del w[i]
    return " ".join(w)


def shingles(text: str, n: int) -> list[bytes]:
    words = text.lower().split()
    if len(words) < n:
        return [" ".join(words).encode()]
    return [" ".join(words[i: i + n]).encode() for i in range(len(words) - n + 1)]


def true_jaccard(texts: list[str], pairs: pd.DataFrame, n: int) -> np.ndarray:
    out = []
    for a, b in zip(pairs["a"], pairs["b"]):
        sa, sb = set(shingles(texts[a], n)), set(shingles(texts[b], n))
        out.append(len(sa & sb) / len(sa | sb))
    return np.array(out)


def _timed(fn, *args) -> tuple[np.ndarray, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    labels = fn(*args)
    return labels, time.perf_counter() - wall, time.process_time() - cpu


def run_ours(texts: list[str], cfg: DedupeConfig) -> tuple[np.ndarray, float, float]:
    df = pd.DataFrame({"text": texts})
    return _timed(lambda: duplicate_groups(df, cfg, column="text")["dedupe_kept"].to_numpy())


def run_datasketch(texts: list[str], cfg: DedupeConfig,
                   tuned: bool) -> tuple[np.ndarray, float, float]:
    """Query-then-insert per document and union-find over the hits. tuned: one set of
    permutations shared by all MinHash objects and xxhash's xxh32 as hashfunc (datasketch's
    own advice for speed); otherwise datasketch's defaults (sha1, permutations per object)."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    bands, rows = cfg.lsh_params()
    kwargs: dict = {}
    if tuned:
        kwargs = {"permutations": MinHash(num_perm=cfg.num_perm, seed=cfg.seed).permutations,
                      "scheme": "affine32", "hashfunc": xxhash.xxh32_intdigest}

    def run() -> np.ndarray:
        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=(bands, rows))
        parent = list(range(len(texts)))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for i, text in enumerate(texts):
            m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, **kwargs)
            m.update_batch(shingles(text, cfg.ngram))
            for j in lsh.query(m):
                parent[find(i)] = find(j)
            lsh.insert(i, m)
        return np.array([find(i) for i in range(len(texts))])

    return _timed(run)


def scores(labels: np.ndarray, pairs: pd.DataFrame, jac: np.ndarray, threshold: float) -> dict:
    """Recall of planted pairs (true J >= threshold), per J band, and pair precision."""
    inside = (pairs["a"] < len(labels)) & (pairs["b"] < len(labels))
    p, j = pairs[inside], jac[inside.to_numpy()]
    found = labels[p["a"]] == labels[p["b"]]
    hit = found[j >= threshold]
    bands = {f"[{lo:.2f},{hi:.2f})": found[(j >= lo) & (j < hi)].mean()
             for lo, hi in ((threshold, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01))
             if ((j >= lo) & (j < hi)).any()}
    family = np.arange(len(labels))
    fam_edges = pd.DataFrame({"a": p["a"], "b": p["b"]})
    family[fam_edges["b"].to_numpy()] = fam_edges["a"].to_numpy()
    both = pd.DataFrame({"c": labels, "f": family})
    pairs_in = lambda s: int((s * (s - 1) // 2).sum())
    clustered = pairs_in(both.groupby("c").size())
    related = pairs_in(both.groupby(["c", "f"]).size())
    return {"recall": hit.mean(), "n": len(hit), "by_j": bands,
            "precision": related / clustered if clustered else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--ds-docs", type=int, default=10_000, help="datasketch subsample (block 0)")
    ap.add_argument("--quick", action="store_true", help="1,000 docs, datasketch on 500")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="also time ours on this many threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, m = (1_000, 500) if args.quick else (args.docs, min(args.ds_docs, args.docs))
    cfg = DedupeConfig(threshold=args.threshold, num_perm=args.num_perm, seed=args.seed,
                       columns=["text"])
    texts, pairs = make_corpus(n, m, args.seed)
    jac = true_jaccard(texts, pairs, cfg.ngram)
    print(f"corpus: {n} docs, {len(pairs)} planted pairs ({(jac >= cfg.threshold).sum()} with "
          f"true J >= {cfg.threshold}); shingles: {cfg.ngram} words; num_perm {cfg.num_perm}; "
          f"(bands, rows) {cfg.lsh_params()}; ours verifies pairs: {cfg.verify}")
    run_ours(texts[:200], cfg)  # warm caches and imports
    runs = {
        "datasketch": (m, *run_datasketch(texts[:m], cfg, tuned=False)),
        "datasketch-tuned": (m, *run_datasketch(texts[:m], cfg, tuned=True)),
        "ours": (m, *run_ours(texts[:m], cfg)),
        "ours, all docs": (n, *run_ours(texts, cfg)),
    }
    if args.threads > 1:
        threaded = cfg.model_copy(update={"threads": args.threads})
        runs[f"ours, all docs, {args.threads} threads"] = (n, *run_ours(texts, threaded))
    for name, (docs, labels, wall, cpu) in runs.items():
        s = scores(labels, pairs, jac, cfg.threshold)
        by_j = " ".join(f"{k}:{v:.3f}" for k, v in s["by_j"].items())
        print(f"{name:32s} {docs:>7d} docs  {docs / cpu:>8.0f} docs/s cpu  {docs / wall:>8.0f} "
              f"docs/s wall  recall {s['recall']:.4f} (of {s['n']})  precision "
              f"{s['precision']:.4f}  recall by true J: {by_j}")
    ours = runs["ours, all docs"]
    for base in ("datasketch-tuned", "datasketch"):
        ref = runs[base]
        print(f"ratio ours/{base} docs/s: cpu {(ours[0] / ours[3]) / (ref[0] / ref[3]):.1f}x, "
              f"wall {(ours[0] / ours[2]) / (ref[0] / ref[2]):.1f}x")


if __name__ == "__main__":
    main()
