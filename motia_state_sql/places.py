"""Where a store is when nobody says: the names every entry point agrees on.

A module of plain constants, so that the command line can name them in its help without
importing any backend.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["DEFAULT_PATH", "DEFAULT_URL", "ENV_VAR", "FILE_NAME", "store_url"]

#: The environment variable naming the store's URL when none is given.
ENV_VAR: Final = "MOTIA_STATE_URL"
#: The SQLite database used when neither a URL nor ``$MOTIA_STATE_URL`` is given.
DEFAULT_PATH: Final = ".motia/motia.state.db"
#: ``DEFAULT_PATH`` as a URL.
DEFAULT_URL: Final = f"sqlite:///{DEFAULT_PATH}"
#: Motia's JSON state file, in the folder Motia keeps it (``.motia``).
FILE_NAME: Final = "motia.state.json"


def store_url(url: str | None) -> str:
    """The URL a command or ``open_state`` works on: ``url``, else ``$MOTIA_STATE_URL``, else the default."""
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL
