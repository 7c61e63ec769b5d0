"""OpenAI wire schemas: request models (validated) and response shapes (TypedDicts).

Requests are parsed with `parse_body`, which turns every pydantic error into an
`InvalidRequest` whose `param` names the offending field, so a bad body is always a 400
in docs/WIRE.md's shape. Unknown fields are accepted and ignored: the `openai` SDK and tools
built on it add new optional fields faster than any server follows, and rejecting them
would break clients that work against OpenAI. Known fields we cannot honour (`suffix`,
tools, structured output) are rejected with a 400 instead of being silently dropped.

Response bodies are plain dicts typed as TypedDicts and serialised with orjson: building
pydantic models for every streamed chunk costs more than the rest of the hot path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic_core import ErrorDetails
from typing_extensions import TypedDict

from core.errors import InvalidRequest
from core.inputs import INT32_MAX, TEXT_IS_SAFE, Loc, SafeText, json_text_is_safe

MAX_N = 128  # OpenAI's own cap on n and best_of
MAX_STOP = 4
MAX_LOGPROBS = 5
MAX_TOP_LOGPROBS = 20

# JSON numbers only: `true` or `"3"` for a count, or `"0.5"` for top_p, is a client bug worth
# a 400. Every number is bounded so that nothing downstream can overflow (a token id, top_k
# or max_tokens becomes an int32/int64 in a tensor or in vLLM; see inference/params.py).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # strict floats still take JSON integers (`"top_p": 1`)
TokenId = Annotated[Int, Field(ge=0, le=INT32_MAX)]
Penalty = Annotated[Float, Field(ge=-2.0, le=2.0)]


class StreamOptions(BaseModel):
    include_usage: bool | None = None
    # vLLM extension: usage on every chunk, cumulative for that chunk's choice. The gateway
    # asks remote servers for it so an interrupted stream can still be metered exactly.
    continuous_usage_stats: bool | None = None


class SamplingFields(SafeText):
    """Fields shared by completions and chat completions (no NUL anywhere: `SafeText`)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    temperature: Annotated[Float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[Float, Field(ge=0.0, le=1.0)] | None = None
    n: Annotated[Int, Field(ge=1, le=MAX_N)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Annotated[Int, Field(ge=-(2**63), le=2**63 - 1)] | None = None  # int64, as OpenAI
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, Annotated[Float, Field(ge=-100.0, le=100.0)]] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None  # the ledger column holds 256
    # vLLM extensions, accepted so the gateway can forward them and benchmarks can pin lengths.
    top_k: Annotated[Int, Field(ge=-1, le=INT32_MAX)] | None = None  # planning clamps to vocab
    ignore_eos: bool | None = None
    return_tokens_as_token_ids: bool | None = None

    @classmethod
    def _param_of(cls, loc: Loc) -> str | None:
        return _param_name(loc)

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def logit_bias_ids(self) -> dict[int, float]:
        """`logit_bias` keyed by token id (JSON object keys are strings on the wire)."""
        biases: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                token = int(key)
            except ValueError:
                raise InvalidRequest(
                    f"Invalid key {key!r} in 'logit_bias': keys must be token ids.",
                    param="logit_bias",
                ) from None
            if token < 0:
                raise InvalidRequest(
                    f"Invalid key {key!r} in 'logit_bias': token ids are not negative.",
                    param="logit_bias",
                )
            biases[token] = value
        return biases

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def _check_common(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
            )
        stops = self.stop_list()
        if len(stops) > MAX_STOP:
            raise InvalidRequest(
                f"Invalid 'stop': at most {MAX_STOP} stop sequences are allowed, got {len(stops)}.",
                param="stop",
            )
        if any(not s for s in stops):
            raise InvalidRequest("Invalid 'stop': stop sequences must be non-empty.", param="stop")
        self.logit_bias_ids()


PromptType = str | list[str] | list[TokenId] | list[list[TokenId]]


class CompletionRequest(SamplingFields):
    """`POST /v1/completions`."""

    prompt: PromptType
    max_tokens: Annotated[Int, Field(ge=0, le=INT32_MAX)] | None = None
    logprobs: Annotated[Int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    echo: bool | None = None
    best_of: Annotated[Int, Field(ge=1, le=MAX_N)] | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        self._check_common()
        if self.suffix:
            raise InvalidRequest(
                "The 'suffix' parameter is not supported: the served models do not do "
                "fill-in-the-middle. Remove it, or put the text in 'prompt'.",
                param="suffix",
            )
        self._check_prompt()
        n = self.n or 1
        if self.best_of is not None:
            if self.best_of < n:
                raise InvalidRequest(
                    f"Invalid 'best_of': must be at least n ({n}), got {self.best_of}.",
                    param="best_of",
                )
            if self.stream and self.best_of > 1:
                raise InvalidRequest(
                    "'best_of' cannot be used with 'stream': the best completions are only "
                    "known once all have finished.",
                    param="best_of",
                )
        if self.max_tokens == 0 and not self.echo:
            raise InvalidRequest(
                "Invalid 'max_tokens': must be at least 1 (0 is only allowed with echo).",
                param="max_tokens",
            )
        return self

    def _check_prompt(self) -> None:
        prompt = self.prompt
        if isinstance(prompt, list):
            if not prompt:
                raise InvalidRequest("Invalid 'prompt': the list is empty.", param="prompt")
            if isinstance(prompt[0], list) and any(not p for p in prompt):
                raise InvalidRequest(
                    "Invalid 'prompt': a token list in it is empty.", param="prompt"
                )

    def prompts(self) -> list[str | list[int]]:
        """The prompt as a list of prompts, each a string or a token-id list."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt[0], int):
            return [list(prompt)]
        return list(prompt)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Annotated[Int, Field(ge=1, le=INT32_MAX)] | None = None
    max_completion_tokens: Annotated[Int, Field(ge=1, le=INT32_MAX)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[Int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        self._check_common()
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequest(
                "Invalid 'top_logprobs': requires 'logprobs' to be true.", param="top_logprobs"
            )
        for name in ("tools", "functions"):
            if getattr(self, name):
                raise InvalidRequest(
                    f"The '{name}' parameter is not supported by the served models.", param=name
                )
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise InvalidRequest(
                "Only response_format {'type': 'text'} is supported.", param="response_format"
            )
        return self

    def max_new_tokens(self) -> int | None:
        # max_completion_tokens supersedes the deprecated max_tokens when both are given.
        return self.max_completion_tokens or self.max_tokens

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


RequestT = TypeVar("RequestT", bound=BaseModel)


def parse_body(model: type[RequestT], raw: bytes) -> RequestT:
    """Validate a JSON body, reporting the first problem as an `InvalidRequest`."""
    # The text rule (core.inputs) walks the parsed body only if its bytes could hold a NUL.
    context = TEXT_IS_SAFE if json_text_is_safe(raw) else None
    try:
        return model.model_validate_json(raw, context=context)
    except ValidationError as exc:
        raise _as_invalid_request(exc.errors(include_url=False)[0]) from None


def _as_invalid_request(error: ErrorDetails) -> InvalidRequest:
    kind = error["type"]
    loc = error["loc"]
    if kind == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON "
            f"({error['msg']})."
        )
    if not loc:
        return InvalidRequest("The request body must be a JSON object.")
    param = _param_name(loc)
    if kind == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    if param in _UNION_MESSAGES:
        return InvalidRequest(f"Invalid value for '{param}': {_UNION_MESSAGES[param]}", param=param)
    return InvalidRequest(f"Invalid value for '{param}': {error['msg']}.", param=param)


# pydantic reports only the first union branch's complaint, which misleads for these.
_UNION_MESSAGES = {
    "prompt": "must be a string, a list of strings, a list of token ids (non-negative "
    "integers) or a list of such lists.",
    "stop": "must be a string or a list of at most 4 strings.",
}


def _param_name(loc: tuple[int | str, ...]) -> str:
    """`("messages", 0, "role")` -> `messages[0].role`; union branch tags are dropped."""
    name = str(loc[0])
    if name == "messages" and len(loc) > 1 and isinstance(loc[1], int):
        name = f"messages[{loc[1]}]"
        if len(loc) > 2 and loc[2] in ChatMessage.model_fields:
            name += f".{loc[2]}"
    return name


# ---- response shapes ------------------------------------------------------------------


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[dict[str, int]]


class CompletionLogprobs(TypedDict):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(TypedDict):
    text: str
    index: int
    logprobs: CompletionLogprobs | None
    finish_reason: str | None


class Completion(TypedDict):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None


class TopLogprob(TypedDict):
    token: str
    logprob: float
    bytes: list[int]


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(TypedDict):
    content: list[ChatTokenLogprob]


class ChatMessageOut(TypedDict):
    role: Literal["assistant"]
    content: str


class ChatChoice(TypedDict):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(TypedDict, total=False):
    role: str
    content: str


class ChatChunkChoice(TypedDict):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: str | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None


class ModelCard(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(TypedDict):
    object: Literal["list"]
    data: list[ModelCard]
