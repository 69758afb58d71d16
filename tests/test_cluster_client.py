"""ClusterClient without a cluster: what reaches the backend when redis-py's cluster fails."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import RedisClusterException

from flask_fennec_cache._topology import ClusterClient, ClusterUnavailable


class _BrokenCluster:
    """Stands in for RedisCluster during a failover, as redis-py behaves there."""

    def get(self, name: str) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'redis_connection'")

    def set(self, name: str, value: bytes) -> Any:
        raise RedisClusterException("Cluster is down")

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        return self

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        raise AttributeError("'NoneType' object has no attribute 'redis_connection'")


def client() -> Any:
    return ClusterClient(lambda: _BrokenCluster(), "test")  # type: ignore[arg-type,return-value]


def test_a_vanished_slot_owner_is_an_outage_not_an_attribute_error() -> None:
    with pytest.raises(ClusterUnavailable, match="redis_connection"):
        client().get("k")
    with pytest.raises(ClusterUnavailable, match="Cluster is down"):
        client().set("k", b"v")
    with pytest.raises(ClusterUnavailable, match="redis_connection"):
        client().pipeline().execute()


def test_an_unknown_command_is_still_a_programming_error() -> None:
    with pytest.raises(AttributeError, match="no_such_command"):
        client().no_such_command("k")
