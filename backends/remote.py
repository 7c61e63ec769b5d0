"""`RemoteBackend`: a model served over OpenAI-compatible HTTP + SSE.

The upstream is our `api.inference_server` or a stock `vllm serve`. Requests go to
`/v1/completions` with a token-id prompt (the gateway tokenized already, so both ends count
the same tokens), always streamed, and the chunks are turned back into the engine
contract's `GenerationDelta`s followed by one `FinalUsage`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import yarl

from backends.base import BackendBusy, BackendError, BackendEvent, BackendRequest, FinalUsage
from core.errors import GenerationFailed, InvalidRequest
from inference.outputs import FinishReason, GenerationDelta, TokenLogprob


@dataclass
class _ChoiceState:
    """What a remote stream has said so far about one completion."""

    completion_tokens: int = 0
    cumulative_logprob: float = 0.0
    echo_stripped: bool = False


@dataclass
class _StreamState:
    request: BackendRequest
    echo: bool
    choices: dict[int, _ChoiceState] = field(default_factory=dict)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    done: bool = False  # [DONE] arrived


class RemoteBackend:
    """An OpenAI-compatible server reached over HTTP (ours or a stock `vllm serve`).

    Requests go to `/v1/completions` with a token-id prompt, `stream=true` and
    `stream_options={include_usage, continuous_usage_stats}` so that every chunk carries
    the engine's own running count. A stream the gateway abandons (its client left) closes
    the connection, which aborts the upstream request; tokens generated after the last chunk
    read are then asked of the upstream (`GET /usage/{request_id}`, our inference server's;
    a stock `vllm serve` has none, and what the gateway read is what it knows).
    Logprobs are asked with vLLM's `return_tokens_as_token_ids` so tokens come back as ids.

    The HTTP client is aiohttp's pooled `ClientSession`: per request it costs a fifth of
    httpx's CPU time at concurrency 1 and an eighth at 64 (`bench/gateway.py` measures
    the hop), and the gateway is this hop plus checks. The session is created on first use,
    inside the event loop that uses it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        name: str | None = None,
        api_key: str | None = None,
        max_outstanding: int = 256,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 600.0,
        health_timeout_s: float = 2.0,
        usage_timeout_s: float = 3.0,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or self.base_url
        self.max_outstanding = max_outstanding
        self._completions_url = yarl.URL(f"{self.base_url}/v1/completions")
        self._health_url = yarl.URL(f"{self.base_url}/health")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # No total deadline: a long generation streams for as long as it needs, but each
        # read waits at most `read_timeout_s` for the next bytes. Waiting for a pooled
        # connection is not timed: the router keeps at most `max_outstanding` requests here.
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._health_timeout = aiohttp.ClientTimeout(total=health_timeout_s)
        self._usage_timeout = aiohttp.ClientTimeout(total=usage_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.reports_usage = True  # until the upstream shows it has no usage endpoint

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_outstanding + 8),
                headers=self._headers,
                raise_for_status=False,
            )
        return self._session

    async def start(self) -> None:
        self._client()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check_health(self) -> bool:
        try:
            async with self._client().get(
                self._health_url, timeout=self._health_timeout
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def generate(self, request: BackendRequest) -> AsyncGenerator[BackendEvent, None]:
        state = _StreamState(request, echo=request.params.prompt_logprobs is not None)
        try:
            async with self._client().post(
                self._completions_url,
                data=completion_body(self.model, request),
                headers={"X-Request-Id": request.request_id},
                timeout=self._timeout,
            ) as response:
                if response.status != 200:
                    await _raise_for_status(response)
                # Leaving early (the client went away) closes the connection, which is
                # what tells the upstream server to abort the generation.
                async for event in _events(response, state):
                    yield event
        except (GeneratorExit, asyncio.CancelledError):  # abandoned by the consumer
            if state.choices and not state.done:
                await self._learn_generated(request)
            raise
        except aiohttp.ClientError as exc:
            raise BackendError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise BackendError(f"{self.name}: timed out waiting for the upstream") from exc
        except orjson.JSONDecodeError as exc:
            raise BackendError(f"{self.name}: malformed event in stream") from exc

    async def _learn_generated(self, request: BackendRequest) -> None:
        """After abandoning a stream: what the upstream engine generated for it in all,
        if the upstream says (sets `request.engine_completion_tokens`)."""
        if not self.reports_usage:
            return
        url = yarl.URL(f"{self.base_url}/usage/{request.request_id}")
        try:
            async with self._client().get(url, timeout=self._usage_timeout) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return  # unknown: what was read stands
        if response.status == 404 and b"error" not in body:  # no such endpoint (vLLM)
            self.reports_usage = False
        if response.status != 200:
            return
        try:
            generated = int(orjson.loads(body)["completion_tokens"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return
        request.engine_completion_tokens = max(generated, request.engine_completion_tokens or 0)


async def _events(
    response: aiohttp.ClientResponse, state: _StreamState
) -> AsyncGenerator[BackendEvent, None]:
    decoder = SseDecoder()
    async for chunk in response.content.iter_any():
        for event in _events_of_payloads(decoder.feed(chunk), state):
            yield event
    for event in _events_of_payloads(decoder.close(), state):
        yield event
    if not state.done:
        raise BackendError("stream ended without [DONE]")


def _events_of_payloads(payloads: list[bytes], state: _StreamState) -> list[BackendEvent]:
    events: list[BackendEvent] = []
    for payload in payloads:
        if payload == b"[DONE]":
            state.done = True  # read on to the end of the body, so the connection is reused
        elif not state.done:
            events += _events_of_chunk(orjson.loads(payload), state)
    return events


def completion_body(model: str, request: BackendRequest) -> bytes:
    """The upstream `/v1/completions` body for one tokenized request."""
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.prompt_token_ids,
        "max_tokens": p.max_tokens,
        "n": p.n,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    optional = {
        "seed": p.seed,
        "presence_penalty": p.presence_penalty or None,
        "frequency_penalty": p.frequency_penalty or None,
        "logit_bias": {str(k): v for k, v in p.logit_bias.items()} or None,
        "stop": p.stop or None,
        "stop_token_ids": p.stop_token_ids or None,
        "top_k": p.top_k if p.top_k > 0 else None,
        "ignore_eos": p.ignore_eos or None,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    wanted = [k for k in (p.logprobs, p.prompt_logprobs) if k is not None]
    if wanted:
        body["logprobs"] = max(wanted)
        body["return_tokens_as_token_ids"] = True
    if p.prompt_logprobs is not None:
        body["echo"] = True
    return orjson.dumps(body)


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    raw = await response.read()
    try:
        error = orjson.loads(raw).get("error") or {}
        message = str(error.get("message") or raw[:200])
        param = error.get("param")
        code = error.get("code")
    except (orjson.JSONDecodeError, AttributeError):
        message, param, code = raw[:200].decode(errors="replace"), None, None
    status = response.status
    if code == GenerationFailed.code:  # the upstream failed on this request only
        raise GenerationFailed(message)
    if status in (429, 503):
        raise BackendBusy(f"upstream {status}: {message}")
    if status in (400, 422):
        raise InvalidRequest(message, param=param if isinstance(param, str) else None)
    raise BackendError(f"upstream {status}: {message}")


class SseDecoder:
    """Server-sent events from the bytes of a stream, fed as they arrive.

    `feed` returns the `data` of every event the chunk completed (multi-line data joined
    by newlines); an event still incomplete waits for the next chunk. A plain method, not
    an async generator, because it runs for every chunk of every upstream response.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        payloads: list[bytes] = []
        data = self._data
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                if data:
                    payloads.append(b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        return payloads

    def close(self) -> list[bytes]:
        """The last event, if the stream ended without the blank line that closes it."""
        return self.feed(b"\n\n")


def _events_of_chunk(chunk: dict[str, Any], state: _StreamState) -> list[BackendEvent]:
    if "error" in chunk or chunk.get("object") == "error":
        error = chunk.get("error", chunk)
        message = error.get("message") if isinstance(error, dict) else str(error)
        if isinstance(error, dict) and error.get("code") == GenerationFailed.code:
            raise GenerationFailed(str(message))  # this request only: the upstream is fine
        raise BackendError(f"upstream error in stream: {message}")
    usage = chunk.get("usage") or None
    if usage:
        state.prompt_tokens = usage.get("prompt_tokens", state.prompt_tokens)
        details = usage.get("prompt_tokens_details") or {}
        state.cached_tokens = details.get("cached_tokens") or state.cached_tokens
    choices = chunk.get("choices") or []
    if not choices:
        if usage:  # the include_usage chunk: totals over all completions
            return [
                FinalUsage(
                    usage.get("prompt_tokens", 0),
                    usage.get("completion_tokens", 0),
                    state.cached_tokens,
                )
            ]
        return []
    return [_delta_of_choice(choice, usage, state) for choice in choices]


def _delta_of_choice(
    choice: dict[str, Any], usage: dict[str, Any] | None, state: _StreamState
) -> GenerationDelta:
    index = int(choice.get("index", 0))
    seen = state.choices.setdefault(index, _ChoiceState())
    text = choice.get("text") or ""
    entries = _parse_logprobs(choice.get("logprobs"))
    prompt_logprobs: list[TokenLogprob | None] | None = None
    if state.echo and not seen.echo_stripped and entries is not None:
        seen.echo_stripped = True
        n_prompt = len(state.request.prompt_token_ids)
        prompt_logprobs, entries = entries[:n_prompt], entries[n_prompt:]
        if prompt_logprobs:
            prompt_logprobs[0] = None  # the first prompt token has nothing before it
        echoed = state.request.prompt_text or ""
        if text.startswith(echoed):
            text = text[len(echoed) :]
    completion: list[TokenLogprob] | None = [e for e in entries if e] if entries else None
    token_ids = [e.token_id for e in completion] if completion else []
    seen.cumulative_logprob += sum(e.logprob for e in completion or [])
    if usage and "completion_tokens" in usage:
        seen.completion_tokens = usage["completion_tokens"]
    else:
        seen.completion_tokens += len(token_ids)
    return GenerationDelta(
        request_id=state.request.request_id,
        index=index,
        token_ids=token_ids,
        text=text,
        logprobs=completion if state.request.params.logprobs is not None else None,
        finish_reason=_finish_reason(choice.get("finish_reason")),
        prompt_tokens=state.prompt_tokens or len(state.request.prompt_token_ids),
        completion_tokens=seen.completion_tokens,
        cached_tokens=state.cached_tokens,
        cumulative_logprob=seen.cumulative_logprob,
        prompt_logprobs=prompt_logprobs,
    )


def _finish_reason(value: Any) -> FinishReason | None:
    if value is None:
        return None
    if value == "abort":
        raise BackendError("upstream aborted the request")
    return "length" if value == "length" else "stop"


def _parse_logprobs(raw: Any) -> list[TokenLogprob | None] | None:
    """OpenAI completion logprobs with `token_id:N` tokens -> our `TokenLogprob`s."""
    if not raw:
        return None
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    out: list[TokenLogprob | None] = []
    for token, value, top in zip(tokens, values, tops, strict=False):
        if value is None:
            out.append(None)
            continue
        alternatives = {_token_id(t): lp for t, lp in (top or {}).items()}
        out.append(TokenLogprob(_token_id(token), float(value), alternatives))
    return out


def _token_id(token: str) -> int:
    prefix, _, number = token.partition(":")
    if prefix != "token_id" or not number.lstrip("-").isdigit():
        raise BackendError(
            f"upstream returned token {token!r}; it must support return_tokens_as_token_ids"
        )
    return int(number)
