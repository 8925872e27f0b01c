"""JFrogHook: the connection, sessions and single HTTP choke point shared by Artifactory and Xray hooks."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import httpx
import requests
import urllib3
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from requests.utils import select_proxy
from tenacity import AsyncRetrying, RetryCallState, Retrying, wait_exponential, wait_random_exponential
from tenacity.wait import wait_base

from jfrog_provider import __version__
from jfrog_provider.exceptions import JFrogApiError
from jfrog_provider.scrubbing import Scrubber, credential_forms

Service = Literal["artifactory", "xray", "evidence"]

# Only these statuses are worth retrying; every other 4xx is final. jfrog-client-go retries >= 500 and 429
# (http/httpclient/client.go `shouldRetry`); 500 is left out here because a JFrog 500 is a server bug that a
# resend does not fix. JFrog REST APIs "Error Responses": https://jfrog.com/help/r/jfrog-rest-apis/error-responses
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# a POST that the server did not process (rate limited / unavailable) is safe to resend
RETRYABLE_STATUSES_NON_IDEMPOTENT = frozenset({429, 503})
# connecting should be quick; the read timeout covers slow answers (a big upload is many short reads)
CONNECT_TIMEOUT_MAX = 10.0
# http.client sends a file body in `blocksize` pieces (urllib3 default 16 KiB); 1 MiB cuts syscalls 64x
UPLOAD_BLOCKSIZE = 1024 * 1024
# how much of a non-JSON error page goes into an exception message (scrubbed before the cut)
ERROR_TEXT_LIMIT = 1000
# the most of an answer a lean call reads: a deploy answers with ItemCreated JSON of about 1 KB
LEAN_ANSWER_LIMIT = 1024 * 1024


class _BlocksizeAdapter(HTTPAdapter):
    """HTTPAdapter whose connections send request bodies in UPLOAD_BLOCKSIZE pieces."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", UPLOAD_BLOCKSIZE)
        super().init_poolmanager(*args, **kwargs)


# requests reports a body cut short as ChunkedEncodingError; httpx as RemoteProtocolError / ReadError; a lean
# call (urllib3 itself) as ProtocolError, a timeout as urllib3's TimeoutError
_TRANSPORT_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                     httpx.TransportError, urllib3.exceptions.ProtocolError, urllib3.exceptions.TimeoutError,
                     urllib3.exceptions.SSLError)


def _never_reached_server(exc: BaseException) -> bool:
    """A refused or timed-out connect: the request was never sent, so resending is safe even for a POST."""
    # urllib3's NewConnectionError is a ConnectTimeoutError
    if isinstance(exc, requests.ConnectTimeout | httpx.ConnectError | httpx.ConnectTimeout
                  | urllib3.exceptions.ConnectTimeoutError):
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


class SentRequest(NamedTuple):
    """The request a lean answer replies to."""

    method: str
    url: str


@dataclass(frozen=True)
class LeanAnswer:
    """A lean call's answer, read in full: the parts of a requests or httpx response the hooks use."""

    status_code: int
    headers: Mapping[str, str]  # urllib3's HTTPHeaderDict: case-insensitive, as in requests and httpx
    content: bytes
    reason: str
    request: SentRequest

    @property
    def text(self) -> str:
        """The body as text (JFrog answers in UTF-8)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON, as requests and httpx raise."""
        return json.loads(self.content)


Response = requests.Response | httpx.Response | LeanAnswer


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
    # every form of the credential (token, Bearer, Basic base64, URL-encoded), for messages and return values
    scrubber: Scrubber = field(default_factory=lambda: Scrubber(()), compare=False)

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


