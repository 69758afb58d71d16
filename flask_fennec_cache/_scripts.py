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

# A group of keys (one cached view's entries for one set of view arguments) shares a hash tag with
# its index, a set of the group's keys, so the scripts below touch one cluster slot. The index
# must outlive every key it lists: _GROW_INDEX makes the set at KEYS[2] live at least ARGV[2] ms
# ('' = for ever), and drops members that no longer exist once it holds over 1,000 of them.
_GROW_INDEX = """
local function grow_index(index, existed, ms, added)
  if ms == '' then
    redis.call('PERSIST', index)
  else
    local left = redis.call('PTTL', index)
    if (left == -1 and not existed) or (left >= 0 and left < tonumber(ms)) then
      redis.call('PEXPIRE', index, ms)
    end
  end
  if added > 0 and redis.call('SCARD', index) > 1000 then
    for _, name in ipairs(redis.call('SMEMBERS', index)) do
      if redis.call('EXISTS', name) == 0 then redis.call('SREM', index, name) end
    end
  end
end
"""

# ACQUIRE_LEASE for a key of a group: KEYS[2] is the group's index, ARGV[5] how long (ms) the
# entry to come may live. The leased key joins the index, so dropping the group cancels the load.
ACQUIRE_GROUP_LEASE = (
    _GROW_INDEX
    + """
local current = redis.call('GET', KEYS[1])
if current then
  if ARGV[1] == 'prefix' then
    if string.sub(current, 1, #ARGV[2]) ~= ARGV[2] then return 0 end
  elseif ARGV[1] ~= 'exact' or current ~= ARGV[2] then
    return 0
  end
end
local existed = redis.call('EXISTS', KEYS[2]) == 1
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
grow_index(KEYS[2], existed, ARGV[5], redis.call('SADD', KEYS[2], KEYS[1]))
return 1
"""
)

# Store entries of a group if KEYS[1] (the key being loaded) still starts with ARGV[1] (its
# loader's lease, or the version being refreshed): nothing wrote or dropped it since the load
# began. KEYS[2] is the group's index; KEYS[3..] the keys to write, each to ARGV[i] ('' deletes
# it); ARGV[2] their expiry in ms ('' for none). Every key written joins the index.
STORE_IN_GROUP = (
    _GROW_INDEX
    + """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
local existed = redis.call('EXISTS', KEYS[2]) == 1
local added = 0
for i = 3, #KEYS do
  if ARGV[i] == '' then
    redis.call('DEL', KEYS[i])
  else
    if ARGV[2] == '' then
      redis.call('SET', KEYS[i], ARGV[i])
    else
      redis.call('SET', KEYS[i], ARGV[i], 'PX', ARGV[2])
    end
    added = added + redis.call('SADD', KEYS[2], KEYS[i])
  end
end
grow_index(KEYS[2], existed, ARGV[2], added)
return 1
"""
)

# Remove every key the group index KEYS[1] lists, and the index; returns the names removed that
# existed. (The names are not in KEYS: they share the index's hash tag, hence its slot.)
DROP_GROUP = """
local names = redis.call('SMEMBERS', KEYS[1])
local removed = {}
for _, name in ipairs(names) do
  if redis.call('UNLINK', name) == 1 then removed[#removed + 1] = name end
end
redis.call('DEL', KEYS[1])
return removed
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
        self._group_lease = client.register_script(ACQUIRE_GROUP_LEASE)
        self._group_store = client.register_script(STORE_IN_GROUP)
        self._group_drop = client.register_script(DROP_GROUP)

    def cas(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._cas(keys=keys, args=args, client=client)

    def lease(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._lease(keys=keys, args=args, client=client)

    def tags(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._tags(keys=keys, args=args, client=client)

    def extend(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._extend(keys=keys, args=args, client=client)

    def group_lease(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._group_lease(keys=keys, args=args, client=client)

    def group_store(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._group_store(keys=keys, args=args, client=client)

    def group_drop(self, keys: Sequence[str], args: Sequence[Any], client: redis.Redis) -> Any:
        return self._group_drop(keys=keys, args=args, client=client)
