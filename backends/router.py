"""Per-request choice among a model's backends: least loaded, prefix affinity, failover.

- Load is the number of requests a backend has outstanding through this router.
- Prefix affinity: requests whose first `affinity_tokens` prompt tokens match prefer the
  same backend (rendezvous hashing, so a backend joining or leaving moves only its own
  share), as long as that backend's load is within `affinity_margin` of the least loaded.
  Its prefix cache then serves the shared prefix.
- Health: a background task polls every backend; a failed check or a failed request ejects
  it, a passing check re-admits it.
- Failover: a request whose backend fails before producing anything is retried once on
  another backend; after the first event the failure reaches the caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass

from backends.base import Backend, BackendBusy, BackendError, BackendEvent, BackendRequest
from core.errors import BackendUnavailable, Overloaded

log = logging.getLogger(__name__)


@dataclass
class RouterSettings:
    affinity_tokens: int = 64  # prompts shorter than this get no affinity
    affinity_margin: int = 4
    health_interval_s: float = 2.0
    retries: int = 1


class BackendSlot:
    """A backend plus what the router knows about it."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.healthy = True
        self.outstanding = 0
        self.served = 0
        self.failures = 0
        # Rendezvous hashing needs a stable per-backend seed.
        self.seed = hashlib.blake2b(backend.name.encode(), digest_size=8).digest()

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def full(self) -> bool:
        return self.outstanding >= self.backend.max_outstanding

    def mark_failed(self, reason: str) -> None:
        if self.healthy:
            log.warning("backend %s ejected: %s", self.name, reason)
        self.healthy = False
        self.failures += 1


class ModelRoute:
    """The backends serving one model."""

    def __init__(self, backends: Sequence[Backend], settings: RouterSettings):
        if not backends:
            raise ValueError("a model needs at least one backend")
        self.slots = [BackendSlot(b) for b in backends]
        self.settings = settings
        self._turn = 0

    def pick(self, prompt: list[int], exclude: Sequence[BackendSlot] = ()) -> BackendSlot:
        """The backend for this prompt, or a typed 503 error when there is none."""
        healthy = [s for s in self.slots if s.healthy and s not in exclude]
        if not healthy:
            raise BackendUnavailable("No healthy backend is available for this model right now.")
        open_ = [s for s in healthy if not s.full]
        if not open_:
            raise Overloaded("Every backend for this model is at capacity; retry shortly.")
        least = min(s.outstanding for s in open_)
        preferred = self._affinity(prompt, open_)
        if preferred is not None and preferred.outstanding <= least + self.settings.affinity_margin:
            return preferred
        lightest = [s for s in open_ if s.outstanding == least]
        # Rotate among equally loaded backends so idle periods do not pin one backend.
        self._turn = (self._turn + 1) % len(lightest)
        return lightest[self._turn]

    def _affinity(self, prompt: list[int], slots: list[BackendSlot]) -> BackendSlot | None:
        k = self.settings.affinity_tokens
        if k <= 0 or len(prompt) < k or len(slots) < 2:
            return None
        key = b"".join(t.to_bytes(4, "little") for t in prompt[:k])
        return max(slots, key=lambda s: hashlib.blake2b(key, key=s.seed, digest_size=8).digest())


class BackendRouter:
    """Routes requests for every configured model; owns the health-check task."""

    def __init__(
        self, models: dict[str, Sequence[Backend]], settings: RouterSettings | None = None
    ):
        self.settings = settings or RouterSettings()
        self.routes = {name: ModelRoute(bs, self.settings) for name, bs in models.items()}
        self._health_task: asyncio.Task[None] | None = None

    @property
    def backends(self) -> list[Backend]:
        return [slot.backend for route in self.routes.values() for slot in route.slots]

    async def start(self) -> None:
        for backend in self.backends:
            await backend.start()
        await self.check_health()
        self._health_task = asyncio.create_task(self._health_loop(), name="router-health")

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with suppress(asyncio.CancelledError):
                await self._health_task
        for backend in self.backends:
            await backend.close()

    async def check_health(self) -> None:
        slots = [slot for route in self.routes.values() for slot in route.slots]
        results = await asyncio.gather(*(s.backend.check_health() for s in slots))
        for slot, ok in zip(slots, results, strict=True):
            if ok and not slot.healthy:
                log.info("backend %s re-admitted", slot.name)
            if ok:
                slot.healthy = True
            else:
                slot.mark_failed("health check failed")

    @property
    def started(self) -> bool:
        return self._health_task is not None

    async def ready(self) -> bool:
        """Check every backend now; True when every model has a healthy one (for /readyz)."""
        await self.check_health()
        return all(any(s.healthy for s in route.slots) for route in self.routes.values())

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval_s)
            await self.check_health()

    def check_available(self, model: str) -> None:
        """Raise the 503 a request for `model` would get now (before spending on it)."""
        self.routes[model].pick([])

    async def generate(
        self, model: str, request: BackendRequest
    ) -> AsyncGenerator[BackendEvent, None]:
        """The backend's events; retried elsewhere if it fails before its first event."""
        route = self.routes[model]
        tried: list[BackendSlot] = []
        while True:
            slot = route.pick(request.prompt_token_ids, exclude=tried)
            tried.append(slot)
            request.served_by = slot.name
            started = False
            slot.outstanding += 1
            try:
                async with aclosing(slot.backend.generate(request)) as events:
                    async for event in events:
                        started = True
                        yield event
                slot.served += 1
                return
            except BackendBusy as exc:
                if started:
                    raise
                if len(tried) > self.settings.retries:
                    raise Overloaded("The backends for this model are at capacity.") from exc
            except BackendError as exc:
                slot.mark_failed(str(exc))
                if started:
                    raise
                if len(tried) > self.settings.retries:
                    raise BackendUnavailable("The backend for this model failed.") from exc
                log.info("retrying request %s after %s failed", request.request_id, slot.name)
            finally:
                slot.outstanding -= 1
