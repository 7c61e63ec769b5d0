"""The online engine: `LLMEngine` stepping in its own thread, deltas streamed to asyncio.

The stepping loop runs off the event loop in a dedicated thread (torch releases the GIL in
its kernels, so the loop stays responsive). Requests and aborts reach the thread through a
command queue; deltas come back through `loop.call_soon_threadsafe` into one asyncio queue
per request. Closing or cancelling a consumer's iterator aborts its request, and the engine
frees the request's blocks before its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import BackendUnavailable
from inference.checkpoints.hub import default_model_id, resolve_model_dir
from inference.engine.llm_engine import STEP_ERRORS, LLMEngine, engine_options
from inference.outputs import EngineStats, GenerationDelta
from inference.params import SamplingParams
from inference.text.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_END = None  # ends a stream early (the request was aborted)
_Item = GenerationDelta | BaseException | None


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item] = field(default_factory=asyncio.Queue)
    # Each completion's generated-token count as the engine thread delivered it (written
    # by that thread; read once the request is gone from the engine).
    generated: dict[int, int] = field(default_factory=dict)


ABORT_WAIT_S = 5.0  # an abort is applied between two steps; this only guards a dead thread


class TorchAsyncEngine:
    """Our torch engine behind the `InferenceEngine` protocol (`inference/protocol.py`)."""

    # `generate` fills its `generated` argument (metering counts what the engine generated).
    reports_generated = True

    def __init__(self, engine: LLMEngine, *, model_name: str):
        if engine.tokenizer is None:
            raise ValueError("the online engine needs a checkpoint with tokenizer.json")
        self.engine = engine
        self.model_name = model_name
        self.max_model_len = engine.max_model_len
        self.tokenizer: Tokenizer = engine.tokenizer
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wakeup = threading.Event()
        self._lock = threading.Lock()  # guards _streams
        self._streams: dict[str, _Stream] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stats = engine.stats()

    @classmethod
    def from_model(cls, name_or_dir: str, **options: Any) -> TorchAsyncEngine:
        """Build from a model name (`tiny`, a directory, a `.gguf` file or a Hub id) and
        `EngineOptions`; the model's name is a GGUF file's stem, else `name_or_dir`."""
        engine = LLMEngine(resolve_model_dir(name_or_dir), engine_options(options))
        name = default_model_id(name_or_dir)
        logger.info("%s: warmed up in %.2f s", name, engine.warm_up())
        return cls(engine, model_name=name)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="torch-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wakeup.set()
        await asyncio.to_thread(thread.join)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- requests --------------------------------------------------------------------------

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        *,
        tenant: str | None = None,
        priority: int = 0,
        generated: dict[int, int] | None = None,
    ) -> AsyncGenerator[GenerationDelta, None]:
        """Deltas of all `params.n` completions, interleaved; see `InferenceEngine.generate`.

        `generated`, if given, is filled when the iterator closes with each completion's
        generated-token count as the engine counted it, including tokens nobody read
        (the consumer left, and the engine had stepped once more before the abort).
        """
        self.engine.validate_request(prompt_token_ids, params)
        if not self.running:
            raise BackendUnavailable("the torch engine is not running")
        stream = _Stream(asyncio.get_running_loop())
        with self._lock:
            if request_id in self._streams:
                raise ValueError(f"request_id {request_id!r} is already running")
            self._streams[request_id] = stream
        ids = list(prompt_token_ids)
        self._submit(lambda: self._add(request_id, ids, params, tenant, priority))
        unfinished = params.n
        try:
            while unfinished:
                item = await stream.queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    unfinished -= 1
                yield item
        finally:
            try:
                if unfinished:  # the consumer left early (closed, cancelled) or the engine failed
                    await self._abort_applied(request_id)
            finally:
                with self._lock:
                    self._streams.pop(request_id, None)
                if generated is not None:
                    generated.update(stream.generated)

    async def _abort_applied(self, request_id: str) -> None:
        """Abort in the engine thread and wait until it is applied: from then on nothing more
        is generated for the request, so its stream's counts are final."""
        if not self.running:
            return
        loop = asyncio.get_running_loop()
        applied: asyncio.Future[None] = loop.create_future()

        def abort() -> None:
            self.engine.abort(request_id)
            with contextlib.suppress(RuntimeError):  # the consumer's loop is closed
                loop.call_soon_threadsafe(_resolve, applied)

        self._submit(abort)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(applied), ABORT_WAIT_S)

    async def abort(self, request_id: str) -> None:
        """Stop the request: its iterator ends (no finish reason) and its blocks are freed."""
        self._send(request_id, _END)
        self._submit(lambda: self.engine.abort(request_id))

    def stats(self) -> EngineStats:
        return self._stats

    # -- the engine thread -----------------------------------------------------------------

    def _submit(self, command: Callable[[], None]) -> None:
        self._commands.put(command)
        self._wakeup.set()

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._drain_commands()
                if not self.engine.has_unfinished():
                    self._wakeup.wait()
                    self._wakeup.clear()
                    continue
                try:
                    deltas = self.engine.step()
                except STEP_ERRORS as error:  # outside the model call: the loop's own state
                    self._recover(error)
                    continue
                self._stats = self.engine.stats()
                self._deliver(deltas)
                for request_id, failure in self.engine.take_failed().items():
                    self._send(request_id, failure)  # a request the model failed on, alone
        finally:  # normal shutdown or a crash: no consumer may wait forever
            self._fail_all(BackendUnavailable("the torch engine stopped"))
            self.engine.abort_all()
            self._stats = self.engine.stats()

    def _recover(self, error: BaseException) -> None:
        """A step failed outside the model call (which `LLMEngine.step` isolates per
        request): fail and free every request in the engine, and keep serving.

        Anything else is a bug in the loop itself and stops the engine, failing everyone.
        """
        logger.error("engine step failed; ending %d requests", len(self._streams), exc_info=error)
        self._fail_all(BackendUnavailable("the inference engine failed while running this request"))
        self.engine.abort_all()
        self._stats = self.engine.stats()

    def _drain_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            command()
        self._stats = self.engine.stats()

    def _add(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        tenant: str | None,
        priority: int,
    ) -> None:
        try:
            self.engine.add_request(
                request_id, prompt_token_ids, params, tenant=tenant, priority=priority
            )
        except ValueError as error:  # validated already; this is a race such as a duplicate id
            self._send(request_id, error)

    def _deliver(self, deltas: list[GenerationDelta]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, GenerationDelta]]]
        by_loop = defaultdict(list)
        with self._lock:
            for delta in deltas:
                stream = self._streams.get(delta.request_id)
                if stream is not None:
                    stream.generated[delta.index] = delta.completion_tokens
                    by_loop[stream.loop].append((stream, delta))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                for _stream, delta in items:
                    self.engine.abort(delta.request_id)

    def _send(self, request_id: str, item: _Item) -> None:
        with self._lock:
            stream = self._streams.get(request_id)
        if stream is not None:
            with contextlib.suppress(RuntimeError):  # the consumer's loop is closed
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            request_ids = list(self._streams)
        for request_id in request_ids:
            self._send(request_id, error)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _put_all(items: list[tuple[_Stream, GenerationDelta]]) -> None:
    for stream, delta in items:
        stream.queue.put_nowait(delta)
