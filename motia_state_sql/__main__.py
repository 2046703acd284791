"""``python -m motia_state_sql``: the ``motia-state`` command line."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()
