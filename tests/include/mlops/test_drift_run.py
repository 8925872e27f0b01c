"""The drift report's agreement with the verdict: recorded per column, a disagreement logged as a WARNING."""

from __future__ import annotations

import logging

from include.mlops.drift_run import report_agreement

FLAGS = {"mean_intensity": True, "ink_ratio": True, "confidence": False, "predicted_class": False}


def test_same_flags_agree_quietly(caplog):
    with caplog.at_level(logging.WARNING, logger="include.mlops.drift_run"):
        agreement = report_agreement("day1", FLAGS, dict(FLAGS), 0.4, True, 600)
    assert agreement == {"agree": True, "differing_columns": [], "verdict": True, "report_verdict": True,
                         "report_drift_share": 0.5, "report_rows": 600}
    assert caplog.records == []


def test_a_column_the_report_flags_differently_is_named_and_warned(caplog):
    report = {**FLAGS, "ink_ratio": False, "confidence": True}
    with caplog.at_level(logging.WARNING, logger="include.mlops.drift_run"):
        agreement = report_agreement("day2", FLAGS, report, 0.4, True, 600)
    assert agreement["agree"] is False and agreement["differing_columns"] == ["confidence", "ink_ratio"]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "day2" in record.getMessage()
    assert "['confidence', 'ink_ratio']" in record.getMessage()


def test_same_columns_but_another_batch_verdict_disagree():
    # A verdict that does not follow from its own flags (e.g. another drift_share) is caught too.
    agreement = report_agreement("day3", FLAGS, dict(FLAGS), 0.75, True, 600)
    assert agreement["agree"] is False and agreement["differing_columns"] == []
    assert agreement["report_verdict"] is False


def test_a_column_missing_from_the_report_disagrees():
    report = {k: v for k, v in FLAGS.items() if k != "confidence"}
    agreement = report_agreement("day4", FLAGS, report, 0.4, True, 600)
    assert agreement["agree"] is False and agreement["differing_columns"] == ["confidence"]
