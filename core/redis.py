"""Redis clients: the app's shared client, and connections that pack commands in C.

redis-py's synchronous client packs commands with hiredis when it is installed; its asyncio
client always packs them in Python (redis/redis-py#4176, open as of redis-py 8.1). For the
limiter's batched scripts (hundreds of arguments per call) that packing was about a fifth
of what rate limits cost the gateway per request. `use_hiredis_packing(pool)` swaps the
pool's connection class for a subclass that packs with redis-py's own hiredis serializer.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE


class _HiredisPacking:
    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


class HiredisConnection(_HiredisPacking, Connection):
    pass


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKING_CLASSES: dict[type, type] = {
    Connection: HiredisConnection,
    SSLConnection: HiredisSSLConnection,
    UnixDomainSocketConnection: HiredisUnixConnection,
}


def use_hiredis_packing(pool: ConnectionPool | BlockingConnectionPool) -> None:
    """Make new connections of `pool` pack commands with hiredis (when it is installed)."""
    if HIREDIS_AVAILABLE:
        pool.connection_class = _PACKING_CLASSES.get(pool.connection_class, pool.connection_class)


def redis_client(url: str) -> Redis:
    """The app's general-purpose client (text replies); the limiter keeps its own pool."""
    return Redis.from_url(url, decode_responses=True, health_check_interval=30)
