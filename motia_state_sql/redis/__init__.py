"""The Redis backend: native (atomic, Cluster-safe) and Motia-compatible layouts."""

from __future__ import annotations

from .adapter import DEFAULT_PREFIX, RedisStateAdapter

__all__ = ["DEFAULT_PREFIX", "RedisStateAdapter"]
