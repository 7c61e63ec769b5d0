"""Inputs that reached the database or the engine unchecked (issue #11, items 1, 2, 4-7, 9).

Each case was a 500 (or a 503 for everyone) on `main`; every one is now a 400 in OpenAI's
shape, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from api.generation.openai_schemas import CompletionRequest
from api.generation.planning import sampling_params
from core.config import Settings
from tests.access import Developer, admin_headers
from tests.api.test_limits import gateway_config
from tests.api.test_waitlist import APPLICANT, apply, assert_error, bearer

NUL = "evil\u0000"
LONE_SURROGATE = "evil\ud800"
FAR_FUTURE_WEST = "9999-12-31T23:59:59-14:00"  # year 10000 in UTC
FAR_PAST_EAST = "0001-01-01T00:00:00+14:00"  # year 0 in UTC


@pytest.fixture
def app_settings(
    migrated_db_url: str, admin_key: str, tmp_path: Path, tiny_model_dir: Path
) -> Settings:
    """The default test app, serving `tiny` from the session's prebuilt checkpoint."""
    return Settings(
        database_url=migrated_db_url,
        redis_url=None,
        admin_key=SecretStr(admin_key),
        var_dir=tmp_path / "var",
        config_path=gateway_config(tiny_model_dir, tmp_path),
        environment="development",
    )


async def send_json(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any
) -> httpx.Response:
    """`body` as JSON with every non-ASCII character escaped (httpx's `json=` cannot send a lone
    surrogate: it encodes to UTF-8 first)."""
    headers = {**headers, "content-type": "application/json"}
    return await client.request(method, url, headers=headers, content=json.dumps(body).encode())


# --- one string rule: body strings ----------------------------------------------------------


