"""The Redis backend: store.py and its Lua scripts (*.lua, package data)."""

from bridge.store.redis.store import RedisStore

__all__ = ["RedisStore"]
