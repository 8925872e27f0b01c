"""Fast per-column drift decision with Evidently's own default tests and thresholds, from a cached reference.

Evidently 0.7 (`legacy/calculations/stattests/registry.py::_get_default_stattest`) picks, per column:

| reference rows | column | unique values (ref + cur) | test | drift when |
| --- | --- | --- | --- | --- |
| <= 1000 | numerical | > 5 | two-sample K-S | p <= 0.05 |
| <= 1000 | numerical | 3..5, or categorical > 2 | chi-square | p < 0.05 |
| <= 1000 | any | <= 2 | Z-test for proportions | p < 0.05 |
| > 1000 | numerical | > 5 | Wasserstein / max(std(ref), 0.001) | >= 0.1 |
| > 1000 | numerical <= 5, or categorical | | Jensen-Shannon distance on value counts | >= 0.1 |

The reference side (sorted values, a fine uniform histogram, value counts) is summarised once. For the common
large-reference numeric case the current side is one binning pass: it gives a certified lower and upper bound
on the normed Wasserstein distance, and only a column whose bounds straddle the threshold is computed exactly
with scipy, so the flag is always the one Evidently's statistic gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

LARGE_REFERENCE = 1000  # Evidently: more reference rows than this switch K-S/chi-square to Wasserstein/JS.
FEW_VALUES = 5  # Evidently: a numeric column with at most this many values (ref + cur) is treated as discrete.
P_VALUE = 0.05
DISTANCE = 0.1
# Histogram resolution of the Wasserstein bound: the bound's slack is at most 2 * range / BINS, about 0.01 of
# a standard deviation for Gaussian-like data, so exact fallbacks only happen within ~0.01 of the threshold.
BINS = 8192


@dataclass(frozen=True)
class ColumnSummary:
    """What the decision needs to know about one reference column."""

    name: str
    kind: str  # "num" or "cat"
    rows: int
    values: np.ndarray  # sorted finite values (num) or the distinct values (cat / few-valued num)
    counts: np.ndarray | None  # counts of `values` when the column has few distinct values
    std: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    cdf: np.ndarray | None = None  # reference mass strictly before each histogram bin, then 1.0
    mass: np.ndarray | None = None  # reference mass in each histogram bin


@dataclass(frozen=True)
class ColumnDrift:
    """One column's test, score and flag; `exact` is False when the flag came from certified bounds."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool
    exact: bool = True
    bounds: tuple[float, float] | None = None


@dataclass(frozen=True)
class DriftDecision:
    """Per-column flags and the dataset verdict (share of drifted columns >= drift_share)."""

    columns: dict[str, ColumnDrift]
    drift_share: float
    threshold: float
    drift_detected: bool
    reference_rows: int
    current_rows: int
    exact_fallbacks: list[str] = field(default_factory=list)

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, in column order."""
        return [name for name, col in self.columns.items() if col.drifted]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy for XCom and the history."""
        out = asdict(self)
        out["drifted_columns"] = self.drifted_columns
        return out


def summarize_reference(frame: Mapping[str, np.ndarray], categorical: tuple[str, ...] = ()) -> dict[str, ColumnSummary]:
    """Summarise each reference column once; the current side then never touches the reference rows."""
    summaries = {}
    for name, column in frame.items():
        column = np.asarray(column)
        if name in categorical:
            values, counts = np.unique(column, return_counts=True)
            summaries[name] = ColumnSummary(name, "cat", int(column.shape[0]), values, counts)
            continue
        finite = np.sort(column[np.isfinite(column)].astype(np.float64))
        if finite.size == 0:
            raise ValueError(f"reference column '{name}' has no finite values")
        distinct, counts = np.unique(finite, return_counts=True)
        few = distinct.size <= FEW_VALUES
        lo, hi = float(finite[0]), float(finite[-1])
        mass = cdf = None
        if finite.size > LARGE_REFERENCE and not few:
            mass = np.bincount(_bin_index(finite, lo, hi), minlength=BINS).astype(np.float64) / finite.size
            cdf = np.concatenate([[0.0], np.cumsum(mass)])
        summaries[name] = ColumnSummary(
            name=name,
            kind="num",
            rows=int(finite.size),
            values=distinct if few else finite,
            counts=counts if few else None,
            # np.std (ddof=0) over the reference, as Evidently's wasserstein_distance_norm does.
            std=float(np.std(finite)),
            lo=lo,
            hi=hi,
            cdf=cdf,
            mass=mass,
        )
    return summaries