def body_cases(bad: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, body, param) for a body string that is stored or looked up."""
    return [
        ("POST", "/v1/waitlist", {**APPLICANT, "name": bad}, "name"),
        ("POST", "/v1/waitlist", {**APPLICANT, "organization": bad}, "organization"),
        ("POST", "/v1/waitlist", {**APPLICANT, "use_case": bad * 3}, "use_case"),
        ("POST", "/v1/keys", {"name": bad}, "name"),
        ("POST", "/v1/keys", {"allowed_models": ["tiny", bad]}, "allowed_models[1]"),
        (
            "POST",
            "/admin/prices",
            {"model": bad, "prompt_micros_per_1k": 1, "completion_micros_per_1k": 1},
            "model",
        ),
        ("POST", "/admin/waitlist/{application}/reject", {"reason": bad}, "reason"),
    ]


@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["nul", "lone-surrogate"])
async def test_nul_and_lone_surrogates_in_body_strings_are_400(
    client: httpx.AsyncClient, developer: Developer, admin_key: str, bad: str
) -> None:
    application = await apply(client, email="other@example.com")
    for method, path, body, param in body_cases(bad):
        headers = admin_headers(admin_key) if path.startswith("/admin") else developer.headers
        url = path.format(application=application["id"])
        response = await send_json(client, method, url, headers, body)
        assert_error(response, 400, param=param)
    # Nothing was stored: the application is still pending.
    status = await client.get(
        f"/v1/waitlist/{application['id']}", headers=bearer(application["claim_token"])
    )
    assert status.json()["status"] == "pending"


@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["nul", "lone-surrogate"])
async def test_generation_strings_follow_the_same_rule(
    client: httpx.AsyncClient, developer: Developer, bad: str
) -> None:
    """`user` is written to the ledger: a NUL in it failed a whole group-commit batch.

    (The generation routes parse JSON with pydantic's own parser, which already refuses a
    lone surrogate as invalid JSON, so that 400 names no field.)"""
    ok = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}
    for path, body, param in (
        ("/v1/completions", {**ok, "user": bad}, "user"),
        ("/v1/completions", {**ok, "prompt": ["fine", bad]}, "prompt"),
        ("/v1/completions", {**ok, "stop": bad}, "stop"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": bad}], "max_tokens": 2},
            "messages[0].content",
        ),
    ):
        response = await send_json(client, "POST", path, developer.headers, body)
        assert_error(response, 400, param=param if bad == NUL else None)
    fine = await client.post("/v1/completions", headers=developer.headers, json=ok)
    assert fine.status_code == 200, fine.text


# --- one string rule: path and query ---------------------------------------------------------

NUL_PATHS = [
    ("GET", "/v1/waitlist/key_%00abc"),
    ("POST", "/v1/waitlist/wl_%00/claim"),
    ("DELETE", "/v1/keys/key_%00abc"),
    ("POST", "/admin/waitlist/wl_%00/approve"),
    ("POST", "/admin/waitlist/wl_%00/reject"),
    ("GET", "/admin/accounts/acct_%00"),
    ("PATCH", "/admin/accounts/acct_%00"),
    ("GET", "/admin/accounts/acct_%00/keys"),
    ("DELETE", "/admin/keys/key_%00"),
    ("PATCH", "/admin/keys/key_%00/limits"),
    ("PATCH", "/admin/tiers/free%00"),
    ("GET", "/v1/models/tiny%00"),
]
NUL_QUERIES = [
    ("/admin/accounts?tier=free%00", "tier"),
    ("/admin/audit?target=x%00", "target"),
    ("/admin/audit?actor=%00", "actor"),
    ("/admin/reports/invoice?account=acct_%00&month=2026-11", "account"),
    ("/admin/prices?model=tiny%00", "model"),
    ("/admin/waitlist?status=pending%00", "status"),
]


async def test_nul_in_a_path_or_query_is_400(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    for method, path in NUL_PATHS:
        headers = admin_headers(admin_key) if path.startswith("/admin") else developer.headers
        response = await client.request(method, path, headers=headers, json={"tier": "free"})
        assert_error(response, 400, code="invalid_value")
    for url, param in NUL_QUERIES:
        response = await client.get(url, headers=admin_headers(admin_key))
        assert_error(response, 400, param=param, code="invalid_value")


async def test_a_query_parameter_given_twice_is_400(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    """Found by the fuzz run: `?model=a&model=b` silently meant `b`."""
    for url, headers in (
        ("/admin/prices?model=a&model=b", admin_headers(admin_key)),
        ("/admin/waitlist?limit=1&offset=0&limit=2", admin_headers(admin_key)),
        ("/v1/usage?start=2026-11-01&end=2026-12-01&format=csv&format=json", developer.headers),
    ):
        response = await client.get(url, headers=headers)
        error = assert_error(response, 400, code="invalid_value")
        assert "more than once" in error["message"]
    once = await client.get("/admin/prices?model=a", headers=admin_headers(admin_key))
    assert once.status_code == 200, once.text


# --- datetimes, offsets, lengths -------------------------------------------------------------


async def test_datetimes_that_do_not_survive_utc_conversion_are_400(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    for moment in (FAR_FUTURE_WEST, FAR_PAST_EAST):
        key = await client.post("/v1/keys", json={"expires_at": moment}, headers=developer.headers)
        assert_error(key, 400, param="expires_at")
        price = await client.post(
            "/admin/prices",
            json={
                "model": "tiny",
                "prompt_micros_per_1k": 1,
                "completion_micros_per_1k": 1,
                "effective_from": moment,
            },
            headers=admin_headers(admin_key),
        )
        assert_error(price, 400, param="effective_from")
    for month in ("9999-12", "0000-01"):
        invoice = await client.get(
            f"/admin/reports/invoice?account={developer.account_id}&month={month}",
            headers=admin_headers(admin_key),
        )
        assert_error(invoice, 400, param="month")
    for query, param in (
        ("start=2026-01-01&end=9999-12-31", "end"),
        ("start=0001-01-01&end=0001-01-02", "start"),
    ):
        report = await client.get(f"/admin/reports/usage?{query}", headers=admin_headers(admin_key))
        assert_error(report, 400, param=param)


@pytest.mark.parametrize("path", ["/admin/waitlist", "/admin/accounts", "/admin/audit"])
async def test_offsets_and_limits_past_64_bits_are_400(
    client: httpx.AsyncClient, admin_key: str, path: str
) -> None:
    for query, param in (
        (f"offset={2**63}", "offset"),
        (f"offset={10**30}", "offset"),
        (f"limit={2**63}", "limit"),
    ):
        response = await client.get(f"{path}?{query}", headers=admin_headers(admin_key))
        assert_error(response, 400, param=param)


async def test_price_model_is_bounded_by_every_column_it_is_written_to(
    client: httpx.AsyncClient, admin_key: str
) -> None:
    """The model name is also the audit row's `target` (80 characters)."""

    def price(model: str) -> dict[str, Any]:
        return {"model": model, "prompt_micros_per_1k": 1, "completion_micros_per_1k": 2}

    for length in (81, 200):
        too_long = await client.post(
            "/admin/prices", json=price("m" * length), headers=admin_headers(admin_key)
        )
        assert_error(too_long, 400, param="model")
    longest = await client.post(
        "/admin/prices", json=price("é" * 80), headers=admin_headers(admin_key)
    )
    assert longest.status_code == 201, longest.text


