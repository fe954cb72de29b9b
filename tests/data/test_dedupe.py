"""Exact and near-duplicate flags: rules, MinHash accuracy, LSH parameters, Ray equals local."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.data import minhash
from distill.data.dedupe import DedupeConfig, duplicate_groups, flag_duplicates, use_ray
from distill.data.minhash import (
    estimated_jaccard,
    ngram_hashes,
    optimal_bands,
    permutations,
    sketch,
    text_buffer,
    word_hashes,
)
from distill.pipeline.errors import DistillError

REPO = Path(__file__).resolve().parents[2]


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [f"w{i}" for i in rng.integers(0, 1_000_000, n)]


def _shingle_set(words: list[str], n: int = 5) -> set[tuple[str, ...]]:
    return {tuple(words[i: i + n]) for i in range(len(words) - n + 1)}


def test_exact_ignores_case_and_spacing_but_not_punctuation():
    df = pd.DataFrame({"problem": ["Compute 3+4.", "compute   3+4.", "Compute 3*4.",
                                   "COMPUTE\n3+4.", None, "", "x"]},
                      index=["a", "b", "c", "d", "e", "f", "g"])
    reasons = flag_duplicates(df, DedupeConfig(near=False), column="problem")
    assert reasons.index.equals(df.index)
    assert reasons.to_dict() == {"a": None, "b": "duplicate_exact", "c": None,
                                 "d": "duplicate_exact", "e": None, "f": "duplicate_exact",
                                 "g": None}


def _answers() -> pd.DataFrame:
    long = " ".join(f"step {i} adds {i} to the running total and checks it" for i in range(30))
    return pd.DataFrame({
        "prompt_id": ["sub", "add", "add", "sub", "mul", "mul"],
        "text": ["The answer is 22.", "The answer is 22.", "the answer is  22.", long,
                 long, "The answer is 22."],
        "order": [5, 0, 1, 3, 2, 4]}, index=list("abcdef"))


def test_within_keeps_duplicates_apart_across_groups():
    df, cfg = _answers(), DedupeConfig(columns=["text"], within="prompt_id")
    # 30 - 8 and 11 + 11 are both 22: the same answer to another prompt is no duplicate
    assert flag_duplicates(df, cfg, column="text", order_column="order").to_dict() == {
        "a": None, "b": None, "c": "duplicate_exact", "d": None, "e": None, "f": None}
    across = flag_duplicates(df, DedupeConfig(columns=["text"]), column="text",
                             order_column="order")
    assert across.notna().tolist() == [True, False, True, True, False, True]


def test_min_chars_leaves_short_texts_out():
    df = _answers()
    cfg = DedupeConfig(columns=["text"], min_chars=100)
    out = duplicate_groups(df, cfg, column="text", order_column="order")
    assert out["dedupe_reason"].to_dict() == {"a": None, "b": None, "c": None,
                                              "d": "duplicate_exact", "e": None, "f": None}
    assert out["dedupe_kept"].tolist() == list("abceef")


def test_keep_rules_pick_first_longest_shortest():
    df = pd.DataFrame({"t": ["same text here", "SAME  text   here", "same text here ",
                             "other"], "order": [3, 1, 2, 0]})
    cfg = DedupeConfig(near=False)
    assert flag_duplicates(df, cfg, column="t").isna().tolist() == [True, False, False, True]
    by_order = flag_duplicates(df, cfg, column="t", order_column="order")
    assert by_order.isna().tolist() == [False, True, False, True]
    longest = flag_duplicates(df, cfg.model_copy(update={"keep": "longest"}), column="t")
    assert longest.isna().tolist() == [False, True, False, True]
    shortest = duplicate_groups(df, cfg.model_copy(update={"keep": "shortest"}), column="t")
    assert shortest["dedupe_reason"].isna().tolist() == [True, False, False, True]
    assert shortest["dedupe_kept"].tolist() == [0, 0, 0, 3]


def test_near_duplicates_flagged_and_unrelated_texts_kept():
    rng = np.random.default_rng(0)
    base = [_words(rng, 120) for _ in range(40)]
    texts = [" ".join(w) for w in base]
    edited = list(base[3])
    edited[60] = "changed"          # one word: 5 of 116 shingles differ, Jaccard 0.92
    texts.append(" ".join(edited))
    shuffled = list(base[5])
    rng.shuffle(shuffled)           # same words, different order: shingles differ
    texts.append(" ".join(shuffled))
    df = pd.DataFrame({"text": texts})
    groups = duplicate_groups(df, DedupeConfig(), column="text")
    flagged = groups.index[groups["dedupe_reason"].notna()].tolist()
    assert flagged == [40]
    assert groups.loc[40, "dedupe_reason"] == "duplicate_near"
    assert groups.loc[40, "dedupe_kept"] == 3


def test_exact_duplicate_of_a_near_duplicate_joins_its_cluster():
    rng = np.random.default_rng(1)
    w = _words(rng, 100)
    near = list(w)
    near[50] = "zz"
    texts = [" ".join(w), " ".join(near), " ".join(near).upper()]
    groups = duplicate_groups(pd.DataFrame({"t": texts}), DedupeConfig(), column="t")
    assert groups["dedupe_reason"].tolist() == [None, "duplicate_near", "duplicate_exact"]
    assert groups["dedupe_kept"].tolist() == [0, 0, 0]


def test_real_r1_traces_problems_repeat_and_responses_do_not():
    fixtures = REPO / "tests" / "fixtures" / "r1traces"
    df = pd.concat([pd.read_json(f, lines=True) for f in sorted(fixtures.glob("*.jsonl"))],
                   ignore_index=True)
    assert flag_duplicates(df, DedupeConfig(), column="problem").value_counts().to_dict() == {
        "duplicate_exact": 20}
    words = df.loc[3, "full_response"].split(" ")
    words[len(words) // 2] = "CHANGED"
    resubmitted = pd.concat([df, pd.DataFrame({"full_response": [" ".join(words[:-20])]})],
                            ignore_index=True)
    reasons = flag_duplicates(resubmitted, DedupeConfig(), column="full_response")
    assert reasons.to_dict() == {**{i: None for i in range(40)}, 40: "duplicate_near"}


def test_verify_drops_bucket_pairs_below_threshold():
    from distill.data.dedupe import bucket_pairs

    sig = np.zeros((3, 128), dtype=np.uint32)
    sig[1, :40] = 1                  # estimated Jaccard with row 0: 88/128 = 0.69
    sig[2, :10] = 1                  # 118/128 = 0.92
    rows = {"band": np.zeros(3, int), "key": np.zeros(3, np.uint64),
            "key2": np.zeros(3, np.uint64), "doc": np.arange(3)}
    rank, primary = np.arange(3), np.zeros(3, int)
    u, v, exact = bucket_pairs(rows, rank, primary, sig, DedupeConfig())
    assert (u.tolist(), v.tolist(), exact.tolist()) == ([0, 0], [1, 2], [False, False])
    u, v, _ = bucket_pairs(rows, rank, primary, sig, DedupeConfig(verify=True))
    assert (u.tolist(), v.tolist()) == ([0], [2])


def test_minhash_estimate_is_unbiased_with_the_theoretical_spread():
    rng = np.random.default_rng(2)
    errors, theory = [], []
    for _ in range(150):
        a = _words(rng, 150)
        b = list(a)
        for i in rng.choice(150, int(rng.integers(1, 12)), replace=False):
            b[i] = "x" + b[i]
        sk = sketch([" ".join(a), " ".join(b)], num_perm=128, near=True, exact=False)
        sa, sb = _shingle_set(a), _shingle_set(b)
        j = len(sa & sb) / len(sa | sb)
        errors.append(estimated_jaccard(sk.signatures[0], sk.signatures[1]) - j)
        theory.append(np.sqrt(j * (1 - j) / 128))
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.01
    assert 0.75 < errors.std() / np.sqrt(np.mean(np.square(theory))) < 1.25


def test_optimal_bands_match_datasketch():
    from datasketch import MinHashLSH

    for threshold, num_perm in [(0.8, 128), (0.5, 128), (0.9, 256), (0.7, 64)]:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        assert optimal_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_words_never_run_across_text_borders_and_chunks_do_not_matter(monkeypatch):
    texts = ["alpha beta", "gamma", "delta epsilon zeta", "", "eta theta iota kappa lambda mu",
             "a-very-long-token-that-runs-past-sixty-four-bytes-of-text-without-any-space-x",
             "a-very-long-token-that-runs-past-sixty-four-bytes-of-text-without-any-space-y",
             "ÉCOLE straße", "école STRASSE", "école straße"]
    whole = sketch(texts)
    alone = [sketch([t]) for t in texts]
    assert np.array_equal(whole.exact_keys, np.concatenate([s.exact_keys for s in alone]))
    assert np.array_equal(whole.signatures, np.concatenate([s.signatures for s in alone]))
    assert not np.array_equal(sketch(["alphabeta"]).exact_keys[0], whole.exact_keys[0])
    keys = [tuple(k) for k in whole.exact_keys]
    assert keys[5] != keys[6] and keys[7] == keys[9] and keys[8] != keys[9]
    assert whole.lengths.tolist() == [len(t) for t in texts]
    monkeypatch.setattr(minhash, "_TEXT_CHUNK_BYTES", 16)
    for threads in (1, 3):
        small = sketch(texts, threads=threads)
        assert np.array_equal(small.exact_keys, whole.exact_keys)
        assert np.array_equal(small.signatures, whole.signatures)


def _reference_word_hash(word: bytes) -> int:
    """The documented word hash, one word at a time in Python."""
    import xxhash

    if len(word) > 64:
        return xxhash.xxh3_64_intdigest(word)
    mask = (1 << 64) - 1
    h = int.from_bytes(word[:8], "little") ^ (len(word) * 0x9E3779B97F4A7C15 & mask)
    for j in range(8, len(word), 8):
        h = ((h ^ (h >> 29)) * 0xBF58476D1CE4E5B9 & mask) ^ int.from_bytes(word[j: j + 8], "little")
    h ^= h >> 32
    return h * 0xD6E8FEB86659FD93 & mask


def test_word_hashes_follow_the_reference_across_blocks_and_borders():
    # data.decontam saves these hashes: they must not change (nor differ from the reference)
    data, off = text_buffer(["compute x+1", "a" * 70])
    assert [hex(int(h)) for h in word_hashes(data, off)[0]] == [
        "0x944dba05c20b42b5", "0xc785250e917bb271", "0xe35bc6ab756b0262"]
    rng = np.random.default_rng(5)
    alphabet = list("abcXYZ+{}-") + [" ", "  ", "\t", "\n", "\x00", "é", "Straße"]
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 60))) + "q" * rng.integers(0, 90)
             for _ in range(400)]             # words up to ~150 bytes; texts meet mid-word
    data, off = text_buffer(texts)
    tok, tok_off = word_hashes(data, off)
    expected = [[_reference_word_hash(w) for w in re.split(rb"[\x00-\x20]+", t.encode()) if w]
                for t in texts]
    assert [t.tolist() for t in np.split(tok, tok_off[1:-1])] == expected
    ascii_texts = [t.encode("ascii", "ignore") for t in texts]
    low = text_buffer([t.decode().lower() for t in ascii_texts])
    upper = text_buffer([t.decode() for t in ascii_texts])
    lowered = minhash._word_hashes(*upper, True, minhash._Scratch())  # A-Z lowered on the way
    assert np.array_equal(lowered[0], word_hashes(*low)[0])


@pytest.mark.parametrize(("ngram", "shingle"), [(1, "word"), (3, "word"), (5, "word"),
                                                 (9, "char")])
def test_signatures_are_minima_of_permuted_shingle_hashes(ngram, shingle):
    rng = np.random.default_rng(ngram)
    texts = [" ".join(_words(rng, int(rng.integers(0, 12)))) for _ in range(300)]
    sk = sketch(texts, num_perm=64, ngram=ngram, shingle=shingle, seed=5, exact=False)
    data, off = text_buffer(texts)
    tok, tok_off = word_hashes(data, off) if shingle == "word" else minhash.char_hashes(data, off)
    h, h_off = ngram_hashes(tok, tok_off, ngram, seed=5)
    permuted = permutations(64, 5)[:, None] * (h >> 32).astype(np.uint32)[None, :]
    assert np.array_equal(sk.signatures, np.minimum.reduceat(permuted, h_off[:-1], axis=1).T)


def test_short_texts_and_char_shingles():
    df = pd.DataFrame({"t": ["two words", "two words", "two other", "x"]})
    assert flag_duplicates(df, DedupeConfig(exact=False), column="t").tolist() == [
        None, "duplicate_near", None, None]
    rng = np.random.default_rng(3)
    text = " ".join(_words(rng, 80))
    typo = text[:200] + "Q" + text[201:]
    cfg = DedupeConfig(shingle="char", ngram=9)
    out = flag_duplicates(pd.DataFrame({"t": [text, typo, text[::-1]]}), cfg, column="t")
    assert out.tolist() == [None, "duplicate_near", None]


def test_bad_input_and_config_errors_name_the_fix():
    df = pd.DataFrame({"problem": ["a", "b"], "n": [1, 2]})
    with pytest.raises(DistillError, match="(?s)'answer_text'.*fix: fix DedupeConfig.columns"):
        flag_duplicates(df, DedupeConfig(), column="answer_text")
    with pytest.raises(DistillError, match="(?s)'prompt_id'.*fix: "):
        flag_duplicates(df, DedupeConfig(within="prompt_id"), column="problem")
    with pytest.raises(DistillError, match="(?s)'n'.*fix: dedupe a text column"):
        flag_duplicates(df, DedupeConfig(), column="n")
    with pytest.raises(ValueError, match="offsets must rise"):
        word_hashes(np.zeros(3, np.uint8), np.array([0, 5]))
    with pytest.raises(ValueError, match="both `bands` and `rows`"):
        DedupeConfig(bands=4)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        DedupeConfig(bands=20, rows=10)
    with pytest.raises(ValueError):
        DedupeConfig(treshold=0.7)
    assert DedupeConfig(bands=4, rows=8).lsh_params() == (4, 8)


def test_use_ray_follows_distributed():
    assert not use_ray(DedupeConfig(), 1000)
    assert use_ray(DedupeConfig(), 3_000_000)
    assert use_ray(DedupeConfig(distributed="always"), 10)
    assert not use_ray(DedupeConfig(distributed="never"), 10**9)


def test_bench_quick_runs_and_reports_ratio_last():
    out = subprocess.run([sys.executable, str(REPO / "bench" / "dedupe.py"), "--quick"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[-1].startswith("ratio ours/datasketch docs/s:")
    recalls = [float(x) for x in re.findall(r"recall (\d\.\d+) \(of", out)]
    assert len(recalls) >= 3 and min(recalls) > 0.5


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_dedupe_ray_equals_one_process(ray_local):
    rng = np.random.default_rng(4)
    rows = []
    for i in range(150):
        w = _words(rng, int(rng.integers(20, 90)))
        rows.append(" ".join(w))
        if i % 4 == 0:
            rows.append("  ".join(w).upper() + " ")                       # exact, longer
        if i % 5 == 0:
            rows.append(" ".join(w[:10] + ["changed"] + w[11:]))         # near
    rows += ["", "", "tiny", "tiny"]
    order = rng.permutation(len(rows))
    df = pd.DataFrame({"id": [f"doc-{i:04d}" for i in range(len(rows))],
                       "text": [rows[i] for i in order]})
    cfg = DedupeConfig(columns=["text"], keep="longest", verify=True)
    local = flag_duplicates(df, cfg, column="text", order_column="id")
    assert (local == "duplicate_exact").sum() >= 40 and (local == "duplicate_near").sum() >= 10
    out = dedupe_ray_to_pandas(ray_local, df, cfg)
    assert out["dedupe_reason"].tolist() == local.tolist()


def test_dedupe_ray_honours_within_and_min_chars(ray_local):
    df = pd.concat([_answers()] * 3, ignore_index=True)
    df["id"] = [f"doc-{i:02d}" for i in range(len(df))]
    for cfg in (DedupeConfig(columns=["text"], within="prompt_id"),
                DedupeConfig(columns=["text"], min_chars=100)):
        local = flag_duplicates(df, cfg, column="text", order_column="id")
        out = dedupe_ray_to_pandas(ray_local, df, cfg)
        assert out["dedupe_reason"].tolist() == local.tolist()


def dedupe_ray_to_pandas(ray, df: pd.DataFrame, cfg: DedupeConfig) -> pd.DataFrame:
    from distill.data.dedupe import dedupe_ray

    third = len(df) // 3
    ds = ray.data.from_pandas([df.iloc[:third], df.iloc[third: 2 * third], df.iloc[2 * third:]])
    out = dedupe_ray(ds, cfg, column="text", id_column="id", partitions=2).to_pandas()
    out = out.sort_values("id").reset_index(drop=True)
    out["dedupe_reason"] = out["dedupe_reason"].astype(object).where(out["dedupe_reason"].notna(),
                                                                     None)
    return out
