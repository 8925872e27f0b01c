"""The fast decision against Evidently's own default tests: every branch of its selection table, same flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from include.mlops.drift_stats import BINS, decide, summarize_reference


def _evidently(ref: dict, cur: dict, categorical: tuple[str, ...]) -> dict[str, tuple[float, bool, str]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(
        numerical_columns=[c for c in ref if c not in categorical], categorical_columns=list(categorical)
    )
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(pd.DataFrame(cur), data_definition=definition),
        Dataset.from_pandas(pd.DataFrame(ref), data_definition=definition),
    )
    summary = snapshot.dict()
    scores = {
        m["config"]["column"]: (float(m["value"]), m["config"]["method"])
        for m in summary["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }
    flags = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL"
        for t in summary["tests"]
        if t["metric_config"]["params"]["type"].endswith("ValueDrift")
    }
    return {c: (scores[c][0], flags[c], scores[c][1]) for c in scores}


def _columns(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    return {
        "gauss": rng.normal(shift, 1.0, n),
        "skewed": rng.exponential(1.0 + shift, n),
        "three": rng.choice([0.0, 1.0, 2.0], n, p=[0.5 - shift / 2, 0.3, 0.2 + shift / 2]),
        "two": rng.choice([1.0, 5.0], n, p=[0.6 - shift / 2, 0.4 + shift / 2]),
        "four": rng.choice([0.0, 1.0, 2.0, 3.0], n, p=[0.4 - shift / 2, 0.3, 0.2, 0.1 + shift / 2]),
        "cat4": rng.choice(4, n, p=[0.4 - shift / 2, 0.3, 0.2, 0.1 + shift / 2]),
        "cat2": rng.choice(2, n, p=[0.7 - shift / 2, 0.3 + shift / 2]),
    }


@pytest.mark.parametrize(
    ("ref_rows", "shift"),
    [(800, 0.0), (800, 0.2), (3000, 0.0), (3000, 0.2)],
    ids=["small-ref-same", "small-ref-shifted", "large-ref-same", "large-ref-shifted"],
)
def test_same_flags_and_scores_as_evidently_in_every_branch(ref_rows, shift):
    rng = np.random.default_rng(ref_rows + int(shift * 10))
    ref, cur = _columns(rng, ref_rows, 0.0), _columns(rng, 700, shift)
    categorical = ("cat4", "cat2")
    ours = decide(summarize_reference(ref, categorical), cur)
    theirs = _evidently(ref, cur, categorical)
    assert {c: r.drifted for c, r in ours.columns.items()} == {c: v[1] for c, v in theirs.items()}
    for name, result in ours.columns.items():
        score, _, method = theirs[name]
        # Exact paths reproduce Evidently's number; the bounded path's estimate is within its certified bounds.
        if result.exact:
            assert result.score == pytest.approx(score, rel=1e-9, abs=1e-12), (name, method)
        else:
            assert result.bounds[0] <= score <= result.bounds[1], (name, result.bounds, score)
    if shift:
        assert ours.drifted_columns, "a 0.2 shift must drift something"


@pytest.mark.parametrize("seed", range(6))
def test_wasserstein_bounds_contain_the_exact_value(seed):
    rng = np.random.default_rng(seed)
    ref = {"x": np.concatenate([rng.normal(0, 1, 4000), rng.exponential(3, 1000)])}
    cur = {"x": rng.normal(rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2.0), 3000) * rng.choice([1, 3])}
    result = decide(summarize_reference(ref), cur).columns["x"]
    exact = wasserstein_distance(ref["x"], cur["x"]) / np.std(ref["x"])
    if result.exact:
        assert result.score == pytest.approx(exact)
    else:
        low, high = result.bounds
        assert low <= exact <= high
        assert high - low <= 2 * (ref["x"].max() - ref["x"].min()) / BINS / np.std(ref["x"]) + 1e-12
        assert result.drifted is bool(exact >= 0.1)


def test_a_score_at_the_threshold_falls_back_to_the_exact_value():
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 5000)
    std = float(np.std(ref))
    # A pure shift by 0.1 std puts the normed distance exactly on the 0.1 threshold.
    cur = ref + 0.1 * std
    decision = decide(summarize_reference({"x": ref}), {"x": cur})
    result = decision.columns["x"]
    assert decision.exact_fallbacks == ["x"] and result.exact and result.bounds is None
    assert result.drifted is bool(wasserstein_distance(ref, cur) / std >= 0.1)


def test_nan_and_inf_are_dropped_as_evidently_does():
    rng = np.random.default_rng(5)
    ref = {"x": rng.normal(0, 1, 2000)}
    cur = rng.normal(0, 1, 1000)
    dirty = np.concatenate([cur, [np.nan, np.inf, -np.inf]])
    summary = summarize_reference(ref)
    assert decide(summary, {"x": dirty}).columns["x"].score == decide(summary, {"x": cur}).columns["x"].score


def test_dataset_verdict_is_the_share_rule():
    rng = np.random.default_rng(9)
    ref = {f"c{i}": rng.normal(0, 1, 2000) for i in range(4)}
    cur = {f"c{i}": rng.normal(1.0 if i < 2 else 0.0, 1, 1000) for i in range(4)}
    summary = summarize_reference(ref)
    assert decide(summary, cur, drift_share=0.5).drift_detected is True
    assert decide(summary, cur, drift_share=0.6).drift_detected is False
    with pytest.raises(ValueError, match="no column 'c3'"):
        decide(summary, {k: v for k, v in cur.items() if k != "c3"})
