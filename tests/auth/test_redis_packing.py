"""`core.redis.use_hiredis_packing`: the same bytes on the wire as redis-py's own packing."""

from __future__ import annotations

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from core.redis import (
    HiredisConnection,
    HiredisSSLConnection,
    HiredisUnixConnection,
    use_hiredis_packing,
)

ARGS = ("EVALSHA", "abc", 2, "sg:k1", b"sg:k2", 0, -7, 1_700_000_000_123, "d\u00e9j\u00e0 vu", b"")


def test_the_pool_picks_the_packing_class_of_its_scheme() -> None:
    for url, expected in (
        ("redis://127.0.0.1:6379/0", HiredisConnection),
        ("rediss://127.0.0.1:6380/0", HiredisSSLConnection),
        ("unix:///tmp/redis.sock", HiredisUnixConnection),
    ):
        pool = BlockingConnectionPool.from_url(url)
        use_hiredis_packing(pool)
        assert pool.connection_class is expected


def test_packed_bytes_match_redis_py() -> None:
    ours, theirs = HiredisConnection(), Connection()
    for args in (ARGS, ("CLIENT SETNAME", "x"), (b"SCRIPT LOAD", "return 1")):
        assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", object())


async def test_a_script_with_many_arguments_round_trips(redis_url: str, redis_prefix: str) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=4)
    use_hiredis_packing(pool)
    client = Redis(connection_pool=pool)
    try:
        keys = [f"{redis_prefix}{i}" for i in range(50)]
        args = [*range(300), "d\u00e9j\u00e0 vu"]
        script = client.register_script("return {#KEYS, #ARGV, ARGV[300], ARGV[301], KEYS[50]}")
        reply = await script(keys=keys, args=args)
        assert reply == [50, 301, b"299", "d\u00e9j\u00e0 vu".encode(), keys[-1].encode()]
    finally:
        await client.aclose()
