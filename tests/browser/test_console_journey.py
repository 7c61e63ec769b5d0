"""The whole journey in Chromium: apply -> the operator approves in the console -> the key is
claimed on the status page -> sign in -> create and revoke a key -> a playground answer
streams in -> the usage page shows its tokens -> the operator sees them in the usage report
and the invoice. Then the refusals: CSRF, markup in a use case, a developer on admin pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from core.db import utcnow
from tests.browser.conftest import LiveConsole
from tests.browser.console_page import ConsolePage

pytestmark = pytest.mark.browser

USE_CASE = "Summaries of river-gauge reports for a flood warning service."
XSS_USE_CASE = (
    '<script>window.owned = 1</script><img src=x onerror="window.owned = 2"> '
    "I will build a <b>bold</b> bot."
)


def apply(page: ConsolePage, email: str, use_case: str, *, shoot: bool = False) -> None:
    page.go("/console/apply")
    page.fill("#email", email)
    page.fill("#name", "Ada Lovelace")
    page.fill("#organization", "Analytical Engines Ltd")
    page.fill("#use_case", use_case)
    if shoot:
        page.shoot("portal-apply")
    page.click("form button[type=submit]")
    page.wait_for_path("/console/status")


def admin_sign_in(page: ConsolePage, admin_key: str, *, shoot: bool = False) -> None:
    page.go("/console/admin/signin")
    if shoot:
        page.shoot("admin-signin")
    page.fill("#admin-key", admin_key)
    page.click("form button[type=submit]")
    page.wait_for_path("/console/admin")


def tokens_shown(page: ConsolePage, css: str) -> int:
    return int(page.text(css).replace(",", "") or 0)


def test_the_whole_journey(live_console: LiveConsole, open_browser: Callable[[], object]) -> None:
    dev = ConsolePage(open_browser(), live_console.url)
    admin = ConsolePage(open_browser(), live_console.url)
    dev.go("/console/")
    dev.shoot("portal-home")
    dev.go("/console/docs")
    assert f"{live_console.url}/v1" in dev.text("#base-url")
    dev.shoot("portal-docs")

    apply(dev, "ada@example.com", USE_CASE, shoot=True)
    assert dev.text("#application-status") == "pending"
    dev.shoot("portal-status-pending")

    admin_sign_in(admin, live_console.admin_key, shoot=True)
    assert admin.text("#pending-count") == "1"
    admin.shoot("admin-dashboard")
    admin.go("/console/admin/waitlist")
    assert USE_CASE in admin.body()
    admin.shoot("admin-waitlist")
    admin.click("button[name=one][value^='approve:']")
    admin.wait_until(lambda: "Approved 1 application(s)." in admin.notice())
    admin.go("/console/admin/tiers")
    admin.click("#add-price summary")
    admin.fill("#price-model", "tiny")
    admin.fill("#price-prompt", "150000")
    admin.fill("#price-completion", "600000")
    admin.click("#add-price button[type=submit]")
    admin.wait_until(lambda: "Price for tiny added." in admin.notice())

    dev.go("/console/status")
    assert dev.text("#application-status") == "approved"
    dev.shoot("portal-status-approved")
    dev.click("#claim")
    first_key = dev.text("#new-key")
    assert first_key.startswith("sk-") and "shown only once" in dev.body()
    dev.shoot("portal-first-key")
    dev.click("#signin-with-key")
    dev.wait_for_path("/console/keys")

    dev.fill("#key-name", "ci robot")
    dev.click("#create-key")
    second_key = dev.text("#new-key")
    assert second_key.startswith("sk-") and second_key != first_key
    dev.go("/console/keys")
    row = f"tr[data-key-prefix='{second_key[:11]}']"
    assert "active" in dev.text(row)
    dev.shoot("portal-keys")
    dev.find(f"{row} form button").click()
    dev.driver.switch_to.alert.accept()
    dev.wait_until(lambda: "is revoked" in dev.notice())
    assert "revoked" in dev.text(row)

    dev.go("/console/playground")
    assert dev.find("#pg-key").get_attribute("value") == first_key  # kept in the tab
    dev.fill("#pg-message", "Tell me about rivers.")
    dev.fill("#pg-max-tokens", "24")
    dev.click("#pg-send")
    dev.wait_until(
        lambda: dev.text("#pg-status") in ("Done.",) or "Error" in dev.text("#pg-status")
    )
    assert dev.text("#pg-status") == "Done.", dev.text("#pg-status")
    first_answer = dev.find_all(".turn-assistant .turn-text")[0].text
    assert first_answer.strip()
    total = tokens_shown(dev, "#pg-total-tokens")
    first_prompt = tokens_shown(dev, "#pg-prompt-tokens")
    assert total > first_prompt > 0
    dev.fill("#pg-message", "And about lakes?")  # a second turn carries the first
    dev.click("#pg-send")
    dev.wait_until(lambda: len(dev.find_all(".turn-assistant")) == 2)
    dev.wait_until(
        lambda: dev.text("#pg-status") in ("Done.",) or "Error" in dev.text("#pg-status")
    )
    assert dev.text("#pg-status") == "Done.", dev.text("#pg-status")
    second_prompt = tokens_shown(dev, "#pg-prompt-tokens")
    assert second_prompt > first_prompt + 5  # the whole conversation went up again
    total += tokens_shown(dev, "#pg-total-tokens")
    dev.shoot("portal-playground")

    dev.go("/console/usage")
    assert tokens_shown(dev, "#tokens-used") == total
    owed = dev.text("#invoice-total")
    assert owed.startswith("$") and owed != "$0.000000"
    assert dev.find_all(".chart svg rect.bar")
    dev.shoot("portal-usage")

    month = utcnow().strftime("%Y-%m")
    admin.go("/console/admin/usage?group_by=account")
    table = admin.text("#usage-table")
    assert f" {total:,} " in f" {table} "
    admin.shoot("admin-usage")
    account_id = re.search(r"acct_[0-9a-f]+", table)
    assert account_id is not None
    admin.go(f"/console/admin/accounts/{account_id.group(0)}")
    admin.shoot("admin-account")
    admin.go(f"/console/admin/invoice?account={account_id.group(0)}&month={month}")
    invoiced = tokens_shown(admin, "#invoice-prompt-tokens") + tokens_shown(
        admin, "#invoice-completion-tokens"
    )
    assert invoiced == total
    assert admin.text("#invoice-total") == owed
    admin.shoot("admin-invoice")
    for path, name in (
        ("/console/admin/accounts", "admin-accounts"),
        ("/console/admin/tiers", "admin-tiers"),
        ("/console/admin/audit", "admin-audit"),
    ):
        admin.go(path)
        assert admin.find("h1").text
        admin.shoot(name)
    assert "waitlist.approve" in admin.body()  # the audit page, last visited
    admin.go("/console/admin")
    assert "tiny" in admin.text("#backends") and "healthy" in admin.text("#backends")
    assert admin.text("#requests-today") == "2"
    admin.shoot("admin-dashboard")
    dev.go("/console/signin")
    dev.shoot("portal-signin")
    assert dev.console_problems() == [] and admin.console_problems() == []


def test_a_tampered_csrf_token_is_refused(
    live_console: LiveConsole, open_browser: Callable[[], object]
) -> None:
    page = ConsolePage(open_browser(), live_console.url)
    page.go("/console/apply")
    page.driver.execute_script("document.querySelector('input[name=csrf_token]').value = 'forged'")
    page.fill("#email", "forger@example.com")
    page.fill("#name", "Mallory")
    page.fill("#use_case", "A forged application for the CSRF test.")
    page.click("form button[type=submit]")
    page.wait_until(lambda: "Not allowed here" in page.body())
    assert "security token" in page.body()


def test_markup_in_a_use_case_is_text_and_never_runs(
    live_console: LiveConsole, open_browser: Callable[[], object]
) -> None:
    applicant = ConsolePage(open_browser(), live_console.url)
    apply(applicant, "markup@example.com", XSS_USE_CASE)
    admin = ConsolePage(open_browser(), live_console.url)
    admin_sign_in(admin, live_console.admin_key)
    admin.go("/console/admin/waitlist?status=all")
    admin.fill("#q", "markup@")  # htmx (under the CSP) filters the queue as one types
    admin.wait_until(lambda: "q=markup" in admin.driver.current_url)
    admin.wait_until(lambda: len(admin.find_all("tr[data-application]")) == 1)
    assert "<script>window.owned = 1</script>" in admin.body()  # shown, as text
    assert admin.driver.execute_script("return window.owned === undefined")
    assert not admin.find_all("td.use-case b") and not admin.find_all("td.use-case img")


def test_a_developer_is_refused_on_admin_pages(
    live_console: LiveConsole, open_browser: Callable[[], object]
) -> None:
    admin = ConsolePage(open_browser(), live_console.url)
    admin_sign_in(admin, live_console.admin_key)
    dev = ConsolePage(open_browser(), live_console.url)
    apply(dev, "refused@example.com", "Checking that the admin console stays shut.")
    admin.go("/console/admin/waitlist?q=refused%40example.com")
    admin.click("button[name=one][value^='approve:']")
    admin.wait_until(lambda: "Approved 1 application(s)." in admin.notice())
    dev.go("/console/status")
    dev.click("#claim")
    dev.click("#signin-with-key")
    dev.wait_for_path("/console/keys")
    for path in ("/console/admin", "/console/admin/waitlist", "/console/admin/accounts"):
        dev.go(path)
        assert "Not allowed here" in dev.body() and "developer key" in dev.body(), path
