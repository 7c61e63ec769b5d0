"""The billing HTTP API: prices (audited), admin reports (JSON/CSV), invoices, own usage."""

from __future__ import annotations

import csv
import datetime as dt
import io

import httpx
import pytest
from sqlalchemy import select

from auth.models import AuditEntry
from billing.ledger import RequestFinish, RequestStart, finish_rows, start_rows
from billing.models import Status
from billing.prices import PriceCreate, set_price
from core.db import create_engine, session_factory, transaction
from tests.access import Developer, admin_headers, onboard_developer

UTC = dt.UTC
NOV = dt.datetime(2026, 11, 3, 10, tzinfo=UTC)
SUMS = ["requests", "prompt_tokens", "completion_tokens", "cost_micros"]


def tiny_cost(completion_tokens: int) -> int:
    """100 prompt tokens at 1000 and `completion_tokens` at 2000 micro-dollars per 1k."""
    return (100 * 1000 + completion_tokens * 2000 + 500) // 1000


async def _usage(url: str, developers: list[Developer]) -> None:
    """Ledger rows for each developer: 3 requests on Nov 3 (tiny) and 1 on Nov 4 (big)."""
    engine = create_engine(url)
    sessions = session_factory(engine)
    try:
        async with transaction(sessions) as session:
            await set_price(session, PriceCreate("tiny", 1000, 2000), now=NOV - dt.timedelta(1))
            for d_index, dev in enumerate(developers):
                for i, (model, day) in enumerate(
                    [("tiny", 0), ("tiny", 0), ("tiny", 0), ("big", 1)]
                ):
                    rid = f"req-{d_index}-{i}"
                    received = NOV + dt.timedelta(days=day, minutes=i)
                    start = RequestStart(rid, dev.account_id, dev.key_id, model, 100, received)
                    await start_rows(session, [start], instance_id="t")
                    await finish_rows(
                        session,
                        [RequestFinish(rid, Status.OK, 100, 10 * (d_index + 1), received)],
                    )
    finally:
        await engine.dispose()


@pytest.fixture
async def two_developers(
    client: httpx.AsyncClient, admin_key: str, migrated_db_url: str
) -> list[Developer]:
    devs = [await onboard_developer(client, admin_key) for _ in range(2)]
    await _usage(migrated_db_url, devs)
    return devs


async def test_prices_are_set_listed_and_audited(
    client: httpx.AsyncClient, admin_key: str, migrated_db_url: str
) -> None:
    future = (dt.datetime.now(UTC) + dt.timedelta(days=1)).isoformat()
    created = await client.post(
        "/admin/prices",
        json={"model": "tiny", "prompt_micros_per_1k": 1500, "completion_micros_per_1k": 2000},
        headers=admin_headers(admin_key),
    )
    assert created.status_code == 201, created.text
    later = await client.post(
        "/admin/prices",
        json={
            "model": "tiny",
            "prompt_micros_per_1k": 900,
            "completion_micros_per_1k": 1000,
            "effective_from": future,
        },
        headers=admin_headers(admin_key),
    )
    assert later.status_code == 201, later.text
    listed = (await client.get("/admin/prices", headers=admin_headers(admin_key))).json()
    assert listed["object"] == "list"
    assert [p["prompt_micros_per_1k"] for p in listed["data"]] == [1500, 900]
    assert listed["data"][0]["id"] == created.json()["id"]
    engine = create_engine(migrated_db_url)
    try:
        async with session_factory(engine)() as session:
            entries = (
                await session.scalars(select(AuditEntry).where(AuditEntry.action == "prices.set"))
            ).all()
    finally:
        await engine.dispose()
    assert [(e.target, e.details["prompt_micros_per_1k"]) for e in entries] == [
        ("tiny", 1500),
        ("tiny", 900),
    ]
    assert all(e.actor.startswith("admin:") for e in entries)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny", "prompt_micros_per_1k": 1.5, "completion_micros_per_1k": 1},
         "prompt_micros_per_1k"),
        ({"model": "tiny", "prompt_micros_per_1k": -1, "completion_micros_per_1k": 1},
         "prompt_micros_per_1k"),
        ({"model": "tiny", "prompt_micros_per_1k": 1}, "completion_micros_per_1k"),
        ({"model": "", "prompt_micros_per_1k": 1, "completion_micros_per_1k": 1}, "model"),
        ({"model": "tiny", "prompt_micros_per_1k": 1, "completion_micros_per_1k": 1,
          "effective_from": "2020-01-01T00:00:00Z"}, "effective_from"),
        ({"model": "tiny", "prompt_micros_per_1k": 1, "completion_micros_per_1k": 1,
          "effective_from": "2099-01-01T00:00:00"}, "effective_from"),
    ],
)  # fmt: skip
async def test_bad_prices_are_400(
    client: httpx.AsyncClient, admin_key: str, body: dict[str, object], param: str
) -> None:
    response = await client.post("/admin/prices", json=body, headers=admin_headers(admin_key))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_admin_endpoints_refuse_developers(
    client: httpx.AsyncClient, developer: Developer
) -> None:
    for path in ("/admin/prices", "/admin/reports/usage?start=2026-11-01&end=2026-12-01"):
        assert (await client.get(path, headers=developer.headers)).status_code == 403
        assert (await client.get(path)).status_code == 401
    assert (await client.get("/v1/usage?start=2026-11-01&end=2026-12-01")).status_code == 401