def error_message(resp: Response, scrubber: Scrubber | None = None) -> str:
    """JFrog's own message: Artifactory errors[0].message, Xray error/info, else the raw text (scrubbed, then cut)."""
    scrubber = scrubber or Scrubber(())
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("message"):
            return scrubber.text(str(errors[0]["message"]))
        for key in ("error", "info", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return scrubber.text(body[key])
    text = (resp.text or "").strip()
    reason = getattr(resp, "reason", None) or getattr(resp, "reason_phrase", "")
    return scrubber.excerpt(text, ERROR_TEXT_LIMIT) if text else scrubber.text(reason or "no response body")


def plumbing(method: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a public hook method whose answer is the hook's own machinery (config, URLs, sessions): not scrubbed."""
    method.__jfrog_plumbing__ = True  # type: ignore[attr-defined]
    return method


def _scrubbed(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a public hook method: its exceptions and its return value leave with every credential form redacted."""
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def async_wrapper(self: JFrogHook, *args: Any, **kwargs: Any) -> Any:
            try:
                result = await method(self, *args, **kwargs)
            except Exception as exc:
                clean = self._scrubber.exception(exc)
                if clean is exc:
                    raise
                raise clean from None
            return self._scrubber.value(result)

        async_wrapper.__jfrog_scrubbed__ = True  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(method)
    def wrapper(self: JFrogHook, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except Exception as exc:
            clean = self._scrubber.exception(exc)
            if clean is exc:
                raise
            raise clean from None
        return self._scrubber.value(result)

    wrapper.__jfrog_scrubbed__ = True  # type: ignore[attr-defined]
    return wrapper


def _scrub_public_methods(cls: type) -> None:
    # the one place every answer leaves the provider: each public method defined on a JFrog hook class
    for name, attr in list(vars(cls).items()):
        if (not name.startswith("_") and inspect.isfunction(attr) and not getattr(attr, "__jfrog_plumbing__", False)
                and not getattr(attr, "__jfrog_scrubbed__", False)):
            setattr(cls, name, _scrubbed(attr))


class JFrogHook(BaseHook):
    """Authenticated, retrying HTTP access to a JFrog Platform (Artifactory + Xray).

    The connection form (labels, extras, defaults) is declared once, in the provider info
    (`jfrog_provider.get_provider_info`), which Airflow 3.2+ reads without importing this hook.
    """

    conn_name_attr = "jfrog_conn_id"
    default_conn_name = "jfrog_default"
    conn_type = "jfrog"
    hook_name = "JFrog Platform"

    DEFAULT_TIMEOUT = 60.0
    DEFAULT_MAX_RETRIES = 5
    DEFAULT_BACKOFF_BASE = 1.0
    DEFAULT_BACKOFF_MAX = 30.0
    DEFAULT_MAX_TOTAL_WAIT = 120.0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _scrub_public_methods(cls)

    def __init__(self, jfrog_conn_id: str = default_conn_name, *, timeout: float | None = None,
                 max_retries: int | None = None, backoff_base: float | None = None,
                 backoff_max: float | None = None, max_total_wait: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jfrog_conn_id = jfrog_conn_id
        self._overrides = {"timeout": timeout, "max_retries": max_retries, "backoff_base": backoff_base,
                           "backoff_max": backoff_max, "max_total_wait": max_total_wait}
        # tests swap these to observe the waits without sleeping
        self._sleep: Callable[[float], None] = time.sleep
        self._asleep: Callable[[float], Any] = asyncio.sleep

    # -- connection ---------------------------------------------------------------------------------
    @cached_property
    def config(self) -> JFrogConnectionConfig:
        """Settings from the Airflow connection, overridden by constructor arguments."""
        return self._resolve(self.get_connection(self.jfrog_conn_id))

    @plumbing
    async def aconfig(self) -> JFrogConnectionConfig:
        """`config` for async code (triggers): reads the connection without blocking the event loop."""
        if "config" not in self.__dict__:
            self.__dict__["config"] = self._resolve(await self.aget_connection(self.jfrog_conn_id))
        return self.config

    def _resolve(self, conn: Any) -> JFrogConnectionConfig:
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
        login = conn.login or None
        forms = credential_forms(token, login)
        self._mask(forms)

        def pick(name: str, default: float) -> Any:
            value = self._overrides.get(name)
            return value if value is not None else extra.get(name, default)

        return JFrogConnectionConfig(
            platform_url=platform,
            artifactory_url=str(extra.get("artifactory_url") or f"{platform}/artifactory").rstrip("/"),
            xray_url=str(extra.get("xray_url") or f"{platform}/xray").rstrip("/"),
            token=token,
            login=login,
            timeout=float(pick("timeout", self.DEFAULT_TIMEOUT)),
            verify=_as_bool(extra.get("verify", True)),
            max_retries=int(pick("max_retries", self.DEFAULT_MAX_RETRIES)),
            backoff_base=float(pick("backoff_base", self.DEFAULT_BACKOFF_BASE)),
            backoff_max=float(pick("backoff_max", self.DEFAULT_BACKOFF_MAX)),
            max_total_wait=float(pick("max_total_wait", self.DEFAULT_MAX_TOTAL_WAIT)),
            scrubber=Scrubber(forms),
        )

    @staticmethod
    def _mask(forms: frozenset[str]) -> None:
        # The SDK masks a connection's password, not the Basic header built from it, its URL-encoded form or a
        # token kept in extras: register every form with Airflow's secrets masker ("Masking sensitive data")
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # pragma: no cover - older SDKs
            return
        for form in forms:
            mask_secret(form)

    @property
    def _scrubber(self) -> Scrubber:
        # before the connection is read no credential has been used, so there is nothing to redact
        cfg = self.__dict__.get("config")
        return cfg.scrubber if cfg is not None else Scrubber(())

    def _auth_headers(self) -> dict[str, str]:
        # JFrog "Authorization Headers": an access token is a bearer token; with a login it is a Basic password
        # https://jfrog.com/help/r/jfrog-platform-administration-documentation/authorization-headers
        cfg = self.config
        headers = {"User-Agent": f"airflow-jfrog-provider/{__version__}"}
        if not cfg.login:
            headers["Authorization"] = f"Bearer {cfg.token}"
        return headers

    @cached_property
    def session(self) -> requests.Session:
        """One authenticated keep-alive session per hook instance."""
        cfg = self.config
        session = requests.Session()
        session.headers.update(self._auth_headers())
        if cfg.login:
            session.auth = (cfg.login, cfg.token)
        session.verify = cfg.verify
        # requests re-reads proxy env vars (and netrc) on every call, ~1 ms each on a 1 MB upload;
        # resolve them once for the platform URL and freeze them on the session instead
        env = session.merge_environment_settings(cfg.platform_url, {}, None, cfg.verify, None)
        session.proxies.update(env["proxies"])
        session.verify = env["verify"]
        session.trust_env = False
        adapter = _BlocksizeAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    @cached_property
    def async_client(self) -> httpx.AsyncClient:
        """The async twin of `session`, for triggers; call `aconfig()` first so no sync lookup runs on the loop."""
        cfg = self.config
        # httpx takes a CA bundle as an SSL context (a path string is deprecated in httpx 0.28)
        verify = ssl.create_default_context(cafile=cfg.verify) if isinstance(cfg.verify, str) else cfg.verify
        # httpx drops Authorization when a redirect leaves the origin, as requests does
        return httpx.AsyncClient(
            headers=self._auth_headers(), auth=(cfg.login, cfg.token) if cfg.login else None, verify=verify,
            timeout=httpx.Timeout(cfg.timeout, connect=min(cfg.timeout, CONNECT_TIMEOUT_MAX)),
            follow_redirects=True)

    @plumbing
    def get_conn(self) -> requests.Session:
        """The authenticated session."""
        return self.session

    @plumbing
    def close(self) -> None:
        """Close the pooled connections."""
        self.__dict__.pop("_lean_pools", None)  # pools of the session closed next
        if "session" in self.__dict__:
            self.__dict__.pop("session").close()

    @plumbing
    async def aclose(self) -> None:
        """Close the async client's pooled connections."""
        if "async_client" in self.__dict__:
            await self.__dict__.pop("async_client").aclose()

    def test_connection(self) -> tuple[bool, str]:
        """Ping Artifactory with the connection's credentials."""
        try:
            self._request("GET", "/api/system/version")
        except (JFrogApiError, ValueError) as exc:
            return False, str(exc)
        return True, "Connection to JFrog Artifactory works"

    def ping(self, service: Service = "artifactory") -> bool:
        """Ping one service (JFrog REST "System Health Ping" / Xray "Ping Request")."""
        path = "/api/system/ping" if service == "artifactory" else "/api/v1/system/ping"
        self._request("GET", path, service=service)
        return True

    @plumbing
    def service_url(self, service: Service) -> str:
        """Base URL of Artifactory, Xray or the Evidence service."""
        if service == "evidence":  # `<platform>/evidence/api/v1/...` (JFrog REST "Deploy Evidence")
            return f"{self.config.platform_url}/evidence"
        return self.config.artifactory_url if service == "artifactory" else self.config.xray_url

    # -- the choke point ----------------------------------------------------------------------------
    @property
    def _backoff(self) -> wait_base:
        """"Equal jitter": half of min(backoff_max, base * 2**(attempt-1)) fixed, half random; never zero.

        Jitter stays once the cap is reached, so clients throttled together do not retry in step
        (AWS Architecture Blog, "Exponential Backoff And Jitter").
        """
        cfg = self.config
        half = {"multiplier": cfg.backoff_base / 2, "max": cfg.backoff_max / 2}
        return wait_exponential(**half) + wait_random_exponential(**half)

    def _retry_policy(self, method: str, url_path: str, *, idempotent: bool, retry: bool) -> dict[str, Any]:
        """tenacity arguments for one call: what to retry, how long to wait, when to give up."""
        cfg = self.config
        statuses = RETRYABLE_STATUSES if idempotent else RETRYABLE_STATUSES_NON_IDEMPOTENT
        backoff = self._backoff

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome.failed:
                exc = outcome.exception()
                # a connect that failed never reached the server; anything later is unsafe for a POST
                return isinstance(exc, _TRANSPORT_ERRORS) and (idempotent or _never_reached_server(exc))
            return outcome.result().status_code in statuses

        def wait(state: RetryCallState) -> float:
            # JFrog documents no Retry-After format: honour both RFC 9110 forms when a proxy or gateway sends one
            if not state.outcome.failed:
                after = parse_retry_after(state.outcome.result().headers.get("Retry-After"))
                if after is not None:
                    return after
            return backoff(state)

        def stop(state: RetryCallState) -> bool:
            return (not retry or state.attempt_number > cfg.max_retries
                    or state.idle_for + state.upcoming_sleep > cfg.max_total_wait)

        def before_sleep(state: RetryCallState) -> None:
            outcome = state.outcome
            if outcome.failed:
                exc = outcome.exception()
                what = type(exc).__name__
            else:
                resp = outcome.result()
                what = f"answered {resp.status_code}"
                if isinstance(resp, requests.Response):
                    resp.close()  # give a streamed answer's connection back; httpx read its answer in full
            self.log.warning("JFrog %s %s %s; retry %d/%d in %.2fs", method, self._scrub(url_path), what,
                             state.attempt_number, cfg.max_retries, state.upcoming_sleep)

        return {"retry": should_retry, "wait": wait, "stop": stop, "before_sleep": before_sleep,
                # out of tries or time: hand back the last answer (or raise the last error) unchanged
                "retry_error_callback": lambda state: state.outcome.result()}

    @cached_property
    def _lean_headers(self) -> dict[str, str]:
        """What the session would send on every call, as one dict; identity encoding keeps answers unexpanded."""
        headers = {**self._auth_headers(), "Accept": "*/*", "Accept-Encoding": "identity"}
        cfg = self.config
        if cfg.login:  # the Authorization header requests builds for `session.auth`, built by requests
            prepared = requests.PreparedRequest()
            prepared.prepare_headers({})
            headers["Authorization"] = HTTPBasicAuth(cfg.login, cfg.token)(prepared).headers["Authorization"]
        return headers

    def _lean_pool(self, url: str) -> urllib3.HTTPConnectionPool | None:
        """The session's own pool for url's origin; None where a proxy or a mounted adapter of another kind applies."""
        session = self.session
        adapter = session.get_adapter(url)
        if select_proxy(url, session.proxies) or not isinstance(adapter, HTTPAdapter):
            return None
        target = requests.PreparedRequest()
        target.url = url
        return adapter.get_connection_with_tls_context(target, session.verify)

    def _lean_send(self, method: str, url: str, *, headers: dict[str, str], data: Any,
                   timeout: tuple[float, float]) -> Response:
        """One call with a sized body straight on the session's urllib3 pool (same connections, same TLS settings).

        requests prepares every call anew (settings merge, cookies, hooks): about 0.5 ms a call, a third of what
        a 1 MB deploy costs over `curl -T` (bench/bench_upload.py). A proxy and a redirect go through the
        session, which owns their rules (Authorization is dropped when a redirect leaves the host).
        """
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        pools = self.__dict__.setdefault("_lean_pools", {})
        if origin not in pools:
            pools[origin] = self._lean_pool(url)
        pool = pools[origin]
        if pool is None:
            return self.session.request(method, url, headers=headers, data=data, timeout=timeout)
        try:
            answer = pool.urlopen(
                method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data,
                headers={**self._lean_headers, **headers, "Content-Length": str(len(data))},
                redirect=False, retries=False, assert_same_host=False, preload_content=False, decode_content=False,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]))
        except urllib3.exceptions.ClosedPoolError:  # closed since it was cached: the session picks the current one
            del pools[origin]
            return self.session.request(method, url, headers=headers, data=data, timeout=timeout)
        if answer.get_redirect_location():
            answer.close()
            return self.session.request(method, url, headers=headers, data=data, timeout=timeout)
        content = b""
        # read until the end: a read that stops short returns what came, and only the next one raises IncompleteRead
        while len(content) <= LEAN_ANSWER_LIMIT:
            part = answer.read(LEAN_ANSWER_LIMIT + 1 - len(content), decode_content=False)
            if not part:
                break
            content += part
        if len(content) > LEAN_ANSWER_LIMIT:
            answer.close()
            raise JFrogApiError(answer.status, f"answer larger than {LEAN_ANSWER_LIMIT} bytes", method=method,
                                url_path=self._scrub(parts.path))
        answer.release_conn()
        # identity was asked for: a compressed answer is never inflated here, so it fails as "expected JSON"
        return LeanAnswer(answer.status, answer.headers, content, answer.reason or "", SentRequest(method, url))

    def _request(self, method: str, url_path: str, *, service: Service = "artifactory", retry: bool = True,
                 idempotent: bool | None = None, lean: bool = False, **kwargs: Any) -> Response:
        """Send one REST call with timeouts and bounded safe retries; raise JFrogApiError on an error status.

        A streamed body re-iterates from byte 0 on each attempt (ArtifactoryHook.deploy_artifact). `lean` sends
        a call whose only arguments are headers and a sized body on urllib3 directly (`_lean_send`).
        """
        cfg = self.config
        method = method.upper()
        idempotent = method != "POST" if idempotent is None else idempotent
        kwargs.setdefault("timeout", (min(cfg.timeout, CONNECT_TIMEOUT_MAX), cfg.timeout))
        policy = self._retry_policy(method, url_path, idempotent=idempotent, retry=retry)
        send = self._lean_send if lean else self.session.request
        try:
            resp = Retrying(sleep=self._sleep, **policy)(send, method, self.service_url(service) + url_path, **kwargs)
        except _TRANSPORT_ERRORS as exc:
            raise JFrogApiError(None, f"{type(exc).__name__}: {self._scrub(str(exc))}", method=method,
                                url_path=url_path) from exc
        return self._checked(resp, method, url_path)

    async def _arequest(self, method: str, url_path: str, *, service: Service = "artifactory",
                        retry: bool = True, idempotent: bool | None = None, **kwargs: Any) -> httpx.Response:
        """`_request` on the async client: the same retry policy, awaited sleeps, the same errors."""
        await self.aconfig()
        method = method.upper()
        idempotent = method != "POST" if idempotent is None else idempotent
        policy = self._retry_policy(method, url_path, idempotent=idempotent, retry=retry)
        try:
            resp = await AsyncRetrying(sleep=self._asleep, **policy)(
                self.async_client.request, method, self.service_url(service) + url_path, **kwargs)
        except _TRANSPORT_ERRORS as exc:
            raise JFrogApiError(None, f"{type(exc).__name__}: {self._scrub(str(exc))}", method=method,
                                url_path=url_path) from exc
        return self._checked(resp, method, url_path)

    def _checked(self, resp: Any, method: str, url_path: str) -> Any:
        if resp.status_code < 400:
            return resp
        raise JFrogApiError(resp.status_code, error_message(resp, self._scrubber), method=method,
                            url_path=self._scrub(url_path))

    def _scrub(self, text: str) -> str:
        """`text` without any form of the credential, even if a server echoed it back."""
        return self._scrubber.text(text)

    def _json(self, resp: Response, url_path: str) -> dict[str, Any]:
        """The JSON object a JFrog answer carries; JFrogApiError naming the call when it is not one."""
        try:
            body = resp.json()
        except ValueError as exc:
            raise JFrogApiError(resp.status_code, f"expected JSON, got {self._excerpt(resp.text, 200)!r}",
                                method=resp.request.method, url_path=url_path) from exc
        if not isinstance(body, dict):
            raise JFrogApiError(resp.status_code, "expected a JSON object", method=resp.request.method,
                                url_path=url_path)
        return body

    def _excerpt(self, text: str, limit: int) -> str:
        """At most `limit` characters of server text for a message, scrubbed before the cut."""
        return self._scrubber.excerpt(text, limit)


_scrub_public_methods(JFrogHook)