# --- small ones (item 9) ---------------------------------------------------------------------


async def test_numbers_in_strings_are_refused(
    client: httpx.AsyncClient, developer: Developer, admin_key: str
) -> None:
    ok = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}
    for field in ("top_p", "temperature", "presence_penalty", "frequency_penalty"):
        response = await client.post(
            "/v1/completions", json={**ok, field: "0.5"}, headers=developer.headers
        )
        assert_error(response, 400, param=field)
    bias = await client.post(
        "/v1/completions", json={**ok, "logit_bias": {"5": "1"}}, headers=developer.headers
    )
    assert_error(bias, 400, param="logit_bias")
    limits = {
        "requests_per_minute": "5",
        "tokens_per_minute": 10,
        "max_concurrent_requests": 1,
        "tokens_per_month": 10,
    }
    admin = admin_headers(admin_key)
    created = await client.post("/admin/tiers", json={"name": "t1", **limits}, headers=admin)
    assert_error(created, 400, param="requests_per_minute")
    for path in ("/admin/tiers/free", f"/admin/keys/{developer.key_id}/limits"):
        patched = await client.patch(path, json={"requests_per_minute": "5"}, headers=admin)
        assert_error(patched, 400, param="requests_per_minute")
    whole = await client.post("/v1/completions", json={**ok, "top_p": 1}, headers=developer.headers)
    assert whole.status_code == 200, whole.text  # a JSON integer is still a number


async def test_unknown_application_and_wrong_token_look_the_same(
    client: httpx.AsyncClient,
) -> None:
    """No existence oracle: an unknown id and a known id with a wrong token get one answer."""
    known = await apply(client)
    for method, suffix in (("GET", ""), ("POST", "/claim")):
        wrong_token = await client.request(
            method, f"/v1/waitlist/{known['id']}{suffix}", headers=bearer("wlc-wrong")
        )
        unknown_id = await client.request(
            method, "/v1/waitlist/wl_000000000000000000000000" + suffix, headers=bearer("wlc-x")
        )
        assert_error(wrong_token, 401, code="invalid_claim_token")
        assert unknown_id.status_code == wrong_token.status_code
        assert unknown_id.json() == wrong_token.json()


# --- sampling parameters (item 1, API side) --------------------------------------------------


async def test_sampling_integers_past_their_bounds_are_400(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    """`top_k` = 2**63 failed the whole engine step for every tenant in the batch."""
    ok = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}
    for field, value in (
        ("top_k", 2**63),
        ("top_k", 2**31),
        ("max_tokens", 2**63),
        ("prompt", [2**63]),
        ("logit_bias", {str(2**63): 1}),
    ):
        response = await client.post(
            "/v1/completions", json={**ok, field: value}, headers=developer.headers
        )
        assert_error(response, 400, param=field)


async def test_top_k_above_the_vocabulary_is_the_vocabulary(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    ok = {"model": "tiny", "prompt": "Once upon", "max_tokens": 8, "seed": 7, "temperature": 1.5}
    texts = set()
    for top_k in (-1, 0, 2**31 - 1):
        response = await client.post(
            "/v1/completions", json={**ok, "top_k": top_k}, headers=developer.headers
        )
        assert response.status_code == 200, response.text
        texts.add(response.json()["choices"][0]["text"])
    assert len(texts) == 1  # no top-k, and top-k over the whole vocabulary, sample alike


@pytest.mark.parametrize(("asked", "sent"), [(5000, 100), (100, 100), (99, 99), (-1, 0), (0, 0)])
def test_top_k_is_clamped_to_the_vocabulary_before_any_backend_sees_it(
    asked: int, sent: int
) -> None:
    """Remote servers (vLLM) get the clamped value too, not one past their vocabulary."""
    body = CompletionRequest.model_validate({"model": "m", "prompt": "x", "top_k": asked})
    params = sampling_params(
        body, n=1, max_tokens=2, logprobs=None, prompt_logprobs=None, vocab_size=100
    )
    assert params.top_k == sent
