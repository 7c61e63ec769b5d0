"""`GET /v1/models` and `GET /v1/models/{id}`: the models this key may use."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import ApiKeyDep
from api.errors import ERROR_RESPONSES
from api.generation.openai_schemas import ModelCard, ModelList
from api.generation.service import GenerationDep

router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)


@router.get("/v1/models")
async def list_models(principal: ApiKeyDep, generation: GenerationDep) -> ModelList:
    return ModelList(object="list", data=generation.visible_models(principal))


# `:path` because hub model ids contain a slash (`Qwen/Qwen2.5-0.5B-Instruct`).
@router.get("/v1/models/{model_id:path}")
async def get_model(
    model_id: Annotated[str, Path(max_length=200)], principal: ApiKeyDep, generation: GenerationDep
) -> ModelCard:
    return generation.model_card(principal, model_id)
