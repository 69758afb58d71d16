"""Parse and check cache URLs before anything connects: every scheme, address and option.

``redis://[[user]:password@]host[:port][/db][?options]``, ``rediss://…`` (TLS),
``unix://[[user]:password@]/path/to/redis.sock[?db=N&options]``, ``memory://[name]`` (no
options), and the topologies ``redis+cluster://`` / ``redis+sentinel://`` (see
:mod:`flask_fennec_cache._connect`).

A query option must be one that redis-py's connection class for the scheme takes (found by
introspection, so the check follows the installed redis-py) and that a URL can carry
(:data:`URL_OPTIONS`), with a value of the right type; query options win over the
``FENNEC_CACHE_*`` settings, as in redis-py. Host names are checked as the resolver will encode
them, certificate files named by the URL must exist. Every problem is a
:class:`~flask_fennec_cache.ConfigurationError` naming its source (the config key, say) and the
problem, never showing a password. No I/O but looking for those files.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

import redis
from redis.sentinel import (
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from .errors import ConfigurationError

__all__ = [
    "CLUSTER_SCHEMES",
    "SCHEMES",
    "SENTINEL_SCHEMES",
    "URL_OPTIONS",
    "TopologyURL",
    "check_url",
    "known_options",
    "memory_name",
    "parse_server_url",
    "parse_topology_url",
    "redact_url",
    "scheme_of",
]

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES: Final = ("redis+sentinel", "rediss+sentinel")
SCHEMES: Final = ("redis", "rediss", "unix", "memory", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)

DEFAULT_NODE_PORT: Final = 6379
DEFAULT_SENTINEL_PORT: Final = 26379
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

# -- query options -----------------------------------------------------------------------------

Parser = Callable[[str], Any]


def _seconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError("expected a number of seconds > 0")
    return number


def _whole(minimum: int) -> Parser:
    def parse(text: str) -> int:
        stripped = text.strip()
        if not (stripped.isascii() and stripped.isdigit()) or int(stripped) < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return int(stripped)

    return parse


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("expected true or false (or 1/0, yes/no, on/off)")


def _text(text: str) -> str:
    return text


def _client_name(text: str) -> str:
    if not all(char.isprintable() and not char.isspace() for char in text):
        raise ValueError("Redis refuses client names with spaces or control characters")
    return text


def _protocol(text: str) -> int:
    if text.strip() not in ("2", "3"):
        raise ValueError("expected 2 (RESP2) or 3 (RESP3)")
    return int(text)


def _file(text: str) -> str:
    if not os.path.isfile(text):
        raise ValueError("no such file")
    return text


def _directory(text: str) -> str:
    if not os.path.isdir(text):
        raise ValueError("no such directory")
    return text


def _cert_reqs(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in ("none", "optional", "required"):
        raise ValueError("expected none, optional or required")
    return lowered


def _verify_flags(text: str) -> list[ssl.VerifyFlags]:
    names = [name.strip() for name in text.strip("[]").split(",") if name.strip()]
    members = ssl.VerifyFlags.__members__
    unknown = [name for name in names if name not in members]
    if unknown or not names:
        raise ValueError(f"expected ssl.VerifyFlags names, such as {', '.join(members)}")
    return [members[name] for name in names]


def _tls_version(text: str) -> ssl.TLSVersion:
    members = ssl.TLSVersion.__members__
    if text in members:
        return members[text]
    try:
        return ssl.TLSVersion(int(text))
    except ValueError:
        pass
    raise ValueError(f"expected one of {', '.join(members)} (or its number)")


def _ciphers(text: str) -> str:
    try:  # a bare context loads no certificates: no I/O
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_ciphers(text)
    except ssl.SSLError:
        raise ValueError("OpenSSL knows no cipher in this list") from None
    return text


#: The query options a URL may carry, each with the parser of its value. An option is taken
#: only for the schemes whose redis-py connection class accepts it (``ssl_*``: TLS schemes).
URL_OPTIONS: Final[Mapping[str, Parser]] = {
    "db": _whole(0),
    "username": _text,
    "password": _text,
    "socket_timeout": _seconds,
    "socket_connect_timeout": _seconds,
    "socket_keepalive": _boolean,
    "socket_read_size": _whole(1),
    "retry_on_timeout": _boolean,
    "health_check_interval": _whole(0),
    "max_connections": _whole(1),
    "client_name": _client_name,
    "protocol": _protocol,
    "ssl_keyfile": _file,
    "ssl_certfile": _file,
    "ssl_ca_certs": _file,
    "ssl_ca_path": _directory,
    "ssl_ca_data": _text,
    "ssl_password": _text,
    "ssl_cert_reqs": _cert_reqs,
    "ssl_check_hostname": _boolean,
    "ssl_include_verify_flags": _verify_flags,
    "ssl_exclude_verify_flags": _verify_flags,
    "ssl_min_version": _tls_version,
    "ssl_ciphers": _ciphers,
    "ssl_validate_ocsp": _boolean,
    "ssl_validate_ocsp_stapled": _boolean,
}

#: Options of the topologies themselves (not of their connections).
_TOPOLOGY_OPTIONS: Final[Mapping[str, Mapping[str, Parser]]] = {
    "server": {},
    "cluster": {"read_from_replicas": _boolean},
    "sentinel": {
        "read_from_replicas": _boolean,
        "sentinel_username": _text,
        "sentinel_password": _text,
    },
}

#: redis-py options this library sets itself: another value would break how it reads replies.
_MANAGED: Final = {
    "decode_responses": "the cache reads raw bytes",
    "encoding": "the cache reads raw bytes",
    "encoding_errors": "the cache reads raw bytes",
    "legacy_responses": "the cache expects redis-py's default reply types",
}
_ADDRESS_PARTS: Final = frozenset({"host", "port", "path", "unix_socket_path"})


def _kind(scheme: str) -> str:
    if scheme in CLUSTER_SCHEMES:
        return "cluster"
    if scheme in SENTINEL_SCHEMES:
        return "sentinel"
    return "server"


def _init_parameters(*classes: type) -> frozenset[str]:
    """The keyword arguments the ``__init__`` of *classes* (and their bases) take."""
    names: set[str] = set()
    for cls in classes:
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            names.update(
                name
                for name, parameter in inspect.signature(init).parameters.items()
                if name != "self"
                and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
            )
    return frozenset(names)


@functools.cache
def _redis_parameters(scheme: str) -> frozenset[str]:
    """What redis-py passes on to the connections of *scheme* (the rest it refuses or drops)."""
    if scheme in CLUSTER_SCHEMES:
        from redis.cluster import KWARGS_DISABLED_KEYS, REDIS_ALLOWED_KEYS

        return frozenset(REDIS_ALLOWED_KEYS) - frozenset(KWARGS_DISABLED_KEYS)
    classes: dict[str, tuple[type, ...]] = {
        "redis": (redis.Connection, redis.ConnectionPool),
        "rediss": (redis.SSLConnection, redis.ConnectionPool),
        "unix": (redis.UnixDomainSocketConnection, redis.ConnectionPool),
        "redis+sentinel": (SentinelManagedConnection, SentinelConnectionPool),
        "rediss+sentinel": (SentinelManagedSSLConnection, SentinelConnectionPool),
    }
    return _init_parameters(*classes[scheme])


@functools.cache
def known_options(scheme: str) -> tuple[str, ...]:
    """The query options a *scheme* URL may carry, sorted (none for ``memory``)."""
    if scheme == "memory":
        return ()
    kind = _kind(scheme)
    tls = scheme.startswith("rediss")
    names = set(_TOPOLOGY_OPTIONS[kind]) | {
        name
        for name in URL_OPTIONS
        if name in _redis_parameters(scheme)
        and (tls or not name.startswith("ssl"))
        and not (name == "db" and kind != "server")
    }
    return tuple(sorted(names))


def _option_parser(name: str, scheme: str) -> Parser:
    """The parser of option *name* in a *scheme* URL; ValueError saying why it is refused."""
    kind = _kind(scheme)
    if name in known_options(scheme):
        return _TOPOLOGY_OPTIONS[kind].get(name) or URL_OPTIONS[name]
    if name in _ADDRESS_PARTS:
        raise ValueError(f"option {name!r}: give the {name} in the URL's address, not as an option")
    if name.startswith("ssl") and not scheme.startswith("rediss"):
        tls_scheme = "rediss" + scheme[len("redis") :] if scheme != "unix" else "rediss"
        raise ValueError(f"option {name!r} needs TLS: use {tls_scheme}://")
    if name == "db" and kind == "cluster":
        raise ValueError("option 'db': a cluster has only database 0")
    if name == "db" and kind == "sentinel":
        raise ValueError("option 'db': give the database in the path: /service_name/db")
    if name in _MANAGED:
        raise ValueError(f"option {name!r} is set by flask-fennec-cache: {_MANAGED[name]}")
    if name in _TOPOLOGY_OPTIONS["sentinel"]:
        raise ValueError(f"option {name!r} is only for redis+sentinel:// URLs")
    if name in _redis_parameters(scheme):
        raise ValueError(
            f"option {name!r} cannot be given in a URL (redis-py wants a Python object there)"
        )
    known = known_options(scheme)
    if name in URL_OPTIONS:
        raise ValueError(
            f"option {name!r} does not apply to {scheme}:// (redis-py's connections for it do "
            f"not take it); known: {', '.join(known)}"
        )
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(f"unknown option {name!r} for {scheme}://{hint}; known: {', '.join(known)}")


def _query_options(
    parts: SplitResult, scheme: str, fail: Callable[[str], NoReturn]
) -> dict[str, Any]:
    """The parsed query options of a URL of *scheme*."""
    if not parts.query:
        return {}
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        fail("bad query string: every option is name=value, separated by '&'")
    options: dict[str, Any] = {}
    for name, text in pairs:
        try:
            parse = _option_parser(name, scheme)
        except ValueError as exc:
            fail(str(exc))
        if name in options:
            fail(f"option {name!r} is given twice")
        if text == "":
            fail(f"option {name!r} has no value")
        try:
            options[name] = parse(text)
        except ValueError as exc:
            shown = "" if "password" in name else f"={text!r}"
            fail(f"option {name}{shown}: {exc}")
    return options


# -- URLs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopologyURL:
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL."""

    kind: str  # "cluster" or "sentinel"
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # seed nodes, or sentinels
    username: str | None = None
    password: str | None = None
    service_name: str | None = None  # sentinel only
    db: int = 0
    read_from_replicas: bool = False
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    #: Connection options from the query string (for the data nodes), as (name, value) pairs.
    options: tuple[tuple[str, Any], ...] = ()


