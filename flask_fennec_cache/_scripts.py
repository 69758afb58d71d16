"""The Lua scripts that make compare-and-set steps atomic in Redis (each touches one slot)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

__all__ = ["Scripts"]

# KEYS[1] holds a value; ARGV[1] the bytes it must start with; ARGV[2] the new value, or ''
# to delete it; ARGV[3] the expiry in milliseconds, or '' for none.
COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

# Put a lease placeholder ARGV[3] on KEYS[1] for ARGV[4] ms if the key is empty; or, with
# ARGV[1] 'prefix', if it still starts with ARGV[2] (an envelope whose tags were invalidated);
# or, with ARGV[1] 'exact', if it still holds exactly ARGV[2] (an unreadable value).
ACQUIRE_LEASE = """
local current = redis.call('GET', KEYS[1])
if current then
  if ARGV[1] == 'prefix' then
    if string.sub(current, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
  elseif ARGV[1] ~= 'exact' or current ~= ARGV[2] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
"""

# Set KEYS[1] to expire in ARGV[2] ms if it still starts with ARGV[1] (a holder's lease or
# lock); with ARGV[3] 'grow', only if that lengthens its life (a value kept while refreshed).
EXTEND = """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == 'grow' then
  local left = redis.call('PTTL', KEYS[1])
  if left < 0 or left >= tonumber(ARGV[2]) then return 1 end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# The value of each tag key in KEYS, setting a missing one to its fresh version in ARGV.
TAG_VERSIONS = """
local versions = {}
for i, key in ipairs(KEYS) do
  local version = redis.call('GET', key)
  if not version then
    version = ARGV[i]
    redis.call('SET', key, version)
  end
  versions[i] = version
end
return versions
"""


class Scripts:
    """The scripts registered on one client; each call is one EVALSHA round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._cas = client.register_script(COMPARE_AND_SET)
        self._lease = client.register_script(ACQUIRE_LEASE)
        self._tags = client.register_script(TAG_VERSIONS)
        self._extend = client.register_script(EXTEND)

    def cas(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._cas(keys=keys, args=args, client=client)

    def lease(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._lease(keys=keys, args=args, client=client)

    def tags(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._tags(keys=keys, args=args, client=client)

    def extend(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._extend(keys=keys, args=args, client=client)
