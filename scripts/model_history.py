"""List a registered model's audit trail: every alias move, gate decision, approval and demotion, oldest first.

    scripts/model_history.py mnist-cnn            # every version
    scripts/model_history.py mnist-cnn 3 --json   # one version, one JSON event per line
    scripts/model_history.py mnist-cnn --artifactory ml-models-local   # also check the Artifactory copies

The trail is read from MLflow (MLFLOW_TRACKING_URI, or the local pipeline's store). With --artifactory, each event
is checked against its record in `<repo>/<model>/<version>/audit/` through the JFrog connection (jfrog_default),
and a record that exists in only one of the two places is named.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))

from include.mlops import audit  # noqa: E402
from include.settings import PipelineSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="registered model name, e.g. mnist-cnn")
    parser.add_argument("version", nargs="?", help="only this version")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the pipeline's)")
    parser.add_argument("--artifactory", metavar="REPO", help="also compare with the audit records in this repository")
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    args = parser.parse_args(argv)

    uri = args.tracking_uri or PipelineSettings.from_env().mlflow_tracking_uri
    events = audit.history(uri, args.model, args.version)
    stored = _artifactory_names(args.artifactory, args.model, {e["version"] for e in events}) if args.artifactory else None
    for event in events:
        if stored is not None:
            event["artifactory"] = "present" if _name(event) in stored else "MISSING"
        print(json.dumps(event, sort_keys=True) if args.json else _line(event))
    if not events:
        print(f"no audit events for {args.model}{f' version {args.version}' if args.version else ''} in {uri}")
    if stored is not None:
        extra = sorted(stored - {_name(e) for e in events})
        for name in extra:
            print(f"in Artifactory only: {args.artifactory}/{name}")
        return 1 if extra or any(e["artifactory"] == "MISSING" for e in events) else 0
    return 0


def _name(event: dict) -> str:
    return f"{audit.audit_folder(event['model'], event['version'])}/{audit.artifactory_name(event['tag'], event['event'])}"


def _line(event: dict) -> str:
    digest = (event.get("evidence_sha256") or "-")[:12]
    where = f"{event['dag_id']}/{event['run_id']}/{event['task_id']}"
    mirrored = f" [artifactory: {event['artifactory']}]" if "artifactory" in event else ""
    return (f"{event['at'][:19]}Z  v{event['version']:<4} {event['event']:<17} {event['outcome']:<10} "
            f"by {event['by']:<12} evidence {digest:<12} {where}\n      {event['reason']}{mirrored}")


def _artifactory_names(repo: str, model: str, versions: set[str]) -> set[str]:
    from jfrog_provider.hooks.artifactory import ArtifactoryHook

    hook, names = ArtifactoryHook(), set()
    for version in sorted(versions):
        folder = audit.audit_folder(model, version)
        query = f'items.find({json.dumps({"repo": repo, "path": folder})}).include("path","name")'
        names |= {f"{row['path']}/{row['name']}" for row in hook.search_aql(query)}
    return names


if __name__ == "__main__":
    sys.exit(main())
