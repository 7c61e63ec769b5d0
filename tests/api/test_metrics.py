"""`GET /metrics`: admin-only Prometheus text with this app's own counters."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.access import Developer, admin_headers
from tests.api.test_waitlist import assert_error


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_need_the_admin_key(client: httpx.AsyncClient, developer: Developer) -> None:
    assert_error(await client.get("/metrics"), 401, code="invalid_api_key")
    assert_error(await client.get("/metrics", headers=developer.headers), 403)


async def test_metrics_count_responses_and_limiter_decisions(
    client: httpx.AsyncClient, admin_key: str, developer: Developer
) -> None:
    before = samples((await client.get("/metrics", headers=admin_headers(admin_key))).text)
    for _ in range(3):
        assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/nope")).status_code == 404
    completion = await client.post(
        "/v1/completions",
        json={"model": "tiny", "prompt": "hi", "max_tokens": 1},
        headers=developer.headers,
    )
    assert completion.status_code == 200, completion.text
    response = await client.get("/metrics", headers=admin_headers(admin_key))
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    # The first /metrics response itself counts as one more 200.
    assert grew("sluicegate_http_responses_total", status="200") == 3 + 1 + 1
    assert grew("sluicegate_http_responses_total", status="404") == 1
    assert grew("sluicegate_ratelimit_decisions_total", outcome="admitted", limit="") == 1
