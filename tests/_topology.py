"""Real multi-node Redis topologies for tests: a Redis Cluster, and Sentinel with a replica.

Built from :class:`_servers.RedisServer` processes on free loopback ports. Every process is
started and stopped here; nothing ever talks to a Redis it did not start.

:class:`RedisClusterTopology`
    Three masters, one replica each (``--cluster-enabled yes``, ``redis-cli --cluster
    create``), all protected by one password. Node configuration files live in the topology's
    own directory, so a killed node restarted on its port rejoins with its identity and becomes
    a replica of whoever took over its slots (:meth:`RedisClusterTopology.heal`).

:class:`SentinelTopology`
    One master, one replica (``--replicaof``), three sentinels monitoring ``mymaster`` with
    quorum 2. The data nodes and the sentinels have different passwords.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from _servers import (
    PORT_ATTEMPTS,
    RedisServer,
    RedisServerError,
    find_free_port,
    no_retry,
    redis_server_binary,
    redis_server_version,
    stop_all,
)

CLUSTER_PASSWORD = "cluster-secret"
DATA_PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"
SERVICE = "mymaster"
NODE_TIMEOUT_MS = 1000
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
READY_TIMEOUT = 20.0
POLL = 0.05
BUS_PORT_OFFSET = 10000
"""Redis < 7.0 puts a node's cluster bus on its port + 10000."""


class TopologyError(RedisServerError):
    """A topology could not be built, or did not reach the expected state in time."""


def topology_tools_missing() -> str | None:
    """Why topologies cannot be built here (a missing binary), or None."""
    if redis_server_binary() is None:
        return "redis-server not found on PATH: install it (apt-get install redis-server)"
    if shutil.which("redis-cli") is None:
        return "redis-cli not found on PATH: install it (apt-get install redis-tools)"
    return None


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll *condition* until truthy; TopologyError naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, RedisServerError, OSError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise TopologyError(f"{what}: not reached within {timeout:g}s{suffix}")
        time.sleep(POLL)


# ==================================================================================
# Redis Cluster
# ==================================================================================


