"""Artifactory operators against the local JFrog-compatible server: upload, properties, promote, build-info."""

from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
from airflow.sdk.exceptions import AirflowFailException
from jfrog_provider.hooks.artifactory import ArtifactoryHook, file_checksums
from jfrog_provider.links import ARTIFACTORY_URL_KEY
from jfrog_provider.operators.artifactory import (
    ArtifactoryPromoteOperator,
    ArtifactoryPublishBuildInfoOperator,
    ArtifactorySetPropertiesOperator,
    ArtifactoryUploadOperator,
    build_timestamp,
)

STAGING, RELEASE = "ml-models-local", "ml-models-release"


class RecordingTI:
    """The one piece of a task instance the operators touch: xcom_push (for the extra links)."""

    def __init__(self) -> None:
        self.xcoms: dict[str, object] = {}
        self.dag_id, self.run_id = "mnist_training", "manual__2026-05-01"

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = value



@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(os.urandom(20 * 1024))
    return path


def upload(model, target="mnist/7/model.pt", **kw) -> dict:
    return ArtifactoryUploadOperator(task_id="publish_model", local_path=str(model), repo=STAGING,
                                     target_path=target, **kw).execute({})


def test_upload_returns_where_it_landed_and_pushes_the_ui_link(conn, jfrog_server, model):
    ti = RecordingTI()
    op = ArtifactoryUploadOperator(task_id="publish_model", local_path=str(model), repo=STAGING,
                                   target_path="mnist/7/model.pt", properties={"model.version": "7"})
    out = op.execute({"ti": ti})
    sums = file_checksums(model)
    assert out == {"repo": STAGING, "path": "mnist/7/model.pt", "sha256": sums.sha256, "sha1": sums.sha1,
                   "md5": sums.md5, "size": sums.size,
                   "uri": f"{jfrog_server.url}/artifactory/{STAGING}/mnist/7/model.pt", "checksum_deployed": False}
    assert json.loads(json.dumps(out)) == out
    assert ti.xcoms[ARTIFACTORY_URL_KEY] == f"{jfrog_server.url}/ui/repos/tree/General/{STAGING}/mnist/7/model.pt"
    assert ArtifactoryHook().get_item_properties(STAGING, "mnist/7/model.pt") == {"model.version": ["7"]}
    # the same bytes again: Artifactory already has them, so only the checksum travels ("Deploy Artifact by Checksum")
    assert upload(model, "mnist/8/model.pt")["checksum_deployed"] is True


def test_upload_template_fields_render(conn, model):
    op = ArtifactoryUploadOperator(task_id="u", local_path=str(model), repo=STAGING,
                                   target_path="mnist/{{ run_id }}/model.pt", properties={"run": "{{ run_id }}"})
    assert set(op.template_fields) >= {"local_path", "repo", "target_path", "properties"}
    op.render_template_fields({"run_id": "r42"})
    assert (op.target_path, op.properties) == ("mnist/r42/model.pt", {"run": "r42"})


def test_upload_of_a_missing_file_fails_without_retry(conn, tmp_path):
    with pytest.raises(AirflowFailException, match="not a file"):
        upload(tmp_path / "nope.pt")


