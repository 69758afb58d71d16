"""flask-fennec-cache: safe, fast and observable Redis caching for Flask."""

from ._results import CacheResult
from .backend import MISSING, RedisCache
from .decorators import (
    AsyncCachedFunction,
    CacheDecorator,
    CachedFunction,
    CacheLookup,
    cache,
    current_backend,
)
from .errors import (
    CacheUnavailable,
    ConfigurationError,
    FennecCacheError,
    InvalidKeyError,
    KeyBuildError,
    LoaderTimeout,
    LockTimeout,
    NoBackendError,
    SerializationError,
)
from .extension import FennecCache
from .serializers import CachedResponse
from .strategies import CacheAside, WriteThrough
from .unavailable import handle_cache_unavailable

__version__ = "0.1.0"

__all__ = [
    "MISSING",
    "AsyncCachedFunction",
    "CacheDecorator",
    "CacheAside",
    "CacheLookup",
    "CacheResult",
    "CacheUnavailable",
    "CachedFunction",
    "CachedResponse",
    "ConfigurationError",
    "FennecCache",
    "FennecCacheError",
    "InvalidKeyError",
    "KeyBuildError",
    "LoaderTimeout",
    "LockTimeout",
    "NoBackendError",
    "RedisCache",
    "SerializationError",
    "WriteThrough",
    "cache",
    "current_backend",
    "handle_cache_unavailable",
]