@dataclass(frozen=True)
class ClusterNodeInfo:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags

    def owns(self, slot: int) -> bool:
        return any(low <= slot <= high for low, high in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNodeInfo]:
    """Parse the output of ``CLUSTER NODES``."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        slots = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated
                continue
            low, _, high = item.partition("-")
            slots.append((int(low), int(high or low)))
        nodes.append(
            ClusterNodeInfo(
                node_id=fields[0],
                port=int(fields[1].split("@")[0].rpartition(":")[2]),
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                connected=fields[7] == "connected",
                slots=tuple(slots),
            )
        )
    return nodes


class RedisClusterTopology:
    """A Redis Cluster of *masters* masters with *replicas* replicas each, on loopback."""

    def __init__(
        self, masters: int = 3, replicas: int = 1, password: str | None = CLUSTER_PASSWORD
    ) -> None:
        self.masters = masters
        self.replicas = replicas
        self.password = password
        self.servers: list[RedisServer] = []
        self._dir: Path | None = None
        self._clients: list[Any] = []

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> RedisClusterTopology:
        """Start the nodes, create the cluster and wait until every node says it is ok."""
        self._dir = Path(tempfile.mkdtemp(prefix="fennec-cluster-"))
        try:
            for index in range((1 + self.replicas) * self.masters):
                self.servers.append(self._start_node(index))
            self._create()
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node and remove every file."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        stop_all(self.servers)
        self.servers.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def heal(self) -> None:
        """Restart killed nodes (they rejoin as replicas) and wait for a healthy cluster."""
        for server in self.servers:
            if server.paused:
                server.resume()
            if not server.is_running():
                server.restart()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        """Every node up, agreeing on ``cluster_state:ok`` and on the topology, and every
        master with its replicas in sync."""
        wait_until(self.is_healthy, timeout, "healthy cluster")

    def is_healthy(self) -> bool:
        """True when the cluster is as :meth:`wait_healthy` wants it."""
        total = len(self.servers)
        for server in self.servers:
            if not server.is_running() or server.paused:
                return False
            info = server.cli("CLUSTER", "INFO")
            if "cluster_state:ok" not in info or f"cluster_known_nodes:{total}" not in info:
                return False
            nodes = parse_cluster_nodes(server.cli("CLUSTER", "NODES"))
            if any(node.failed or not node.connected for node in nodes):
                return False
            masters = [node for node in nodes if node.is_master and node.slots]
            if len(masters) != self.masters:
                return False
            # A restarted master comes back empty and only then turns into its successor's
            # replica: until it has, that master has no replica (a failover test needs one).
            for master in masters:
                if sum(node.master_id == master.node_id for node in nodes) < self.replicas:
                    return False
        for server in self.servers:
            replication = server.cli("INFO", "replication")
            if "role:slave" in replication and "master_link_status:up" not in replication:
                return False
        return True

    # -- what tests use -------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://:password@seed1,seed2,seed3/`` (three seeds is plenty)."""
        auth = f":{self.password}@" if self.password else ""
        seeds = ",".join(f"127.0.0.1:{server.port}" for server in self.servers[:3])
        return f"redis+cluster://{auth}{seeds}/"

    def nodes(self) -> list[ClusterNodeInfo]:
        """``CLUSTER NODES`` as seen by the first node that answers."""
        for server in self.servers:
            if server.is_running() and not server.paused:
                try:
                    return parse_cluster_nodes(server.cli("CLUSTER", "NODES"))
                except RedisServerError:
                    continue
        raise TopologyError("no cluster node answers")

    def server_on(self, port: int) -> RedisServer:
        """The node listening on *port*."""
        for server in self.servers:
            if server.port == port:
                return server
        raise KeyError(port)

    def master_of_slot(self, slot: int) -> RedisServer:
        """The node currently serving *slot*."""
        for node in self.nodes():
            if node.is_master and node.owns(slot) and not node.failed:
                return self.server_on(node.port)
        raise TopologyError(f"no live master serves slot {slot}")

    def master_servers(self) -> list[RedisServer]:
        """The nodes currently serving slots."""
        return [self.server_on(n.port) for n in self.nodes() if n.is_master and n.slots]

    def flush(self) -> None:
        """Empty every master (their replicas follow)."""
        for server in self.master_servers():
            server.cli("FLUSHALL")

    def cluster_client(self, **kwargs: Any) -> Any:
        """A plain redis-py ``RedisCluster`` for assertions, closed by :meth:`stop`."""
        from redis.cluster import ClusterNode, RedisCluster

        kwargs.setdefault("password", self.password)
        node: Any = ClusterNode
        client = RedisCluster(
            startup_nodes=[node("127.0.0.1", s.port) for s in self.servers[:3]], **kwargs
        )
        self._clients.append(client)
        return client

    # -- internals ----------------------------------------------------------------

    def _start_node(self, index: int) -> RedisServer:
        """Start node *index* on a free port, with its cluster bus on another free port (the
        default bus port, port + 10000, may be taken or out of range). Before Redis 7.0 (no
        ``cluster-port``) the bus is always port + 10000, so both must be free."""
        for attempt in range(PORT_ATTEMPTS):
            if redis_server_version() >= (7, 0):
                port = find_free_port()
                bus = ["--cluster-port", str(find_free_port())]
            else:
                port, bus = _free_port_with_bus(), []
            server = RedisServer([*self._node_args(index), *bus], port=port)
            try:
                return server.start()
            except RedisServerError:
                if attempt == PORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _node_args(self, index: int) -> list[str]:
        assert self._dir is not None
        password = self.password
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        return [
            "--cluster-enabled", "yes",
            # Outside the node's own temp dir, which a restart replaces: a restarted node keeps
            # its identity and rejoins.
            "--cluster-config-file", str(self._dir / f"nodes-{index}.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-replica-validity-factor", "0",
            "--repl-diskless-sync", "yes",
            "--repl-diskless-sync-delay", "0",
            *auth,
        ]  # fmt: skip

    def _create(self) -> None:
        binary = shutil.which("redis-cli")
        if binary is None:
            raise TopologyError("redis-cli not found on PATH")
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        command = [
            binary, *auth, "--cluster", "create",
            *(f"127.0.0.1:{server.port}" for server in self.servers),
            "--cluster-replicas", str(self.replicas), "--cluster-yes",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0 or "[OK] All 16384 slots covered" not in result.stdout:
            raise TopologyError(
                f"redis-cli --cluster create failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )


def _free_port_with_bus() -> int:
    """A free port whose default cluster bus port (port + 10000) was free a moment ago too."""
    while True:
        port = find_free_port()
        if port + BUS_PORT_OFFSET > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        return port


# ==================================================================================
# Sentinel
# ==================================================================================


class SentinelServer(RedisServer):
    """``redis-server <sentinel.conf> --sentinel``, monitoring one master."""

    def __init__(
        self,
        master_port: int,
        quorum: int = 2,
        password: str | None = None,
        master_password: str | None = None,
    ) -> None:
        super().__init__(["--requirepass", password] if password else [])
        self.master_port = master_port
        self.quorum = quorum
        self.master_password = master_password

    def _launch(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RedisServerError("redis-server not found on PATH")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="fennec-sentinel-"))
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "daemonize no",
            f'dir "{self._tmpdir}"',
            f'logfile "{self._tmpdir / "redis.log"}"',
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} {self.quorum}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]
        if self.master_password:
            lines.append(f"sentinel auth-pass {SERVICE} {self.master_password}")
        if self.password:
            lines.append(f"requirepass {self.password}")
            # Before 6.2 (no sentinel-pass) a sentinel authenticates to the others with its
            # own requirepass, which is the same here.
            if redis_server_version() >= (6, 2):
                lines.append(f"sentinel sentinel-pass {self.password}")
        config = self._tmpdir / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n")
        with open(self._tmpdir / "stdout.log", "wb") as output:
            self._proc = subprocess.Popen(
                [binary, str(config), "--sentinel"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._paused = False
        self._wait_until_ready()


class SentinelTopology:
    """One master, one replica and three sentinels (quorum 2) for service ``mymaster``."""

    def __init__(
        self,
        data_password: str | None = DATA_PASSWORD,
        sentinel_password: str | None = SENTINEL_PASSWORD,
        sentinels: int = 3,
    ) -> None:
        self.data_password = data_password
        self.sentinel_password = sentinel_password
        self.sentinel_count = sentinels
        self.data: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []
        self._clients: dict[int, Any] = {}

    def start(self) -> SentinelTopology:
        """Start master, replica (waiting for its link) and sentinels (waiting until each sees
        the replica and the other sentinels)."""
        auth = (
            ["--requirepass", self.data_password, "--masterauth", self.data_password]
            if self.data_password
            else []
        )
        fast_sync = ["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]
        try:
            master = RedisServer([*auth, *fast_sync]).start()
            self.data.append(master)
            replica = RedisServer(
                [*auth, *fast_sync, "--replicaof", "127.0.0.1", str(master.port)]
            ).start()
            self.data.append(replica)
            wait_until(lambda: _link_up(replica), READY_TIMEOUT, "replica in sync")
            for _ in range(self.sentinel_count):
                sentinel = SentinelServer(
                    master.port, 2, self.sentinel_password, self.data_password
                )
                sentinel.start()
                self.sentinels.append(sentinel)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process and remove every file."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        stop_all([*self.sentinels, *self.data])
        self.sentinels.clear()
        self.data.clear()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Every sentinel sees the master up, one replica and the two other sentinels."""

        def ready() -> bool:
            for sentinel in self.sentinels:
                state = self.sentinel_client(sentinel).sentinel_master(SERVICE)
                if (
                    state["is_sdown"]
                    or state["is_odown"]
                    or int(state["num-other-sentinels"]) != self.sentinel_count - 1
                    or int(state["num-slaves"]) < 1
                ):
                    return False
            return True

        wait_until(ready, timeout, "sentinels agreeing on master, replica and each other")

    @property
    def url(self) -> str:
        """``redis+sentinel://:data-password@s1,s2,s3/mymaster/0?sentinel_password=...``."""
        auth = f":{self.data_password}@" if self.data_password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{auth}{hosts}/{SERVICE}/0{query}"

    def master_address(self) -> tuple[str, int]:
        """Where the sentinels (the first that answers) say the master is."""
        for sentinel in self.sentinels:
            if sentinel.is_running():
                try:
                    host, port = self.sentinel_client(sentinel).sentinel_get_master_addr_by_name(
                        SERVICE
                    )
                    return str(host), int(port)
                except redis.RedisError:
                    continue
        raise TopologyError("no sentinel answers")

    def master(self) -> RedisServer:
        """The data node the sentinels currently call master."""
        _, port = self.master_address()
        return next(server for server in self.data if server.port == port)

    def sentinel_client(self, sentinel: RedisServer) -> Any:
        """A decoding client of *sentinel* (one per sentinel, closed by :meth:`stop`)."""
        client = self._clients.get(sentinel.port)
        if client is None:
            client = self._clients[sentinel.port] = redis.Redis(
                host="127.0.0.1",
                port=sentinel.port,
                password=self.sentinel_password,
                decode_responses=True,
                retry=no_retry(),
                socket_timeout=1.0,
            )
        return client


def _link_up(replica: RedisServer) -> bool:
    return "master_link_status:up" in replica.cli("INFO", "replication")


def all_pids(servers: Sequence[RedisServer]) -> list[int]:
    """Pids of the servers that still have a process (for leak checks)."""
    return [pid for pid in (s.pid for s in servers) if pid is not None]
