"""The audit trail on a real MLflow store and the local JFrog server: append-only, once per step, both places."""

from __future__ import annotations

import json

import pytest

from include.mlops import audit, registry

MODEL, REPO = "audit-model", "ml-models-local"
ACTOR = audit.Actor("scheduler", "mnist_training", "scheduled__2026-05-01T02:00:00+00:00", "set_champion")


@pytest.fixture
def uri(mlops_home) -> str:
    """An MLflow store with two versions of MODEL (no runs needed for tags)."""
    from mlflow import MlflowClient

    tracking = f"sqlite:///{mlops_home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking, registry_uri=tracking)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source=(mlops_home / "model").as_uri())
    return tracking


def _files(version: str) -> list[str]:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    query = f'items.find({json.dumps({"repo": REPO, "path": audit.audit_folder(MODEL, version)})}).include("name")'
    return sorted(row["name"] for row in ArtifactoryHook().search_aql(query))


def test_a_retried_step_adds_nothing_and_a_lost_copy_is_restored(uri, jfrog_conn):
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    first = audit.record(uri, MODEL, "1", event="champion.set", outcome="champion", actor=ACTOR, reason="passed",
                         evidence_sha256="ab" * 32)  # no store: as if the process died before the upload
    assert _files("1") == []
    again = audit.record(uri, MODEL, "1", event="champion.set", outcome="champion", actor=ACTOR, reason="retried",
                         evidence_sha256="ab" * 32, store=ArtifactoryHook(), repo=REPO)
    assert again == first and again["reason"] == "passed"  # the retry found its own event
    [event] = audit.history(uri, MODEL, "1")
    assert _files("1") == [audit.artifactory_name(event["tag"], "champion.set")]
    assert event["by"] == "scheduler" and event["task_id"] == "set_champion" and event["evidence_sha256"] == "ab" * 32
    audit.record(uri, MODEL, "1", event="champion.set", outcome="champion", actor=ACTOR, reason="x",
                 store=ArtifactoryHook(), repo=REPO)
    assert len(_files("1")) == 1


def test_events_are_appended_never_overwritten(uri):
    audit.record(uri, MODEL, "2", event="gate.decision", outcome="promote", actor=ACTOR, reason="every gate passed")
    audit.record(uri, MODEL, "2", event="gate.decision", outcome="blocked", actor=ACTOR, reason="it was demoted")
    audit.record(uri, MODEL, "1", event="champion.demoted", outcome="demoted",
                 actor=audit.Actor("alice", "mnist_security_rescan", "manual__1", "decide_demotion"), reason="CVE")
    trail = audit.history(uri, MODEL)
    assert [(e["version"], e["outcome"]) for e in trail] == [("2", "promote"), ("2", "blocked"), ("1", "demoted")]
    tag = trail[0]["tag"]
    with pytest.raises(ValueError, match=f"already has tag {tag}: audit entries are append-only"):
        registry.add_version_tag(uri, MODEL, "2", tag, "{}")
    assert json.loads(registry.version_tags(uri, MODEL, "2")[tag])["outcome"] == "promote"


def test_a_tag_that_is_not_an_event_is_named(uri):
    registry.set_version_tags(uri, MODEL, "1", {"audit.champion_set": "2026-11-30 by hand"})
    with pytest.raises(ValueError, match="model-version tag audit.champion_set is not an audit event"):
        audit.history(uri, MODEL)


@pytest.mark.parametrize(("run_type", "user", "by"), [
    ("scheduled", None, "scheduler"), ("asset_triggered", "bob", "scheduler"), ("manual", "bob", "bob"),
    ("manual", None, "scheduler"), ("backfill", "carol", "carol"),
])
def test_actor_is_the_triggering_user_of_a_manual_run_else_the_scheduler(run_type, user, by):
    actor = audit.Actor.of_run(run_type=run_type, triggering_user=user, dag_id="d", run_id="r", task_id="t")
    assert actor.by == by


def test_model_history_lists_the_trail_and_checks_artifactory(uri, jfrog_conn, capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    script = Path(__file__).resolve().parents[3] / "scripts" / "model_history.py"
    spec = importlib.util.spec_from_file_location("model_history", script)
    history = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(history)

    audit.record(uri, MODEL, "1", event="champion.set", outcome="champion", actor=ACTOR, reason="passed every gate",
                 evidence_sha256="cd" * 32, store=ArtifactoryHook(), repo=REPO)
    assert history.main([MODEL, "--tracking-uri", uri, "--artifactory", REPO]) == 0
    out = capsys.readouterr().out
    assert "champion.set" in out and "by scheduler" in out and "evidence cdcdcdcdcdcd" in out
    assert "[artifactory: present]" in out

    audit.record(uri, MODEL, "1", event="champion.demoted", outcome="demoted", actor=ACTOR, reason="CVE")
    assert history.main([MODEL, "1", "--tracking-uri", uri, "--artifactory", REPO, "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["artifactory"]) for e in lines] == [("champion.set", "present"),
                                                               ("champion.demoted", "MISSING")]
