"""The labeling page in a real headless Chromium: token, label two items (click, key), export, check it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labeling_helpers import ADMIN_TOKEN, LABELS, SEED_QUERIES, live_server, make_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


@pytest.fixture()
def browser_page():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian's chromium; `make test` installs it with apt)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(accept_downloads=True, locale="it-IT")
            page = context.new_page()
            page.set_default_timeout(20_000)
            yield page
            context.close()
        finally:
            browser.close()


def test_label_two_items_then_export_them(browser_page, store, seeded, tmp_path):
    from playwright.sync_api import expect

    page = browser_page
    by_confidence = sorted(SEED_QUERIES, key=lambda q: q[2])  # the page's default order
    with live_server(make_app(store)) as base_url:
        page.goto(f"{base_url}/expert/labeling")
        page.fill("#token", ADMIN_TOKEN)
        page.fill("#expert-name", "dott.ssa Bianchi")
        page.click("text=Accedi")
        items = page.locator("#queue > li")
        items.first.wait_for()
        assert items.count() == len(SEED_QUERIES)
        assert items.first.locator(".text").inner_text() == by_confidence[0][0]
        assert "Confidenza: 22%" in items.first.locator(".meta").inner_text()

        # 1) a click: the first item gets label 3 (a change of the predicted intent)
        first_text, clicked_label = by_confidence[0][0], LABELS[2]
        items.first.get_by_role("button", name=f"3 · {clicked_label}").click()
        expect(items).to_have_count(len(SEED_QUERIES) - 1)  # (the page's CSP forbids eval-based waits)
        # 2) a key: Enter confirms the predicted intent of the item now selected (the next one)
        second_text, second_predicted = by_confidence[1][0], by_confidence[1][1]
        assert items.first.locator(".text").inner_text() == second_text
        page.keyboard.press("Enter")
        expect(items).to_have_count(len(SEED_QUERIES) - 2)
        # 3) S skips the next one: skipped items are not exported
        page.keyboard.press("s")
        expect(items).to_have_count(len(SEED_QUERIES) - 3)

        with page.expect_download() as download_info:
            page.click("text=Esporta Dati")
        download = download_info.value
        assert download.suggested_filename == "intent_training_data.jsonl"
        saved = tmp_path / download.suggested_filename
        download.save_as(saved)

    rows = [json.loads(line) for line in saved.read_text(encoding="utf-8").splitlines()]
    assert {(row["text"], row["label"]) for row in rows} == {(first_text, clicked_label),
                                                             (second_text, second_predicted)}
    assert all(row["labeled_by"] == "dott.ssa Bianchi" and row["source"] == "labeling" for row in rows)
    assert store.counts() == {"pending": 1, "labeled": 2, "skipped": 1}


def test_a_wrong_token_is_refused_and_the_login_stays(browser_page, store, seeded):
    page = browser_page
    with live_server(make_app(store)) as base_url:
        page.goto(f"{base_url}/expert/labeling")
        page.fill("#token", "sbagliato")
        page.click("text=Accedi")
        page.wait_for_selector("#message.error")
        assert "Token non valido" in page.inner_text("#message")
        assert page.is_visible("#login") and not page.is_visible("#workspace")
        assert page.evaluate("window.sessionStorage.getItem('intentLabelingToken')") is None