def decide(
    reference: Mapping[str, ColumnSummary],
    current: Mapping[str, np.ndarray],
    drift_share: float = 0.5,
) -> DriftDecision:
    """Evidently's default per-column tests and dataset rule, computed from the reference summary."""
    results, fallbacks = {}, []
    rows = 0
    for name, ref in reference.items():
        if name not in current:
            raise ValueError(f"current data has no column '{name}' (reference columns: {', '.join(reference)})")
        column = np.asarray(current[name])
        rows = max(rows, int(column.shape[0]))
        result = _column_drift(ref, column)
        results[name] = result
        if ref.cdf is not None and result.exact:
            # The histogram bounds straddled the threshold, so this column was computed exactly.
            fallbacks.append(name)
    drifted = sum(r.drifted for r in results.values())
    share = drifted / len(results) if results else 0.0
    return DriftDecision(
        columns=results,
        drift_share=share,
        threshold=drift_share,
        drift_detected=bool(results) and share >= drift_share,
        reference_rows=max((r.rows for r in reference.values()), default=0),
        current_rows=rows,
        exact_fallbacks=sorted(set(fallbacks)),
    )


def _column_drift(ref: ColumnSummary, column: np.ndarray) -> ColumnDrift:
    if ref.kind == "cat":
        cur_values, cur_counts = _value_counts(column)
        keys, ref_counts, cur_counts = _align(ref.values, ref.counts, cur_values, cur_counts)
        return _discrete(ref.name, ref.rows, keys, ref_counts, cur_counts, categorical=True)

    if column.dtype.kind == "f":
        # Evidently drops NaN and +-inf before testing; skip the copy when there is nothing to drop.
        finite = np.isfinite(column)
        if not finite.all():
            column = column[finite]
    if column.size == 0:
        raise ValueError(f"current column '{ref.name}' has no finite values")

    if ref.counts is not None:
        # Few distinct reference values: count the current's, which settles the "<= 5 values" rule.
        cur_values, cur_counts = np.unique(column, return_counts=True)
        keys, ref_counts, cur_counts = _align(ref.values, ref.counts, cur_values, cur_counts)
        if keys.size <= FEW_VALUES:
            return _discrete(ref.name, ref.rows, keys, ref_counts, cur_counts, categorical=False)
        ref_values = np.repeat(ref.values, ref.counts)
        if ref.rows > LARGE_REFERENCE:
            return _wasserstein_exact(ref.name, ref_values, ref.std, column)
        return _ks(ref.name, ref_values, column)

    if ref.rows <= LARGE_REFERENCE:
        return _ks(ref.name, ref.values, column)
    return _wasserstein(ref, column)


def _discrete(
    name: str, ref_rows: int, keys: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray, categorical: bool
) -> ColumnDrift:
    if ref_rows > LARGE_REFERENCE:
        from scipy.spatial import distance

        # get_binned_data(feel_zeroes=False) then scipy's jensenshannon, natural log.
        score = float(distance.jensenshannon(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()))
        return ColumnDrift(name, "jensenshannon", score, DISTANCE, bool(score >= DISTANCE))
    if keys.size > 2:
        from scipy.stats import chisquare

        expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
        p_value = float(chisquare(cur_counts, expected)[1])
        return ColumnDrift(name, "chisquare", p_value, P_VALUE, bool(p_value < P_VALUE))
    return _z_test(name, keys, ref_counts, cur_counts)


def _z_test(name: str, keys: np.ndarray, ref_counts: np.ndarray, cur_counts: np.ndarray) -> ColumnDrift:
    from scipy.stats import norm

    if keys.size == 1:
        # Evidently: one shared value on both sides is p = 1.
        return ColumnDrift(name, "z", 1.0, P_VALUE, False)
    # Evidently codes the smallest key as 0 and the other as 1, then compares the proportions of 1.
    n1, n2 = float(ref_counts.sum()), float(cur_counts.sum())
    p1, p2 = ref_counts[1] / n1, cur_counts[1] / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    p_value = float(2 * (1 - norm.cdf(np.abs(z))))
    return ColumnDrift(name, "z", p_value, P_VALUE, bool(p_value < P_VALUE))


