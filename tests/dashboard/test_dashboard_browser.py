"""The dashboard in headless Chromium: login, live counts, message detail, actions,
worklists and PHI masking for viewers."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import expect

from engine.api.testing import PASSWORD, held, put_charges, sample_charge, sample_message, send


def log_in(page: Any, base_url: str, name: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("#login-submit")


def accept_dialogs(page: Any) -> list[str]:
    """Accept every confirmation and keep its text."""
    seen: list[str] = []

    def on_dialog(dialog: Any) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)
    return seen


def _message_id(node: Any, control_id: str) -> int:
    return next(m.id for m in node.store.search_messages(control_id=control_id))


class TestLogin:
    def test_anonymous_visit_goes_to_login_and_wrong_password_is_refused(
            self, page: Any, base_url: str) -> None:
        """Pages redirect to the login form, which refuses a wrong password."""
        page.goto(f"{base_url}/worklists/held")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.fill("input[name=name]", "admin")
        page.fill("input[name=password]", "wrong password here")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
        page.fill("input[name=name]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login-submit")
        expect(page).to_have_url(f"{base_url}/worklists/held")
        expect(page.locator("#who")).to_contain_text("admin (admin)")


class TestOperatorFlow:
    def test_counts_rise_live_while_messages_arrive(self, page: Any, node: Any,
                                                    base_url: str) -> None:
        """The channels page updates its received count without a reload."""
        log_in(page, base_url, "operator")
        received = page.locator('tr[data-channel="clinic"] [data-field="received"]')
        expect(received).to_have_text("0")
        send(node, [sample_message(f"LIVE{i}") for i in range(3)])
        expect(received).to_have_text("3", timeout=30_000)
        send(node, [sample_message(f"LIVE{i}") for i in range(3, 5)])
        expect(received).to_have_text("5", timeout=30_000)
        expect(page.locator('tr[data-channel="clinic"] svg polyline')).to_have_count(1)

    def test_open_a_message_and_reprocess_it(self, page: Any, node: Any,
                                             base_url: str) -> None:
        """The detail shows named HL7 fields; Reprocess asks first, then requeues."""
        send(node, [sample_message("OPEN1")])
        mid = _message_id(node, "OPEN1")
        put_charges(node.store, mid, [held(sample_charge("ch_open", "clinic"))])
        dialogs = accept_dialogs(page)
        log_in(page, base_url, "operator")
        page.goto(f"{base_url}/messages?control_id=OPEN1")
        page.click(f'#messages a[href="/messages/{mid}"]')
        segments = page.locator("#segments")
        expect(segments).to_contain_text("Patient Name")
        expect(segments).to_contain_text("Rivera^Elena^Marie")
        expect(segments).to_contain_text("Message Control ID")
        expect(page.locator('section[data-charge="ch_open"]')).to_contain_text("HELD")
        page.click("#reprocess")
        expect(page.locator("#result")).to_contain_text("queued for reprocessing")
        assert dialogs == [f"Reprocess message {mid}?"]
        assert node.store.get_message(mid).status == "RECEIVED"

    def test_release_held_charges_one_and_in_bulk(self, page: Any, node: Any,
                                                  base_url: str) -> None:
        """Held charges are released from the worklist, per row and in bulk."""
        for i, amount in enumerate(("20.00", "300.00", "45.00")):
            send(node, [sample_message(f"HOLD{i}")])
            put_charges(node.store, _message_id(node, f"HOLD{i}"),
                        [held(sample_charge(f"ch_hold{i}", "clinic", amount))])
        dialogs = accept_dialogs(page)
        log_in(page, base_url, "operator")
        page.goto(f"{base_url}/worklists/held?sort=amount&order=desc")
        rows = page.locator("#held tbody tr")
        expect(rows.first).to_have_attribute("data-id", "ch_hold1")  # the largest amount
        rows.first.get_by_role("button", name="Release").click()
        expect(page.locator("#result")).to_contain_text("ch_hold1 released")
        assert node.store.get_charge("ch_hold1")[1] == "QUEUED"
        expect(page.locator("#held tbody tr")).to_have_count(2, timeout=30_000)
        page.check("#held thead input.select-all")
        page.get_by_role("button", name="Release selected").click()
        expect(page.locator("#result")).to_contain_text("ch_hold0 released")
        assert {node.store.get_charge(f"ch_hold{i}")[1] for i in (0, 2)} == {"QUEUED"}
        assert dialogs[0] == "Release charge ch_hold1?"
        assert dialogs[1].startswith("Release the selected charges") and "(2)" in dialogs[1]


class TestViewer:
    def test_viewer_sees_masked_phi_and_no_actions(self, page: Any, node: Any,
                                                   base_url: str) -> None:
        """A viewer's message page masks names, birth dates, member ids and addresses,
        offers no actions, and nothing is audited as a PHI view."""
        send(node, [sample_message("MASK1")])
        mid = _message_id(node, "MASK1")
        put_charges(node.store, mid, [held(sample_charge("ch_mask", "clinic"))])
        log_in(page, base_url, "viewer")
        page.goto(f"{base_url}/messages/{mid}")
        expect(page.locator("#segments")).to_contain_text("Patient Name")
        expect(page.locator("#who")).to_contain_text("PHI masked")
        html = page.content()
        for phi in ("Rivera", "Elena", "19780412", "1978-04-12", "XOH884512037", "W201447789",
                    "Juniper", "MRN100234"):
            assert phi not in html, phi
        assert "•••" in html and "99213" in html
        expect(page.locator("#reprocess")).to_have_count(0)
        expect(page.get_by_role("button", name="Release")).to_have_count(0)
        from engine import audit

        assert audit.read(node.store, action="phi.view") == []