async def test_usage_report_json_and_csv(
    client: httpx.AsyncClient, admin_key: str, two_developers: list[Developer]
) -> None:
    query = "start=2026-11-01&end=2026-12-01&group_by=account,model,day"
    body = (
        await client.get(f"/admin/reports/usage?{query}", headers=admin_headers(admin_key))
    ).json()
    assert body["object"] == "list"
    first, second = two_developers
    expected = sorted(
        [
            {"account_id": d.account_id, "model": m, "day": day, "requests": n,
             "prompt_tokens": 100 * n, "completion_tokens": 10 * (i + 1) * n,
             "cost_micros": n * (tiny_cost(10 * (i + 1)) if m == "tiny" else 0)}
            for i, d in enumerate((first, second))
            for m, day, n in (("big", "2026-11-04", 1), ("tiny", "2026-11-03", 3))
        ],
        key=lambda r: (r["account_id"], r["model"], r["day"]),
    )  # fmt: skip
    assert body["data"] == expected
    as_csv = await client.get(
        f"/admin/reports/usage?{query}&format=csv", headers=admin_headers(admin_key)
    )
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(parsed[0]) == ["account_id", "model", "day", *SUMS]
    assert [{k: str(v) for k, v in row.items()} for row in expected] == parsed
    month = await client.get(
        "/admin/reports/usage?start=2026-11-01&end=2026-12-01&group_by=month",
        headers=admin_headers(admin_key),
    )
    assert month.json()["data"] == [
        {"month": "2026-11", "requests": 8, "prompt_tokens": 800, "completion_tokens": 120,
         "cost_micros": 3 * 120 + 3 * 140}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("start=2026-11-05&end=2026-11-01", "end"),
        ("start=2026-11-01&end=2026-11-01", "end"),
        ("end=2026-11-01", "start"),
        ("start=2026-11-01&end=2026-12-01&group_by=account,nope", "group_by"),
        ("start=2026-11-01&end=2026-12-01&format=xml", "format"),
        ("start=yesterday&end=2026-12-01", "start"),
    ],
)
async def test_bad_report_queries_are_400(
    client: httpx.AsyncClient, admin_key: str, developer: Developer, query: str, param: str
) -> None:
    for path, headers in (
        ("/admin/reports/usage", admin_headers(admin_key)),
        ("/v1/usage", developer.headers),
    ):
        response = await client.get(f"{path}?{query}", headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param


async def test_invoice(
    client: httpx.AsyncClient, admin_key: str, two_developers: list[Developer]
) -> None:
    dev = two_developers[1]
    response = await client.get(
        f"/admin/reports/invoice?account={dev.account_id}&month=2026-11",
        headers=admin_headers(admin_key),
    )
    assert response.status_code == 200, response.text
    bill = response.json()
    assert (bill["object"], bill["account_id"], bill["month"]) == (
        "invoice",
        dev.account_id,
        "2026-11",
    )
    assert [line["model"] for line in bill["lines"]] == ["big", "tiny"]
    tiny = bill["lines"][1]
    assert (tiny["requests"], tiny["cost_micros"]) == (3, 3 * 140)
    assert [p["prompt_micros_per_1k"] for p in tiny["prices"]] == [1000]
    assert bill["lines"][0]["prices"] == [
        {"price_id": None, "prompt_micros_per_1k": 0, "completion_micros_per_1k": 0,
         "effective_from": None, "requests": 1, "prompt_tokens": 100, "completion_tokens": 20,
         "cost_micros": 0}
    ]  # fmt: skip
    assert bill["total"] == {
        "requests": 4, "prompt_tokens": 400, "completion_tokens": 80, "cost_micros": 420
    }  # fmt: skip
    for query, status, param in (
        ("account=acct_nope&month=2026-11", 404, "account_id"),
        (f"account={dev.account_id}&month=2026-13", 400, "month"),
        (f"account={dev.account_id}", 400, "month"),
        ("month=2026-11", 400, "account"),
    ):
        bad = await client.get(f"/admin/reports/invoice?{query}", headers=admin_headers(admin_key))
        assert bad.status_code == status, bad.text
        assert bad.json()["error"]["param"] == param


async def test_developer_sees_only_own_usage(
    client: httpx.AsyncClient, two_developers: list[Developer]
) -> None:
    first, second = two_developers
    for dev, completion in ((first, 10), (second, 20)):
        response = await client.get(
            "/v1/usage?start=2026-11-01&end=2026-12-01&group_by=account,key",
            headers=dev.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"] == [
            {"account_id": dev.account_id, "key_id": dev.key_id, "requests": 4,
             "prompt_tokens": 400, "completion_tokens": 4 * completion,
             "cost_micros": 3 * ((100_000 + completion * 2000 + 500) // 1000)}
        ]  # fmt: skip
    as_csv = await client.get(
        "/v1/usage?start=2026-11-01&end=2026-12-01&format=csv", headers=first.headers
    )
    assert list(csv.reader(io.StringIO(as_csv.text))) == [
        ["requests", "prompt_tokens", "completion_tokens", "cost_micros"],
        ["4", "400", "40", "360"],
    ]
