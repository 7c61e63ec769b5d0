"""`POST /v1/chat/completions`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.deps import ApiKeyDep
from api.generation import GenerationDep, RequestContext, read_body
from api.openai_schemas import ChatCompletionRequest

router = APIRouter(tags=["generation"])


@router.post(
    "/v1/chat/completions",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}},
        }
    },
    response_description="A chat.completion object, or an SSE stream of chunks",
)
async def create_chat_completion(
    request: Request, principal: ApiKeyDep, generation: GenerationDep
) -> Response:
    """Answer a conversation through the model's chat template (OpenAI-compatible)."""
    body = await read_body(request, ChatCompletionRequest)
    return await generation.chat(principal, body, RequestContext.of(request))
