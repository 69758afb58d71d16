"""Randomised lost-update race test: cache-aside readers against write-through writers.

The harness runs many reader threads and several writer threads against a real SQLite database
file and a real redis-server:

* readers read rows through the cache; their loader reads the row, then sleeps a random few
  milliseconds *before returning*, which keeps the classic race window wide open (a reader loads
  an old value, a writer updates the database and the cache, the reader stores its old value);
* writers use :class:`WriteThrough` ``set`` (update the row, then the cache) and ``delete``
  (delete the row, then the cache entry) on random rows.

After the writers stop and the readers drain, every cached entry must be absent or equal to the
database row. The library's readers (``CacheAside``, ``@cache``, and stale-while-revalidate
refreshes) pass; a naive cache-aside written here (plain GET, loader, plain SET) run under the
very same harness leaves stale entries behind, and :func:`test_naive_cache_aside_is_caught`
asserts that it does: the harness is able to catch the bug it guards against. In practice the
naive reader leaves a stale key within 1-7 rounds of 0.25 s (the test allows 60 s, a deadline
for a loaded machine, where the writers get little of the GIL), and so does
the library's own reader when its lease check is disabled (tried by hand, monkeypatching
``RedisCache._compare_and_set`` into a plain SET: caught within a few 0.3 s rounds).

``FENNEC_RACE_SECONDS`` sets how long each round of a library run lasts (default 2 s); a run
goes on for more rounds until its loads were raced by a writer ``MIN_WINDOWS`` times.
"""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from _support import CacheFactory

from flask_fennec_cache import MISSING, CacheAside, RedisCache, WriteThrough, cache
from flask_fennec_cache.serializers import Envelope, Lease, decode

ROWS = 20
READERS = 12
WRITERS = 3
RACE_SECONDS = float(os.environ.get("FENNEC_RACE_SECONDS", "2"))
# A library run goes on, in rounds of RACE_SECONDS, until its loads were raced by a writer at
# least MIN_WINDOWS times: on a loaded machine the writers get little of the GIL and one round
# may open no window at all. The budget only keeps a broken harness from running forever.
MIN_WINDOWS = 5
RACE_BUDGET_SECONDS = 60.0
# The harness tests the race logic, not timeouts: with the default 0.25 s socket timeout a
# loaded machine makes some cache updates time out, and fail-open write-through then leaves
# (logged) stale entries that no reader put there.
SOCKET_TIMEOUT = 10.0
NAIVE_ROUND_SECONDS = 0.25
NAIVE_BUDGET_SECONDS = 60.0

Reader = Callable[[int, Callable[[], Any]], Any]


