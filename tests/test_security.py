"""Security on real servers: signed pickle, TLS with generated certificates, passwords and ACL
users, the admin token, and ``clear(pattern)`` confined to the prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pathlib
import pickle
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from _servers import RedisServer, RedisServerError, RedisServerFactory, redis_server_version
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_fennec_cache import ConfigurationError, FennecCache, RedisCache, cache

SECRET = "correct horse battery staple"
OTHER_SECRET = "a different secret, also long"
QUIET = 3600.0  # a stats flush interval that never fires during a test


def new_prefix() -> str:
    return f"sec-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def caches() -> Iterator[list[RedisCache]]:
    """Caches a test makes; all closed at teardown."""
    made: list[RedisCache] = []
    yield made
    for one in made:
        one.close()


# ==================================================================================
# Signed pickle
# ==================================================================================


@dataclass(frozen=True)
class Point:
    x: int
    y: int


class Evil:
    """Unpickling this creates *path*: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def signed(payload: bytes, secret: str) -> bytes:
    """A pickle entry as the library writes it: tag, HMAC-SHA256 of the payload, payload."""
    return b"p" + hmac.new(secret.encode(), payload, hashlib.sha256).digest() + payload


@pytest.fixture
def pickled(redis_server: RedisServer, caches: list[RedisCache]) -> RedisCache:
    made = RedisCache(
        redis_server.url, prefix=new_prefix(), serializer="pickle", secret_key=SECRET,
        stats_flush_interval=QUIET,
    )  # fmt: skip
    caches.append(made)
    return made


VALUES: list[Any] = [
    (1, "two", 3.0),
    {1, 2, 3},
    frozenset({"a"}),
    b"\x00\xffbytes",
    Decimal("1.10"),
    datetime(2024, 2, 29, 12, 30, tzinfo=UTC),
    Point(1, 2),
    {"nested": [Point(3, 4), (5, 6)], 7: None},
    None,
]


def test_pickle_round_trips_python_objects_on_a_real_server(pickled: RedisCache) -> None:
    for index, value in enumerate(VALUES):
        assert pickled.set(f"v{index}", value) is True
        back = pickled.get(f"v{index}", default="missing")
        assert back == value and type(back) is type(value), (value, back)
    raw = pickled.client.get(pickled.prefix + "v0")
    assert isinstance(raw, bytes) and raw[:1] == b"p"


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda d: flip(d, len(d) - 2), id="payload-byte"),
        pytest.param(lambda d: flip(d, 5), id="signature-byte"),
        pytest.param(lambda d: d[:20], id="truncated-signature"),
        pytest.param(lambda d: d[:1] + d[33:], id="signature-removed"),
        pytest.param(lambda d: d + b".", id="byte-appended"),
    ],
)
def test_a_tampered_pickle_is_a_logged_miss(
    pickled: RedisCache, tamper: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pickled.set("k", {"a": Point(1, 2)})
    raw = pickled.client.get(pickled.prefix + "k")
    assert isinstance(raw, bytes)
    pickled.client.set(pickled.prefix + "k", tamper(raw))
    with caplog.at_level(logging.WARNING, logger="flask_fennec_cache"):
        assert pickled.get("k", default="d") == "d"
    assert any("'k'" in r.getMessage() for r in caplog.records), caplog.text
    assert pickled.get_stats()["errors"] >= 1


def test_a_pickle_signed_with_another_secret_is_never_loaded(
    redis_server: RedisServer, pickled: RedisCache, tmp_path: Path, caches: list[RedisCache]
) -> None:
    other = RedisCache(
        redis_server.url, prefix=pickled.prefix, serializer="pickle", secret_key=OTHER_SECRET,
        stats_flush_interval=QUIET,
    )  # fmt: skip
    caches.append(other)
    other.set("k", Point(1, 2))
    assert other.get("k") == Point(1, 2)
    assert pickled.get("k", default="d") == "d"

    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Evil(marker))
    pickled.client.set(pickled.prefix + "evil", signed(payload, OTHER_SECRET))
    pickled.client.set(pickled.prefix + "unsigned", b"p" + payload)
    pickled.client.set(pickled.prefix + "bare", payload)
    for name in ("evil", "unsigned", "bare"):
        assert pickled.get(name, default="d") == "d"
    assert not marker.exists(), "a pickle that was not signed with our secret was loaded"


