"""What a security re-scan records about a released model: from the Xray gate's verdict to properties and tags."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def blocking_ids(verdict: Mapping[str, Any]) -> list[str]:
    """The CVEs (or Xray issue ids, for findings without a CVE) that block, sorted and unique."""
    return sorted({cve for b in verdict["blocking"] for cve in (b.get("cves") or [b.get("issue_id") or "-"])})


def rescan_record(verdict: Mapping[str, Any], recorded: Iterable[str], *, model_name: str, version: str,
                  sbom_path: str, day: str) -> dict[str, Any]:
    """The re-scan's finding, the `security.*` properties for the model file and the tags for its version.

    `recorded` are the blocking ids already on the file: only the others are `new` (alerted once, not daily).
    """
    blocking, recorded = blocking_ids(verdict), list(recorded)
    status = "blocked" if blocking else "clean"
    stamp = {"security.rescan.status": status, "security.rescan.scan_id": verdict["scan_id"],
             "security.rescan.date": day}
    properties: dict[str, Any] = {**stamp, "security.rescan.sbom": sbom_path}
    tags = dict(stamp)
    if blocking:
        properties["security.blocking"] = sorted(set(recorded) | set(blocking))
        tags["security.blocking"] = ",".join(properties["security.blocking"])
    message = (f"{model_name} version {version} (champion): {len(blocking)} blocking finding(s) "
               f"{', '.join(blocking)} in Xray scan {verdict['scan_id']} at threshold {verdict['severity_threshold']}")
    finding = {"status": status, "blocking": blocking, "new": [c for c in blocking if c not in recorded],
               "scan_id": verdict["scan_id"], "message": message}
    return {"finding": finding, "properties": properties, "tags": tags}
