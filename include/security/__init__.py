"""Security policy as data: the Xray gate's severity threshold, fail-build switch and CVE allowlist.

`load_xray_policy` is the one reader of xray_policy.json; both DAGs take their defaults from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

POLICY_FILE = Path(__file__).resolve().parent / "xray_policy.json"
SCHEMA = "mnist-mlops/xray-policy/1"
# the thresholds a person may choose; Pending/Unknown are not thresholds (unrated findings always block)
SEVERITIES = ("Critical", "High", "Medium", "Low")
_KEYS = {"schema", "severity_threshold", "fail_on_fail_build_violations", "allowlist"}
_ENTRY_KEYS = {"cve", "expires", "reason"}


def load_xray_policy(path: Path | None = None) -> dict[str, Any]:
    """Read and check the policy file; ValueError names the file and the field when it is malformed."""
    path = Path(path or POLICY_FILE)
    try:
        policy = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the Xray policy: {exc}") from exc
    if not isinstance(policy, dict):
        raise ValueError(f"{path}: the Xray policy must be a JSON object")
    if set(policy) != _KEYS:  # a misspelt setting must not be silently ignored
        raise ValueError(f"{path}: keys must be exactly {sorted(_KEYS)}; missing {sorted(_KEYS - set(policy))}, "
                         f"unknown {sorted(set(policy) - _KEYS)}")
    if policy["schema"] != SCHEMA:
        raise ValueError(f"{path}: schema must be {SCHEMA!r}, got {policy['schema']!r}")
    if policy["severity_threshold"] not in SEVERITIES:
        raise ValueError(f"{path}: severity_threshold must be one of {SEVERITIES}, got "
                         f"{policy['severity_threshold']!r}")
    if not isinstance(policy["fail_on_fail_build_violations"], bool):
        raise ValueError(f"{path}: fail_on_fail_build_violations must be true or false, got "
                         f"{policy['fail_on_fail_build_violations']!r}")
    if not isinstance(policy["allowlist"], list):
        raise ValueError(f"{path}: allowlist must be a list of {{cve, expires, reason}}")
    for i, entry in enumerate(policy["allowlist"]):
        # the entries' values (CVE id, expiry date, reason) are checked by the gate that receives them
        # (jfrog_provider.policy.parse_allowlist), when the DAG is parsed
        if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
            raise ValueError(f"{path}: allowlist[{i}] must have exactly the keys {sorted(_ENTRY_KEYS)}")
    return policy
