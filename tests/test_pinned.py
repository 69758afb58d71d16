"""The hit path's GET on a connection each thread keeps (flask_fennec_cache._pinned)."""

from __future__ import annotations

import gc
import multiprocessing
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _servers import RedisServer
from _support import wait_for

from flask_fennec_cache import RedisCache
from flask_fennec_cache._connect import fast_get
from flask_fennec_cache._pinned import PinnedGet, pin_budget

pytestmark = pytest.mark.real

HANG = 10.0


@pytest.fixture
def pool(redis_server: RedisServer) -> Iterator[redis.ConnectionPool]:
    pool = redis.ConnectionPool.from_url(redis_server.url, max_connections=6)
    redis.Redis(connection_pool=pool).set("k", b"v")
    yield pool
    pool.disconnect()


def client_ids(server: RedisServer) -> set[int]:
    """The ids of the server's clients, except the connection asking."""
    admin = server.client()
    try:
        own = admin.client_id()
        return {int(c["id"]) for c in admin.client_list()} - {own}
    finally:
        admin.close()


def test_a_thread_reads_on_one_connection_out_of_the_pool(
    pool: redis.ConnectionPool, redis_server: RedisServer
) -> None:
    get = PinnedGet(pool)
    assert [get("k") for _ in range(50)] == [b"v"] * 50
    assert get("missing") is None
    assert get.pinned == 1
    held = get.held()
    assert held is not None and held not in pool._available_connections
    assert len(pool._in_use_connections) == 1


def test_threads_past_the_budget_read_through_the_pool(pool: redis.ConnectionPool) -> None:
    get = PinnedGet(pool)
    budget = pin_budget(pool)
    assert budget == 3
    go = threading.Barrier(budget + 2)
    done = threading.Event()
    answers: list[Any] = []

    def reader() -> None:
        answers.append(get("k"))
        go.wait(HANG)  # all alive at once: each keeps what it pinned
        done.wait(HANG)
        answers.append(get("k"))

    threads = [threading.Thread(target=reader) for _ in range(budget + 1)]
    for thread in threads:
        thread.start()
    go.wait(HANG)
    assert get.pinned == budget  # the extra thread read on a pooled connection
    done.set()
    for thread in threads:
        thread.join(HANG)
    assert answers == [b"v"] * (2 * (budget + 1))
    # Writes and pipelines still find connections: at most half the pool is kept.
    assert redis.Redis(connection_pool=pool).set("other", b"1")


def test_a_thread_that_ends_gives_its_connection_back(pool: redis.ConnectionPool) -> None:
    get = PinnedGet(pool)
    held: list[Any] = []

    def reader() -> None:
        assert get("k") == b"v"
        held.append(get.held())

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join(HANG)
    gc.collect()
    assert get.pinned == 0
    assert held[0] in pool._available_connections


def test_a_connection_the_server_closed_is_reopened_once(
    pool: redis.ConnectionPool, redis_server: RedisServer
) -> None:
    get = PinnedGet(pool)
    assert get("k") == b"v"
    before = client_ids(redis_server)
    admin = redis_server.client()
    admin.client_kill_filter(_type="normal", skipme=True)
    admin.close()
    assert get("k") == b"v"  # the GET on the killed connection failed, the retry did not
    assert get.pinned == 1 and client_ids(redis_server).isdisjoint(before)


def test_a_failed_read_closes_its_connection(pool: redis.ConnectionPool) -> None:
    get = PinnedGet(pool)
    assert get("k") == b"v"
    conn = get.held()
    sent: list[str] = []

    def fail(*args: Any, **kwargs: Any) -> Any:
        sent.append("read")
        raise redis.TimeoutError("Timeout reading from socket")

    conn.read_response = fail
    with pytest.raises(redis.TimeoutError):
        get("k")
    assert sent == ["read"]  # a timeout is not retried
    assert conn._sock is None  # in doubt: closed, reopened by the next read
    del conn.read_response
    assert get("k") == b"v"


def _child_reads(get: PinnedGet, parent_conn: Any, out: Any) -> None:
    answers = [get("k") for _ in range(20)]
    out.send((answers, get.held() is parent_conn, get.pinned))


def test_a_forked_child_never_reads_on_the_parent_s_connection(
    pool: redis.ConnectionPool,
) -> None:
    get = PinnedGet(pool)
    assert get("k") == b"v"
    parent_conn = get.held()
    reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_child_reads, args=(get, parent_conn, writer)
    )
    child.start()
    assert reader.poll(HANG)
    answers, same, pinned = reader.recv()
    child.join(HANG)
    assert answers == [b"v"] * 20 and not same and pinned == 1
    assert get.held() is parent_conn and get("k") == b"v" and get.pinned == 1


def test_only_plain_resp2_pools_use_it(redis_server: RedisServer) -> None:
    resp2 = redis.Redis.from_url(redis_server.url)
    resp3 = redis.Redis.from_url(redis_server.url, protocol=3)
    try:
        assert isinstance(fast_get(resp2), PinnedGet)
        assert not isinstance(fast_get(resp3), PinnedGet)
    finally:
        resp2.close()
        resp3.close()


def test_a_closed_cache_closes_the_connections_threads_keep(redis_server: RedisServer) -> None:
    before = client_ids(redis_server)
    cache = RedisCache(redis_server.url, prefix="pinned:")
    cache.set("k", "v")
    assert cache.get("k") == "v"
    ours = client_ids(redis_server) - before
    assert ours
    cache.close()
    assert wait_for(lambda: client_ids(redis_server).isdisjoint(ours), timeout=HANG)