def test_a_json_cache_never_unpickles(
    redis_server: RedisServer, tmp_path: Path, caches: list[RedisCache]
) -> None:
    """Even an entry correctly signed with the app's own secret is refused by a JSON cache."""
    made = RedisCache(redis_server.url, prefix=new_prefix(), stats_flush_interval=QUIET)
    caches.append(made)
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Evil(marker))
    made.client.set(made.prefix + "signed", signed(payload, SECRET))
    made.client.set(made.prefix + "bare", payload)

    @cache(ttl=60, backend=made, key="signed")
    def loader() -> str:
        return "from the loader"

    assert made.get("signed", default="d") == "d"
    assert made.get("bare", default="d") == "d"
    assert made.get_many(["signed", "bare"]) == {}
    assert loader() == "from the loader"
    assert not marker.exists(), "a JSON cache unpickled an entry"


def test_pickle_needs_a_long_secret() -> None:
    for secret in (None, "", "short"):
        with pytest.raises(ConfigurationError, match="secret"):
            RedisCache("memory://sec", serializer="pickle", secret_key=secret)
    with pytest.raises(ConfigurationError):
        RedisCache("memory://sec", serializer="marshal")


# ==================================================================================
# TLS: a server with certificates generated by openssl
# ==================================================================================


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail on CI where the TLS tests must run (as conftest does for redis-server)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} [CI is set, so this is an error, not a skip]", pytrace=False)
    pytest.skip(reason)


def openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    assert binary is not None
    done = subprocess.run([binary, *args], cwd=cwd, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def make_ca(cwd: Path, name: str) -> None:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=Fennec test {name}",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip


def make_leaf(cwd: Path, name: str, extensions: str) -> None:
    (cwd / f"{name}.ext").write_text(
        extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
    )
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=fennec-{name}",
        cwd=cwd,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=cwd,
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        unavailable("the openssl command is needed to generate certificates")
    cwd = tmp_path_factory.mktemp("tls")
    make_ca(cwd, "ca")
    make_ca(cwd, "other-ca")
    make_leaf(
        cwd, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
    )
    make_leaf(cwd, "client", "extendedKeyUsage=clientAuth")
    return Certs(
        cwd / "ca.crt", cwd / "server.crt", cwd / "server.key",
        cwd / "client.crt", cwd / "client.key", cwd / "other-ca.crt",
    )  # fmt: skip


class TLSRedisServer(RedisServer):
    """A redis-server listening with TLS only (``--port 0 --tls-port P``), requiring a client
    certificate signed by the test CA."""

    def __init__(self, certs: Certs) -> None:
        super().__init__()
        self.certs = certs

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def _launch(self) -> None:
        self.extra_args = [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.certs.server_cert),
            "--tls-key-file", str(self.certs.server_key),
            "--tls-ca-cert-file", str(self.certs.ca),
            "--tls-auth-clients", "yes",
        ]  # fmt: skip
        super()._launch()

    def _new_client(self, **kwargs: Any) -> redis.Redis:
        kwargs.update(
            ssl=True,
            ssl_ca_certs=str(self.certs.ca),
            ssl_certfile=str(self.certs.client_cert),
            ssl_keyfile=str(self.certs.client_key),
        )
        return super()._new_client(**kwargs)


