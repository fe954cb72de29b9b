"""Near-duplicate detection against what users would pick instead: rensa and tuned datasketch.

    .venv/bin/python bench/dedupe_peers.py               # 20,000 docs, 3 interleaved repeats
    .venv/bin/python bench/dedupe_peers.py --docs 50000 --repeats 5
    .venv/bin/python bench/dedupe_peers.py --quick       # 1,000 docs, one repeat: the smoke test

Corpus, planted near-duplicates, true Jaccard and the recall/precision scoring are bench/dedupe.py's
(imported, not copied). Every side gets the same Python strings, the same shingles (lowercase
whitespace words, 5-grams), num_perm and threshold, and ends in clusters (a label per document);
recall counts the planted pairs with true Jaccard >= threshold that share a cluster.

Sides (one thread each; time is CPU seconds of this process, so a busy machine hurts little):
- ours: `duplicate_groups` (exact + near, clusters, from a DataFrame column), bands x rows by
  datasketch's rule (9 x 13 for 0.8 / 128, our default), and at each of rensa's bands x rows.
- rensa B: rensa's bulk path as its README suggests for throughput: shingles built in Python,
  `RMinHash.from_token_sets`, `RMinHashLSH.insert_many` + `query_all`, union-find over the hits.
  rensa needs bands dividing num_perm, so 9 x 13 is impossible at 128; it runs with 8 x 16 (fewer
  candidates, lower recall) and 16 x 8 (more candidates, higher recall). The ratio compares rensa
  at its best recall with ours at the same bands x rows (the line above it says whether our recall
  is the same or better there).
  Also printed: rensa's sketch+LSH time alone, shingles excluded (the part in Rust).
- datasketch-tuned: shared permutations, xxh32 (bench/dedupe.py's run_datasketch), on --ds-docs.
Sides run interleaved --repeats times; the best (least CPU) of each is kept.
Last lines: `ratio ours/datasketch-tuned ...` then `ratio <ours/rensa docs per CPU second>`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import dedupe as base

from distill.data.dedupe import DedupeConfig, duplicate_groups


def _union_find(n: int, hits) -> np.ndarray:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, js in enumerate(hits):
        for j in js:
            if j != i:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(n)])


def run_rensa(texts: list[str], cfg: DedupeConfig, bands: int) -> tuple[np.ndarray, float, float, float]:
    """Labels, wall s, CPU s, and CPU s of the Rust part alone (sketch + LSH)."""
    from rensa import RMinHash, RMinHashLSH

    wall, cpu = time.perf_counter(), time.process_time()
    token_sets = [base.shingles(t, cfg.ngram) for t in texts]
    rust = time.process_time()
    sketches = RMinHash.from_token_sets(token_sets, cfg.num_perm, cfg.seed)
    lsh = RMinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, num_bands=bands)
    lsh.insert_many(sketches)
    hits = lsh.query_all(sketches)
    rust = time.process_time() - rust
    labels = _union_find(len(texts), hits)
    return labels, time.perf_counter() - wall, time.process_time() - cpu, rust


def run_ours(texts: list[str], cfg: DedupeConfig) -> tuple[np.ndarray, float, float]:
    df = pd.DataFrame({"text": texts})
    wall, cpu = time.perf_counter(), time.process_time()
    labels = duplicate_groups(df, cfg, column="text")["dedupe_kept"].to_numpy()
    return labels, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--ds-docs", type=int, default=5_000, help="datasketch-tuned on the first N")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1,000 docs (datasketch 500), 1 repeat")
    args = ap.parse_args(argv)
    n, m, reps = ((1_000, 500, 1) if args.quick
                  else (args.docs, min(args.ds_docs, args.docs), args.repeats))
    cfg = DedupeConfig(threshold=args.threshold, num_perm=args.num_perm, seed=args.seed,
                       columns=["text"])
    texts, pairs = base.make_corpus(n, m, args.seed)
    jac = base.true_jaccard(texts, pairs, cfg.ngram)
    rensa_bands = [b for b in (cfg.num_perm // 16, cfg.num_perm // 8)
                   if b >= 1 and cfg.num_perm % b == 0]
    print(f"corpus: {n} docs, {len(pairs)} planted pairs ({int((jac >= cfg.threshold).sum())} with "
          f"true J >= {cfg.threshold}); shingles {cfg.ngram} words; num_perm {cfg.num_perm}; "
          f"ours (bands, rows) {cfg.lsh_params()}; rensa bands {rensa_bands}; repeats {reps}")
    run_ours(texts[:200], cfg)          # numba compile, imports
    run_rensa(texts[:200], cfg, rensa_bands[0])
    best: dict[str, tuple] = {}

    def keep(name: str, docs: int, result: tuple) -> None:
        if name not in best or result[2] < best[name][3]:
            best[name] = (docs, *result)

    banded = {b: cfg.model_copy(update={"bands": b, "rows": cfg.num_perm // b}) for b in rensa_bands}
    for _ in range(reps):
        keep("ours", n, run_ours(texts, cfg))
        for b in rensa_bands:
            keep(f"ours {b}x{cfg.num_perm // b}", n, run_ours(texts, banded[b]))
            keep(f"rensa {b}x{cfg.num_perm // b}", n, run_rensa(texts, cfg, b))
        keep("datasketch-tuned", m, base.run_datasketch(texts[:m], cfg, tuned=True))
    load = os.getloadavg()
    rows = {}
    for name, (docs, labels, wall, cpu, *rust) in best.items():
        s = base.scores(labels, pairs, jac, cfg.threshold)
        rows[name] = (docs / cpu, s["recall"])
        extra = f"  (Rust part alone {docs / rust[0]:.0f} docs/s cpu)" if rust else ""
        print(f"{name:18s} {docs:>7d} docs  {docs / cpu:>9.0f} docs/s cpu  {docs / wall:>9.0f} "
              f"docs/s wall  recall {s['recall']:.4f} (of {s['n']})  precision "
              f"{s['precision']:.4f}{extra}")
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
          f"{os.cpu_count()} CPUs")
    print(f"ratio ours/datasketch-tuned docs/s cpu: {rows['ours'][0] / rows['datasketch-tuned'][0]:.1f}x"
          f" (recall {rows['ours'][1]:.4f} vs {rows['datasketch-tuned'][1]:.4f})")
    # The peer: rensa at its best recall; ours at the same bands x rows must match that recall.
    peer = max((k for k in rows if k.startswith("rensa")), key=lambda k: (rows[k][1], rows[k][0]))
    mine = peer.replace("rensa", "ours")
    print(f"peer: {peer} (recall {rows[peer][1]:.4f}) vs {mine} (recall {rows[mine][1]:.4f}"
          f"{'' if rows[mine][1] >= rows[peer][1] - 0.005 else ', LOWER'})")
    print(f"ratio {rows[mine][0] / rows[peer][0]:.2f}")


if __name__ == "__main__":
    main()
