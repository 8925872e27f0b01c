"""
### MNIST security re-scan: the champion's SBOM against today's Xray data

New CVEs appear after a release. Every day at 05:00 UTC this DAG finds the MLflow `champion`, downloads the
SBOM the training DAG stored next to it (`<repo>/<model>/<version>/sbom.cdx.json`), runs an Xray graph scan
and judges it with the same policy as the release gate (`jfrog_provider.policy.judge_scan`: severity
threshold, `fail_build` violations, the allowlist in `include/security/xray_policy.json`).

On a blocking finding it records it on the model file in Artifactory (`security.*` properties) and on the
MLflow model version (tags), alerts through `AlertNotifier` (channel `security`) when the finding is new, and then
either demotes the champion (Param `demote_on_finding`, default off) or records that it was kept. A run
with a blocking finding ends failed, so nothing about it is silent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, Param, dag, get_current_context, task
from mlops_notifiers import AlertNotifier

SEVERITIES = ["Critical", "High", "Medium", "Low"]


def _settings():
    from include.settings import PipelineSettings

    return PipelineSettings.from_env()


def _policy_default() -> str:
    # Param defaults are fixed at parse time; the file is tiny and JSON, so reading it is cheap.
    import json
    from pathlib import Path

    try:
        path = Path(__file__).resolve().parent.parent / "include" / "security" / "xray_policy.json"
        value = json.loads(path.read_text()).get("severity_threshold", "High")
    except (OSError, ValueError):
        return "High"
    return value if value in SEVERITIES else "High"


@dag(
    dag_id="mnist_security_rescan",
    schedule=CronTriggerTimetable("0 5 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["mnist", "security", "xray", "jfrog"],
    default_args={"owner": "mlops", "retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "severity_threshold": Param(
            _policy_default(), type="string", enum=SEVERITIES, description="Findings at or above this block."
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
    @task
    def find_champion() -> dict:
        """The current champion's version and the Artifactory location of its files; skip when there is none."""
        from airflow.sdk.exceptions import AirflowSkipException

        from include.mlops import registry

        settings = _settings()
        current = registry.champion(settings.mlflow_tracking_uri, settings.model_name)
        if current is None:
            raise AirflowSkipException(f"{settings.model_name} has no '{registry.CHAMPION}': nothing to re-scan")
        version = current[0]
        folder = f"{settings.model_name}/{version}"
        return {"model_name": settings.model_name, "version": version, "repo": settings.artifactory_repo,
                "release_repo": settings.artifactory_release_repo, "folder": folder,
                "tracking_uri": settings.mlflow_tracking_uri}

    @task
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
        return {"path": str(local), "sha256": sha256, "serial": doc.get("serialNumber", ""),
                "artifactory_path": f"{champion['repo']}/{remote}"}

    @task
    def rescan_sbom(sbom: dict) -> dict:
        """Graph-scan the SBOM's libraries and judge the result; infrastructure errors fail (and retry)."""
        import json
        from pathlib import Path

        from jfrog_provider.hooks.xray import XrayHook
        from jfrog_provider.operators.xray import sbom_purls
        from jfrog_provider.policy import judge_scan, parse_allowlist

        from include.security import load_xray_policy

        params = get_current_context()["params"]
        hook = XrayHook()
        ids = hook.purls_to_component_ids(sbom_purls(json.loads(Path(sbom["path"]).read_text()), sbom["path"]))
        watches = [w for w in params["xray_watches"] if w] or None
        scan_id = hook.scan_graph(ids, watches=watches)
        result = hook.wait_for_graph_scan(scan_id, poll_interval=2.0, timeout=600)
        verdict = judge_scan(result, severity_threshold=params["severity_threshold"],
                             allowlist=parse_allowlist(load_xray_policy()["allowlist"]))
        print(verdict.message())
        return verdict.to_dict()

    @task
    def record_finding(champion: dict, sbom: dict, verdict: dict) -> dict:
        """Stamp the verdict on the model file and the MLflow version; report which blocking CVEs are new."""
        from jfrog_provider.exceptions import JFrogApiError
        from jfrog_provider.hooks.artifactory import ArtifactoryHook

        from include.mlops import registry

        hook = ArtifactoryHook()
        model_path = f"{champion['folder']}/model.pt"
        blocking = sorted({cve for b in verdict["blocking"] for cve in (b.get("cves") or [b.get("issue_id", "-")])})
        try:
            recorded = hook.get_item_properties(champion["repo"], model_path).get("security.blocking", [])
        except JFrogApiError as exc:
            if exc.status != 404:
                raise
            recorded = []
        new = [cve for cve in blocking if cve not in recorded]
        status = "blocked" if blocking else "clean"
        day = datetime.now(UTC).date().isoformat()
        props = {"security.rescan.status": status, "security.rescan.scan_id": verdict["scan_id"],
                 "security.rescan.date": day, "security.rescan.sbom": sbom["artifactory_path"]}
        if blocking:
            props["security.blocking"] = sorted(set(recorded) | set(blocking))
        for repo in (champion["repo"], champion["release_repo"]):
            try:
                hook.set_item_properties(repo, model_path, props)
            except JFrogApiError as exc:
                if exc.status != 404 or repo == champion["repo"]:  # the release copy may not exist yet
                    raise
        registry.set_version_tags(champion["tracking_uri"], champion["model_name"], champion["version"], {
            "security.rescan.status": status, "security.rescan.scan_id": verdict["scan_id"],
            "security.rescan.date": day, **({"security.blocking": ",".join(props["security.blocking"])}
                                            if blocking else {}),
        })
        return {"status": status, "blocking": blocking, "new": new, "scan_id": verdict["scan_id"],
                "message": (f"{champion['model_name']} version {champion['version']} (champion): "
                            f"{len(blocking)} blocking finding(s) {', '.join(blocking)} in Xray scan "
                            f"{verdict['scan_id']} at threshold {verdict['severity_threshold']}")}

    @task
    def alert_security_team(finding: dict) -> bool:
        """Fire the notifier for blocking findings that were not recorded before (no daily repeats)."""
        if not finding["new"]:
            print(f"no new blocking findings ({finding['status']})")
            return False
        AlertNotifier("NEW " + finding["message"], channel="security", kind="security")(get_current_context())
        return True

    @task
    def decide_demotion(champion: dict, finding: dict) -> dict:
        """Demote only when asked (`demote_on_finding`); either way the choice is tagged on the version."""
        from include.mlops import registry

        params = get_current_context()["params"]
        if finding["status"] != "blocked":
            return {"demoted": False, "reason": "no blocking finding"}
        uri, name, version = champion["tracking_uri"], champion["model_name"], champion["version"]
        if not params["demote_on_finding"]:
            registry.set_version_tags(uri, name, version, {"security.demotion": "kept: demote_on_finding=false"})
            print(f"{name} version {version} keeps '{registry.CHAMPION}' (demote_on_finding=false)")
            return {"demoted": False, "reason": "demote_on_finding=false"}
        registry.demote(uri, name, version)
        registry.set_version_tags(uri, name, version, {"security.demotion": f"demoted: {finding['message']}"})
        _unstamp_release(champion)
        print(f"{name} version {version} lost '{registry.CHAMPION}': {finding['message']}")
        return {"demoted": True, "reason": finding["message"]}

    @task
    def report_finding(finding: dict, demotion: dict) -> dict:
        """End the run failed while the champion has a blocking finding, so it shows red in the UI."""
        from airflow.sdk.exceptions import AirflowFailException

        if finding["status"] == "blocked":
            raise AirflowFailException(f"{finding['message']}; demoted: {demotion['demoted']} ({demotion['reason']})")
        return {**finding, **demotion}

    champion = find_champion()
    sbom = fetch_sbom(champion)
    verdict = rescan_sbom(sbom)
    finding = record_finding(champion, sbom, verdict)
    alerted = alert_security_team(finding)
    demotion = decide_demotion(champion, finding)
    alerted >> demotion
    report_finding(finding, demotion)


def _unstamp_release(champion: dict) -> None:
    """Drop `mlflow.alias=champion` from the release copy so the lineage AQL no longer returns it."""
    from jfrog_provider.exceptions import JFrogApiError
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    hook = ArtifactoryHook()
    path = f"{champion['folder']}/model.pt"
    try:
        hook.delete_item_properties(champion["release_repo"], path, ["mlflow.alias"])
        hook.set_item_properties(champion["release_repo"], path, {"release.status": "demoted"})
    except JFrogApiError as exc:
        if exc.status != 404:
            raise


mnist_security_rescan()
