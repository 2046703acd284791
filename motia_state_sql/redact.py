"""Passwords out of sight: URLs as shown in ``repr``, logs and messages, and scrubbed driver text.

The one place the project hides secrets; every backend with a URL (Redis, PostgreSQL) and the
CLI show URLs through ``redact`` and clean driver messages with ``scrub``.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["redact", "scrub", "secrets_in"]

_QUERY_SECRET = re.compile(r"(?i)(^|[&;])([^=&;]*pass[^=&;]*)=([^&;]*)")


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***`` (for repr, logs and messages).

    Covers the userinfo password (``redis://user:pw@host``) and query parameters naming one
    (``?password=pw``, ``ssl_password``, ``sslpassword``), which the drivers accept too. A URL
    without a password comes back as it was given (any scheme: the CLI shows every URL through
    this).
    """
    parts = urlsplit(url)
    secret = parts._replace(query=_QUERY_SECRET.sub(r"\1\2=***", parts.query))
    if parts.password is not None:
        # The netloc's text after "@" is kept as written (parts.port would raise for a bad port).
        user = parts.username or ""
        secret = secret._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    return url if secret == parts else urlunsplit(secret)


def secrets_in(url: str) -> tuple[str, ...]:
    """The passwords in ``url`` (as written and decoded), longest first, for ``scrub``."""
    parts = urlsplit(url)
    found = [parts.password or ""] + [m.group(3) for m in _QUERY_SECRET.finditer(parts.query)]
    every = {variant for text in found for variant in (text, unquote(text)) if text}
    return tuple(sorted(every, key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` (a driver's message) with each of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
