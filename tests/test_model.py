"""Every backend behaves like a plain dict: hypothesis state machines, one per backend.

The model is a dict ``{(group, key): Entry}`` plus a hand-written reading of the contract's update
ops (``model_update``), kept independent of ``motia_state_sql.ops`` so the machine checks the
semantics themselves, not only that the backends agree with each other.
"""

from __future__ import annotations

import asyncio
import copy
import json
import math
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
    StateItem,
    UnsupportedError,
)
from motia_state_sql.base import StateOperations

from .conftest import MODEL_BACKENDS, FakeClock, make_factory

T = TypeVar("T")

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

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
    | st.integers(INT64_MIN, INT64_MAX)
    | st.sampled_from([INT64_MAX, INT64_MIN, -0.0, 0.5])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(["n", "n", "s", "o"])
# Numbers near the int64 limits, and what is not a number to increment (bool, null, text).
NUMBERISH = (
    st.integers(-3, 3) | st.sampled_from([1.5, INT64_MAX, INT64_MIN]) | st.sampled_from([True, None, "1"])
)
# Objects holding the fields update ops touch, so that more updates apply than fail.
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "n": NUMBERISH,
        "s": SCALARS,
        "o": st.dictionaries(st.sampled_from(["x", "y"]), NUMBERISH, max_size=2) | NUMBERISH,
    },
)
# A top-level field, or the field "x" of a top-level field.
PATHS = FIELDS | st.builds(lambda f: [f, "x"], FIELDS)
BY = st.integers(-5, 5) | st.sampled_from([0.5, -1.25])
OPS = st.lists(
    st.one_of(
        st.builds(lambda p, v: {"type": "set", "path": p, "value": v}, PATHS, SCALARS | NUMBERISH),
        st.builds(lambda p, by: {"type": "increment", "path": p, "by": by}, PATHS, BY),
        st.builds(lambda p, by: {"type": "decrement", "path": p, "by": by}, PATHS, BY),
        st.builds(
            lambda p, v: {"type": "merge", "path": p, "value": v},
            PATHS,
            st.dictionaries(st.sampled_from(["x", "y"]), SCALARS, max_size=2),
        ),
        st.builds(lambda p: {"type": "remove", "path": p}, PATHS),
    ),
    min_size=1,
    max_size=3,
) | st.builds(
    # Put something (maybe not a number, maybe at a limit of int64) and add to it, in one update.
    lambda p, v, kind, by: [{"type": "set", "path": p, "value": v}, {"type": kind, "path": p, "by": by}],
    PATHS,
    NUMBERISH,
    st.sampled_from(["increment", "decrement"]),
    BY,
)
TTLS = st.none() | st.sampled_from([1, 2.5, 10, 100])
# None: unconditional; "absent": if_absent=True; "version": if_version of the current version
# (a made-up one when absent); "stale": if_version of an older version of the key.
CONDS = st.sampled_from([None, None, "absent", "version", "stale"])

Entry = tuple[Any, float | None, float, float]  # value, expires_at, created_at, updated_at
Model = dict[tuple[str, str], Entry]


class ModelOpError(Exception):
    """``model_update`` found an op that cannot apply (the store must raise InvalidOperationError)."""


def model_update(value: Any, ops: list[dict[str, Any]]) -> Any:
    """The update ops of the contract, written out by hand for paths ``f`` and ``[f, "x"]``.

    Ops apply in order; ``set``/``merge``/``increment`` create a missing parent object, ``remove``
    through a missing one does nothing; a path through a non-object (``null`` included), an
    increment of a non-number (``bool`` included), a merge into a non-object, or a result outside
    signed 64-bit / not finite cannot apply.
    """
    value = copy.deepcopy(value)
    for op in ops:
        kind, path = op["type"], op["path"]
        names = [path] if isinstance(path, str) else list(path)
        if not isinstance(value, dict):
            raise ModelOpError("path through a non-object")
        parent = value
        if len(names) == 2:
            if names[0] not in value:
                if kind == "remove":
                    continue
                value[names[0]] = {}
            parent = value[names[0]]
            if not isinstance(parent, dict):
                raise ModelOpError("path through a non-object")
        name = names[-1]
        if kind == "set":
            parent[name] = copy.deepcopy(op["value"])
        elif kind == "remove":
            parent.pop(name, None)
        elif kind == "merge":
            target = parent.setdefault(name, {})
            if not isinstance(target, dict):
                raise ModelOpError("merge into a non-object")
            target.update(copy.deepcopy(op["value"]))
        else:
            number = parent.get(name, 0)
            if type(number) not in (int, float):
                raise ModelOpError("increment of a non-number")
            number = number + op["by"] if kind == "increment" else number - op["by"]
            if type(number) is int and not INT64_MIN <= number <= INT64_MAX:
                raise ModelOpError("outside signed 64-bit")
            if type(number) is float and not math.isfinite(number):
                raise ModelOpError("not finite")
            parent[name] = number
    return value


