"""Cache URLs are checked whole before anything connects: every scheme, address and option.

No server is needed: clients are built (never connected) to show that every option taken
reaches redis-py's connection class as a keyword it accepts.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.connection import URL_QUERY_ARGUMENT_PARSERS

from flask_fennec_cache import ConfigurationError, RedisCache
from flask_fennec_cache._connect import make_client
from flask_fennec_cache._urls import (
    SCHEMES,
    URL_OPTIONS,
    check_url,
    known_options,
    parse_server_url,
    parse_topology_url,
    redact_url,
)

OPTIONS: dict[str, Any] = {
    "socket_timeout": 0.25,
    "connect_timeout": 0.25,
    "max_connections": 7,
    "health_check_interval": 15,
}


def refused(url: str, source: str = "FENNEC_CACHE_URL") -> str:
    """The message of the ConfigurationError check_url raises for *url*."""
    with pytest.raises(ConfigurationError) as caught:
        check_url(url, source)
    message = str(caught.value)
    assert message.startswith(f"{source}: "), message
    return message


# ==================================================================================
# Address, database and shape
# ==================================================================================


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://cache:abc/0", "port 'abc' is not a number"),
        ("redis://cache:70000/0", "port 70000 is out of range"),
        ("redis://cache:0/0", "port 0 is out of range"),
        ("redis://cache:/0", "port '' is not a number"),
        ("redis://cache/x", "database 'x' is not a number"),
        ("redis://cache:6379/0/extra", "'/extra' after the database number"),
        ("redis://cache:6379/0x", "database '0x' is not a number"),
        ("redis://:6379/0", "a host is missing"),
        ("redis:///0", "a host is missing"),
        ("rediss://", "a host is missing"),
        ("redis:cache:6379", "expected redis://"),
        ("memory:/", "expected memory://"),
        ("memory:", "expected memory://"),
        ("memory://dev?db=1", "memory:// takes no options"),
        ("memory://u@dev", "memory:// takes no options"),
        ("unix://", "the socket path is missing"),
        ("unix://cache/run/redis.sock", "names a socket path, not a host"),
        ("redis://cache/0#top", "fragment"),
        ("http://cache/0", "unsupported scheme 'http'"),
        ("REDIS://cache/0", "unsupported scheme 'REDIS'"),
        ("redis://cache/0\n", "control character"),
        ("redis://ca che/0", "control character"),
        ("redis://" + "a" * 64 + ".example/0", "not a valid host name"),
        ("redis://bad..name/0", "not a valid host name"),
        ("redis+cluster://h:1,bad..name:2/", "not a valid host name"),
        ("redis+sentinel://" + "s" * 64 + ":1/svc", "not a valid host name"),
        ("redis://[::1/0", "Invalid IPv6 URL"),
        ("redis://cache/1?db=2", "db is given twice"),
        ("redis://user:pw@cache/0?password=other", "password is given twice"),
    ],
)
def test_bad_addresses_are_refused_naming_the_problem(url: str, problem: str) -> None:
    assert problem in refused(url)


def test_a_non_string_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="FENNEC_CACHE_URL: expected a URL string"):
        check_url(None, "FENNEC_CACHE_URL")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://cache", {"host": "cache", "port": 6379}),
        ("redis://cache:7000/", {"host": "cache", "port": 7000}),
        ("redis://[::1]:6380/2", {"host": "::1", "port": 6380, "db": 2}),
        (
            "redis://alice:p%40ss%2Fword@cache:7000/3?socket_timeout=0.5&client_name=web",
            {"host": "cache", "port": 7000, "db": 3, "username": "alice",
             "password": "p@ss/word", "socket_timeout": 0.5, "client_name": "web"},
        ),
        (
            "redis://cache?db=4&max_connections=5&health_check_interval=0&protocol=3",
            {"host": "cache", "port": 6379, "db": 4, "max_connections": 5,
             "health_check_interval": 0, "protocol": 3},
        ),
        (
            "redis://cache/0?socket_keepalive=off&retry_on_timeout=YES&socket_read_size=4096",
            {"host": "cache", "port": 6379, "db": 0, "socket_keepalive": False,
             "retry_on_timeout": True, "socket_read_size": 4096},
        ),
        (
            "rediss://cache/0?ssl_cert_reqs=NONE&ssl_check_hostname=false"
            "&ssl_min_version=TLSv1_2&ssl_ciphers=HIGH",
            {"host": "cache", "port": 6379, "db": 0, "ssl_cert_reqs": "none",
             "ssl_check_hostname": False, "ssl_min_version": ssl.TLSVersion.TLSv1_2,
             "ssl_ciphers": "HIGH"},
        ),
        (
            "rediss://cache/0?ssl_min_version=772&ssl_include_verify_flags=VERIFY_X509_STRICT",
            {"host": "cache", "port": 6379, "db": 0, "ssl_min_version": ssl.TLSVersion.TLSv1_3,
             "ssl_include_verify_flags": [ssl.VerifyFlags.VERIFY_X509_STRICT]},
        ),
        ("unix:///run/redis.sock?db=2", {"path": "/run/redis.sock", "db": 2}),
        ("unix://:pw@/run/redis.sock", {"path": "/run/redis.sock", "password": "pw"}),
    ],
)  # fmt: skip
def test_good_urls_parse_to_connection_options(url: str, expected: dict[str, Any]) -> None:
    assert check_url(url) == url
    assert parse_server_url(url) == expected


@pytest.mark.parametrize("url", ["memory://", "memory://dev", "memory://test-1/"])
def test_memory_urls(url: str) -> None:
    assert check_url(url) == url


# ==================================================================================
# Query options
# ==================================================================================


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://cache/0?socket_timout=1", "unknown option 'socket_timout' for redis://"),
        ("redis://cache/0?socket_timeout=abc", "option socket_timeout='abc': expected a number"),
        ("redis://cache/0?socket_timeout=0", "option socket_timeout='0'"),
        ("redis://cache/0?socket_timeout=-1", "option socket_timeout='-1'"),
        ("redis://cache/0?socket_timeout=inf", "option socket_timeout='inf'"),
        ("redis://cache/0?socket_connect_timeout=nan", "option socket_connect_timeout='nan'"),
        ("redis://cache/0?health_check_interval=x", "option health_check_interval='x'"),
        ("redis://cache/0?health_check_interval=1.5", "option health_check_interval='1.5'"),
        ("redis://cache/0?max_connections=0", "option max_connections='0'"),
        ("redis://cache?db=x", "option db='x'"),
        ("redis://cache/0?retry_on_timeout=maybe", "expected true or false"),
        ("redis://cache/0?protocol=4", "expected 2 (RESP2) or 3 (RESP3)"),
        ("redis://cache/0?client_name=a%20b", "client names with spaces"),
        ("redis://cache/0?timeout=1", "unknown option 'timeout'"),
        ("redis://cache/0?socket_timeout=", "option 'socket_timeout' has no value"),
        ("redis://cache/0?socket_timeout=1&socket_timeout=2", "'socket_timeout' is given twice"),
        ("redis://cache/0?socket_timeout", "bad query string"),
        ("redis://cache/0?host=other", "give the host in the URL's address"),
        ("unix:///run/redis.sock?path=/x", "give the path in the URL's address"),
        ("redis://cache/0?decode_responses=true", "set by flask-fennec-cache"),
        ("redis://cache/0?encoding=latin-1", "set by flask-fennec-cache"),
        ("redis://cache/0?retry_on_error=x", "cannot be given in a URL"),
        ("redis://cache/0?socket_keepalive_options=x", "cannot be given in a URL"),
        ("redis://cache/0?ssl_cert_reqs=none", "needs TLS: use rediss://"),
        ("unix:///run/redis.sock?ssl_ca_certs=/x", "needs TLS"),
        ("redis+cluster://h:1/?ssl_check_hostname=false", "needs TLS: use rediss+cluster://"),
        ("rediss://cache/0?ssl_ca_certs=/no/such/ca.pem", "option ssl_ca_certs='/no/such/ca.pem'"),
        ("rediss://cache/0?ssl_ca_path=/no/such/dir", "no such directory"),
        ("rediss://cache/0?ssl_cert_reqs=always", "expected none, optional or required"),
        ("rediss://cache/0?ssl_min_version=TLSv9", "expected one of"),
        ("rediss://cache/0?ssl_ciphers=NO-SUCH-CIPHER", "OpenSSL knows no cipher"),
        ("rediss://cache/0?ssl_include_verify_flags=VERIFY_NOPE", "ssl.VerifyFlags names"),
        ("rediss://cache/0?ssl_cert_req=none", "did you mean 'ssl_cert_reqs'"),
        ("unix:///run/redis.sock?socket_keepalive=true", "does not apply to unix://"),
        ("redis+cluster://h:1/?db=1", "a cluster has only database 0"),
        ("redis+cluster://h:1/?health_check_interval=5", "does not apply to redis+cluster://"),
        ("redis+cluster://h:1/?socket_timeout=x", "option socket_timeout='x'"),
        ("redis+sentinel://s:1/svc?db=1", "give the database in the path"),
        ("redis+sentinel://s:1/svc?client_name=a%0Ab", "client names with spaces"),
    ],
)
def test_bad_options_are_refused_naming_the_option(url: str, problem: str) -> None:
    assert problem in refused(url)


def test_an_unknown_option_lists_close_and_known_ones() -> None:
    message = refused("redis://cache:6379/0?socket_timout=1")
    assert "did you mean 'socket_timeout'" in message
    known = message.partition("known: ")[2]
    for name in ("socket_timeout", "socket_connect_timeout", "health_check_interval", "db"):
        assert name in known
    assert "ssl_ca_certs" not in known  # not for a plain redis:// URL


def test_known_options_follow_the_connection_classes() -> None:
    assert "socket_keepalive" in known_options("redis")
    assert "socket_keepalive" not in known_options("unix")  # UnixDomainSocketConnection
    assert "ssl_ca_certs" in known_options("rediss")
    assert "ssl_ca_certs" not in known_options("redis")
    assert {"read_from_replicas", "sentinel_password"} <= set(known_options("redis+sentinel"))
    assert "db" not in known_options("redis+sentinel") and "db" not in known_options(
        "redis+cluster"
    )
    assert known_options("memory") == ()


@pytest.mark.parametrize("name", sorted(URL_QUERY_ARGUMENT_PARSERS))
@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_every_option_redis_py_parses_is_taken_or_refused_by_name(
    scheme: str, name: str, tmp_path: Path
) -> None:
    address = "/run/redis.sock" if scheme == "unix" else "cache"
    url = f"{scheme}://{address}?{name}={sample(name, tmp_path)}"
    try:
        check_url(url)
    except ConfigurationError as exc:
        assert f"{name}" in str(exc)
        assert name not in known_options(scheme)
    else:
        assert name in known_options(scheme)


def sample(name: str, tmp_path: Path) -> str:
    """A valid value of option *name*, as a URL carries it."""
    if name in ("ssl_keyfile", "ssl_certfile", "ssl_ca_certs"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        return str(path)
    if name == "ssl_ca_path":
        return str(tmp_path)
    return SAMPLES.get(name, "1")


SAMPLES = {
    "db": "1", "username": "alice", "password": "pw", "socket_timeout": "0.5",
    "socket_connect_timeout": "0.5", "socket_keepalive": "true", "socket_read_size": "4096",
    "retry_on_timeout": "false", "health_check_interval": "5", "max_connections": "3",
    "client_name": "web", "protocol": "3", "ssl_ca_data": "PEM", "ssl_password": "pw",
    "ssl_cert_reqs": "optional", "ssl_check_hostname": "false",
    "ssl_include_verify_flags": "VERIFY_X509_STRICT",
    "ssl_exclude_verify_flags": "VERIFY_X509_PARTIAL_CHAIN", "ssl_min_version": "TLSv1_2",
    "ssl_ciphers": "HIGH", "ssl_validate_ocsp": "false", "ssl_validate_ocsp_stapled": "false",
}  # fmt: skip


def test_every_url_option_has_a_sample() -> None:
    files = {"ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_ca_path"}
    assert set(SAMPLES) | files == set(URL_OPTIONS)


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel"])
def test_every_option_taken_reaches_a_redis_py_connection(scheme: str, tmp_path: Path) -> None:
    """Each option a URL may carry is a keyword redis-py's connection for the scheme takes:
    building a connection with all of them at once raises no TypeError (nothing connects)."""
    topology = {"read_from_replicas", "sentinel_username", "sentinel_password"}
    names = [name for name in known_options(scheme) if name not in topology]
    if scheme.endswith("sentinel"):
        address = "s1:26379/svc"
    else:
        address = "/run/redis.sock" if scheme == "unix" else "cache/0"
    names = [n for n in names if not (n == "db" and scheme != "unix")]
    names = [n for n in names if n != "ssl_validate_ocsp_stapled"]  # exclusive with ocsp
    query = "&".join(f"{name}={sample(name, tmp_path)}" for name in names)
    client = make_client(f"{scheme}://{address}?{query}", **OPTIONS)
    connection: Any = client.connection_pool.make_connection()
    try:
        assert connection.socket_timeout == 0.5  # the URL's option won over the setting
        assert client.connection_pool.connection_kwargs["client_name"] == "web"
    finally:
        connection.disconnect()
        client.close()


def test_url_options_win_over_the_settings() -> None:
    client = make_client("redis://cache/0?socket_timeout=2&max_connections=3", **OPTIONS)
    pool = client.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 2.0
    assert pool.connection_kwargs["socket_connect_timeout"] == 0.25  # from the settings
    assert pool.max_connections == 3
    client.close()


def test_topology_options_reach_the_data_nodes() -> None:
    parsed = parse_topology_url("redis+cluster://h:1/?client_name=web&socket_timeout=0.5")
    assert dict(parsed.options) == {"client_name": "web", "socket_timeout": 0.5}
    sentinel = parse_topology_url("redis+sentinel://s:1/svc/2?password=x&read_from_replicas=1")
    assert (sentinel.password, sentinel.read_from_replicas, sentinel.options) == ("x", True, ())


def test_topology_credentials_given_twice_are_refused() -> None:
    assert "password is given twice" in refused("redis+sentinel://:pw@s:1/svc?password=x")


def test_every_scheme_has_a_check() -> None:
    """Each scheme refuses a bad port (or, for memory://, an option): no scheme is waved on."""
    for scheme in SCHEMES:
        bad = {
            "memory": "memory://x?y=1",
            "unix": "unix:///s?socket_timeout=x",
        }.get(scheme, f"{scheme}://h:abc/svc")
        refused(bad)


# ==================================================================================
# Passwords stay out of messages
# ==================================================================================


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@cache:abc/0",
        "redis://alice:hunter2@cache/0?socket_timout=1",
        "redis://cache/0?password=hunter2&socket_timeout=x",
        "redis://cache/0?password=hunter2&password=hunter2",
        "rediss://cache/0?ssl_password=hunter2&ssl_ciphers=NOPE",
        "redis://:hun/ter2@cache/0",
        "redis://:hun?ter2@cache/0",
        "redis://:hun#ter2@cache/0",
        "redis+sentinel://:hunter2@s:1/svc/x?sentinel_password=hunter2",
        "unix://:hunter2@/run/redis.sock?db=x",
    ],
)
def test_messages_never_show_a_password(url: str) -> None:
    message = refused(url)
    for secret in ("hunter2", "ter2"):
        assert secret not in message, message


