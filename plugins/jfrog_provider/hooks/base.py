"""JFrogHook: the connection, session and single HTTP choke point shared by Artifactory and Xray hooks."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter

from jfrog_provider import __version__
from jfrog_provider.exceptions import JFrogApiError

Service = Literal["artifactory", "xray"]

# contract §1.3: only these statuses are worth retrying; every other 4xx is final
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# a POST that the server did not process (rate limited / unavailable) is safe to resend
RETRYABLE_STATUSES_NON_IDEMPOTENT = frozenset({429, 503})
# connecting should be quick; the read timeout covers slow answers (a big upload is many short reads)
CONNECT_TIMEOUT_MAX = 10.0
# http.client sends a file body in `blocksize` pieces (urllib3 default 16 KiB); 1 MiB cuts syscalls 64x
UPLOAD_BLOCKSIZE = 1024 * 1024


class _BlocksizeAdapter(HTTPAdapter):
    """HTTPAdapter whose connections send request bodies in UPLOAD_BLOCKSIZE pieces."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", UPLOAD_BLOCKSIZE)
        super().init_poolmanager(*args, **kwargs)


def _never_reached_server(exc: Exception) -> bool:
    # a refused or timed-out connect means the request was never sent: safe even for a POST
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _as_bool(value: Any) -> bool | str:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        return value  # a CA bundle path for requests' `verify`
    return bool(value)


