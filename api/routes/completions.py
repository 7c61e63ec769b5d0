"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import (
    API_KEY_SECURITY,
    JSON_OR_EVENT_STREAM,
    authenticate_request,
    json_body_openapi,
)
from api.errors import ERROR_RESPONSES
from api.fastpath import RequestRoute
from api.generation.openai_schemas import CompletionRequest
from api.generation.service import GenerationService, RequestContext, read_body

router = APIRouter(tags=["generation"], route_class=RequestRoute, responses=ERROR_RESPONSES)


@router.post(
    "/v1/completions",
    responses=JSON_OR_EVENT_STREAM,
    openapi_extra={**API_KEY_SECURITY, **json_body_openapi(CompletionRequest)},
    response_description="A text_completion object, or an SSE stream of them",
)
async def create_completion(request: Request) -> Response:
    """Complete one or more prompts (OpenAI-compatible, streamed with `stream: true`)."""
    # No FastAPI parameter solving on this hot path (see `api.fastpath`).
    principal = await authenticate_request(request)
    generation: GenerationService = request.app.state.services.generation
    body = await read_body(request, CompletionRequest)
    return await generation.completions(principal, body, RequestContext.of(request))
