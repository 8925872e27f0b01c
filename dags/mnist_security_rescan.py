"""
### MNIST security re-scan: the champion's SBOM and model file against today's Xray data

New CVEs appear after a release. Every day at 05:00 UTC this DAG finds the MLflow `champion`, downloads the
SBOM the training DAG stored next to it (`<repo>/<model>/<version>/sbom.cdx.json`) and runs the release gate
again (`XrayScanGateOperator`, deferred to the triggerer): a graph scan of the SBOM's libraries plus Xray's
summary of the model file, judged with the policy in `include/security/xray_policy.json` (severity threshold,
`fail_build` violations, the allowlist; unrated findings block).

On a blocking finding the gate fails, and the run records it on the model file in Artifactory (`security.*`
properties) and on the MLflow model version (tags), alerts through `AlertNotifier` (channel `security`) when
the finding is new, and then either demotes the champion (Param `demote_on_finding`, default off) or records
that it was kept, both in the version's audit trail (`include/mlops/audit.py`). A demoted version, like any
version with a blocking finding, never becomes champion again: `set_champion` refuses it on a clear, a retry or a
new run. A run with a blocking finding ends failed, so nothing about it is silent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task
from jfrog_provider.links import ARTIFACTORY_URL_KEY, ArtifactoryLink, push_link_url
from jfrog_provider.operators.xray import VERDICT_XCOM_KEY, XrayScanGateOperator
from mlops_champion import audit_actor
from mlops_links import MlflowModelVersionLink, mlflow_model_version_url, push_link, with_links
from mlops_notifiers import AlertNotifier

from include.security import SEVERITIES, load_xray_policy

XRAY_POLICY = load_xray_policy()
RESCAN_TASK = "rescan_sbom"


def _settings():
    from include.settings import PipelineSettings

    return PipelineSettings.from_env()


@dag(
    dag_id="mnist_security_rescan",
    schedule=CronTriggerTimetable("0 5 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    description="Re-scan the champion's SBOM and model file with today's Xray data; record, alert, optionally demote",
    doc_md=__doc__,
    tags=["mnist", "security", "xray", "jfrog"],
    # Return values are summaries (the XCom tab shows them); each task logs its own one-line result instead.
    default_args={"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=30),
                  "show_return_value_in_logs": False},
    params={
        "severity_threshold": Param(
            XRAY_POLICY["severity_threshold"], type="string", enum=list(SEVERITIES),
            description="Findings at or above this block.",
        ),
        "demote_on_finding": Param(
            False, type="boolean", description="Move `champion` off a version with a blocking finding."
        ),
        "xray_watches": Param(
            [], type="array", items={"type": "string"}, description="Xray watches that give the scan a policy context."
        ),
    },
)
def mnist_security_rescan():
    @task(multiple_outputs=True)
    def find_champion() -> dict:
        """The current champion's version and the Artifactory location of its files; skip when there is none."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops import registry

        settings = _settings()
        current = registry.champion(settings.mlflow_tracking_uri, settings.model_name)
        if current is None:
            raise AirflowSkipException(f"{settings.model_name} has no '{registry.CHAMPION}': nothing to re-scan")
        folder = f"{settings.model_name}/{current[0]}"
        # promote_model tags where the gated model file is (its name follows the model format).
        tagged = registry.version_tags(settings.mlflow_tracking_uri, settings.model_name, current[0])
        model_file = tagged.get("artifactory.path", "").rsplit("/", 1)[-1] or "model.safetensors"
        push_link(MlflowModelVersionLink, mlflow_model_version_url(settings.mlflow_ui_url, settings.model_name, current[0]))
        return {"model_name": settings.model_name, "version": current[0], "repo": settings.artifactory_repo,
                "release_repo": settings.artifactory_release_repo, "folder": folder,
                "model_path": f"{folder}/{model_file}",
                "model_files": [f"{settings.artifactory_repo}/{folder}/{model_file}"],
                "tracking_uri": settings.mlflow_tracking_uri}

    @task(multiple_outputs=True)
    def fetch_sbom(champion: dict) -> dict:
        """Download the champion's SBOM (checksum-verified) and check it is valid CycloneDX 1.6."""
        import json
        from pathlib import Path

        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops.sbom import validate_cyclonedx

        ctx = get_current_context()
        local = _settings().run_dir(ctx["dag"].dag_id, ctx["run_id"]) / "sbom.cdx.json"
        remote = f"{champion['folder']}/sbom.cdx.json"
        sha256 = ArtifactoryHook().download_artifact(champion["repo"], remote, local)
        doc = json.loads(Path(local).read_text())
        validate_cyclonedx(doc, source=f"{champion['repo']}/{remote}")
        push_link_url(ctx, ARTIFACTORY_URL_KEY, ArtifactoryHook().ui_url(champion["repo"], remote))
        return {"path": str(local), "sha256": sha256, "serial": doc.get("serialNumber", ""),
                "artifactory_path": f"{champion['repo']}/{remote}"}

    @task(trigger_rule=TriggerRule.NONE_SKIPPED, multiple_outputs=True)
    def record_finding(champion: dict, sbom: dict) -> dict:
        """Stamp the gate's verdict on the model file and the MLflow version; say which blocking CVEs are new."""
        from airflow.sdk.exceptions import AirflowFailException
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops import registry
        from include.security.findings import rescan_record

        verdict = get_current_context()["ti"].xcom_pull(task_ids=RESCAN_TASK, key=VERDICT_XCOM_KEY)
        if not verdict:  # the gate failed before judging (Xray error, timeout, not indexed): nothing to record
            raise AirflowFailException(f"{RESCAN_TASK} gave no verdict; its log says why")
        hook, model_path = ArtifactoryHook(), champion["model_path"]
        record = rescan_record(verdict, _recorded_blocking(hook, champion["repo"], model_path),
                               model_name=champion["model_name"], version=champion["version"],
                               sbom_path=sbom["artifactory_path"], day=datetime.now(UTC).date().isoformat())
        _stamp_model_files(hook, champion, model_path, record["properties"])
        registry.set_version_tags(champion["tracking_uri"], champion["model_name"], champion["version"],
                                  record["tags"])
        return record["finding"]

    @task(multiple_outputs=False)
    def alert_security_team(finding: dict) -> bool:
        """Fire the notifier for blocking findings that were not recorded before (no daily repeats)."""
        if not finding["new"]:
            print(f"no new blocking findings ({finding['status']})")
            return False
        AlertNotifier("NEW " + finding["message"], channel="security", kind="security")(get_current_context())
        return True

    @task(multiple_outputs=True)
    def decide_demotion(champion: dict, finding: dict, sbom: dict) -> dict:
        """Demote only when asked (`demote_on_finding`); either way the choice is tagged and audited on the version."""
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops import audit, registry
        from include.mlops.promotion import demote_champion

        if finding["status"] != "blocked":
            return {"demoted": False, "reason": "no blocking finding"}
        uri, name, version = champion["tracking_uri"], champion["model_name"], champion["version"]
        trail = {"actor": audit_actor(get_current_context()), "evidence_sha256": sbom["sha256"],
                 "store": ArtifactoryHook(), "repo": champion["repo"]}
        if not get_current_context()["params"]["demote_on_finding"]:
            registry.set_version_tags(uri, name, version, {"security.demotion": "kept: demote_on_finding=false"})
            audit.record(uri, name, version, event="champion.kept", outcome="kept", reason=finding["message"], **trail)
            print(f"{name} version {version} keeps '{registry.CHAMPION}' (demote_on_finding=false)")
            return {"demoted": False, "reason": "demote_on_finding=false"}
        registry.set_version_tags(uri, name, version, {"security.demotion": f"demoted: {finding['message']}"})
        demote_champion(uri, name, version, reason=finding["message"], **trail)
        _unstamp_release(champion)
        print(f"{name} version {version} lost '{registry.CHAMPION}': {finding['message']}")
        return {"demoted": True, "reason": finding["message"]}

    @task(multiple_outputs=False)
    def report_finding(finding: dict, demotion: dict) -> dict:
        """End the run failed while the champion has a blocking finding, so it shows red in the UI."""
        from airflow.sdk.exceptions import AirflowFailException

        if finding["status"] == "blocked":
            raise AirflowFailException(f"{finding['message']}; demoted: {demotion['demoted']} ({demotion['reason']})")
        return {**finding, **demotion}

    champion = with_links(find_champion(), MlflowModelVersionLink())
    sbom = with_links(fetch_sbom(champion), ArtifactoryLink())
    rescan = XrayScanGateOperator(
        task_id=RESCAN_TASK,
        sbom_path=sbom["path"],
        artifact_paths=champion["model_files"],
        watches="{{ params.xray_watches | join(',') }}",
        severity_threshold="{{ params.severity_threshold }}",
        allowlist=XRAY_POLICY["allowlist"],
        fail_on_fail_build_violations=XRAY_POLICY["fail_on_fail_build_violations"],
        poll_interval=2.0,
        timeout=600,
        deferrable=True,
        doc_md="The release gate again on the champion: a graph scan of its SBOM's libraries plus Xray's summary of "
        "its model files, judged by `include/security/xray_policy.json`; a blocking finding fails this task and "
        "`record_finding` records it. Link: the Xray scan.",
    )
    finding = record_finding(champion, sbom)
    rescan >> finding
    alerted = alert_security_team(finding)
    demotion = decide_demotion(champion, finding, sbom)
    alerted >> demotion
    report_finding(finding, demotion)


