"""BackendRouter decisions over scripted backends: load, affinity, health, failover, 503s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from backends.base import BackendBusy, BackendError, BackendEvent, BackendRequest, FinalUsage
from backends.router import BackendRouter, RouterSettings
from core.errors import BackendUnavailable, Overloaded
from inference.outputs import GenerationDelta
from inference.params import SamplingParams


class ScriptedBackend:
    """A backend whose next behaviours are given by the test (the router is under test)."""

    def __init__(self, name: str, *, max_outstanding: int = 8):
        self.name = name
        self.max_outstanding = max_outstanding
        self.healthy = True
        self.script: list[str] = []  # per request: ok | fail_before | fail_after | busy | hold
        self.release = asyncio.Event()
        self.calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check_health(self) -> bool:
        return self.healthy

    async def generate(self, request: BackendRequest) -> AsyncGenerator[BackendEvent, None]:
        self.calls += 1
        action = self.script.pop(0) if self.script else "ok"
        if action == "fail_before":
            raise BackendError(f"{self.name} refused the connection")
        if action == "busy":
            raise BackendBusy(f"{self.name} is full")
        if action == "hold":
            await self.release.wait()
        yield GenerationDelta(request.request_id, 0, [1], self.name, None, None, 3, 1)
        if action == "fail_after":
            raise BackendError(f"{self.name} died mid-stream")
        yield FinalUsage(3, 1)


def request(prompt: list[int] | None = None) -> BackendRequest:
    return BackendRequest("r", prompt or [1, 2, 3], SamplingParams(max_tokens=1))


async def served_by(router: BackendRouter, prompt: list[int] | None = None) -> str:
    events = [e async for e in router.generate("m", request(prompt))]
    first = events[0]
    assert isinstance(first, GenerationDelta)
    return first.text


def make(*names: str, **settings: float) -> tuple[BackendRouter, list[ScriptedBackend]]:
    backends = [ScriptedBackend(n) for n in names]
    return BackendRouter({"m": backends}, RouterSettings(**settings)), backends  # type: ignore[arg-type]


async def test_least_loaded_backend_gets_the_request() -> None:
    router, (a, b) = make("a", "b")
    a.script = ["hold"]
    b.script = ["hold"]
    first = asyncio.create_task(served_by(router))
    await asyncio.sleep(0)
    loads = [s.outstanding for s in router.routes["m"].slots]
    assert sorted(loads) == [0, 1]
    second = asyncio.create_task(served_by(router))
    await asyncio.sleep(0)
    assert [s.outstanding for s in router.routes["m"].slots] == [1, 1]
    a.release.set()
    b.release.set()
    assert sorted(await asyncio.gather(first, second)) == ["a", "b"]
    assert [s.outstanding for s in router.routes["m"].slots] == [0, 0]


async def test_every_backend_at_its_bound_is_overloaded() -> None:
    router, backends = make("a", "b")
    for backend in backends:
        backend.max_outstanding = 1
        backend.script = ["hold"]
    held = [asyncio.create_task(served_by(router)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await served_by(router)
    for backend in backends:
        backend.release.set()
    await asyncio.gather(*held)


async def test_no_healthy_backend_is_unavailable_until_one_recovers() -> None:
    router, (a, b) = make("a", "b")
    a.healthy = b.healthy = False
    await router.check_health()
    with pytest.raises(BackendUnavailable):
        await served_by(router)
    b.healthy = True
    await router.check_health()
    assert await served_by(router) == "b"


async def test_failure_before_the_first_token_is_retried_elsewhere_and_ejects() -> None:
    router, (a, b) = make("a", "b")
    a.script = ["fail_before"]
    router.routes["m"].slots[1].outstanding = 1  # make "a" the first choice
    assert await served_by(router) == "b"
    assert a.calls == 1 and b.calls == 1
    assert [s.healthy for s in router.routes["m"].slots] == [False, True]


async def test_one_retry_only() -> None:
    router, (a, b, c) = make("a", "b", "c")
    for backend in (a, b, c):
        backend.script = ["fail_before"]
    with pytest.raises(BackendUnavailable):
        await served_by(router)
    assert a.calls + b.calls + c.calls == 2


async def test_failure_after_the_first_token_reaches_the_caller() -> None:
    router, (a,) = make("a")
    a.script = ["fail_after"]
    seen: list[BackendEvent] = []
    with pytest.raises(BackendError):
        async for event in router.generate("m", request()):
            seen.append(event)
    assert len(seen) == 1 and a.calls == 1
    assert not router.routes["m"].slots[0].healthy


async def test_busy_backend_is_skipped_but_not_ejected() -> None:
    router, (a, b) = make("a", "b")
    a.script = ["busy"]
    b.script = ["busy"]
    with pytest.raises(Overloaded):
        await served_by(router)
    assert all(s.healthy for s in router.routes["m"].slots)
    a.script = ["busy"]
    b.script = []
    router.routes["m"].slots[1].outstanding = 1  # make "a" the first choice
    assert await served_by(router) == "b"


async def test_long_shared_prefixes_stick_to_one_backend_within_the_margin() -> None:
    router, _ = make("a", "b", "c", affinity_tokens=8, affinity_margin=2)
    route = router.routes["m"]
    prefix = list(range(100, 108))
    chosen = {route.pick([*prefix, i]).name for i in range(20)}
    assert len(chosen) == 1
    other = list(range(200, 208))
    spread = {route.pick(list(range(300 + 8 * i, 308 + 8 * i))).name for i in range(30)}
    assert len(spread) == 3  # different prefixes hash to different backends
    preferred = route.pick(prefix)
    preferred.outstanding = 3  # beyond least (0) + margin (2): load wins over affinity
    assert route.pick(prefix).name != preferred.name
    preferred.outstanding = 2
    assert route.pick(prefix) is preferred
    assert route.pick(other[:4]).name in ("a", "b", "c")  # short prompts: no affinity


async def test_health_loop_ejects_and_readmits() -> None:
    router, (a, _) = make("a", "b", health_interval_s=0.05)
    await router.start()
    try:
        a.healthy = False
        await asyncio.sleep(0.2)
        assert [s.healthy for s in router.routes["m"].slots] == [False, True]
        assert {await served_by(router) for _ in range(4)} == {"b"}
        a.healthy = True
        await asyncio.sleep(0.2)
        assert [s.healthy for s in router.routes["m"].slots] == [True, True]
    finally:
        await router.close()


async def test_closing_the_stream_releases_the_slot() -> None:
    router, _ = make("a")
    stream = router.generate("m", request())
    await anext(stream)
    assert router.routes["m"].slots[0].outstanding == 1
    await stream.aclose()
    assert router.routes["m"].slots[0].outstanding == 0
