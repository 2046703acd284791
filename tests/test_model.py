"""Every backend behaves like a plain dict: hypothesis state machines, one per backend."""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from motia_state_sql import (
    ConflictError,
    InvalidKeyError,
    InvalidOperationError,
    StateAdapter,
    StateError,
    UnsupportedError,
)
from motia_state_sql.ops import apply_update, check_ops

from .conftest import MODEL_BACKENDS, FakeClock, make_factory

T = TypeVar("T")

# Groups that are prefixes of each other, glob and LIKE characters, ':' and quotes.
GROUPS = st.sampled_from(["a", "ab", "a*", "a%", "a_", "a:b", "a:", "é", "'q\"", "a b", "[a]"]) | st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=5
)
NAMES = st.sampled_from(["k", "k:1", "k*", "K", "ké", "%", "_", "*", "?", "'", '"', "k k"]) | st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=6
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(["n", "s", "o"])
OPS = st.lists(
    st.one_of(
        st.builds(lambda f, v: {"type": "set", "path": f, "value": v}, FIELDS, SCALARS),
        st.builds(lambda f, by: {"type": "increment", "path": f, "by": by}, FIELDS, st.integers(-5, 5)),
        st.builds(lambda f, by: {"type": "decrement", "path": [f, "x"], "by": by}, FIELDS, st.integers(0, 3)),
        st.builds(
            lambda f, v: {"type": "merge", "path": f, "value": v},
            FIELDS,
            st.dictionaries(st.sampled_from(["x", "y"]), SCALARS, max_size=2),
        ),
        st.builds(lambda f: {"type": "remove", "path": f}, FIELDS),
    ),
    min_size=1,
    max_size=3,
)
Entry = tuple[Any, float | None, float]  # value, expires_at, created_at


def _same_error(expected: type[BaseException] | None, got: BaseException | None) -> None:
    if expected is None:
        assert got is None, f"unexpected {got!r}"
    else:
        assert isinstance(got, expected), f"expected {expected.__name__}, got {got!r}"


