"""The admin console's actions over HTTP: each lands where the admin API would put it."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from api.console.paging import PAGE_ROWS
from auth import operations
from core.db import transaction
from tests.access import Developer, admin_headers
from tests.console.conftest import Browser
from tests.console.pages import notice, sign_in_admin, sign_in_developer, submit


async def apply(browser: httpx.AsyncClient, email: str, use_case: str) -> None:
    fields = {"email": email, "name": email.split("@")[0], "use_case": use_case}
    applied = await submit(browser, "/console/apply", "/console/apply", fields)
    assert applied.url.path == "/console/status", applied.text


async def test_the_queue_filters_searches_and_decides_several_at_once(
    client: httpx.AsyncClient, browsers: Browser, admin_key: str
) -> None:
    for n, use in enumerate(("weather summaries", "legal drafting", "weather alerts")):
        await apply(browsers(), f"applicant{n}@example.com", f"I will build {use} for my team.")
    await sign_in_admin(client, admin_key)
    searched = await client.get("/console/admin/waitlist", params={"q": "WEATHER"})
    ids = re.findall(r'data-application="([^"]+)"', searched.text)
    assert len(ids) == 2 and "legal drafting" not in searched.text
    decided = await submit(
        client,
        "/console/admin/waitlist",
        "/console/admin/waitlist/decide",
        {"ids": ids, "action": "approve", "tier": "free"},
    )
    assert notice(decided.text) == "Approved 2 application(s)."
    nothing = await submit(
        client, "/console/admin/waitlist", "/console/admin/waitlist/decide", {"action": "reject"}
    )
    assert notice(nothing.text) == "Tick at least one application first."
    pending = await client.get("/console/admin/waitlist")
    assert len(re.findall(r'data-application="', pending.text)) == 1
    approved = await client.get("/console/admin/waitlist", params={"status": "approved"})
    assert all(i in approved.text for i in ids)
    entries = (await client.get("/admin/audit", headers=admin_headers(admin_key))).json()["data"]
    approvals = [e for e in entries if e["action"] == "waitlist.approve"]
    assert {e["target"] for e in approvals} == set(ids)
    assert all(e["details"]["admin_name"] == "SLUICEGATE_ADMIN_KEY" for e in approvals)
    audit_page = await client.get("/console/admin/audit", params={"action": "waitlist.approve"})
    assert audit_page.text.count("waitlist.approve") >= 2


async def test_reject_with_a_reason_the_applicant_then_sees(
    client: httpx.AsyncClient, browsers: Browser, admin_key: str
) -> None:
    applicant = browsers()
    await apply(applicant, "nope@example.com", "Something the operator will turn down.")
    await sign_in_admin(client, admin_key)
    queue = await client.get("/console/admin/waitlist")
    (application_id,) = re.findall(r'data-application="([^"]+)"', queue.text)
    await submit(
        client,
        "/console/admin/waitlist",
        "/console/admin/waitlist/decide",
        {"one": f"reject:{application_id}", "reason": "Capacity is full <this month>."},
    )
    status = await applicant.get("/console/status")
    assert "rejected" in status.text and "Capacity is full &lt;this month&gt;." in status.text


async def test_account_page_actions(
    client: httpx.AsyncClient, browsers: Browser, admin_key: str, developer: Developer
) -> None:
    await sign_in_admin(client, admin_key)
    page = f"/console/admin/accounts/{developer.account_id}"
    found = await client.get("/console/admin/accounts", params={"q": developer.email[:8]})
    assert developer.account_id in found.text
    shown = await client.get(page)
    assert developer.key[:11] in shown.text and developer.key not in shown.text
    capped = await submit(
        client, page, f"/console/admin/keys/{developer.key_id}/limits", {"requests_per_minute": "7"}
    )
    assert notice(capped.text).startswith("Limits of")  # type: ignore[union-attr]
    limits = await client.get("/v1/models", headers=developer.headers)
    assert limits.status_code == 200
    suspended = await submit(client, page, page, {"status": "suspended"})
    assert 'id="account-status">suspended' in suspended.text
    assert (await client.get("/v1/models", headers=developer.headers)).status_code == 403
    reinstated = await submit(client, page, page, {"status": "active"})
    assert 'id="account-status">active' in reinstated.text
    dev_browser = browsers()
    await sign_in_developer(dev_browser, developer.key)
    revoked = await submit(client, page, f"/console/admin/keys/{developer.key_id}/revoke", {})
    assert "is revoked" in (notice(revoked.text) or "")
    assert (
        await dev_browser.get("/console/keys", follow_redirects=True)
    ).url.path == "/console/signin"


async def test_tiers_prices_reports_and_invoice(
    client: httpx.AsyncClient, admin_key: str, developer: Developer
) -> None:
    await sign_in_admin(client, admin_key)
    created = await submit(
        client,
        "/console/admin/tiers",
        "/console/admin/tiers",
        {
            "name": "team",
            "requests_per_minute": "100",
            "tokens_per_minute": "50,000",
            "max_concurrent_requests": "4",
            "tokens_per_month": "1000000",
        },
    )
    assert notice(created.text) == "Tier team created.", created.text
    edited = await submit(
        client, "/console/admin/tiers", "/console/admin/tiers/team", {"tokens_per_month": "2000000"}
    )
    assert 'value="2000000"' in edited.text
    bad = await submit(
        client, "/console/admin/tiers", "/console/admin/tiers/team", {"tokens_per_month": "lots"}
    )
    assert "tokens_per_month" in (notice(bad.text) or "")
    priced = await submit(
        client,
        "/console/admin/tiers",
        "/console/admin/prices",
        {"model": "tiny", "prompt_micros_per_1k": "100", "completion_micros_per_1k": "200"},
    )
    assert notice(priced.text) == "Price for tiny added."
    listed = (await client.get("/admin/prices", headers=admin_headers(admin_key))).json()["data"]
    assert [p["prompt_micros_per_1k"] for p in listed] == [100]
    report = await client.get("/console/admin/usage", params={"group_by": "model"})
    assert report.status_code == 200 and "No usage between" in report.text
    csv = await client.get(
        "/console/admin/usage.csv",
        params={"start": "2026-01-01", "end": "2026-02-01", "group_by": "day"},
    )
    assert csv.status_code == 200 and csv.text.startswith("day,requests,")
    assert "attachment" in csv.headers["content-disposition"]
    bad_range = await client.get(
        "/console/admin/usage", params={"start": "2026-02-01", "end": "2026-01-01"}
    )
    assert bad_range.status_code == 400 and "end is before start" in bad_range.text
    bill = await client.get(
        "/console/admin/invoice", params={"account": developer.account_id, "month": "2026-01"}
    )
    assert bill.status_code == 200 and "nothing to bill" in bill.text
    assert (await client.get("/console/admin")).status_code == 200


async def test_long_lists_come_a_page_at_a_time(
    client: httpx.AsyncClient, app: FastAPI, admin_key: str
) -> None:
    async with transaction(app.state.services.sessions) as db:
        for n in range(PAGE_ROWS + 3):
            await operations.apply_to_waitlist(
                db,
                email=f"many{n:03d}@example.com",
                name=f"Applicant {n:03d}",
                use_case="One of many applications.",
                organization=None,
            )
    await sign_in_admin(client, admin_key)
    first = await client.get("/console/admin/waitlist", params={"q": "many"})
    assert first.text.count("data-application=") == PAGE_ROWS
    assert "Applicant 000" in first.text and f"Applicant {PAGE_ROWS:03d}" not in first.text
    following = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert following is not None
    second = await client.get(following.group(1).replace("&amp;", "&"))
    assert second.text.count("data-application=") == 3
    assert f"Applicant {PAGE_ROWS + 2:03d}" in second.text and 'rel="next"' not in second.text
    assert (await client.get("/console/admin/waitlist?offset=-1")).status_code == 400