def _failer(source: str, url: str) -> Callable[[str], NoReturn]:
    shown = redact_url(url)
    if not shown.isprintable():
        shown = repr(shown)

    def fail(problem: str) -> NoReturn:
        raise ConfigurationError(f"{source}: {problem} (URL: {shown})")

    return fail


def scheme_of(url: object, source: str) -> str:
    """The scheme of *url* if it is one we take, written ``scheme://``; ConfigurationError
    otherwise."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{source}: expected a URL string, got {type(url).__name__}")
    fail = _failer(source, url)
    scheme, sep, _ = url.partition("://")
    if not sep:
        named = url.partition(":")[0]
        if named in SCHEMES:
            fail(f"expected {named}://... (two slashes after '{named}:')")
        scheme = named
    if scheme not in SCHEMES:
        fail(f"unsupported scheme {scheme!r}; use one of " + ", ".join(f"{s}://" for s in SCHEMES))
    if any(not char.isprintable() or char.isspace() for char in url):
        fail("the URL contains a space or a control character (a stray newline?)")
    return scheme


def _split(url: str, fail: Callable[[str], NoReturn]) -> SplitResult:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        fail(str(exc))
    if "@" not in parts.netloc and "@" in parts.path + parts.query + parts.fragment:
        fail(
            "an '@' comes after the host: percent-encode '/', '?', '#' and '@' in the user "
            "name and password (%2F, %3F, %23, %40)"
        )
    if parts.fragment or url.endswith("#"):
        fail("a '#fragment' is not allowed")
    return parts


def _credentials(userinfo: str) -> dict[str, str]:
    user, _, secret = userinfo.partition(":")
    found: dict[str, str] = {}
    if user:
        found["username"] = unquote(user)
    if secret:
        found["password"] = unquote(secret)
    return found


def check_url(url: str, source: str = "cache URL") -> str:
    """*url* if we can use it; otherwise a ConfigurationError naming *source* (the config key,
    say) and the problem, without the password. Checks the whole URL, without I/O beyond
    looking for the certificate files it names."""
    scheme = scheme_of(url, source)
    if scheme == "memory":
        memory_name(url, source)
    elif scheme in CLUSTER_SCHEMES or scheme in SENTINEL_SCHEMES:
        parse_topology_url(url, source)
    else:
        parse_server_url(url, source)
    return url


def parse_server_url(url: str, source: str = "cache URL") -> dict[str, Any]:
    """The redis-py connection options of a ``redis://``, ``rediss://`` or ``unix://`` URL
    (``host``, ``port``, ``db``, ``path``, credentials and query options), checked."""
    scheme = scheme_of(url, source)
    fail = _failer(source, url)
    if _kind(scheme) != "server" or scheme == "memory":
        fail(f"not a redis://, rediss:// or unix:// URL: {scheme}://")
    parts = _split(url, fail)
    userinfo, at, address = parts.netloc.rpartition("@")
    options: dict[str, Any] = _credentials(userinfo) if at else {}
    if scheme == "unix":
        if address:
            fail(
                f"a unix:// URL names a socket path, not a host ({address!r}): "
                "unix:///path/to/redis.sock"
            )
        path = unquote(parts.path)
        if not path.strip("/"):
            fail("the socket path is missing: unix:///path/to/redis.sock")
        options["path"] = path
    else:
        if not address:
            fail(f"a host is missing: {scheme}://host[:port][/db]")
        options["host"], options["port"] = _host_port(address, DEFAULT_NODE_PORT, fail)
        db = _path_db(parts.path, fail)
        if db is not None:
            options["db"] = db
    for name, value in _query_options(parts, scheme, fail).items():
        if name in options:
            where = "path" if name == "db" else "user-info part"
            fail(f"{name} is given twice: in the URL's {where} and as an option")
        options[name] = value
    return options


def _path_db(path: str, fail: Callable[[str], NoReturn]) -> int | None:
    """The database number of a ``redis://`` URL's path, None for no path."""
    if path in ("", "/"):
        return None
    first, slash, rest = path[1:].partition("/")
    text = unquote(first)
    if not (text.isascii() and text.isdigit()):
        fail(f"database {text!r} is not a number: the path is the database, e.g. /0")
    if slash:
        fail(f"unexpected {'/' + rest!r} after the database number")
    return int(text)


