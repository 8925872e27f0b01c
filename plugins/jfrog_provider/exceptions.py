"""Exceptions raised by the JFrog hooks; all are transient-or-unknown (normal task retries apply)."""

from __future__ import annotations

try:  # one Airflow 3 import surface (style.md); the fallback only serves older Task SDK builds
    from airflow.sdk.exceptions import AirflowException
except ImportError:  # pragma: no cover
    from airflow.exceptions import AirflowException


class JFrogApiError(AirflowException):
    """A JFrog REST call failed: `status` is the HTTP status (None for connection errors)."""

    def __init__(self, status: int | None, message: str, *, method: str | None = None,
                 url_path: str | None = None) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.url_path = url_path
        where = f"{method} {url_path} " if method and url_path else ""
        what = f"HTTP {status}" if status is not None else "no HTTP response"
        super().__init__(f"JFrog API {where}failed ({what}): {message}")

    def __reduce__(self):  # keep pickling working with the keyword-rich constructor
        return (_rebuild, (type(self), self.status, self.message, self.method, self.url_path))


def _rebuild(cls: type[JFrogApiError], status: int | None, message: str, method: str | None,
             url_path: str | None) -> JFrogApiError:
    return cls(status, message, method=method, url_path=url_path)


class ChecksumMismatchError(JFrogApiError):
    """Bytes stored or received do not hash to what we expected."""


class XrayScanError(JFrogApiError):
    """Xray reported the scan itself as failed."""


class XrayScanTimeoutError(JFrogApiError):
    """A graph scan did not finish in time; treated as a failure (fail closed)."""


class XraySummaryError(JFrogApiError):
    """Xray answered a summary request but listed some identifiers in `errors` (Xray "Artifact Summary")."""


class MalformedScanResultError(JFrogApiError):
    """An Xray result could not be parsed; treated as a failure (fail closed)."""