@dataclass(frozen=True)
class JFrogConnectionConfig:
    """Resolved connection settings (never logged: it holds the token)."""

    platform_url: str
    artifactory_url: str
    xray_url: str
    token: str
    login: str | None
    timeout: float
    verify: bool | str
    max_retries: int
    backoff_base: float
    backoff_max: float
    max_total_wait: float

    def __repr__(self) -> str:  # keep the token out of any accidental repr in logs
        return f"JFrogConnectionConfig(platform_url={self.platform_url!r}, login={self.login!r})"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_message(resp: requests.Response) -> str:
    """JFrog's own message: Artifactory errors[0].message, Xray error/info, else the raw text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("message"):
            return str(errors[0]["message"])
        for key in ("error", "info", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    text = (resp.text or "").strip()
    return text[:1000] if text else (resp.reason or "no response body")


class JFrogHook(BaseHook):
    """Authenticated, retrying HTTP access to a JFrog Platform (Artifactory + Xray)."""

    conn_name_attr = "jfrog_conn_id"
    default_conn_name = "jfrog_default"
    conn_type = "jfrog"
    hook_name = "JFrog Platform"

    DEFAULT_TIMEOUT = 60.0
    DEFAULT_MAX_RETRIES = 5
    DEFAULT_BACKOFF_BASE = 1.0
    DEFAULT_BACKOFF_MAX = 30.0
    DEFAULT_MAX_TOTAL_WAIT = 120.0

    def __init__(self, jfrog_conn_id: str = default_conn_name, *, timeout: float | None = None,
                 max_retries: int | None = None, backoff_base: float | None = None,
                 backoff_max: float | None = None, max_total_wait: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jfrog_conn_id = jfrog_conn_id
        self._overrides = {"timeout": timeout, "max_retries": max_retries, "backoff_base": backoff_base,
                           "backoff_max": backoff_max, "max_total_wait": max_total_wait}
        self._sleep: Callable[[float], None] = time.sleep

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the connection form: host is the platform URL, password the access token."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {"host": "Platform URL", "login": "User (optional, Basic auth)",
                           "password": "Access token"},
            "placeholders": {"host": "https://acme.jfrog.io",
                             "extra": '{"timeout": 60, "verify": true, "max_retries": 5}'},
        }

    # -- connection ---------------------------------------------------------------------------------
    @cached_property
    def config(self) -> JFrogConnectionConfig:
        """Settings from the Airflow connection, overridden by constructor arguments."""
        conn = self.get_connection(self.jfrog_conn_id)
        extra = conn.extra_dejson or {}
        host = (conn.host or "").strip()
        if not host:
            raise ValueError(f"Connection {self.jfrog_conn_id!r} has no host (the JFrog platform URL)")
        if "://" in host:
            parts = urlsplit(host)
            scheme, netloc, path = parts.scheme, parts.netloc, parts.path
        else:
            scheme, (netloc, _, path) = (conn.schema or "https"), host.partition("/")
        if conn.port and ":" not in netloc.rsplit("]", 1)[-1]:
            netloc = f"{netloc}:{conn.port}"
        path = path.rstrip("/")
        # accept an Artifactory URL where a platform URL was expected
        if path.endswith("/artifactory"):
            path = path[: -len("/artifactory")]
        platform = f"{scheme}://{netloc}{path}"
        token = conn.password or extra.get("access_token") or ""
        if not token:
            raise ValueError(f"Connection {self.jfrog_conn_id!r} has no access token (password)")
        self._mask(token)

        def pick(name: str, default: float) -> Any:
            value = self._overrides.get(name)
            return value if value is not None else extra.get(name, default)

        return JFrogConnectionConfig(
            platform_url=platform,
            artifactory_url=str(extra.get("artifactory_url") or f"{platform}/artifactory").rstrip("/"),
            xray_url=str(extra.get("xray_url") or f"{platform}/xray").rstrip("/"),
            token=token,
            login=conn.login or None,
            timeout=float(pick("timeout", self.DEFAULT_TIMEOUT)),
            verify=_as_bool(extra.get("verify", True)),
            max_retries=int(pick("max_retries", self.DEFAULT_MAX_RETRIES)),
            backoff_base=float(pick("backoff_base", self.DEFAULT_BACKOFF_BASE)),
            backoff_max=float(pick("backoff_max", self.DEFAULT_BACKOFF_MAX)),
            max_total_wait=float(pick("max_total_wait", self.DEFAULT_MAX_TOTAL_WAIT)),
        )

    @staticmethod
    def _mask(secret: str) -> None:
        # the SDK masks connection passwords already; register again for tokens coming from extras
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # pragma: no cover - older SDKs
            return
        mask_secret(secret)

    @cached_property
    def session(self) -> requests.Session:
        """One authenticated keep-alive session per hook instance."""
        cfg = self.config
        session = requests.Session()
        session.headers["User-Agent"] = f"airflow-jfrog-provider/{__version__}"
        if cfg.login:
            session.auth = (cfg.login, cfg.token)  # contract §1.1: a token is accepted as Basic password
        else:
            session.headers["Authorization"] = f"Bearer {cfg.token}"
        session.verify = cfg.verify
        # requests re-reads proxy env vars (and netrc) on every call, ~1 ms each (perf goal U1, 1 MB case);
        # resolve them once for the platform URL and freeze them on the session instead
        env = session.merge_environment_settings(cfg.platform_url, {}, None, cfg.verify, None)
        session.proxies.update(env["proxies"])
        session.verify = env["verify"]
        session.trust_env = False
        adapter = _BlocksizeAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def get_conn(self) -> requests.Session:
        """The authenticated session."""
        return self.session

    def close(self) -> None:
        """Close the pooled connections."""
        if "session" in self.__dict__:
            self.__dict__.pop("session").close()

    def test_connection(self) -> tuple[bool, str]:
        """Ping Artifactory with the connection's credentials."""
        try:
            self._request("GET", "/api/system/version")
        except (JFrogApiError, ValueError) as exc:
            return False, str(exc)
        return True, "Connection to JFrog Artifactory works"

    def ping(self, service: Service = "artifactory") -> bool:
        """Ping one service (contract A1 / X1)."""
        path = "/api/system/ping" if service == "artifactory" else "/api/v1/system/ping"
        self._request("GET", path, service=service)
        return True

    def service_url(self, service: Service) -> str:
        """Base URL of Artifactory or Xray."""
        return self.config.artifactory_url if service == "artifactory" else self.config.xray_url

    # -- the choke point ----------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        cfg = self.config
        cap = min(cfg.backoff_max, cfg.backoff_base * (2**attempt))
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": never zero, never above cap

    def _request(self, method: str, url_path: str, *, service: Service = "artifactory", retry: bool = True,
                 idempotent: bool | None = None, **kwargs: Any) -> requests.Response:
        """Send one REST call with timeouts and bounded safe retries; raise JFrogApiError on non-2xx."""
        cfg = self.config
        method = method.upper()
        url = self.service_url(service) + url_path
        if idempotent is None:
            idempotent = method != "POST"
        kwargs.setdefault("timeout", (min(cfg.timeout, CONNECT_TIMEOUT_MAX), cfg.timeout))
        attempt, waited = 0, 0.0
        while True:
            try:
                # a streamed body re-iterates from byte 0 on each attempt (ArtifactoryHook.deploy_artifact)
                resp = self.session.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                # ChunkedEncodingError is how requests reports a body cut short (reset / short read)
                # ConnectTimeout/refused never reached the server; anything later is unsafe for POSTs
                safe = idempotent or _never_reached_server(exc)
                wait = self._backoff(attempt)
                if not (retry and safe and attempt < cfg.max_retries and waited + wait <= cfg.max_total_wait):
                    raise JFrogApiError(None, f"{type(exc).__name__}: {self._scrub(str(exc))}",
                                        method=method, url_path=url_path) from exc
                self.log.warning("JFrog %s %s: %s; retry %d/%d in %.2fs", method, url_path,
                                 type(exc).__name__, attempt + 1, cfg.max_retries, wait)
            else:
                if resp.ok:
                    return resp
                allowed = RETRYABLE_STATUSES if idempotent else RETRYABLE_STATUSES_NON_IDEMPOTENT
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                wait = retry_after if retry_after is not None else self._backoff(attempt)
                if not (retry and resp.status_code in allowed and attempt < cfg.max_retries
                        and waited + wait <= cfg.max_total_wait):
                    raise JFrogApiError(resp.status_code, self._scrub(error_message(resp)), method=method,
                                        url_path=url_path)
                self.log.warning("JFrog %s %s answered %d; retry %d/%d in %.2fs", method, url_path,
                                 resp.status_code, attempt + 1, cfg.max_retries, wait)
                resp.close()
            self._sleep(wait)
            waited += wait
            attempt += 1

    def _scrub(self, text: str) -> str:
        # never let the token reach an exception message, even if a server echoes it back
        token = self.config.token
        return text.replace(token, "***") if token else text