@pytest.fixture(scope="module")
def tls_server(certs: Certs) -> Iterator[TLSRedisServer]:
    server = TLSRedisServer(certs)
    try:
        server.start()
    except RedisServerError as exc:  # e.g. a redis-server built without TLS support
        unavailable(f"redis-server with TLS could not start: {exc}")
    yield server
    server.stop()


def tls_cache(server: TLSRedisServer, caches: list[RedisCache], **options: Any) -> RedisCache:
    options = {
        "tls_ca_certs": str(server.certs.ca),
        "tls_certfile": str(server.certs.client_cert),
        "tls_keyfile": str(server.certs.client_key),
        **options,
    }
    made = RedisCache(
        server.url, prefix=new_prefix(), stats_flush_interval=QUIET, breaker_threshold=1000,
        **options,
    )  # fmt: skip
    caches.append(made)
    return made


@pytest.mark.real
def test_tls_with_the_right_ca_and_client_certificate(
    tls_server: TLSRedisServer, caches: list[RedisCache]
) -> None:
    made = tls_cache(tls_server, caches)
    report = made.health()
    assert report["status"] == "healthy", report
    assert report["url"].startswith("rediss://")
    assert made.ping() is True
    assert made.set("k", {"over": "tls"}) is True
    assert made.get("k") == {"over": "tls"}
    assert tls_server.client().get(made.prefix + "k") is not None
    assert made.get_stats()["errors"] == 0


@pytest.mark.real
@pytest.mark.parametrize(
    ("options", "cause"),
    [
        pytest.param({"tls_ca_certs": "OTHER"}, "certificate verify failed", id="wrong-ca"),
        pytest.param({"tls_certfile": None, "tls_keyfile": None}, "", id="no-client-cert"),
    ],
)
def test_tls_failures_are_unhealthy_with_a_clear_error_and_never_raise(
    tls_server: TLSRedisServer, caches: list[RedisCache], options: dict[str, Any], cause: str
) -> None:
    if options.get("tls_ca_certs") == "OTHER":
        options = {**options, "tls_ca_certs": str(tls_server.certs.other_ca)}
    made = tls_cache(tls_server, caches, **options)
    report = made.health()
    assert report["status"] == "unhealthy", report
    assert report["error"].startswith("ConnectionError"), report
    assert cause.lower() in report["error"].lower(), report
    assert made.ping() is False
    assert made.get("k", default="d") == "d"
    assert made.set("k", 1) is False
    assert made.get_stats()["errors"] >= 2


@pytest.mark.real
def test_plain_redis_url_to_a_tls_port_fails_cleanly(
    tls_server: TLSRedisServer, caches: list[RedisCache]
) -> None:
    made = RedisCache(
        f"redis://127.0.0.1:{tls_server.port}/0", prefix=new_prefix(), socket_timeout=0.5,
        stats_flush_interval=QUIET,
    )  # fmt: skip
    caches.append(made)
    assert made.health()["status"] == "unhealthy"
    assert made.get("k", default="d") == "d"


@pytest.mark.real
def test_tls_from_flask_configuration(tls_server: TLSRedisServer) -> None:
    certs = tls_server.certs
    app = Flask(__name__)
    app.config.update(
        FENNEC_CACHE_URL=tls_server.url,
        FENNEC_CACHE_PREFIX=new_prefix(),
        FENNEC_CACHE_TLS_CA_CERTS=str(certs.ca),
        FENNEC_CACHE_TLS_CERTFILE=str(certs.client_cert),
        FENNEC_CACHE_TLS_KEYFILE=str(certs.client_key),
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
    )
    FennecCache(app)
    response = app.test_client().get("/cache/health")
    assert response.status_code == 200, response.get_json()
    app.extensions["fennec_cache"].close()


def test_tls_files_with_a_plain_url_are_refused(certs: Certs) -> None:
    with pytest.raises(ConfigurationError, match="rediss"):
        RedisCache("redis://127.0.0.1:1/0", tls_ca_certs=str(certs.ca))


# ==================================================================================
# Passwords and ACL users
# ==================================================================================

