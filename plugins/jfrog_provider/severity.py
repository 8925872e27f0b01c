"""Xray's severity scale, apart from the pydantic answer models so that a DAG file parses without building them."""

from __future__ import annotations

import enum
from typing import Any


class Severity(enum.IntEnum):
    """Xray severities, ordered so that comparisons work; PENDING and UNKNOWN are not rated and always block."""

    PENDING = -1
    UNKNOWN = 0
    INFORMATION = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @classmethod
    def parse(cls, value: Any) -> Severity:
        """Parse case-insensitively, mapping legacy names; raise ValueError on anything else."""
        if isinstance(value, Severity):
            return value
        if not isinstance(value, str):
            raise ValueError(f"severity must be a string, got {value!r}")
        key = value.strip().lower()
        # jfrog-cli-security `utils/severityutils/severity.go` lists the six names; jfrog-client-go
        # `xray/services/utils/policybody.go` adds Normal and Pending; the v1 build scan used Major/Minor
        key = {"info": "information", "major": "high", "minor": "low", "normal": "medium"}.get(key, key)
        try:
            return cls[key.upper()]
        except KeyError:
            raise ValueError(f"unknown Xray severity {value!r}") from None

    @property
    def rated(self) -> bool:
        """False for Pending and Unknown: Xray has not said how bad the finding is."""
        return self > Severity.UNKNOWN

    @property
    def label(self) -> str:
        """Xray's spelling, e.g. "Critical"."""
        return self.name.capitalize()