def _ks(name: str, ref_values: np.ndarray, column: np.ndarray) -> ColumnDrift:
    from scipy.stats import ks_2samp

    p_value = float(ks_2samp(ref_values, column)[1])
    # Evidently's K-S is the one test that flags at p <= threshold (the others use <).
    return ColumnDrift(name, "ks", p_value, P_VALUE, bool(p_value <= P_VALUE))


def _wasserstein_exact(name: str, ref_values: np.ndarray, std: float, column: np.ndarray) -> ColumnDrift:
    from scipy.stats import wasserstein_distance

    score = float(wasserstein_distance(ref_values, column)) / max(std, 0.001)
    return ColumnDrift(name, "wasserstein", score, DISTANCE, bool(score >= DISTANCE))


def _wasserstein(ref: ColumnSummary, column: np.ndarray) -> ColumnDrift:
    """Normed W1 = integral of |F_ref - F_cur| / std, bounded from one histogram pass over the current column."""
    m = column.size
    lo, hi, width = ref.lo, ref.hi, (ref.hi - ref.lo) / BINS
    below, above = column < lo, column > hi
    # Outside the reference range one CDF is 0 or 1, so that part of the integral is exact.
    tail = (float(np.sum(lo - column[below])) + float(np.sum(column[above] - hi))) / m
    n_below, n_above = int(below.sum()), int(above.sum())
    if n_below or n_above:
        inside = column[~(below | above)]
    else:
        inside = column
    cur_mass = np.bincount(_bin_index(inside, lo, hi), minlength=BINS) / m
    cur_before = n_below / m + np.concatenate([[0.0], np.cumsum(cur_mass)[:-1]])
    # Within bin k both CDFs move monotonically by at most their bin mass, so F_ref - F_cur lies in
    # [d - cur_mass, d + ref_mass] where d is the difference of the masses before the bin.
    d = ref.cdf[:-1] - cur_before
    low_d, high_d = d - cur_mass, d + ref.mass
    upper = np.maximum(np.abs(low_d), np.abs(high_d))
    lower = np.where((low_d <= 0) & (high_d >= 0), 0.0, np.minimum(np.abs(low_d), np.abs(high_d)))
    estimate = np.abs(d + (ref.mass - cur_mass) / 2)
    norm = max(ref.std, 0.001)
    lower_score = (tail + width * float(lower.sum())) / norm
    upper_score = (tail + width * float(upper.sum())) / norm
    # Rounding can make the bound brush the threshold; a small margin sends such columns to the exact path.
    margin = 1e-9
    if lower_score - margin >= DISTANCE or upper_score + margin < DISTANCE:
        score = (tail + width * float(estimate.sum())) / norm
        return ColumnDrift(
            ref.name, "wasserstein", score, DISTANCE, lower_score >= DISTANCE, exact=False,
            bounds=(lower_score, upper_score),
        )
    return _wasserstein_exact(ref.name, ref.values, ref.std, column)


def _bin_index(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(values.shape[0], dtype=np.intp)
    scaled = (values - lo) * (BINS / (hi - lo))
    index = scaled.astype(np.intp)
    np.clip(index, 0, BINS - 1, out=index)
    return index


def _value_counts(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Small non-negative integer codes: one bincount pass instead of np.unique's sort.
    if column.dtype.kind in "iu" and column.size and column.min() >= 0 and column.max() < 1 << 16:
        counts = np.bincount(column)
        present = np.flatnonzero(counts)
        return present.astype(column.dtype), counts[present]
    return np.unique(column, return_counts=True)


def _align(
    ref_values: np.ndarray, ref_counts: np.ndarray, cur_values: np.ndarray, cur_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = np.union1d(ref_values, cur_values)
    ref_full = np.zeros(keys.size, dtype=np.float64)
    cur_full = np.zeros(keys.size, dtype=np.float64)
    ref_full[np.searchsorted(keys, ref_values)] = ref_counts
    cur_full[np.searchsorted(keys, cur_values)] = cur_counts
    return keys, ref_full, cur_full