PASSWORD = "s3cret-Pa55"


@pytest.fixture
def password_server(redis_server_factory: RedisServerFactory) -> RedisServer:
    return redis_server_factory(["--requirepass", PASSWORD])


@pytest.fixture
def acl_server(redis_server_factory: RedisServerFactory) -> RedisServer:
    # Pub/Sub channel rules ("&*") are 6.2+; before, every user may use every channel.
    channels = ["&*"] if redis_server_version() >= (6, 2) else []
    return redis_server_factory(
        [
            "--user", "alice", "on", ">secret", "~*", *channels, "+@all",
            # A user confined to the keys under "app:" (the prefix below).
            "--user", "scoped", "on", ">scoped-pw", "~app:*", "+@all",
        ]
    )  # fmt: skip


def url_of(server: RedisServer, credentials: str) -> str:
    return f"redis://{credentials}@127.0.0.1:{server.port}/0"


def assert_refused(made: RedisCache, secret: str) -> None:
    """Unhealthy with an AuthenticationError; ping False; reads miss; the secret is not shown."""
    report = made.health()
    assert report["status"] == "unhealthy", report
    assert report["error"].startswith("AuthenticationError"), report
    assert made.ping() is False
    assert made.get("k", default="d") == "d"
    assert made.set("k", 1) is False
    assert secret not in repr(report) and secret not in repr(made)


@pytest.mark.parametrize(
    "credentials", [":wrong-password", "", "default:wrong-password"], ids=["wrong", "none", "user"]
)
def test_requirepass_wrong_or_missing_password(
    password_server: RedisServer, caches: list[RedisCache], credentials: str
) -> None:
    url = url_of(password_server, credentials) if credentials else password_server.url
    made = RedisCache(url, prefix=new_prefix(), stats_flush_interval=QUIET)
    caches.append(made)
    assert_refused(made, "wrong-password")


def test_requirepass_right_password(password_server: RedisServer, caches: list[RedisCache]) -> None:
    made = RedisCache(
        url_of(password_server, f":{PASSWORD}"), prefix=new_prefix(), stats_flush_interval=QUIET
    )
    caches.append(made)
    report = made.health()
    assert report["status"] == "healthy", report
    assert PASSWORD not in repr(report) and PASSWORD not in repr(made)
    assert made.set("k", 1) is True and made.get("k") == 1


@pytest.mark.parametrize(
    "credentials", ["alice:wrong", "bob:secret", "alice:"], ids=["wrong", "unknown-user", "empty"]
)
def test_acl_user_wrong_credentials(
    acl_server: RedisServer, caches: list[RedisCache], credentials: str
) -> None:
    made = RedisCache(
        url_of(acl_server, credentials), prefix=new_prefix(), stats_flush_interval=QUIET
    )
    caches.append(made)
    assert_refused(made, "secret")


def test_acl_user_right_credentials(acl_server: RedisServer, caches: list[RedisCache]) -> None:
    made = RedisCache(
        url_of(acl_server, "alice:secret"), prefix=new_prefix(), stats_flush_interval=QUIET
    )
    caches.append(made)
    assert made.health()["status"] == "healthy"
    assert made.set("k", [1, 2]) is True and made.get("k") == [1, 2]
    assert made.client.acl_whoami() == "alice"


