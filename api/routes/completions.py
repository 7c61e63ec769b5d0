"""`POST /v1/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import API_KEY_SECURITY, authenticate_request
from api.fastpath import RequestRoute
from api.generation.openai_schemas import CompletionRequest
from api.generation.service import GenerationService, RequestContext, read_body

router = APIRouter(tags=["generation"], route_class=RequestRoute)


@router.post(
    "/v1/completions",
    openapi_extra={
        **API_KEY_SECURITY,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": CompletionRequest.model_json_schema()}},
        },
    },
    response_description="A text_completion object, or an SSE stream of them",
)
async def create_completion(request: Request) -> Response:
    """Complete one or more prompts (OpenAI-compatible, streamed with `stream: true`)."""
    # No FastAPI parameter solving on this hot path (see `api.fastpath`).
    principal = await authenticate_request(request)
    generation: GenerationService = request.app.state.services.generation
    body = await read_body(request, CompletionRequest)
    return await generation.completions(principal, body, RequestContext.of(request))