class StoreMachine(RuleBasedStateMachine):
    """One backend against a dict model ``{(group, key): (value, expires_at, created_at)}``."""

    backend = "memory"
    redis_url = ""
    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="model-"))
        self.clock = FakeClock()
        self.store: StateAdapter = make_factory(self.backend, self.folder, self.clock, self.redis_url)()
        self.model: dict[tuple[str, str], Entry] = {}
        self.file = self.backend == "file"
        self.motia = self.backend == "redis-motia"
        self.times = self.backend not in ("file", "redis-motia")

    def run(self, call: Awaitable[T]) -> T:
        return self.loop.run_until_complete(call)

    def attempt(self, call: Awaitable[Any]) -> tuple[Any, BaseException | None]:
        try:
            return self.run(call), None
        except StateError as exc:
            return None, exc

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- model helpers -------------------------------------------------------------------------

    def live(self) -> dict[tuple[str, str], Any]:
        now = self.clock.now
        return {gk: value for gk, (value, exp, _) in self.model.items() if exp is None or exp > now}

    def created(self, model: dict[tuple[str, str], Entry], gk: tuple[str, str]) -> float:
        """A write keeps the creation time of a live key; an absent or expired one starts now."""
        entry = model.get(gk)
        if entry is not None and (entry[1] is None or entry[1] > self.clock.now):
            return entry[2]
        return self.clock.now

    def refused_group(self, group: str) -> type[StateError] | None:
        return InvalidKeyError if (self.file or self.motia) and ":" in group else None

    # -- rules ---------------------------------------------------------------------------------

    @initialize(target=keys, key=NAMES)
    def first_key(self, key: str) -> str:
        return key

    @rule(target=keys, key=NAMES)
    def new_key(self, key: str) -> str:
        return key

    @rule(group=GROUPS, key=keys, value=VALUES, ttl=st.none() | st.sampled_from([1, 2.5, 10]))
    def set(self, group: str, key: str, value: Any, ttl: float | None) -> None:
        expected = self.refused_group(group) or (UnsupportedError if self.file and ttl else None)
        result, error = self.attempt(self.store.set(group, key, value, ttl=ttl))
        _same_error(expected, error)
        if error is None:
            assert result == value
            expires = None if ttl is None else self.clock.now + ttl
            self.model[group, key] = (copy.deepcopy(value), expires, self.created(self.model, (group, key)))

    @rule(group=GROUPS, key=keys)
    def get(self, group: str, key: str) -> None:
        item, error = self.attempt(self.store.get_item(group, key))
        _same_error(self.refused_group(group), error)
        live = self.live()
        if error is None:
            if (group, key) in live:
                assert item is not None
                assert item.value == live[group, key]
            else:
                assert item is None

    @rule(group=GROUPS, key=keys)
    def delete(self, group: str, key: str) -> None:
        result, error = self.attempt(self.store.delete(group, key))
        _same_error(self.refused_group(group), error)
        if error is None:
            assert result == self.live().get((group, key))
            self.model.pop((group, key), None)

    @rule(group=GROUPS)
    def clear(self, group: str) -> None:
        _, error = self.attempt(self.store.clear(group))
        _same_error(self.refused_group(group), error)
        if error is None:
            self.model = {gk: entry for gk, entry in self.model.items() if gk[0] != group}

    @rule(group=GROUPS, key=keys, ops=OPS)
    def update(self, group: str, key: str, ops: list[dict[str, Any]]) -> None:
        live = self.live()
        old = live.get((group, key))
        try:
            new = apply_update(copy.deepcopy(old) if (group, key) in live else {}, check_ops(ops))
            expected: type[StateError] | None = None
        except InvalidOperationError:
            expected = InvalidOperationError
        expected = self.refused_group(group) or expected
        result, error = self.attempt(self.store.update(group, key, ops))
        _same_error(expected, error)
        if error is None:
            assert result.old_value == old
            assert result.new_value == new
            expires = self.model[group, key][1] if (group, key) in live else None
            self.model[group, key] = (new, expires, self.created(self.model, (group, key)))

    @rule(group=GROUPS, key=keys, value=SCALARS, stale=st.booleans(), absent=st.booleans())
    def conditional_set(self, group: str, key: str, value: Any, stale: bool, absent: bool) -> None:
        if self.refused_group(group):
            return
        exists = (group, key) in self.live()
        if absent:
            expected: type[StateError] | None = ConflictError if exists else None
            _, error = self.attempt(self.store.set(group, key, value, if_absent=True))
        else:
            item = self.run(self.store.get_item(group, key))
            version = (item.version or 0) + (7 if stale else 0) if item is not None else 42
            conflict = ConflictError if stale or item is None else None
            expected = UnsupportedError if self.file else conflict
            _, error = self.attempt(self.store.set(group, key, value, if_version=version))
        _same_error(expected, error)
        if error is None:
            self.model[group, key] = (value, None, self.created(self.model, (group, key)))

    @rule(seconds=st.sampled_from([0.5, 1, 3, 11]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        writes=st.lists(st.tuples(GROUPS, NAMES, st.none() | SCALARS), min_size=1, max_size=4),
        clear=st.none() | GROUPS,
        fail=st.booleans(),
    )
    def transaction(self, writes: list[tuple[str, str, Any]], clear: str | None, fail: bool) -> None:
        if any(self.refused_group(g) for g, _, _ in writes) or (clear and self.refused_group(clear)):
            return
        staged = dict(self.model)

        async def body() -> None:
            async with self.store.transaction() as tx:
                if clear is not None:
                    await tx.clear(clear)
                    for gk in [gk for gk in staged if gk[0] == clear]:
                        del staged[gk]
                for group, key, value in writes:
                    if value is None:
                        await tx.delete(group, key)
                        staged.pop((group, key), None)
                    else:
                        await tx.set(group, key, value)
                        staged[group, key] = (value, None, self.created(staged, (group, key)))
                    assert await tx.get(group, key) == value
                if fail:
                    raise RuntimeError("roll back")

        try:
            self.run(body())
        except RuntimeError:
            assert fail
        else:
            self.model = staged

    # -- the whole store matches the model after every step ------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        live = self.live()
        items = self.run(self.store.items())
        assert [(i.group_id, i.key, i.value) for i in items] == [
            (g, k, v) for (g, k), v in sorted(live.items())
        ]
        if self.times:
            assert [i.created_at for i in items] == [self.model[gk][2] for gk in sorted(live)]
        groups = sorted({g for g, _ in live})
        assert self.run(self.store.list_groups()) == groups
        for group in groups[:3]:
            assert self.run(self.store.keys(group)) == sorted(k for g, k in live if g == group)
            assert self.run(self.store.get_group(group)) == [
                v for (g, _), v in sorted(live.items()) if g == group
            ]


MACHINES = {
    backend: type(f"StoreMachine_{backend.replace('-', '_')}", (StoreMachine,), {"backend": backend})
    for backend in MODEL_BACKENDS
}


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_backend_agrees_with_dict_model(backend: str, request: pytest.FixtureRequest) -> None:
    machine: Any = MACHINES[backend]
    if backend.startswith("redis-"):
        machine.redis_url = request.getfixturevalue("redis_url")
    machine.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine.TestCase().runTest()
