"""OpenAI-compatible HTTP server around one engine: what the gateway's remote backends call.

    python -m api.inference_server --model tiny --engine torch --port 8001
    python -m api.inference_server --model var/models/SmolLM2-135M-Instruct.Q4_1.gguf
    python -m api.inference_server --model Qwen/Qwen2.5-7B-Instruct --engine vllm \\
        --tensor-parallel-size 4 --port 8001 --api-key "$UPSTREAM_KEY"

Endpoints: POST /v1/completions (string or token prompts), POST /v1/chat/completions,
GET /v1/models, GET /health (200 while the engine runs), GET /stats (engine counters),
GET /usage/{request_id} (what a recent request used, by its X-Request-Id: a gateway that
abandoned a stream bills what the engine generated; `api.generation.usage_reports`).
It runs the gateway's own request pipeline (`api.generation.service`) over a single in-process
engine, without accounts, limits or metering, and speaks vLLM's extensions the gateway
relies on (`return_tokens_as_token_ids`, `stream_options.continuous_usage_stats`, echo of
prompt logprobs in streams), so a stock `vllm serve` and this server are interchangeable.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import uvicorn
import yaml
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from api.errors import install_error_handlers
from api.generation.openai_schemas import (
    MAX_TOP_LOGPROBS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from api.generation.service import GenerationDep, GenerationService, RequestContext, read_body
from api.generation.usage_reports import UsageReports
from api.middleware import RequestContextMiddleware
from backends.catalog import Deployment, ModelEntry
from backends.local import LocalBackend, open_engine
from backends.router import BackendRouter, RouterSettings
from core.errors import AuthenticationFailed
from inference.checkpoints.hub import default_model_id
from inference.protocol import InferenceEngine
from inference.text.tokenizer import Tokenizer


@dataclass(frozen=True)
class LocalCaller:
    """The server has no accounts: whoever passed the (optional) key may use its model."""

    account_id: str = "local"
    key_id: str = "local"

    def may_use(self, model: str) -> bool:
        return True


@dataclass
class ServerState:
    generation: GenerationService
    engine: InferenceEngine
    backend: LocalBackend
    model_name: str
    usage: UsageReports


async def local_caller(request: Request) -> LocalCaller:
    expected: bytes | None = request.app.state.expected_authorization
    if expected is not None:
        offered = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(offered, expected):
            raise AuthenticationFailed("Incorrect API key provided.")
    return LocalCaller()


CallerDep = Annotated[LocalCaller, Depends(local_caller)]


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.services
    return state


StateDep = Annotated[ServerState, Depends(_state)]
router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request, caller: CallerDep, gen: GenerationDep) -> Response:
    body = await read_body(request, CompletionRequest)
    return await gen.completions(caller, body, RequestContext.of(request))


@router.post("/v1/chat/completions")
async def chat(request: Request, caller: CallerDep, gen: GenerationDep) -> Response:
    body = await read_body(request, ChatCompletionRequest)
    return await gen.chat(caller, body, RequestContext.of(request))


@router.get("/v1/models")
async def models(caller: CallerDep, gen: GenerationDep) -> ModelList:
    return ModelList(object="list", data=gen.visible_models(caller))


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, caller: CallerDep, gen: GenerationDep) -> ModelCard:
    return gen.model_card(caller, model_id)


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
    ok = await state.backend.check_health()
    return JSONResponse({"status": "ok" if ok else "unavailable"}, 200 if ok else 503)


# How long GET /usage waits for a request that is still ending (it notices a closed
# connection within an engine step or two).
USAGE_WAIT_S = 2.0


@router.get("/usage/{request_id}")
async def usage(request_id: str, caller: CallerDep, state: StateDep) -> dict[str, Any]:
    """What a request used, once it has ended (404 if this server does not know it)."""
    report = await state.usage.report(request_id, wait_s=USAGE_WAIT_S)
    return dataclasses.asdict(report)


@router.get("/stats")
async def stats(state: StateDep) -> dict[str, Any]:
    """Engine counters; `outstanding` counts requests this server has in flight."""
    slots = (
        state.generation.router.routes[state.model_name].slots if state.generation.router else []
    )
    outstanding = slots[0].outstanding if slots else 0
    return {**dataclasses.asdict(state.engine.stats()), "outstanding": outstanding}


def create_server_app(
    engine: InferenceEngine,
    *,
    model_name: str,
    api_key: str | None = None,
    max_outstanding: int = 1024,
) -> FastAPI:
    """The server app for `engine` (started and shut down by the app's lifespan)."""
    tokenizer = engine.tokenizer
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError("the server needs the engine's full Tokenizer")
    backend = LocalBackend(engine, name=model_name, max_outstanding=max_outstanding)
    entry = ModelEntry(
        id=model_name, context_length=engine.max_model_len, tokenizer=tokenizer, owned_by="local"
    )
    generation = GenerationService(
        deployment=Deployment(
            models={model_name: entry},
            router=BackendRouter({model_name: [backend]}, RouterSettings(affinity_tokens=0)),
        ),
        max_completion_logprobs=MAX_TOP_LOGPROBS,  # the gateway forwards chat top_logprobs
        meter=(reports := UsageReports()),
    )
    state = ServerState(generation, engine, backend, model_name, reports)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await generation.start()
        try:
            yield
        finally:
            await generation.close()

    app = FastAPI(title="Sluicegate inference server", lifespan=lifespan)
    app.state.services = state
    app.state.expected_authorization = f"Bearer {api_key}".encode() if api_key else None
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=64 * 1024 * 1024)
    app.include_router(router)
    return app


