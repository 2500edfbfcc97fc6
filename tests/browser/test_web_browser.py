"""What people see in the browser: role-based visibility, a decision reaching the audit log,
and no page without signing in."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, expect

from pacsflow.web.key_image import OUTLINE_RGB
from pacsflow.web.sample import SAMPLE_PASSWORD, STROKE_CRITICAL, STROKE_ROUTINE

pytestmark = pytest.mark.browser

RESIDENT, ATTENDING, AUDITOR = "rita.resident", "alan.attending", "otto.auditor"


@pytest.fixture
def context(browser: Browser, base_url: str) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 1400})
    try:
        yield ctx
    finally:
        ctx.close()


def sign_in(page: Page, username: str, then: str) -> None:
    page.goto(then)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(SAMPLE_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(then) + "$"))


def test_resident_sees_the_full_finding_and_overlay(
    context: BrowserContext, tmp_path: Path
) -> None:
    page = context.new_page()
    sign_in(page, RESIDENT, f"/cases/{STROKE_CRITICAL}")
    expect(page.locator("h1 .badge")).to_have_text("critical")
    findings = page.locator("#findings tr.finding")
    expect(findings).to_have_count(1)
    expect(findings.first).to_contain_text("hemorrhage")
    expect(findings.first).to_contain_text("12.4")
    expect(findings.first).to_contain_text("right, supratentorial, frontal lobe")

    image = page.locator("img#key-image")
    expect(image).to_be_visible()
    # Read the element's properties over the protocol, not with evaluated strings: the
    # page's CSP (script-src 'none') forbids eval, and newer Playwright honours that.
    expect(image).to_have_js_property("complete", True, timeout=30_000)
    handle = image.element_handle()
    assert handle is not None
    assert handle.get_property("naturalWidth").json_value() >= 512
    # The overlay: the image the page shows carries the red outline.
    png = page.request.get(image.get_attribute("src") or "")
    assert png.status == 200 and png.headers["content-type"] == "image/png"
    rgb = np.asarray(Image.open(io.BytesIO(png.body())).convert("RGB"))
    assert np.all(rgb == OUTLINE_RGB, axis=2).sum() > 100
    page.screenshot(path=str(tmp_path / "case-resident.png"), full_page=True)


def test_attending_sees_the_alert_only(context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, ATTENDING, f"/cases/{STROKE_CRITICAL}")
    expect(page.locator("h1 .badge")).to_have_text("critical")
    expect(page.locator("#ai-summary")).to_contain_text("Suspected intracranial hemorrhage")
    expect(page.locator("#ai-summary")).to_contain_text("sees the alert only")
    expect(page.locator("#findings")).to_have_count(0)
    expect(page.locator("img#key-image")).to_have_count(0)
    direct = page.goto(f"/cases/{STROKE_CRITICAL}/key-image.png")
    assert direct is not None and direct.status == 403


def test_resident_confirms_and_auditor_sees_it_in_the_audit_log(
    browser: Browser, base_url: str
) -> None:
    resident = browser.new_context(base_url=base_url)
    try:
        page = resident.new_page()
        sign_in(page, RESIDENT, f"/cases/{STROKE_ROUTINE}")
        page.get_by_label("Confirm").check()
        page.get_by_role("button", name="Record decision").click()
        expect(page).to_have_url(re.compile(re.escape(f"/cases/{STROKE_ROUTINE}") + "$"))
        expect(page.locator("#decisions")).to_contain_text("rita.resident (resident)")
        expect(page.locator("#decisions")).to_contain_text("confirm")
    finally:
        resident.close()

    auditor = browser.new_context(base_url=base_url)
    try:
        page = auditor.new_page()
        sign_in(page, AUDITOR, "/audit")
        page.get_by_label("Action").fill("result.confirm")
        page.get_by_role("button", name="Filter").click()
        rows = page.locator("#audit tr.audit-entry")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("rita.resident")
        expect(rows.first).to_contain_text("result.confirm")
        expect(rows.first).to_contain_text(STROKE_ROUTINE)
        page.get_by_role("link", name="Verify the hash chain").click()
        expect(page.locator("#chain")).to_contain_text("Hash chain intact")
    finally:
        auditor.close()


def test_unauthenticated_requests_are_refused(context: BrowserContext) -> None:
    page = context.new_page()
    response = page.goto(f"/cases/{STROKE_CRITICAL}")
    assert response is not None
    expect(page).to_have_url(re.compile(r"/login\?next=/cases/"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#findings")).to_have_count(0)
    api = page.request.get(f"/api/cases/{STROKE_CRITICAL}")
    assert api.status == 401
    image = page.request.get(f"/cases/{STROKE_CRITICAL}/key-image.png", max_redirects=0)
    assert image.status == 303 and image.headers["location"].startswith("/login")