def parse_topology_url(url: str, source: str = "cache URL") -> TopologyURL:
    """Parse a cluster or sentinel URL; ConfigurationError (without the password) if invalid."""
    scheme = scheme_of(url, source)
    fail = _failer(source, url)
    kind = _kind(scheme)
    if kind == "server":
        fail("not a cluster or sentinel URL")
    parts = _split(url, fail)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    credentials = _credentials(userinfo) if at else {}
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_NODE_PORT
    nodes = tuple(_host_port(item, default_port, fail) for item in hostlist.split(","))

    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    while segments and segments[-1] == "":
        segments.pop()
    service_name = None
    db_text = "0"
    if kind == "cluster":
        if len(segments) > 1 or (segments and segments[0] != "0"):
            fail("a cluster has only database 0; the path must be empty or /0")
    else:
        if not segments or not segments[0]:
            fail("name the Sentinel service, e.g. redis+sentinel://host:26379/mymaster/0")
        if len(segments) > 2:
            fail("expected /service_name[/db]")
        service_name = segments[0]
        db_text = segments[1] if len(segments) == 2 else "0"
    if not (db_text.isascii() and db_text.isdigit()):
        fail(f"database {db_text!r} is not a number")

    options = _query_options(parts, scheme, fail)
    for name in ("username", "password"):
        if name in options and name in credentials:
            fail(f"{name} is given twice: in the URL's user-info part and as an option")
        credentials.setdefault(name, options.pop(name, None))
    return TopologyURL(
        kind=kind,
        tls=scheme.startswith("rediss"),
        nodes=nodes,
        username=credentials.get("username") or None,
        password=credentials.get("password") or None,
        service_name=service_name,
        db=int(db_text),
        read_from_replicas=bool(options.pop("read_from_replicas", False)),
        sentinel_username=options.pop("sentinel_username", None) or None,
        sentinel_password=options.pop("sentinel_password", None) or None,
        options=tuple(sorted(options.items())),
    )


