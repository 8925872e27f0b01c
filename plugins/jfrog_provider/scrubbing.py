"""Keep a JFrog credential out of every message, log line and return value, in whatever form a server echoes it.

A server (or a proxy in front of it) may reflect the request in an error page, a JSON field or a redirect
URL. The credential then appears as the token itself, inside `Bearer <token>`, as the base64 of
`login:token` in `Basic <base64>` (RFC 7617 "The 'Basic' HTTP Authentication Scheme"), percent-encoded in a
URL, or escaped inside HTML or JSON. `Scrubber` knows every such form and replaces each with `***`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel

REDACTED = "***"
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def _base64_forms(text: str) -> set[str]:
    raw = text.encode("utf-8")
    forms = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return forms | {f.rstrip("=") for f in forms}


def credential_forms(secret: str, login: str | None = None) -> frozenset[str]:
    """Every text form of `secret` (and, with a login, of the Basic credential `login:secret`) worth redacting."""
    if not secret:
        return frozenset()
    bases = {secret, *_base64_forms(f"{login}:{secret}")} if login else {secret}
    forms: set[str] = set()
    for text in bases:
        for encoded in (quote(text, safe=""), quote(text), quote_plus(text, safe="")):
            # percent-escapes are case-insensitive (RFC 3986 "Percent-Encoding"): %2F and %2f are the same
            forms |= {encoded, _PERCENT_ESCAPE.sub(lambda m: m.group().lower(), encoded)}
        forms |= {text, html.escape(text), json.dumps(text)[1:-1]}
    return frozenset(f for f in forms if f)


class Scrubber:
    """Replaces every known form of a credential with `***` in text, data structures and exceptions."""

    def __init__(self, forms: Iterable[str]) -> None:
        self.forms = frozenset(f for f in forms if f)
        # longest first, so `Bearer`'s token and a Basic credential's padded base64 go as a whole
        alternatives = sorted(self.forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    def __repr__(self) -> str:
        return f"Scrubber({len(self.forms)} forms)"

    def text(self, text: str) -> str:
        """`text` with every form replaced by `***`."""
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text

    def excerpt(self, text: str, limit: int) -> str:
        """At most `limit` characters of `text`, scrubbed first: a cut must never leave a credential's prefix."""
        return self.text(text)[:limit]

    def leaks(self, text: str) -> bool:
        """True when `text` holds any form."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def value(self, value: Any) -> Any:
        """A copy of a return value with every string scrubbed: str, dict, list, tuple, set, dataclass, pydantic."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return type(value)(*(self.value(v) for v in value))
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self.value(v) for v in value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: self.value(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
            return dataclasses.replace(value, **changes)
        if isinstance(value, BaseModel):
            return value.model_copy(update={name: self.value(getattr(value, name))
                                            for name in type(value).model_fields})
        return value

    def exception(self, exc: BaseException) -> BaseException:
        """Scrub an exception, its causes and contexts in place; returns the exception to raise.

        Messages live in `args` (and JFrogApiError's `message`); an exception whose text still leaks after that
        (a `__str__` built from other attributes) is cut from the chain, or replaced when it is the one raised.
        """
        from jfrog_provider.exceptions import JFrogApiError

        chain: list[BaseException] = []
        seen: set[int] = set()
        pending: list[BaseException] = [exc]
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            chain.append(current)
            current.args = tuple(self._arg(a, pending) for a in current.args)
            if isinstance(current, JFrogApiError):
                current.message = self.text(current.message)
            if hasattr(current, "__notes__"):
                current.__notes__ = [self.text(n) for n in current.__notes__]
            pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        for current in chain:
            if current.__cause__ is not None and self._still_leaks(current.__cause__):
                current.__cause__ = None
                current.__suppress_context__ = True
            if current.__context__ is not None and self._still_leaks(current.__context__):
                current.__context__ = None
        if self._still_leaks(exc):
            return JFrogApiError(None, self.text(str(exc)))
        return exc

    def _arg(self, arg: Any, pending: list[BaseException]) -> Any:
        if isinstance(arg, str):
            return self.text(arg)
        if isinstance(arg, BaseException):  # requests wraps urllib3's error as its first argument
            pending.append(arg)
            return arg
        if isinstance(arg, list | tuple):
            return type(arg)(self._arg(a, pending) for a in arg)
        return arg

    def _still_leaks(self, exc: BaseException) -> bool:
        try:
            return self.leaks(str(exc))
        except Exception:  # noqa: BLE001 - an exception whose __str__ fails says nothing, so leaks nothing
            return False
