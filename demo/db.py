"""The demo's user store: a small SQLite database with a simulated slow query.

Every call opens its own connection and closes it before returning, so nothing is shared
between threads or across a ``fork()``: the module is safe under gunicorn's forking,
threaded workers. The simulated delay (``time.sleep``) happens outside any transaction so a
slow "query" never holds a database lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TypedDict

__all__ = ["SEED_USERS", "User", "connect", "get_user", "init_db", "save_user"]

#: How long (seconds) a connection waits for another writer before giving up.
BUSY_TIMEOUT_S = 10.0


class User(TypedDict):
    """A user row, as the API returns it."""

    id: int
    name: str
    email: str


#: Rows ``init_db`` inserts (idempotently).
SEED_USERS: tuple[User, ...] = (
    {"id": 1, "name": "Alice", "email": "alice@example.com"},
    {"id": 2, "name": "Bob", "email": "bob@example.com"},
    {"id": 3, "name": "Charlie", "email": "charlie@example.com"},
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL,
    email TEXT NOT NULL
)
"""


@contextmanager
def connect(path: str | Path) -> Iterator[sqlite3.Connection]:
    """Open a connection in autocommit mode (transactions are explicit) and close it after use."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    with closing(conn):
        yield conn


def init_db(path: str | Path) -> None:
    """Create the ``users`` table and seed Alice, Bob and Charlie; safe to run any number of times.

    Several gunicorn workers may run this at once: ``CREATE TABLE IF NOT EXISTS`` and
    ``INSERT OR IGNORE`` inside one immediate transaction make that harmless.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as conn:
        try:
            # WAL lets readers proceed while a writer commits; it is a property of the file.
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:  # pragma: no cover - e.g. a filesystem without mmap
            pass
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SCHEMA)
            conn.executemany(
                "INSERT OR IGNORE INTO users (id, name, email) VALUES (:id, :name, :email)",
                SEED_USERS,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def get_user(path: str | Path, user_id: int, delay: float = 0.0) -> User | None:
    """Return the user ``user_id`` or ``None``, after sleeping ``delay`` seconds (a slow query)."""
    if delay > 0:
        time.sleep(delay)
    with connect(path) as conn:
        row = conn.execute("SELECT id, name, email FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        return None
    return {"id": int(row[0]), "name": str(row[1]), "email": str(row[2])}


def save_user(path: str | Path, user: User, delay: float = 0.0) -> bool:
    """Insert or update ``user``; return ``True`` when it was created, ``False`` when updated.

    Sleeps ``delay`` seconds first (a slow write). Insert-or-update runs in one immediate
    transaction, so concurrent writers of the same id agree on who created it.
    """
    if delay > 0:
        time.sleep(delay)
    with connect(path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            created = (
                conn.execute(
                    "INSERT OR IGNORE INTO users (id, name, email) VALUES (:id, :name, :email)",
                    user,
                ).rowcount
                == 1
            )
            if not created:
                conn.execute("UPDATE users SET name = :name, email = :email WHERE id = :id", user)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return created