def test_an_unencoded_slash_in_a_password_is_explained() -> None:
    assert "percent-encode" in refused("redis://:pa/ss@cache/0")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:p/w@h:1/0", "redis://***@h:1/0"),
        ("redis://:p?w@h:1/0?password=x", "redis://***@h:1/0?password=***"),
        ("redis://h/0?ssl_password=x&db=1", "redis://h/0?ssl_password=***&db=1"),
    ],
)
def test_redact_url_with_unencoded_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ==================================================================================
# Standalone RedisCache and TLS files
# ==================================================================================


def test_redis_cache_checks_its_url_without_connecting() -> None:
    with pytest.raises(ConfigurationError, match="cache URL: unknown option 'socket_timout'"):
        RedisCache("redis://127.0.0.1:1/0?socket_timout=1")


def test_redis_cache_refuses_a_missing_tls_file() -> None:
    with pytest.raises(ConfigurationError, match="tls_ca_certs: no such file"):
        RedisCache("rediss://127.0.0.1:1/0", tls_ca_certs="/no/such/ca.pem")


def test_a_client_is_built_without_connecting() -> None:
    client = make_client("redis://203.0.113.1:6379/0?socket_connect_timeout=0.01", **OPTIONS)
    assert isinstance(client, redis.Redis)
    assert client.connection_pool._created_connections == 0
    client.close()


def test_every_option_is_in_the_configuration_reference() -> None:
    reference = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for scheme in SCHEMES:
        for name in known_options(scheme):
            assert f"`{name}`" in reference, f"docs/configuration.md does not list {name}"