@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (ArtifactoryUploadOperator, {"local_path": "", "repo": STAGING, "target_path": "a"}, "local_path"),
    (ArtifactoryUploadOperator, {"local_path": "f", "repo": "a/b", "target_path": "a"}, "repo"),
    (ArtifactoryUploadOperator, {"local_path": "f", "repo": STAGING, "target_path": "a", "properties": ["x"]},
     "properties"),
    (ArtifactorySetPropertiesOperator, {"repo": STAGING, "path": "a", "properties": {}}, "properties"),
    (ArtifactoryPromoteOperator, {"source_repo": STAGING, "source_path": "a", "target_repo": STAGING},
     "onto itself"),
    (ArtifactoryPublishBuildInfoOperator, {"build_name": "", "build_number": "1", "artifacts": []}, "build_name"),
    (ArtifactoryPublishBuildInfoOperator, {"build_name": "b", "build_number": "1", "artifacts": "x"}, "artifacts"),
    (ArtifactoryPublishBuildInfoOperator, {"build_name": "b", "build_number": "1", "artifacts": [],
                                           "vcs": "git"}, "vcs"),
])
def test_bad_constructor_arguments_are_value_errors_at_parse_time(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(task_id="t", **kwargs)


def test_constructor_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        ArtifactoryUploadOperator("t", "f", STAGING, "a")  # type: ignore[misc]


def test_set_properties(conn, jfrog_server, model):
    upload(model)
    ti = RecordingTI()
    out = ArtifactorySetPropertiesOperator(task_id="tag", repo=STAGING, path="/mnist/7/model.pt",
                                           properties={"gate": "passed", "tags": ["a", "b"]}).execute({"ti": ti})
    assert out == {"repo": STAGING, "path": "mnist/7/model.pt", "recursive": False,
                   "properties": {"gate": ["passed"], "tags": ["a", "b"]}}
    assert ArtifactoryHook().get_item_properties(STAGING, "mnist/7/model.pt") == {"gate": ["passed"],
                                                                                "tags": ["a", "b"]}
    assert ti.xcoms[ARTIFACTORY_URL_KEY].endswith(f"/ui/repos/tree/General/{STAGING}/mnist/7/model.pt")


def promote(**kw) -> ArtifactoryPromoteOperator:
    return ArtifactoryPromoteOperator(task_id="promote", source_repo=STAGING, source_path="mnist/7/model.pt",
                                      target_repo=RELEASE, **kw)


def test_promote_copies_stamps_and_is_idempotent_on_retry(conn, jfrog_server, model):
    sha = upload(model)["sha256"]
    ti = RecordingTI()
    first = promote(properties={"model.stage": "champion"}).execute({"ti": ti})
    assert (first["repo"], first["path"], first["sha256"], first["action"]) == (RELEASE, "mnist/7/model.pt", sha,
                                                                                "copied")
    props = ArtifactoryHook().get_item_properties(RELEASE, "mnist/7/model.pt")
    assert props["release.status"] == ["released"] and props["model.stage"] == ["champion"]
    assert props["release.promoted_from"] == [f"{STAGING}/mnist/7/model.pt"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", props["release.promoted_at"][0])
    assert ti.xcoms[ARTIFACTORY_URL_KEY].endswith(f"/General/{RELEASE}/mnist/7/model.pt")
    # a retry: same bytes already at the target → no second copy, no error, stamped again
    second = promote(properties={"model.stage": "champion"}).execute({})
    assert second["action"] == "already_promoted" and second["sha256"] == sha
    assert len(jfrog_server.requests_matching("POST", r"/api/copy/")) == 1
    assert ArtifactoryHook().get_item_properties(STAGING, "mnist/7/model.pt") == {}  # source untouched


def test_promote_takes_companions_along_under_the_same_immutability_rule(conn, jfrog_server, model, tmp_path):
    upload(model)
    (tmp_path / "model.sig").write_bytes(b"bundle")
    upload(tmp_path / "model.sig", target="mnist/7/model.sig")
    first = promote(companions=["model.sig"]).execute({})
    assert first["companions"] == {"model.sig": hashlib.sha256(b"bundle").hexdigest()}
    assert ArtifactoryHook().get_file_info(RELEASE, "mnist/7/model.sig")["checksums"]["sha256"] == \
        first["companions"]["model.sig"]
    assert "release.status" not in ArtifactoryHook().get_item_properties(RELEASE, "mnist/7/model.sig")
    assert promote(companions=["model.sig"]).execute({})["companions"] == first["companions"]  # a retry
    (tmp_path / "model.sig").write_bytes(b"another bundle")
    upload(tmp_path / "model.sig", target="mnist/7/model.sig")
    with pytest.raises(AirflowFailException, match="released artifacts are immutable"):
        promote(companions=["model.sig"]).execute({})
    with pytest.raises(AirflowFailException, match="companions are file names"):
        promote(companions=["../x"]).execute({})


def test_promote_by_move_then_retry(conn, jfrog_server, model):
    upload(model)
    assert promote(copy=False).execute({})["action"] == "moved"
    with pytest.raises(Exception) as gone:
        ArtifactoryHook().get_file_info(STAGING, "mnist/7/model.pt")
    assert getattr(gone.value, "status", None) == 404
    assert promote(copy=False).execute({})["action"] == "already_promoted"


def test_promote_never_overwrites_different_bytes(conn, jfrog_server, model, tmp_path):
    upload(model)
    other = tmp_path / "other.pt"
    other.write_bytes(b"different model")
    ArtifactoryHook().deploy_artifact(other, RELEASE, "mnist/7/model.pt")
    with pytest.raises(AirflowFailException, match="refusing to overwrite"):
        promote().execute({})


def test_promote_of_a_missing_source_fails(conn, jfrog_server):
    with pytest.raises(AirflowFailException, match="not found"):
        promote().execute({})


def test_build_timestamp_format():
    import datetime as dt

    when = dt.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert build_timestamp(when) == "2026-05-01T12:00:00.123+0000"


def test_publish_build_info_from_upload_xcom(conn, jfrog_server, model):
    uploaded = upload(model)
    ti = RecordingTI()
    op = ArtifactoryPublishBuildInfoOperator(
        task_id="publish_build_info", build_name="mnist-training", build_number="{{ run_id }}",
        artifacts=[uploaded], properties={"model.version": "7"},
        vcs=[{"url": "https://git.example/mnist.git", "revision": "abc123", "branch": "main"}])
    op.render_template_fields({"run_id": "manual__2026-05-01"})
    out = op.execute({"ti": ti})
    assert (out["build_name"], out["build_number"], out["artifacts"], out["linked"]) == (
        "mnist-training", "manual__2026-05-01", 1, 1)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", out["started"])
    assert out["checksum"] and json.loads(json.dumps(out)) == out
    info = ArtifactoryHook().get_build_info("mnist-training", "manual__2026-05-01")
    [module] = info["modules"]
    assert module["id"] == "mnist-training" and module["type"] == "generic"
    assert module["artifacts"] == [{"name": "model.pt", "type": "pt", "path": "mnist/7/model.pt",
                                    "sha1": uploaded["sha1"], "sha256": uploaded["sha256"],
                                    "md5": uploaded["md5"], "originalDeploymentRepo": STAGING}]
    assert info["agent"]["name"] == "airflow-jfrog-provider" and info["vcs"][0]["revision"] == "abc123"
    assert info["properties"]["model.version"] == "7"
    assert info["properties"]["buildInfo.env.AIRFLOW_CTX_DAG_ID"] == "mnist_training"
    # "Build Upload" linking rule: the artifact carries build.name / build.number
    props = ArtifactoryHook().get_item_properties(STAGING, "mnist/7/model.pt")
    assert props["build.name"] == ["mnist-training"] and props["build.number"] == ["manual__2026-05-01"]
    assert ti.xcoms[ARTIFACTORY_URL_KEY] == out["url"]
    assert out["url"].startswith(f"{jfrog_server.url}/ui/builds/mnist-training/manual__2026-05-01/")


def test_publish_build_info_needs_checksums(conn, jfrog_server):
    op = ArtifactoryPublishBuildInfoOperator(task_id="b", build_name="b", build_number=1,
                                             artifacts=[{"path": "a/model.pt", "sha256": "x"}])
    with pytest.raises(AirflowFailException, match="sha1"):
        op.execute({})
    assert jfrog_server.requests_matching("PUT", r"/api/build") == []
