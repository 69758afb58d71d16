"""Every FENNEC_CACHE_* key: its default parses, and bad values name the key."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from flask_fennec_cache import ConfigurationError, RedisCache
from flask_fennec_cache.config import (
    CONFIG_KEYS,
    Settings,
    apply_defaults,
    read_settings,
    store_effective,
)

BY_NAME = {key.name: key for key in CONFIG_KEYS}

EXPECTED_DEFAULTS: dict[str, Any] = {
    "FENNEC_CACHE_URL": "redis://localhost:6379/0",
    "FENNEC_CACHE_PREFIX": "fennec:",
    "FENNEC_CACHE_DEFAULT_TTL": 300,
    "FENNEC_CACHE_SOCKET_TIMEOUT": 0.25,
    "FENNEC_CACHE_CONNECT_TIMEOUT": 0.25,
    "FENNEC_CACHE_POOL_SIZE": 50,
    "FENNEC_CACHE_HEALTH_CHECK_INTERVAL": 15,
    "FENNEC_CACHE_STARTUP_CHECK": True,
    "FENNEC_CACHE_FAIL_OPEN": True,
    "FENNEC_CACHE_BREAKER_THRESHOLD": 3,
    "FENNEC_CACHE_BREAKER_COOLDOWN": 1.0,
    "FENNEC_CACHE_MAX_VALUE_BYTES": 1_048_576,
    "FENNEC_CACHE_STATS_FLUSH_INTERVAL": 1.0,
    "FENNEC_CACHE_ADMIN_URL_PREFIX": None,
    "FENNEC_CACHE_ADMIN_TOKEN": None,
    "FENNEC_CACHE_ADMIN_OPEN": False,
}


def test_the_contract_keys_exist() -> None:
    for name in (
        "FENNEC_CACHE_URL", "FENNEC_CACHE_PREFIX", "FENNEC_CACHE_DEFAULT_TTL",
        "FENNEC_CACHE_ADMIN_URL_PREFIX", "FENNEC_CACHE_ADMIN_TOKEN", "FENNEC_CACHE_ADMIN_OPEN",
        "FENNEC_CACHE_FAIL_OPEN", "FENNEC_CACHE_MAX_VALUE_BYTES",
    ):  # fmt: skip
        assert name in BY_NAME, name
    assert all(key.name.startswith("FENNEC_CACHE_") for key in CONFIG_KEYS)
    assert len(BY_NAME) == len(CONFIG_KEYS)
    assert all(key.description.strip() for key in CONFIG_KEYS)


@pytest.mark.parametrize("key", CONFIG_KEYS, ids=[key.name for key in CONFIG_KEYS])
def test_every_default_parses(key: Any) -> None:
    parsed = key.parse(key.default)
    settings = read_settings({})
    assert getattr(settings, key.field) == parsed


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_DEFAULTS.items()))
def test_defaults_are_the_documented_ones(name: str, expected: Any) -> None:
    key = BY_NAME[name]
    assert getattr(read_settings({}), key.field) == expected


def test_every_field_is_read() -> None:
    fields = {key.field for key in CONFIG_KEYS}
    assert fields == set(inspect.signature(Settings).parameters)


def test_backend_options_are_accepted_by_redis_cache() -> None:
    options = read_settings({"FENNEC_CACHE_URL": "memory://config-test"}).backend_options()
    assert not {"admin_url_prefix", "admin_token", "admin_open"} & set(options)
    made = RedisCache(**options)
    try:
        assert made.prefix == "fennec:"
        assert made.default_ttl == 300
        assert made.fail_open is True
        assert made.max_value_bytes == 1_048_576
    finally:
        made.close()


def test_backend_defaults_agree_with_the_config_table() -> None:
    """RedisCache used without Flask behaves like an app with no FENNEC_CACHE_* set."""
    parameters = inspect.signature(RedisCache).parameters
    for name, value in read_settings({}).backend_options().items():
        if name in ("url", "default_ttl"):
            continue
        assert parameters[name].default == value, name


@pytest.mark.parametrize(
    ("name", "raw", "field", "parsed"),
    [
        ("FENNEC_CACHE_FAIL_OPEN", "false", "fail_open", False),
        ("FENNEC_CACHE_FAIL_OPEN", "Yes", "fail_open", True),
        ("FENNEC_CACHE_FAIL_OPEN", 0, "fail_open", False),
        ("FENNEC_CACHE_ADMIN_OPEN", "on", "admin_open", True),
        ("FENNEC_CACHE_POOL_SIZE", "10", "max_connections", 10),
        ("FENNEC_CACHE_POOL_SIZE", 10.0, "max_connections", 10),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", "0.5", "socket_timeout", 0.5),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", 2, "socket_timeout", 2.0),
        ("FENNEC_CACHE_DEFAULT_TTL", 0, "default_ttl", None),
        ("FENNEC_CACHE_DEFAULT_TTL", None, "default_ttl", None),
        ("FENNEC_CACHE_DEFAULT_TTL", "60", "default_ttl", 60),
        ("FENNEC_CACHE_DEFAULT_TTL", "0", "default_ttl", None),
        ("FENNEC_CACHE_DEFAULT_TTL", "", "default_ttl", None),
        ("FENNEC_CACHE_STARTUP_CHECK", "no", "startup_check", False),
        ("FENNEC_CACHE_TTL_JITTER", "0.2", "ttl_jitter", 0.2),
        ("FENNEC_CACHE_SERIALIZER", "msgpack", "serializer", "msgpack"),
        ("FENNEC_CACHE_COMPRESSION", "none", "compression", "none"),
        ("FENNEC_CACHE_ADMIN_URL_PREFIX", "", "admin_url_prefix", None),
        ("FENNEC_CACHE_ADMIN_URL_PREFIX", "/cache", "admin_url_prefix", "/cache"),
        ("FENNEC_CACHE_ADMIN_TOKEN", "", "admin_token", None),
        ("FENNEC_CACHE_ADMIN_TOKEN", "s3cret-admin-token", "admin_token", "s3cret-admin-token"),
        ("FENNEC_CACHE_PREFIX", "app:", "prefix", "app:"),
    ],
)
def test_good_values_parse(name: str, raw: Any, field: str, parsed: Any) -> None:
    assert getattr(read_settings({name: raw}), field) == parsed


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("FENNEC_CACHE_SOCKET_TIMEOUT", "abc"),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", 0),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", -1),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", True),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", None),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", float("nan")),
        ("FENNEC_CACHE_CONNECT_TIMEOUT", "soon"),
        ("FENNEC_CACHE_POOL_SIZE", 0),
        ("FENNEC_CACHE_POOL_SIZE", 1.5),
        ("FENNEC_CACHE_POOL_SIZE", "many"),
        ("FENNEC_CACHE_POOL_SIZE", [5]),
        ("FENNEC_CACHE_HEALTH_CHECK_INTERVAL", -1),
        ("FENNEC_CACHE_FAIL_OPEN", "maybe"),
        ("FENNEC_CACHE_FAIL_OPEN", 2),
        ("FENNEC_CACHE_FAIL_OPEN", None),
        ("FENNEC_CACHE_BREAKER_THRESHOLD", 0),
        ("FENNEC_CACHE_BREAKER_COOLDOWN", "x"),
        ("FENNEC_CACHE_MAX_VALUE_BYTES", 0),
        ("FENNEC_CACHE_MAX_VALUE_BYTES", "1mb"),
        ("FENNEC_CACHE_STATS_FLUSH_INTERVAL", 0),
        ("FENNEC_CACHE_DEFAULT_TTL", -5),
        ("FENNEC_CACHE_DEFAULT_TTL", "forever"),
        ("FENNEC_CACHE_DEFAULT_TTL", 1.5),
        ("FENNEC_CACHE_ADMIN_OPEN", "perhaps"),
        ("FENNEC_CACHE_PREFIX", ""),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", float("inf")),
        ("FENNEC_CACHE_SOCKET_TIMEOUT", "inf"),
        ("FENNEC_CACHE_CONNECT_TIMEOUT", "-inf"),
        ("FENNEC_CACHE_POOL_SIZE", float("inf")),
        ("FENNEC_CACHE_POOL_SIZE", "1e400"),
        ("FENNEC_CACHE_TTL_JITTER", "nan"),
        ("FENNEC_CACHE_DEFAULT_TTL", float("inf")),
        ("FENNEC_CACHE_STARTUP_CHECK", "maybe"),
        ("FENNEC_CACHE_SERIALIZER", "yaml"),
        ("FENNEC_CACHE_COMPRESSION", "lz4"),
        ("FENNEC_CACHE_TLS_CA_CERTS", "/no/such/ca.pem"),
        ("FENNEC_CACHE_TLS_KEYFILE", "/no/such/key.pem"),
        ("FENNEC_CACHE_URL", "redis://cache:abc/0"),
        ("FENNEC_CACHE_URL", "redis://cache/0?socket_timout=1"),
        ("FENNEC_CACHE_URL", None),
    ],
)
def test_bad_values_raise_naming_the_key(name: str, raw: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        read_settings({name: raw})
    assert name in str(caught.value)


def test_apply_defaults_fills_only_missing_keys() -> None:
    config: dict[str, Any] = {"FENNEC_CACHE_PREFIX": "mine:", "OTHER": 1}
    apply_defaults(config)
    assert config["FENNEC_CACHE_PREFIX"] == "mine:"
    assert config["OTHER"] == 1
    for key in CONFIG_KEYS:
        assert key.name in config
    assert config["FENNEC_CACHE_DEFAULT_TTL"] == 300


def test_url_errors_name_the_key_once() -> None:
    with pytest.raises(ConfigurationError) as caught:
        read_settings({"FENNEC_CACHE_URL": "redis://cache:abc/0"})
    message = str(caught.value)
    assert message.startswith("FENNEC_CACHE_URL: port 'abc' is not a number")
    assert message.count("FENNEC_CACHE_URL") == 1


def test_tls_files_need_a_tls_url(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigurationError) as caught:
        read_settings({"FENNEC_CACHE_URL": "redis://cache/0", "FENNEC_CACHE_TLS_CA_CERTS": str(ca)})
    assert str(caught.value).startswith("FENNEC_CACHE_TLS_CA_CERTS: set, but FENNEC_CACHE_URL")
    settings = read_settings(
        {"FENNEC_CACHE_URL": "rediss://cache/0", "FENNEC_CACHE_TLS_CA_CERTS": str(ca)}
    )
    assert settings.tls_ca_certs == str(ca)


def test_pickle_without_a_secret_names_both_keys() -> None:
    with pytest.raises(ConfigurationError) as caught:
        read_settings({"FENNEC_CACHE_SERIALIZER": "pickle"})
    message = str(caught.value)
    assert message.startswith("FENNEC_CACHE_SERIALIZER: ") and "FENNEC_CACHE_SECRET_KEY" in message


def test_store_effective_writes_the_parsed_values_back() -> None:
    config: dict[str, Any] = {
        "FENNEC_CACHE_ADMIN_OPEN": "yes", "FENNEC_CACHE_FAIL_OPEN": "Off",
        "FENNEC_CACHE_POOL_SIZE": "10", "FENNEC_CACHE_SOCKET_TIMEOUT": "0.5",
        "FENNEC_CACHE_DEFAULT_TTL": "0", "FENNEC_CACHE_ADMIN_TOKEN": "",
    }  # fmt: skip
    settings = read_settings(config)
    store_effective(config, settings)
    assert config["FENNEC_CACHE_ADMIN_OPEN"] is True
    assert config["FENNEC_CACHE_FAIL_OPEN"] is False
    assert config["FENNEC_CACHE_POOL_SIZE"] == 10
    assert config["FENNEC_CACHE_SOCKET_TIMEOUT"] == 0.5
    assert config["FENNEC_CACHE_DEFAULT_TTL"] is None
    assert config["FENNEC_CACHE_ADMIN_TOKEN"] is None
    assert {key.name: config[key.name] for key in CONFIG_KEYS} == {
        key.name: getattr(settings, key.field) for key in CONFIG_KEYS
    }
    assert read_settings(config) == settings  # the stored values read back the same
