"""``open_state(url)``: build an adapter from a URL, parsed once, failing loudly on anything unknown."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from .base import StateAdapter
from .errors import InvalidKeyError

__all__ = ["ENV_VAR", "open_state"]

#: The environment variable read when ``open_state`` gets no URL.
ENV_VAR: Final = "MOTIA_STATE_URL"


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _sync(text: str) -> str:
    if text.upper() not in ("NORMAL", "FULL"):
        raise ValueError(f"expected NORMAL or FULL, got {text!r}")
    return text.upper()


# Query parameters each scheme accepts, with the converter that parses each.
_COMMON: Final[dict[str, Callable[[str], Any]]] = {"max_value_bytes": int}
_PARAMETERS: Final[dict[str, dict[str, Callable[[str], Any]]]] = {
    "sqlite": {
        **_COMMON,
        "synchronous": _sync,
        "busy_timeout": float,
        "import_legacy": _bool,
        "purge_interval": float,
        "file_mode": lambda text: int(text, 8),
    },
    "memory": dict(_COMMON),
    "file": {**_COMMON, "lock_timeout": float, "durable": _bool},
}


def _options(scheme: str, query: str) -> dict[str, Any]:
    accepted = _PARAMETERS[scheme]
    options: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in accepted:
            raise InvalidKeyError(
                f"unknown parameter {name!r} for {scheme}:// URLs; accepted: {sorted(accepted)}"
            )
        try:
            options[name] = accepted[name](text)
        except ValueError as exc:
            raise InvalidKeyError(f"parameter {name}={text!r}: {exc}") from None
    return options


def open_state(url: str | None = None, **options: Any) -> StateAdapter:
    """Build an adapter from ``url``, else ``$MOTIA_STATE_URL``, else the default SQLite file.

    Schemes: ``sqlite:///relative/path``, ``sqlite:////absolute/path``, ``sqlite:///:memory:``,
    ``memory://``, ``file:///dir`` (Motia's ``motia.state.json`` in ``dir``). Keyword
    ``options`` are passed to the adapter and win over query parameters.

    Raises:
        InvalidKeyError: an unknown scheme or query parameter, or a malformed value.
    """
    from .file import FileStateAdapter
    from .memory import MemoryStateAdapter
    from .sqlite import DEFAULT_PATH, SqliteStateAdapter

    url = url or os.environ.get(ENV_VAR) or f"sqlite:///{DEFAULT_PATH}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _PARAMETERS:
        raise InvalidKeyError(
            f"unknown state URL scheme {parts.scheme!r} in {url!r}; accepted: "
            "sqlite:///path, sqlite:///:memory:, memory://, file:///dir"
        )
    merged: Mapping[str, Any] = {**_options(scheme, parts.query), **options}
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
        raise InvalidKeyError(f"file URLs name a local folder (file:///dir), got {url!r}")
    return FileStateAdapter(path or ".", **merged)
