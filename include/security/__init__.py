"""Security policy as data: the Xray gate's severity threshold and CVE allowlist (xray_policy.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POLICY_FILE = Path(__file__).resolve().parent / "xray_policy.json"
SEVERITIES = ("Critical", "High", "Medium", "Low")
_ENTRY_KEYS = {"cve", "expires", "reason"}


def load_xray_policy(path: Path | None = None) -> dict[str, Any]:
    """Read the policy file; ValueError names the file and field when it is malformed."""
    path = Path(path or POLICY_FILE)
    try:
        policy = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the Xray policy: {exc}") from exc
    if not isinstance(policy, dict):
        raise ValueError(f"{path}: the Xray policy must be a JSON object")
    if policy.get("severity_threshold") not in SEVERITIES:
        raise ValueError(f"{path}: severity_threshold must be one of {SEVERITIES}, got "
                         f"{policy.get('severity_threshold')!r}")
    allowlist = policy.get("allowlist", [])
    if not isinstance(allowlist, list):
        raise ValueError(f"{path}: allowlist must be a list of {{cve, expires, reason}}")
    for i, entry in enumerate(allowlist):
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            raise ValueError(f"{path}: allowlist[{i}] must have exactly the keys {sorted(_ENTRY_KEYS)}")
    return policy
