"""Choosing the limiter's storage by URL, the way `limits` does: `memory://` or `redis://…`."""

from __future__ import annotations

from auth.ratelimit.memory import MemoryStorage
from auth.ratelimit.redis_store import RedisStorage
from auth.ratelimit.storage import Storage


def storage_from_url(
    url: str, *, prefix: str = "sluicegate:rl:", timeout_s: float = 0.5, linger_s: float = 0.0
) -> Storage:
    """`memory://` (this process only) or `redis://`, `rediss://`, `unix://` (shared).

    `timeout_s` bounds every Redis round trip (and connecting); under load a round trip
    waits up to `linger_s` for more calls to share it (auth/ratelimit/batching.py).
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "memory":
        return MemoryStorage()
    if scheme in ("redis", "rediss", "unix"):
        return RedisStorage(url, prefix=prefix, timeout_s=timeout_s, linger_s=linger_s)
    raise ValueError(f"unsupported limiter storage URL scheme {scheme or url!r}")
