"""Authentication, roles, CSRF, sessions and login throttling of the admin API."""

from __future__ import annotations

from typing import Any

import httpx

from engine import audit
from engine.api.testing import PASSWORD, login_client
from engine.auth import sessions
from engine.auth.tokens import create_token


class TestAnonymous:
    def test_api_metrics_and_pages_need_login(self, base_url: str) -> None:
        """Without credentials the API and /metrics answer 401 and pages redirect to login."""
        with httpx.Client(base_url=base_url) as anon:
            assert anon.get("/api/channels").status_code == 401
            assert anon.get("/api/messages").status_code == 401
            assert anon.get("/metrics").status_code == 401
            page = anon.get("/messages", follow_redirects=False)
            assert page.status_code == 303
            assert page.headers["location"].startswith("/login")
            assert anon.get("/healthz").status_code == 200


class TestLogin:
    def test_session_cookie_is_httponly_and_samesite(self, base_url: str) -> None:
        """A login sets an HttpOnly, SameSite=Strict cookie and returns a CSRF token."""
        with httpx.Client(base_url=base_url) as client:
            reply = client.post("/api/session", json={"name": "operator", "password": PASSWORD})
            assert reply.status_code == 200
            cookie = reply.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert "secure" not in cookie  # plain HTTP here; Secure is set over TLS
            assert reply.json()["role"] == "operator" and reply.json()["csrf_token"]

    def test_only_a_hash_of_the_session_id_is_stored(self, node: Any, base_url: str) -> None:
        """The store never holds the session id the browser holds."""
        with httpx.Client(base_url=base_url) as client:
            client.post("/api/session", json={"name": "viewer", "password": PASSWORD})
            session_id = client.cookies[sessions.COOKIE]
        rows = node.store._query("SELECT id_hash FROM sessions")
        assert rows and all(session_id not in r[0] for r in rows)

    def test_logins_are_audited_and_throttled(self, node: Any, base_url: str) -> None:
        """Wrong passwords are audited; after five the pair is locked out even for the
        right password."""
        with httpx.Client(base_url=base_url) as client:
            for _ in range(sessions.MAX_FAILURES):
                bad = client.post("/api/session", json={"name": "admin", "password": "nope"})
                assert bad.status_code == 401
            locked = client.post("/api/session", json={"name": "admin", "password": PASSWORD})
            assert locked.status_code == 429
        outcomes = [e.outcome for e in audit.read(node.store, actor="admin", action="login")]
        assert outcomes.count("failed") == sessions.MAX_FAILURES
        assert "locked" in outcomes

    def test_logout_ends_the_session(self, base_url: str) -> None:
        """After DELETE /api/session the cookie no longer opens the API."""
        client = login_client(base_url, "viewer")
        assert client.get("/api/channels").status_code == 200
        assert client.delete("/api/session").status_code == 204
        stale = httpx.Client(base_url=base_url)
        stale.cookies.set(sessions.COOKIE, "x" * 43)
        assert stale.get("/api/channels").status_code == 401
        assert client.get("/api/channels").status_code == 401


class TestCsrfAndRoles:
    def test_post_without_csrf_token_is_refused(self, base_url: str) -> None:
        """A state-changing request on a session needs the session's CSRF token."""
        client = login_client(base_url, "operator")
        token = client.headers.pop("X-CSRF-Token")
        refused = client.post("/api/messages/1/reprocess")
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        wrong = client.post("/api/messages/1/reprocess", headers={"X-CSRF-Token": "forged"})
        assert wrong.status_code == 403
        ok = client.post("/api/messages/1/reprocess", headers={"X-CSRF-Token": token})
        assert ok.status_code == 200

    def test_viewer_may_read_but_not_act(self, base_url: str) -> None:
        """A viewer reads channels but may not reprocess, release, search by MRN or
        manage users."""
        viewer = login_client(base_url, "viewer")
        assert viewer.get("/api/channels").status_code == 200
        assert viewer.post("/api/messages/1/reprocess").status_code == 403
        assert viewer.post("/api/charges/release", json={"charge_ids": ["x"]}).status_code == 403
        assert viewer.get("/api/messages", params={"mrn": "MRN100234"}).status_code == 403
        assert viewer.get("/api/users").status_code == 403

    def test_operator_may_not_manage_users_or_channels(self, base_url: str) -> None:
        """Users and channel control are for admins only."""
        operator = login_client(base_url, "operator")
        assert operator.get("/api/users").status_code == 403
        assert operator.post("/api/channels/clinic/pause").status_code == 403
        assert operator.get("/api/audit").status_code == 403

    def test_bearer_token_works_without_csrf(self, node: Any, base_url: str) -> None:
        """An API token authenticates a machine; its role limits it like a user's."""
        token = create_token(node.store, "script", "operator")
        with httpx.Client(base_url=base_url,
                          headers={"Authorization": f"Bearer {token}"}) as machine:
            assert machine.get("/api/channels").status_code == 200
            assert machine.post("/api/messages/1/reprocess").status_code == 200
            assert machine.get("/api/users").status_code == 403
        with httpx.Client(base_url=base_url,
                          headers={"Authorization": "Bearer cbt_not-a-token"}) as bad:
            assert bad.get("/api/channels").status_code == 401

    def test_disabling_a_user_ends_its_sessions(self, base_url: str) -> None:
        """An admin disabling a user logs that user out at once."""
        viewer = login_client(base_url, "viewer")
        admin = login_client(base_url, "admin")
        assert admin.patch("/api/users/viewer", json={"disabled": True}).status_code == 200
        assert viewer.get("/api/channels").status_code == 401
        again = httpx.post(f"{base_url}/api/session",
                           json={"name": "viewer", "password": PASSWORD})
        assert again.status_code == 401