def _recorded_blocking(hook, repo: str, model_path: str) -> list[str]:
    """The blocking ids an earlier re-scan stamped on the model file (none when it has no properties yet)."""
    from jfrog_provider.exceptions import JFrogApiError

    try:
        return hook.get_item_properties(repo, model_path).get("security.blocking", [])
    except JFrogApiError as exc:
        if exc.status != 404:
            raise
        return []


def _stamp_model_files(hook, champion: dict, model_path: str, properties: dict) -> None:
    """Set the re-scan properties on the staging file and on its release copy, when that exists."""
    from jfrog_provider.exceptions import JFrogApiError

    for repo in (champion["repo"], champion["release_repo"]):
        try:
            hook.set_item_properties(repo, model_path, properties)
        except JFrogApiError as exc:
            if exc.status != 404 or repo == champion["repo"]:  # the release copy may not exist yet
                raise


def _unstamp_release(champion: dict) -> None:
    """Drop `mlflow.alias=champion` from the release copy so the lineage AQL no longer returns it."""
    from jfrog_provider.exceptions import JFrogApiError
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    hook = ArtifactoryHook()
    path = champion["model_path"]
    try:
        hook.delete_item_properties(champion["release_repo"], path, ["mlflow.alias"])
        hook.set_item_properties(champion["release_repo"], path, {"release.status": "demoted"})
    except JFrogApiError as exc:
        if exc.status != 404:
            raise


mnist_security_rescan()