def exact(value: Any) -> Any:
    """``value`` with its JSON types spelled out: ``1``, ``1.0`` and ``True`` differ, so do 0.0 and -0.0."""
    if isinstance(value, dict):
        return ("object", sorted((k, exact(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("array", [exact(v) for v in value])
    if type(value) is float:
        return ("float", value.hex())
    return (type(value).__name__, value)


def text(value: Any) -> str:
    """JSON text, equal for two values exactly when the stored texts are (Motia's content versions)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _same_error(expected: type[BaseException] | None, got: BaseException | None) -> None:
    if expected is None:
        assert got is None, f"unexpected {got!r}"
    else:
        assert isinstance(got, expected), f"expected {expected.__name__}, got {got!r}"


KEYS: Any = Bundle("keys")
# Mostly (3 in 4) a (group, key) written before, so that writes meet live keys; sometimes any.
# (``one_of`` drops repeated branches, so each copy of the bundle is a distinct ``map``.)
PLACES: Any = st.one_of(*[Bundle("places").map(tuple) for _ in range(3)], st.tuples(GROUPS, KEYS))


class StoreMachine(RuleBasedStateMachine):
    """One backend against the dict model."""

    backend = "memory"
    redis_url = ""
    postgres_url = ""
    keys = Bundle("keys")
    places = Bundle("places")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = Path(tempfile.mkdtemp(prefix="model-"))
        self.clock = FakeClock()
        self.store: StateAdapter = make_factory(
            self.backend, self.folder, self.clock, self.redis_url, self.postgres_url
        )()
        self.model: Model = {}
        self.file = self.backend == "file"
        self.motia = self.backend == "redis-motia"
        # What each backend keeps (docs/contract-decisions.md, Backends): the legacy file keeps no
        # versions, times or expiry; Motia's Redis layout keeps the expiry and content versions.
        self.times = self.backend not in ("file", "redis-motia")
        self.versioned = not self.file
        # Versions: the ones seen at the last invariant check, every one ever seen per key, and
        # the keys successfully written since (only those may have a new version).
        self.snapshot: dict[tuple[str, str], tuple[int, str]] = {}
        self.history: dict[tuple[str, str], list[int]] = {}
        self.written: set[tuple[str, str]] = set()

    def run(self, call: Awaitable[T]) -> T:
        return self.loop.run_until_complete(call)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- model helpers -------------------------------------------------------------------------

    def live(self, model: Model | None = None) -> dict[tuple[str, str], Any]:
        now = self.clock.now
        model = self.model if model is None else model
        return {gk: value for gk, (value, exp, _, _) in model.items() if exp is None or exp > now}

    def created(self, model: Model, gk: tuple[str, str]) -> float:
        """A write keeps the creation time of a live key; an absent or expired one starts now."""
        return model[gk][2] if gk in self.live(model) else self.clock.now

    def refused_group(self, group: str) -> type[StateError] | None:
        return InvalidKeyError if (self.file or self.motia) and ":" in group else None

    def aim(self, place: tuple[str, str], data: st.DataObject) -> tuple[str, str]:
        """Half the time, a key live in the model instead of ``place`` (updates and conditions
        on live keys, with or without an expiry, would otherwise be rare)."""
        live = sorted(self.live())
        if not live or not data.draw(st.booleans(), label="aim at a live key"):
            return place
        return data.draw(st.sampled_from(live), label="live key")

    def stale_version(self, gk: tuple[str, str], current: int | None) -> int:
        """A version the key had before (or a made-up one), never its current one."""
        older = [v for v in self.history.get(gk, []) if v != current]
        if older:
            return older[-1]
        return 42 if current is None else current + 7

    async def write(
        self,
        target: StateOperations,
        model: Model,
        written: set[tuple[str, str]],
        kind: str,
        gk: tuple[str, str],
        payload: Any = None,
        ttl: float | None = None,
        cond: str | None = None,
    ) -> StateError | None:
        """Do one write on ``target`` (adapter or transaction) and on ``model``; compare outcomes.

        Returns the error the store raised (already checked to be the one the model expects).
        """
        group, key = gk
        live = self.live(model)
        exists = gk in live
        options: dict[str, Any] = {}
        conflict = False
        if cond == "absent":
            options["if_absent"] = True
            conflict = exists
        elif cond is not None:
            current = None
            if not self.refused_group(group):
                item = await target.get_item(group, key)
                current = None if item is None else item.version
            version = current if cond == "version" and current is not None else None
            options["if_version"] = self.stale_version(gk, current) if version is None else version
            conflict = options["if_version"] != current
        expected = self.refused_group(group)
        if expected is None and self.file and (ttl is not None or "if_version" in options):
            expected = UnsupportedError
        if expected is None and conflict:
            expected = ConflictError
        new: Any = None
        if kind == "update" and expected is None:
            try:
                new = model_update(live[gk] if exists else {}, payload)
            except ModelOpError:
                expected = InvalidOperationError
        result: Any = None
        error: StateError | None = None
        try:
            if kind == "set":
                result = await target.set(group, key, payload, ttl=ttl, **options)
            elif kind == "delete":
                result = await target.delete(group, key, **options)
            else:
                result = await target.update(group, key, payload, **options)
        except StateError as exc:
            error = exc
        _same_error(expected, error)
        if error is not None:
            return error
        now = self.clock.now
        if kind == "delete":
            assert exact(result) == exact(live.get(gk))
            model.pop(gk, None)
            return None
        if kind == "set":
            assert exact(result) == exact(payload)
            new, expires = copy.deepcopy(payload), None if ttl is None else now + ttl
        else:
            assert exact(result.old_value) == exact(live.get(gk))
            assert exact(result.new_value) == exact(new)
            expires = model[gk][1] if exists else None  # update keeps the expiry
        model[gk] = (new, expires, self.created(model, gk), now)
        written.add(gk)
        return None

    # -- rules ---------------------------------------------------------------------------------

    @initialize(target=keys, key=NAMES)
    def first_key(self, key: str) -> str:
        return key

    @initialize(target=places, group=GROUPS, key=NAMES)
    def first_place(self, group: str, key: str) -> tuple[str, str]:
        return group, key

    @rule(target=keys, key=NAMES)
    def new_key(self, key: str) -> str:
        return key

    @rule(target=places, place=PLACES, value=VALUES | OBJECTS, ttl=TTLS, cond=CONDS, data=st.data())
    def set(
        self, place: tuple[str, str], value: Any, ttl: float | None, cond: str | None, data: st.DataObject
    ) -> tuple[str, str]:
        place = self.aim(place, data)
        self.run(self.write(self.store, self.model, self.written, "set", place, value, ttl, cond))
        return place

    @rule(place=PLACES, cond=CONDS, data=st.data())
    def delete(self, place: tuple[str, str], cond: str | None, data: st.DataObject) -> None:
        place = self.aim(place, data)
        self.run(self.write(self.store, self.model, self.written, "delete", place, cond=cond))

    @rule(target=places, place=PLACES, ops=OPS, cond=CONDS, data=st.data())
    def update(
        self, place: tuple[str, str], ops: list[dict[str, Any]], cond: str | None, data: st.DataObject
    ) -> tuple[str, str]:
        place = self.aim(place, data)
        self.run(self.write(self.store, self.model, self.written, "update", place, ops, cond=cond))
        return place

    @rule(place=PLACES, data=st.data())
    def get(self, place: tuple[str, str], data: st.DataObject) -> None:
        group, key = self.aim(place, data)
        try:
            item = self.run(self.store.get_item(group, key))
        except StateError as exc:
            _same_error(self.refused_group(group), exc)
            return
        assert self.refused_group(group) is None
        live = self.live()
        if (group, key) in live:
            assert item is not None
            assert exact(item.value) == exact(live[group, key])
        else:
            assert item is None

    @rule(group=GROUPS)
    def clear(self, group: str) -> None:
        try:
            self.run(self.store.clear(group))
        except StateError as exc:
            _same_error(self.refused_group(group), exc)
            return
        assert self.refused_group(group) is None
        self.model = {gk: entry for gk, entry in self.model.items() if gk[0] != group}

    @rule(seconds=st.sampled_from([0.5, 1, 3, 11]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(
        places=st.lists(PLACES, min_size=1, max_size=3),
        steps=st.lists(
            st.one_of(
                st.tuples(st.just("set"), st.integers(0, 2), VALUES | OBJECTS, TTLS, CONDS),
                st.tuples(st.just("delete"), st.integers(0, 2), st.none(), st.none(), CONDS),
                st.tuples(st.just("update"), st.integers(0, 2), OPS, st.none(), CONDS),
                st.tuples(st.just("read"), st.integers(0, 2)),
                st.tuples(st.just("clear"), st.integers(0, 2)),
            ),
            min_size=1,
            max_size=6,
        ),
        propagate=st.booleans(),
        fail=st.sampled_from([False, False, True]),
        data=st.data(),
    )
    def transaction(
        self,
        places: list[tuple[str, str]],
        steps: list[tuple[Any, ...]],
        propagate: bool,
        fail: bool,
        data: st.DataObject,
    ) -> None:
        """Writes of every kind, conditions, reads; errors caught (the block goes on) or propagated.

        A propagated error or a ``RuntimeError`` at the end rolls back everything; otherwise the
        staged model becomes the model.
        """
        places = [self.aim(place, data) for place in places]
        staged = dict(self.model)
        written: set[tuple[str, str]] = set()
        raised: list[BaseException] = []

        async def body() -> None:
            async with self.store.transaction() as tx:
                for kind, index, *args in steps:
                    gk = places[index % len(places)]
                    if kind in ("set", "delete", "update"):
                        payload, ttl, cond = args
                        before = await self.version_in(tx, gk)
                        error = await self.write(tx, staged, written, kind, gk, payload, ttl, cond)
                        if error is None:
                            await self.sees(tx, staged, gk)
                        after = await self.version_in(tx, gk)
                        if error is not None:
                            assert after == before, (gk, before, after)  # a failed write changes nothing
                        elif kind == "delete":
                            assert after is None
                        elif before is not None:
                            # A write inside a transaction gives a new version too (not checked
                            # for Motia's content versions, which the overlay does not compute).
                            assert after != before or self.motia, (gk, before)
                    elif kind == "read":
                        error = await self.sees(tx, staged, gk)
                    else:
                        error = await self.clear_in(tx, staged, gk[0])
                    if error is not None and propagate:
                        raised.append(error)
                        raise error
                # The transaction sees all of its own writes, and nothing it cleared or deleted.
                assert [(i.group_id, i.key, exact(i.value)) for i in await tx.items()] == [
                    (g, k, exact(v)) for (g, k), v in sorted(self.live(staged).items())
                ]
                if fail:
                    raise RuntimeError("roll back")

        outcome: BaseException | None = None
        try:
            self.run(body())
        except (RuntimeError, StateError) as exc:
            outcome = exc
        if isinstance(outcome, RuntimeError):
            assert fail
        elif outcome is not None:
            assert raised == [outcome], f"unexpected {outcome!r}"
        else:
            assert not raised
            assert not fail
            self.model = staged
            self.written |= written

    async def version_in(self, tx: StateOperations, gk: tuple[str, str]) -> int | None:
        """The version of ``gk`` as the transaction sees it (``None``: absent, or no versions)."""
        if not self.versioned or self.refused_group(gk[0]):
            return None
        item = await tx.get_item(*gk)
        return None if item is None else item.version

    async def sees(self, tx: StateOperations, staged: Model, gk: tuple[str, str]) -> StateError | None:
        """A read inside the transaction sees the transaction's own writes (and keys of its group)."""
        group, key = gk
        try:
            item = await tx.get_item(group, key)
            keys = await tx.keys(group)
        except StateError as exc:
            _same_error(self.refused_group(group), exc)
            return exc
        assert self.refused_group(group) is None
        live = self.live(staged)
        if gk in live:
            assert item is not None
            assert exact(item.value) == exact(live[gk])
        else:
            assert item is None
        assert keys == sorted(k for g, k in live if g == group)
        return None

    async def clear_in(self, tx: StateOperations, staged: Model, group: str) -> StateError | None:
        try:
            await tx.clear(group)
        except StateError as exc:
            _same_error(self.refused_group(group), exc)
            return exc
        assert self.refused_group(group) is None
        for gk in [gk for gk in staged if gk[0] == group]:
            del staged[gk]
        return None

    # -- the whole store matches the model after every step ------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        live = self.live()
        items = self.run(self.store.items())
        assert [(i.group_id, i.key, exact(i.value)) for i in items] == [
            (g, k, exact(v)) for (g, k), v in sorted(live.items())
        ]
        entries = [self.model[gk] for gk in sorted(live)]
        if self.times:
            assert [(i.created_at, i.updated_at) for i in items] == [(e[2], e[3]) for e in entries]
        if not self.file:
            assert [i.expires_at for i in items] == [e[1] for e in entries]
        if self.versioned:
            self.check_versions(items)
        groups = sorted({g for g, _ in live})
        assert self.run(self.store.list_groups()) == groups
        for group in groups[:3]:
            assert self.run(self.store.keys(group)) == sorted(k for g, k in live if g == group)
            assert [exact(v) for v in self.run(self.store.get_group(group))] == [
                exact(v) for (g, _), v in sorted(live.items()) if g == group
            ]

    def check_versions(self, items: list[StateItem]) -> None:
        """Every successful write gives a key a new version; nothing else (a failed condition,
        a rolled-back transaction, a write to another key) changes it.

        Versions are never reused for a key, even after a delete (no ABA). Motia's Redis layout
        has content versions instead: a write of the same JSON text keeps the version.
        """
        snapshot: dict[tuple[str, str], tuple[int, str]] = {}
        for item in items:
            gk = (item.group_id, item.key)
            version = item.version
            assert type(version) is int, item
            before = self.snapshot.get(gk)
            if gk not in self.written:
                assert before is not None, item
                assert version == before[0], (item, before)
            else:
                again = self.run(self.store.get_item(*gk))
                assert again is not None
                assert again.version == version
                if self.motia:
                    if before is not None:
                        assert (version == before[0]) == (text(item.value) == before[1]), (item, before)
                else:
                    assert version not in self.history.get(gk, []), (item, self.history.get(gk))
            seen = self.history.setdefault(gk, [])
            if not seen or seen[-1] != version:
                seen.append(version)
            snapshot[gk] = (version, text(item.value))
        self.snapshot = snapshot
        self.written = set()


MACHINES = {
    backend: type(f"StoreMachine_{backend.replace('-', '_')}", (StoreMachine,), {"backend": backend})
    for backend in MODEL_BACKENDS
}


@pytest.mark.parametrize("backend", MODEL_BACKENDS)
def test_backend_agrees_with_dict_model(backend: str, request: pytest.FixtureRequest) -> None:
    machine: Any = MACHINES[backend]
    if backend.startswith("redis-"):
        machine.redis_url = request.getfixturevalue("redis_url")
    if backend == "postgres":
        machine.postgres_url = request.getfixturevalue("postgres_url")
    machine.TestCase.settings = settings(
        max_examples=120,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine.TestCase().runTest()
