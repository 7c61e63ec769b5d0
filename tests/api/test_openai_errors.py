"""Every bad input gets docs/WIRE.md's JSON error with the right status, through the SDK too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from api.errors import status_of
from api.generation.service import GenerationService
from backends.catalog import GatewayConfig, LocalBackendSpec, ModelSpec
from core.errors import BackendUnavailable
from tests.access import onboard_developer
from tests.api.openai_support import Gateway, admin, live_gateway, local_model_config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Gateway]:
    with live_gateway(tmp_path_factory.mktemp("gw"), local_model_config(tiny_model_dir)) as gw:
        yield gw


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {gateway.key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as c:
        yield c


def assert_error(response: httpx.Response, status: int, param: str | None, code: Any = ...) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not ...:
        assert error["code"] == code


OK = {"model": "tiny", "prompt": "hello", "max_tokens": 2}

BAD_COMPLETIONS = [
    ({**OK, "prompt": []}, "prompt"),
    ({**OK, "prompt": [[]]}, "prompt"),
    ({**OK, "prompt": [1, "a"]}, "prompt"),
    ({**OK, "prompt": [-1]}, "prompt"),
    ({**OK, "prompt": [10**9]}, "prompt"),  # outside the vocabulary
    ({**OK, "n": 1000}, "n"),
    ({**OK, "n": 0}, "n"),
    ({**OK, "n": True}, "n"),
    ({**OK, "seed": 2**70}, "seed"),  # seeds are int64, as OpenAI's
    ({**OK, "n": 3, "best_of": 2}, "best_of"),
    ({**OK, "best_of": 2, "stream": True}, "best_of"),
    ({**OK, "logprobs": 6}, "logprobs"),
    ({**OK, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({**OK, "stop": 5}, "stop"),
    ({**OK, "temperature": 2.5}, "temperature"),
    ({**OK, "temperature": "hot"}, "temperature"),
    ({**OK, "top_p": 1.5}, "top_p"),
    ({**OK, "presence_penalty": -3}, "presence_penalty"),
    ({**OK, "frequency_penalty": 2.1}, "frequency_penalty"),
    ({**OK, "logit_bias": {"abc": 1}}, "logit_bias"),
    ({**OK, "logit_bias": {"5": 101}}, "logit_bias"),
    ({**OK, "logit_bias": {"99999999": 1}}, "logit_bias"),
    ({**OK, "max_tokens": -1}, "max_tokens"),
    ({**OK, "max_tokens": 0}, "max_tokens"),  # 0 only with echo
    ({**OK, "suffix": "and then"}, "suffix"),
    ({**OK, "user": "u" * 257}, "user"),
    ({**OK, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "hello"}, "model"),
    ({"model": "tiny"}, "prompt"),
]


@pytest.mark.parametrize(("body", "param"), BAD_COMPLETIONS)
def test_bad_completion_parameters_are_400_naming_the_param(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    assert_error(http.post("/v1/completions", json=body), 400, param)


BAD_CHATS = [
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "tiny", "messages": [{"role": "developer", "content": "x"}]}, "messages"),
    (
        {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
        "top_logprobs",
    ),
    (
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "x"}],
            "logprobs": True,
            "top_logprobs": 21,
        },
        "top_logprobs",
    ),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, "tools"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CHATS)
def test_bad_chat_parameters_are_400_naming_the_param(
    http: httpx.Client, body: dict[str, Any], param: str
) -> None:
    assert_error(http.post("/v1/chat/completions", json=body), 400, param)


def test_malformed_json_and_wrong_content_type_are_400(http: httpx.Client) -> None:
    broken = http.post(
        "/v1/completions",
        content=b'{"model": "tiny", "prompt": ',
        headers={"content-type": "application/json"},
    )
    assert_error(broken, 400, None)
    not_object = http.post("/v1/completions", json=["tiny"])
    assert_error(not_object, 400, None)
    form = http.post("/v1/completions", data={"model": "tiny", "prompt": "hi"})
    assert_error(form, 400, None)
    assert "Content-Type" in form.json()["error"]["message"]


def test_context_length_is_checked_before_generating(http: httpx.Client) -> None:
    long_prompt = list(range(5, 1005))  # 1000 tokens in a 1024-token context
    response = http.post(
        "/v1/completions", json={"model": "tiny", "prompt": long_prompt, "max_tokens": 100}
    )
    assert_error(response, 400, "prompt", "context_length_exceeded")
    assert "1024" in response.json()["error"]["message"]
    chat = http.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "word " * 1200}]},
    )
    assert_error(chat, 400, "messages", "context_length_exceeded")


def test_sdk_raises_bad_request_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt="x", logprobs=6)
    assert raised.value.param == "logprobs"
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="tiny", prompt=[0] * 1020, max_tokens=10)
    assert raised.value.code == "context_length_exceeded"


def test_unknown_model_and_out_of_scope_model_are_404(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.completions.create(model="gpt-17", prompt="x")
    assert raised.value.code == "model_not_found"
    scoped = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.scoped_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        scoped.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    assert raised.value.code == "model_not_found"


def test_bad_or_missing_key_is_401(gateway: Gateway) -> None:
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-not-a-real-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        bad.completions.create(model="tiny", prompt="x")
    assert raised.value.code == "invalid_api_key"
    missing = httpx.post(f"{gateway.url}/v1/completions", json=OK)
    assert_error(missing, 401, None, "invalid_api_key")
    for path in ("/v1/completions", "/v1/chat/completions"):
        for header in ("Basic dXNlcjpwYXNz", "Bearer", gateway.key):
            refused = httpx.post(f"{gateway.url}{path}", json=OK, headers={"Authorization": header})
            assert_error(refused, 401, None, "invalid_api_key")
    # The scheme is case-insensitive (RFC 9110), as FastAPI's HTTPBearer reads it elsewhere.
    lower = {"Authorization": f"bearer {gateway.key}"}
    assert httpx.post(f"{gateway.url}/v1/completions", json=OK, headers=lower).status_code == 200


def test_openapi_shows_the_generation_routes_need_a_key(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models"):
        operation = next(iter(spec["paths"][path].values()))
        [requirement] = operation["security"]
        [name] = requirement
        assert (schemes[name]["type"], schemes[name]["scheme"]) == ("http", "bearer")


async def test_suspended_account_is_403(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        developer = await onboard_developer(http, gateway.admin_key, tier="scale")
        suspended = await http.patch(
            f"/admin/accounts/{developer.account_id}",
            json={"status": "suspended"},
            headers=admin(gateway),
        )
        assert suspended.status_code == 200, suspended.text
    sdk = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=developer.key, max_retries=0)
    async with sdk:
        with pytest.raises(openai.PermissionDeniedError):
            await sdk.completions.create(model="tiny", prompt="x", max_tokens=1)


async def test_a_model_that_cannot_load_is_503_not_500(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    local = LocalBackendSpec(type="local", model=str(missing))
    service = GenerationService(GatewayConfig(models=[ModelSpec(id="tiny", backends=[local])]))
    with pytest.raises(BackendUnavailable):
        await service.start()
    assert status_of(BackendUnavailable("x")) == 503