def redact_url(url: str) -> str:
    """*url* without its credentials: the user-info part and any ``*password*`` option."""
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rpartition("@")[2]
    address, qmark, query = rest.partition("?")
    if "@" in address:
        address = "***@" + address.rpartition("@")[2]
    elif "@" in query:  # a password with an unencoded '?': hide all up to its '@'
        return redact_url(f"{scheme}://***@{query.rpartition('@')[2]}")
    if qmark:
        query = "&".join(
            f"{name}=***" if "password" in name.lower() else f"{name}{eq}{value}"
            for name, eq, value in (item.partition("=") for item in query.split("&"))
        )
    return f"{scheme}://{address}{qmark}{query}"


def _host_port(item: str, default_port: int, fail: Callable[[str], NoReturn]) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` as ``(host, port)``."""
    item = item.strip()
    if item.startswith("["):
        host, bracket, after = item[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            fail(f"bad IPv6 address {item!r}")
        port_text = after[1:]
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
    host = unquote(host)
    if not host:
        fail(f"a host is missing in {item!r}")
    _check_host(host, fail)
    if not port_text and not item.endswith(":"):
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()):
        fail(f"port {port_text!r} is not a number")
    if not 0 < int(port_text) < 65536:
        fail(f"port {port_text} is out of range (1-65535)")
    return host, int(port_text)


def _check_host(host: str, fail: Callable[[str], NoReturn]) -> None:
    """Refuse a host name the resolver could never look up (it would raise UnicodeError, not
    an OSError, on every connection)."""
    if any(not char.isprintable() or char.isspace() for char in host):
        fail(f"host {host!r} contains a space or a control character")
    if ":" in host:  # an IPv6 address
        return
    try:
        host.encode("idna")
    except UnicodeError as exc:
        fail(f"host {host!r} is not a valid host name ({exc})")


def memory_name(url: str, source: str) -> str:
    """The server name of a ``memory://[name]`` URL."""
    name = url[len("memory://") :]
    if any(char in name for char in "?#@") or any(char.isspace() for char in name):
        _failer(source, url)(
            "memory:// takes no options, credentials or fragment: memory:// or memory://name"
        )
    return name.strip("/")