# ---- command line -----------------------------------------------------------------------

_TORCH_FLAGS = ("block_size", "num_kv_blocks", "num_threads")
_SHARED_FLAGS = ("max_model_len", "max_num_seqs", "max_num_batched_tokens")
_VLLM_FLAGS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m api.inference_server", description=__doc__)
    parser.add_argument(
        "--model", default="tiny", help="checkpoint dir, .gguf file, `tiny` or a hub id"
    )
    parser.add_argument("--engine", choices=("torch", "vllm"), default="torch")
    parser.add_argument(
        "--served-model-name",
        help="the model id clients use (default: --model, a .gguf file's stem)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--api-key",
        default=os.environ.get("SLUICEGATE_INFERENCE_API_KEY") or None,
        help="require 'Authorization: Bearer KEY' (default: $SLUICEGATE_INFERENCE_API_KEY)",
    )
    parser.add_argument("--max-outstanding", type=int, default=1024)
    for name in (*_TORCH_FLAGS, *_SHARED_FLAGS, *_VLLM_FLAGS):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)
    parser.add_argument("--dtype", help="float32 | bfloat16 (vLLM: also float16, auto)")
    parser.add_argument("--gpu-memory-utilization", type=float, help="vLLM")
    parser.add_argument(
        "--distributed-executor-backend", choices=("mp", "ray", "uni"), help="vLLM (sharding)"
    )
    parser.add_argument(
        "--enforce-eager", action="store_true", default=None, help="vLLM: no torch.compile"
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other engine option (VALUE parsed as YAML), repeatable",
    )
    return parser.parse_args(argv)


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine's options from the flags; a flag of the other engine is an error."""
    torch_only = _TORCH_FLAGS
    vllm_only = (
        *_VLLM_FLAGS,
        "gpu_memory_utilization",
        "distributed_executor_backend",
        "enforce_eager",
    )
    mine, theirs = (torch_only, vllm_only) if args.engine == "torch" else (vllm_only, torch_only)
    for name in theirs:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise SystemExit(f"{flag} does not apply to --engine {args.engine}")
    names = (*_SHARED_FLAGS, "dtype", *mine)
    options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--option wants KEY=VALUE, got {item!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # The engine loads (and says how long it took) before uvicorn sets up its own logging.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    engine = open_engine(args.model, engine=args.engine, options=engine_options(args))
    name = args.served_model_name or default_model_id(args.model)
    engine.model_name = name
    app = create_server_app(
        engine, model_name=name, api_key=args.api_key, max_outstanding=args.max_outstanding
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
