"""Mixing curated sources by weight: `mix_targets(counts, weights)`, `mixed_out(ids, sources, weights)`.

With `prompts.sources` weights set, the train stage trains on the largest set whose sources'
shares follow the weights (it only leaves rows out, never repeats one): source s keeps
floor(T * w_s / sum(w)) of its n_s curated rows, T the largest total every source can fill
(min over sources of n_s / share_s). Which rows a source keeps is chosen by a hash of their
row ids, never by row order, so the same curated rows give the same mix. The rows left out are
rejected by the train stage with reason `mix_weight`.

Example: 600 curated reasoning rows and 400 non-reasoning rows with weights 3 and 1 keep 600
and 200; weights 1 and 1 keep 400 and 400.
"""
from __future__ import annotations

import hashlib
import math

import pandas as pd

REASON = "mix_weight"


def mix_targets(counts: dict[str, int], weights: dict[str, float]) -> dict[str, int]:
    """Rows each source keeps (see the module docstring); a source with no rows keeps none and
    does not shrink the others."""
    present = {s: n for s, n in counts.items() if n > 0}
    if not present:
        return {s: 0 for s in counts}
    total_w = sum(weights[s] for s in present)
    scale = min(n / (weights[s] / total_w) for s, n in present.items())
    return {s: min(counts[s], math.floor(scale * weights[s] / total_w + 1e-9)) if s in present else 0
            for s in counts}


def _rank_key(row_id: str) -> str:
    return hashlib.blake2b(row_id.encode(), digest_size=8).hexdigest()


def mixed_out(ids: pd.Series, sources: pd.Series, weights: dict[str, float]) -> pd.Series:
    """True for the rows the mix leaves out (aligned with `ids`). Raises ValueError for a row
    whose source has no weight."""
    unknown = sorted(set(sources) - set(weights))
    if unknown:
        raise ValueError(f"rows of sources {unknown} have no weight (weights: {weights})")
    counts = {s: int((sources == s).sum()) for s in weights}
    targets = mix_targets(counts, weights)
    frame = pd.DataFrame({"source": sources.to_numpy(), "rank": ids.astype(str).map(_rank_key).to_numpy(),
                          "id": ids.astype(str).to_numpy()}, index=ids.index)
    order = frame.sort_values(["source", "rank", "id"], kind="stable")
    position = order.groupby("source").cumcount()
    limit = order["source"].map(targets)
    return (position >= limit).reindex(ids.index)
