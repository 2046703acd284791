"""``open_state(url)``: build an adapter from a URL, parsed once, failing loudly on anything unknown."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit

from .base import StateAdapter
from .errors import ConfigError, InvalidKeyError
from .options import parse_age
from .places import ENV_VAR, store_url
from .redact import redact

__all__ = ["ENV_VAR", "open_state"]


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _layout(text: str) -> str:
    if text not in ("native", "motia"):
        raise ValueError(f"expected native or motia, got {text!r}")
    return text


def _sync(text: str) -> str:
    if text.upper() not in ("NORMAL", "FULL"):
        raise ValueError(f"expected NORMAL or FULL, got {text!r}")
    return text.upper()


def _mode(text: str) -> bool:
    if text not in ("ro", "rw"):
        raise ValueError(f"expected ro (read-only) or rw, got {text!r}")
    return text == "ro"


def _octal(text: str) -> int:
    return int(text, 8)


# Query parameters each scheme accepts, with the converter that parses each. Ranges are
# checked by the adapters themselves (``options``), so a URL and a constructor agree.
_COMMON: Final[dict[str, Callable[[str], Any]]] = {
    "max_value_bytes": int,
    "mode": _mode,
    "idle_group_ttl": parse_age,
}
_PARAMETERS: Final[dict[str, dict[str, Callable[[str], Any]]]] = {
    "sqlite": {
        **_COMMON,
        "synchronous": _sync,
        "busy_timeout": float,
        "import_legacy": _bool,
        "purge_interval": float,
        "file_mode": _octal,
    },
    "memory": dict(_COMMON),
    "file": {**_COMMON, "lock_timeout": float, "durable": _bool},
    "postgres": {
        **_COMMON,
        "schema": str,
        "max_connections": int,
        "connect_timeout": float,
        "command_timeout": float,
        "purge_interval": float,
    },
    "redis": {
        **_COMMON,
        "key_prefix": str,
        "layout": _layout,
        "cluster": _bool,
        "socket_timeout": float,
        "connect_timeout": float,
        "max_connections": int,
    },
}
# Parameters left in the URL for redis-py itself to parse.
_REDIS_OWN: Final = frozenset(
    {
        "db",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
        "health_check_interval",
        "client_name",
        "protocol",
        "username",
        "password",  # redacted wherever the URL is shown, as the userinfo password is
        "ssl_password",
    }
)
_SCHEMES: Final = {
    "sqlite": "sqlite",
    "memory": "memory",
    "file": "file",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
}


def _options(scheme: str, query: str, passthrough: frozenset[str] = frozenset()) -> dict[str, Any]:
    accepted = _PARAMETERS[scheme]
    options: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name in passthrough:
            continue
        if name not in accepted:
            raise InvalidKeyError(
                f"unknown parameter {name!r} for {scheme}:// URLs; "
                f"accepted: {sorted([*accepted, *passthrough])}"
            )
        try:
            options["read_only" if name == "mode" else name] = accepted[name](text)
        except ValueError as exc:
            raise ConfigError(f"parameter {name}={text!r}: {exc}") from None
    return options


def open_state(url: str | None = None, **options: Any) -> StateAdapter:
    """Build an adapter from ``url``, else ``$MOTIA_STATE_URL``, else the default SQLite file.

    Schemes: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite:///:memory:``,
    ``memory://``, ``file:///dir`` (Motia's ``motia.state.json`` in ``dir``), ``redis://``,
    ``rediss://`` and ``unix://`` (Redis; ``?layout=motia&key_prefix=...``), ``postgresql://``
    and ``postgres://`` (PostgreSQL; ``?schema=...&sslmode=...``). Keyword
    ``options`` are passed to the adapter and win over query parameters.

    Raises:
        InvalidKeyError: an unknown scheme or query parameter, or a malformed value.
    """
    from .file import FileStateAdapter
    from .memory import MemoryStateAdapter
    from .sqlite import SqliteStateAdapter

    url = store_url(url)
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower(), "")
    if not scheme:
        raise InvalidKeyError(
            f"unknown state URL scheme {parts.scheme!r} in {redact(url)!r}; accepted: "
            "sqlite:///path, sqlite:///:memory:, memory://, file:///dir, redis://, rediss://, unix://, "
            "postgresql://, postgres://"
        )
    if scheme == "postgres":
        return _open_postgres(url, parts, options)
    if scheme == "redis":
        from .redis import RedisStateAdapter  # redis-py loads only for a Redis URL

        merged: Mapping[str, Any] = {**_options(scheme, parts.query, _REDIS_OWN), **options}
        kept = [
            (name, text)
            for name, text in parse_qsl(parts.query, keep_blank_values=True)
            if name in _REDIS_OWN
        ]
        return RedisStateAdapter(_with_query(url, kept), **merged)
    merged = {**_options(scheme, parts.query), **options}
    path = unquote(parts.path)
    if scheme == "sqlite":
        if parts.netloc:
            raise InvalidKeyError(
                f"sqlite URLs have no host: use sqlite:///relative or sqlite:////absolute, got {url!r}"
            )
        if not path.startswith("/") or path == "/":
            raise InvalidKeyError(f"sqlite URL {url!r} names no file")
        return SqliteStateAdapter(path[1:], **merged)
    if scheme == "memory":
        return MemoryStateAdapter(**merged)
    if parts.netloc not in ("", "localhost"):
        raise InvalidKeyError(
            f"file URLs name a local folder: file:///absolute/dir or file:relative/dir, got {url!r} "
            f"(after file:// comes a host, here {parts.netloc!r})"
        )
    return FileStateAdapter(path or ".", **merged)


def _with_query(url: str, kept: list[tuple[str, str]]) -> str:
    """``url`` with only the ``kept`` query parameters, and without its fragment.

    Cut as text: ``urlunsplit`` would turn ``unix:///path.sock`` into ``unix:/path.sock``, which
    redis-py 8 refuses.
    """
    base = url.split("#", 1)[0].split("?", 1)[0]
    query = urlencode(kept)
    return f"{base}?{query}" if query else base


def _open_postgres(url: str, parts: SplitResult, options: Mapping[str, Any]) -> StateAdapter:
    """A ``PostgresStateAdapter``: our parameters taken out, libpq's left in the URL for asyncpg."""
    try:
        from .postgres import PostgresStateAdapter
        from .postgres.adapter import PG_URL_PARAMETERS
    except ImportError as exc:
        raise ConfigError(f"{redact(url)}: {exc}") from None
    merged = {**_options("postgres", parts.query, PG_URL_PARAMETERS), **options}
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(name, text) for name, text in query if name in PG_URL_PARAMETERS]
    return PostgresStateAdapter(_with_query(url, kept), **merged)