class Database:
    """A real SQLite file with ``ROWS`` rows; a deleted row reads as None."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        setup = self._connect()
        try:
            setup.execute("PRAGMA journal_mode=WAL")
            setup.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
            setup.executemany(
                "INSERT INTO rows VALUES (?, ?)", [(i, f"initial-{i}") for i in range(ROWS)]
            )
        finally:
            setup.close()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._all_lock:
                self._all.append(conn)
        return conn

    def read(self, rid: int) -> str | None:
        row = self.conn.execute("SELECT value FROM rows WHERE id = ?", (rid,)).fetchone()
        return None if row is None else str(row[0])

    def write(self, rid: int, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO rows VALUES (?, ?)", (rid, value))

    def delete(self, rid: int) -> None:
        self.conn.execute("DELETE FROM rows WHERE id = ?", (rid,))

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


@dataclass
class RaceReport:
    reads: int = 0
    loads: int = 0
    windows: int = 0  # loads during which the row changed: the race window was hit
    sets: int = 0
    deletes: int = 0
    stale: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # rid -> (cached, db)
    leases_left: list[int] = field(default_factory=list)

    def line(self, name: str) -> str:
        return (
            f"[race] {name}: {self.reads} reads, {self.loads} loads, {self.windows} loads raced "
            f"by a writer, {self.sets} write-through sets, {self.deletes} deletes; "
            f"stale keys: {len(self.stale)}"
        )


def row_key(rid: int) -> str:
    return f"row:{rid}"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "race.sqlite3")
    yield database
    database.close()


def run_race(
    backend: RedisCache,
    db: Database,
    reader: Reader,
    seconds: float,
    seed: int,
    report: RaceReport | None = None,
) -> RaceReport:
    """Run readers and writers for *seconds*; then compare every entry with the database."""
    report = report if report is not None else RaceReport()
    counts_lock = threading.Lock()
    stop_writers = threading.Event()
    stop_readers = threading.Event()
    writer = WriteThrough(backend, ttl=60)
    errors: list[BaseException] = []

    def count(name: str) -> None:
        with counts_lock:
            setattr(report, name, getattr(report, name) + 1)

    def reader_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + index)

        def loader_for(rid: int) -> Callable[[], Any]:
            def load() -> Any:
                value = db.read(rid)
                time.sleep(rng.uniform(0.001, 0.006))  # widen the window before returning
                count("loads")
                if db.read(rid) != value:
                    count("windows")
                return value

            return load

        try:
            while not stop_readers.is_set():
                rid = rng.randrange(ROWS)
                reader(rid, loader_for(rid))
                count("reads")
                time.sleep(rng.uniform(0, 0.0005))  # leave the writers some of the GIL
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def writer_loop(index: int) -> None:
        rng = random.Random(seed * 1000 + 500 + index)
        sequence = 0
        try:
            while not stop_writers.is_set():
                rid = rng.randrange(ROWS)
                sequence += 1
                if rng.random() < 0.5:
                    value = f"w{index}-{sequence}"
                    writer.set(row_key(rid), value, writer=functools.partial(db.write, rid))
                    count("sets")
                else:
                    writer.delete(row_key(rid), deleter=functools.partial(db.delete, rid))
                    count("deletes")
                time.sleep(rng.uniform(0, 0.001))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader_loop, args=(i,)) for i in range(READERS)]
    writers = [threading.Thread(target=writer_loop, args=(i,)) for i in range(WRITERS)]
    for thread in readers + writers:
        thread.start()
    time.sleep(seconds)
    stop_writers.set()
    for thread in writers:
        thread.join()
    time.sleep(0.05)  # readers go on a little after the last write, then drain
    stop_readers.set()
    for thread in readers:
        thread.join()
    if errors:
        raise errors[0]

    report.stale.clear()
    report.leases_left.clear()
    client = backend.client
    for rid in range(ROWS):
        raw = client.get(backend.prefix + row_key(rid))
        if raw is None:
            continue
        entry = decode(cast(bytes, raw))
        if isinstance(entry, Lease):
            report.leases_left.append(rid)
            continue
        # Soft-expired envelopes count too: their value is what a refresh would serve.
        cached = entry.value if isinstance(entry, Envelope) else entry
        current = db.read(rid)
        if cached != current:
            report.stale[rid] = (cached, current)
    return report


def library_readers(backend: RedisCache) -> dict[str, Reader]:
    aside = CacheAside(backend, ttl=60, cache_none=True)
    # ttl is short so entries go soft-stale constantly and are refreshed under the refresh lock.
    swr = CacheAside(backend, ttl=0.05, stale_ttl=60, cache_none=True)

    @cache(ttl=60, backend=backend, key="row:{rid}", cache_none=True)
    def load_row(rid: int, load: Callable[[], Any]) -> Any:
        return load()

    return {
        "cache_aside": lambda rid, load: aside.get(row_key(rid), load),
        "decorator": lambda rid, load: load_row(rid, load),
        "stale_while_revalidate": lambda rid, load: swr.get(row_key(rid), load),
    }


LIBRARY_READERS = ["cache_aside", "decorator", "stale_while_revalidate"]


@pytest.mark.parametrize("reader_name", LIBRARY_READERS)
def test_no_stale_entry_survives_concurrent_writers(
    real_caches: CacheFactory, db: Database, reader_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Readers with a slow loader + write-through set/delete: nothing cached differs from the DB."""
    backend = real_caches(socket_timeout=SOCKET_TIMEOUT)
    reader = library_readers(backend)[reader_name]
    seed = 100 + LIBRARY_READERS.index(reader_name)
    report = RaceReport()
    rounds = 0
    started = time.monotonic()
    while True:
        rounds += 1
        run_race(backend, db, reader, RACE_SECONDS, seed=seed * 1000 + rounds, report=report)
        assert report.stale == {}, f"stale entries (rid: (cached, database)): {report.stale}"
        assert report.leases_left == [], "lease placeholders left behind after every load finished"
        if report.windows >= MIN_WINDOWS or time.monotonic() - started > RACE_BUDGET_SECONDS:
            break
    with capsys.disabled():
        print("\n" + report.line(reader_name) + f" in {rounds} round(s)")
    assert report.windows > 0, "the harness never opened the race window: nothing was tested"


def test_naive_cache_aside_is_caught(
    real_caches: CacheFactory, db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: a naive reader (GET, load, SET) under the same harness leaves stale keys.

    This proves the harness can catch the lost-update race: if it could not, the library tests
    above would pass vacuously. Rounds of NAIVE_ROUND_SECONDS run until a stale key is found,
    bounded by NAIVE_BUDGET_SECONDS.
    """
    backend = real_caches(socket_timeout=SOCKET_TIMEOUT)

    def naive(rid: int, load: Callable[[], Any]) -> Any:
        value = backend.lookup(row_key(rid))
        if value is MISSING:
            value = load()
            backend.set(row_key(rid), value, ttl=60)
        return value

    report = RaceReport()
    rounds = 0
    started = time.monotonic()
    while time.monotonic() - started < NAIVE_BUDGET_SECONDS:
        rounds += 1
        run_race(backend, db, naive, NAIVE_ROUND_SECONDS, seed=rounds, report=report)
        if report.stale:
            break
    with capsys.disabled():
        print(
            "\n" + report.line("naive") + f" after {rounds} round(s) of {NAIVE_ROUND_SECONDS}s; "
            f"e.g. {dict(list(report.stale.items())[:3])}"
        )
    assert report.stale, "the naive reader left no stale key: the harness cannot catch the race"
