"""Engine output -> OpenAI response bodies, stream chunks and logprobs objects.

Pure functions over `inference.outputs` types; the request pipeline (`api/generation/service.py`)
decides what to render and when. Serialisation is orjson throughout.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from api.generation.openai_schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionLogprobs,
    TopLogprob,
    Usage,
)
from inference.outputs import GenerationDelta, TokenLogprob

TokenText = Callable[[int], str]
TokenBytes = Callable[[int], bytes]

DONE = b"data: [DONE]\n\n"


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Usage:
    out = Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    if cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return out


@dataclass
class Envelope:
    """The fields every body and chunk of one response shares."""

    id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    def wrap(self, obj: str, choices: list[Any], usage: Usage | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }


# ---- completions ----------------------------------------------------------------------


def _top_completion(entry: TokenLogprob, k: int, text: TokenText) -> dict[str, float]:
    # OpenAI legacy semantics: the k most likely tokens plus the sampled one.
    top = {text(token): lp for token, lp in itertools.islice(entry.top.items(), k)}
    top.setdefault(text(entry.token_id), entry.logprob)
    return top


@dataclass
class OffsetCounter:
    """Running `text_offset` of one completion choice across stream chunks."""

    offset: int = 0


def completion_logprobs(
    token_ids: Sequence[int],
    entries: Sequence[TokenLogprob | None],
    k: int,
    text: TokenText,
    counter: OffsetCounter,
) -> CompletionLogprobs:
    """Logprobs of `token_ids` (an entry is None only for the first prompt token)."""
    tokens = [text(t) for t in token_ids]
    offsets: list[int] = []
    for token in tokens:
        offsets.append(counter.offset)
        counter.offset += len(token)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[e.logprob if e else None for e in entries],
        top_logprobs=[_top_completion(e, k, text) if e else None for e in entries],
        text_offset=offsets,
    )


def merge_completion_logprobs(
    first: CompletionLogprobs, second: CompletionLogprobs
) -> CompletionLogprobs:
    return CompletionLogprobs(
        tokens=first["tokens"] + second["tokens"],
        token_logprobs=first["token_logprobs"] + second["token_logprobs"],
        top_logprobs=first["top_logprobs"] + second["top_logprobs"],
        text_offset=first["text_offset"] + second["text_offset"],
    )


def completion_choice(
    index: int, text: str, logprobs: CompletionLogprobs | None, finish_reason: str | None
) -> CompletionChoice:
    return CompletionChoice(text=text, index=index, logprobs=logprobs, finish_reason=finish_reason)


# ---- chat -----------------------------------------------------------------------------


def chat_logprobs(
    entries: Sequence[TokenLogprob], k: int, text: TokenText, raw: TokenBytes
) -> ChatLogprobs:
    def one(token: int, logprob: float) -> TopLogprob:
        return TopLogprob(token=text(token), logprob=logprob, bytes=list(raw(token)))

    content: list[ChatTokenLogprob] = []
    for entry in entries:
        chosen = one(entry.token_id, entry.logprob)
        alternatives = [one(t, lp) for t, lp in itertools.islice(entry.top.items(), k)]
        content.append(ChatTokenLogprob(**chosen, top_logprobs=alternatives))
    return ChatLogprobs(content=content)


def chat_choice(
    index: int, content: str, logprobs: ChatLogprobs | None, finish_reason: str | None
) -> ChatChoice:
    return ChatChoice(
        index=index,
        message={"role": "assistant", "content": content},
        logprobs=logprobs,
        finish_reason=finish_reason,
    )


def chat_chunk_choice(
    index: int, delta: ChatDelta, logprobs: ChatLogprobs | None, finish_reason: str | None
) -> ChatChunkChoice:
    return ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason)


# ---- renderers: one per endpoint, fed (prompt position, delta) pairs -------------------


@dataclass
class PromptInfo:
    token_ids: list[int]
    text: str = ""  # what `echo` returns: the prompt as given, or decoded from token ids
    engine_text: str | None = None  # the token ids decoded, as a remote server echoes them


@dataclass
class _Choice:
    texts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    cumulative_logprob: float = 0.0
    started: bool = False  # stream: the first chunk (role, echo) went out
    offsets: OffsetCounter = field(default_factory=OffsetCounter)


@dataclass
class TokenRendering:
    """How this response writes tokens (`token_id:N` is vLLM's machine-readable form)."""

    text: TokenText
    raw: TokenBytes
    as_ids: bool = False

    def __post_init__(self) -> None:
        if self.as_ids:
            self.text = _token_id_text


def _token_id_text(token: int) -> str:
    return f"token_id:{token}"


class CompletionRenderer:
    """`text_completion` bodies and chunks. Choice index = prompt position x n + rank."""

    object = "text_completion"

    def __init__(
        self,
        envelope: Envelope,
        prompts: list[PromptInfo],
        *,
        n: int,
        logprobs: int | None,
        echo: bool,
        discard_output: bool,
        tokens: TokenRendering,
        continuous_usage: bool = False,
    ):
        self.envelope, self.prompts, self.n = envelope, prompts, n
        self.k, self.echo, self.discard = logprobs, echo, discard_output
        self.tokens, self.continuous_usage = tokens, continuous_usage
        self.choices: dict[tuple[int, int], _Choice] = {}
        self.prompt_logprobs: dict[int, list[TokenLogprob | None]] = {}

    def restart(self) -> None:
        """Forget what was added: the generation runs again from the start."""
        self.choices.clear()
        self.prompt_logprobs.clear()

    def _choice(self, position: int, delta: GenerationDelta) -> _Choice:
        if delta.prompt_logprobs is not None:
            self.prompt_logprobs.setdefault(position, delta.prompt_logprobs)
        return self.choices.setdefault((position, delta.index), _Choice())

    def _echo_part(self, position: int, choice: _Choice) -> tuple[str, CompletionLogprobs | None]:
        prompt = self.prompts[position]
        if self.k is None:
            return prompt.text, None
        entries = self.prompt_logprobs.get(position) or [None] * len(prompt.token_ids)
        text = self.tokens.text
        return prompt.text, completion_logprobs(
            prompt.token_ids, entries, self.k, text, choice.offsets
        )

    def _output_logprobs(
        self, entries: Sequence[TokenLogprob], choice: _Choice
    ) -> CompletionLogprobs | None:
        if self.k is None or self.discard:
            return None
        ids = [e.token_id for e in entries]
        return completion_logprobs(ids, entries, self.k, self.tokens.text, choice.offsets)

    def chunk(self, position: int, delta: GenerationDelta) -> bytes | None:
        choice = self._choice(position, delta)
        text = "" if self.discard else delta.text
        logprobs = None
        if self.echo and not choice.started:
            echoed, logprobs = self._echo_part(position, choice)
            text = echoed + text
        choice.started = True
        output = self._output_logprobs(delta.logprobs or [], choice)
        if output is not None:
            logprobs = merge_completion_logprobs(logprobs, output) if logprobs else output
        finish = _finish(delta.finish_reason, self.discard)
        if not text and logprobs is None and finish is None:
            return None
        index = position * self.n + delta.index
        body = self.envelope.wrap(
            "text_completion", [completion_choice(index, text, logprobs, finish)], None
        )
        if self.continuous_usage:
            body["usage"] = usage(delta.prompt_tokens, delta.completion_tokens)
        return sse(body)

    def add(self, position: int, delta: GenerationDelta) -> None:
        choice = self._choice(position, delta)
        choice.texts.append(delta.text)
        choice.logprobs.extend(delta.logprobs or [])
        choice.cumulative_logprob = delta.cumulative_logprob
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason

    def body(self, total: Usage) -> dict[str, Any]:
        rendered: list[CompletionChoice] = []
        for position in range(len(self.prompts)):
            candidates = [c for (p, _), c in sorted(self.choices.items()) if p == position]
            # best_of: the n candidates the model itself found most likely.
            best = sorted(candidates, key=lambda c: -c.cumulative_logprob)[: self.n]
            for rank, choice in enumerate(best if len(candidates) > self.n else candidates):
                rendered.append(self._render(position, rank, choice))
        return self.envelope.wrap("text_completion", rendered, total)

    def _render(self, position: int, rank: int, choice: _Choice) -> CompletionChoice:
        text = "" if self.discard else "".join(choice.texts)
        logprobs = None
        if self.echo:
            echoed, logprobs = self._echo_part(position, choice)
            text = echoed + text
        output = self._output_logprobs(choice.logprobs, choice)
        if output is not None:
            logprobs = merge_completion_logprobs(logprobs, output) if logprobs else output
        finish = _finish(choice.finish_reason, self.discard)
        return completion_choice(position * self.n + rank, text, logprobs, finish)


def _finish(reason: str | None, discard: bool) -> str | None:
    # With max_tokens=0 (echo only) the one token generated is dropped: the limit ended it.
    return "length" if discard and reason is not None else reason


class ChatRenderer:
    """`chat.completion` bodies and `chat.completion.chunk`s (one prompt, n choices)."""

    object = "chat.completion.chunk"  # what the include_usage chunk is

    def __init__(
        self,
        envelope: Envelope,
        *,
        top_logprobs: int | None,
        tokens: TokenRendering,
        continuous_usage: bool = False,
    ):
        self.envelope, self.k, self.tokens = envelope, top_logprobs, tokens
        self.continuous_usage = continuous_usage
        self.choices: dict[int, _Choice] = {}

    def restart(self) -> None:
        """Forget what was added: the generation runs again from the start."""
        self.choices.clear()

    def _logprobs(self, entries: Sequence[TokenLogprob]) -> ChatLogprobs | None:
        if self.k is None:
            return None
        return chat_logprobs(entries, self.k, self.tokens.text, self.tokens.raw)

    def chunk(self, position: int, delta: GenerationDelta) -> bytes | None:
        choice = self.choices.setdefault(delta.index, _Choice())
        message: ChatDelta = {}
        if not choice.started:
            message["role"] = "assistant"
            choice.started = True
        if delta.text or "role" in message:
            message["content"] = delta.text
        logprobs = self._logprobs(delta.logprobs) if delta.logprobs else None
        if not message and logprobs is None and delta.finish_reason is None:
            return None
        body = self.envelope.wrap(
            "chat.completion.chunk",
            [chat_chunk_choice(delta.index, message, logprobs, delta.finish_reason)],
            None,
        )
        if self.continuous_usage:
            body["usage"] = usage(delta.prompt_tokens, delta.completion_tokens)
        return sse(body)

    def add(self, position: int, delta: GenerationDelta) -> None:
        choice = self.choices.setdefault(delta.index, _Choice())
        choice.texts.append(delta.text)
        choice.logprobs.extend(delta.logprobs or [])
        if delta.finish_reason is not None:
            choice.finish_reason = delta.finish_reason

    def body(self, total: Usage) -> dict[str, Any]:
        choices = [
            chat_choice(index, "".join(c.texts), self._logprobs(c.logprobs), c.finish_reason)
            for index, c in sorted(self.choices.items())
        ]
        return self.envelope.wrap("chat.completion", choices, total)