def test_a_user_confined_to_the_prefix_can_do_everything_the_cache_does(
    acl_server: RedisServer, caches: list[RedisCache]
) -> None:
    """An ACL user limited to ``~app:*``: no operation of the library touches a key outside
    its prefix (Redis would answer NOPERM, counted as an error)."""
    made = RedisCache(
        url_of(acl_server, "scoped:scoped-pw"), prefix="app:", stats_flush_interval=QUIET
    )
    caches.append(made)
    assert made.health()["status"] == "healthy"
    assert made.set("a", 1) is True and made.get("a") == 1
    assert made.set_many({"b": 2, "c": 3}) is True
    assert made.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    assert made.set("tagged", "t", tags=("users",)) is True
    assert made.get("tagged") == "t"
    assert made.invalidate_tags("users") is True
    assert made.get("tagged") is None
    assert made.set("soft", "s", ttl=60, stale_ttl=60) is True

    @cache(ttl=60, backend=made, stale_ttl=30, tags=("users",))
    def load(n: int) -> int:
        return n + 1

    assert [load(1), load(1)] == [2, 2]
    assert sorted(made.keys()) == sorted(made.keys("*"))
    assert made.delete("a") == 1
    assert made.clear() >= 3
    stats = made.get_stats()
    assert stats["errors"] == 0, stats
    assert stats["shared"] is True
    outside = RedisCache(
        url_of(acl_server, "scoped:scoped-pw"), prefix="other:", stats_flush_interval=QUIET
    )
    caches.append(outside)
    assert outside.set("x", 1) is False  # the ACL is enforced: NOPERM


# ==================================================================================
# The admin token
# ==================================================================================

TOKEN = "tok-0123456789abcdef-admin"


@pytest.fixture
def admin_app(memory_url: str) -> Flask:
    app = Flask(__name__)
    app.config.update(
        FENNEC_CACHE_URL=memory_url,
        FENNEC_CACHE_ADMIN_URL_PREFIX="/cache",
        FENNEC_CACHE_ADMIN_TOKEN=TOKEN,
    )
    FennecCache(app)
    return app


def test_admin_token_is_compared_in_constant_time(
    admin_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = admin_app.test_client()
    wrong = client.post("/cache/clear", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert seen == [(b"nope", TOKEN.encode())], "not compared with hmac.compare_digest"
    right = client.post("/cache/clear", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200, right.get_json()
    assert len(seen) == 2


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic " + TOKEN,
        "Bearer " + TOKEN[:-1],
        "Bearer " + TOKEN + "x",
        "bearer" + TOKEN,
        "Bearer \u00e9",
        "Bearer " + "A" * 5000,
    ],
)
def test_admin_refuses_wrong_tokens_with_401(admin_app: Flask, header: str) -> None:
    client = admin_app.test_client()
    headers = {"Authorization": header} if header else {}
    response = client.post("/cache/clear", headers=headers)
    assert response.status_code == 401, response.data
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in response.get_json()


# ==================================================================================
# clear(pattern) reaches only keys under the prefix (real Redis glob matching)
# ==================================================================================

OUTSIDE_KEYS = [
    "other:k", "sec:k", "sec-k", "se", "x", "\\", "*", "[", "sec[:k", "SEC[1]:k", "sec[1]",
    "sec[1]:", "sec[1]:__fennec__:stats", "sec[2]:k", "sec1:k",
]  # fmt: skip
GLOB_PREFIX = "sec[1]:*?\\"
PATTERNS = st.text(
    alphabet=st.sampled_from(list("*?[]^-\\!:ksec1{}ab") + ["\u00e9", "\x7f"]),
    min_size=1, max_size=12,
)  # fmt: skip


@pytest.mark.real
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pattern=PATTERNS)
def test_clear_never_reaches_outside_the_prefix(redis_server: RedisServer, pattern: str) -> None:
    control = redis_server.client()
    for key in OUTSIDE_KEYS:
        control.set(key, b"outside")
    made = RedisCache(redis_server.url, prefix=GLOB_PREFIX, stats_flush_interval=QUIET)
    try:
        made.set("k", 1)
        made.set("sub:k", 2)
        made.get_stats()  # creates the library's own key under the prefix
        made.clear(pattern)
        made.keys(pattern)
        for key in OUTSIDE_KEYS:
            assert control.get(key) == b"outside", (pattern, key)
        assert control.exists(GLOB_PREFIX + "__fennec__:stats"), pattern
    finally:
        made.close()
